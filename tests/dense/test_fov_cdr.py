"""Field-of-view estimation, nested (disc/cup) masks, cup-to-disc ratios and the rare-class loss: known answers."""

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import DATA, require
from visionfm.dense.cdr import area_cdr, cdr_rows, largest_component, read_expert_cdr, vertical_cdr
from visionfm.dense.fov import estimate_fov, fov_edge
from visionfm.dense.losses import soft_dice_loss, tversky_loss


def _fundus(h=120, w=150, r=50, seed=0):
    """A bright disc (with dark vessels and a dark lesion inside) on a noisy black surround, plus its true disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= r**2
    img = rng.integers(0, 8, (h, w, 3)).astype(np.uint8)
    img[disc] = (180, 90, 40)
    img[(np.abs(xx - w / 2) < 2) & disc] = (60, 20, 10)  # a vessel
    img[(yy - 50) ** 2 + (xx - 60) ** 2 < 36] = (20, 5, 5)  # a dark haemorrhage inside: must stay inside the FOV
    img[2:8, 2:20] = 255  # a text overlay in the corner: not the largest component
    return img, disc


def test_estimated_fov_matches_the_disc():
    img, disc = _fundus()
    est = estimate_fov(img)
    assert est.shape == disc.shape and est.dtype == bool
    # the smoothed edge sits ~1 px outside the disc (conservative: the whole eye stays inside)
    assert (est & disc).sum() / disc.sum() > 0.99 and (est & disc).sum() / (est | disc).sum() > 0.92
    assert est[50, 60] and not est[4, 10] and not est[0, 0]  # hole filled; overlay and corner outside
    assert estimate_fov(np.full((40, 50, 3), 200, np.uint8)).all()  # no dark surround: the whole image
    assert estimate_fov(np.zeros((40, 50, 3), np.uint8)).all()  # nothing bright: no edge to trust
    big, big_disc = _fundus(1200, 1500, 500)  # worked on a reduced copy, returned at full size
    est = estimate_fov(big)
    assert est.shape == (1200, 1500) and (est & big_disc).sum() / (est | big_disc).sum() > 0.93


def test_fov_edge_pixels_lie_on_the_boundary():
    _, disc = _fundus()
    edge = fov_edge(disc, width=2)
    assert len(edge) > 0 and disc[edge[:, 0], edge[:, 1]].all()
    d = np.hypot(edge[:, 0] - 60, edge[:, 1] - 75)
    assert d.min() > 46 and d.max() <= 50.5
    assert len(fov_edge(np.ones((5, 5), bool))) == 0


def test_estimated_fov_on_real_drive_agrees_with_its_masks():
    from visionfm.data import read_image
    from visionfm.dense.data import read_fov, resolve_spec

    spec = resolve_spec(require(DATA / "DRIVE"), "test")
    for it in spec.items()[:3]:
        img = read_image(it.image)
        est, gt = estimate_fov(img), read_fov(it, img.shape[:2])
        assert (est & gt).sum() / (est | gt).sum() > 0.93


def test_vertical_and_area_cdr_known_answers():
    disc = np.zeros((40, 40), bool)
    disc[10:30, 10:30] = True  # 20 rows, 400 px
    cup = np.zeros_like(disc)
    cup[15:23, 14:24] = True  # 8 rows, 80 px
    cup[0, 0] = True  # a stray pixel: not the largest component, ignored
    assert vertical_cdr(disc, cup) == pytest.approx(0.4) and area_cdr(disc, cup) == pytest.approx(0.2)
    assert largest_component(cup).sum() == 80
    assert vertical_cdr(disc, np.zeros_like(disc)) == 0 and math.isnan(vertical_cdr(~disc & False, cup))
    rows, summary = cdr_rows(["a.png", "b.png"], [disc, disc], [cup, cup], {"a": 0.5, "b": 0.3})
    assert summary["vertical_cdr_mae"] == pytest.approx(0.1) and rows[0]["abs_error"] == pytest.approx(0.1)


def test_expert_cdr_csv_errors_name_the_file(tmp_path):
    good = tmp_path / "m.csv"
    good.write_text("\ufeffpath,exp_cdr\nimages/621.jpg,0.85\n")  # with Excel's BOM
    assert read_expert_cdr(good) == {"621": 0.85}
    bad = tmp_path / "b.csv"
    bad.write_text("path,exp_cdr\nimages/621.jpg,high\n")
    with pytest.raises(ValueError, match="b.csv line 2: exp_cdr 'high' is not a number"):
        read_expert_cdr(bad)
    with pytest.raises(ValueError, match="needs an image column"):
        read_expert_cdr(good, column="vcdr")


def test_tversky_is_soft_dice_at_one_half_and_weighs_misses():
    logits = torch.tensor([[[[3.0, -3.0], [0.5, -1.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert tversky_loss(logits, target, alpha=0.5, beta=0.5) == pytest.approx(float(soft_dice_loss(logits, target)))
    # all-background prediction: every foreground pixel missed -> beta weighs it
    miss = torch.full((1, 1, 2, 2), -20.0)
    assert tversky_loss(miss, target, alpha=0.3, beta=0.7) > tversky_loss(miss, target, alpha=0.7, beta=0.3)


def _origa_like(root, n=4, size=48):
    """``images/`` + ``masks/`` label maps 0 background / 1 disc / 2 cup (as ORIGA), bright disc on a fundus."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i in range(n):
        img, _ = _fundus(size, size, size // 2 - 2, seed=i)
        c = (size // 2 + i - 2, size // 2)
        disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= 64
        cup = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= 9 + 4 * i
        img[disc] = (250, 200, 120)
        img[cup] = (255, 255, 230)
        Image.fromarray(img).save(root / "images" / f"{600 + i}.jpg", quality=95)
        Image.fromarray((disc.astype(np.uint8) + cup).astype(np.uint8)).save(root / "masks" / f"{600 + i}.png")
        rows.append({"path": f"images/{600 + i}.jpg", "exp_cdr": f"{0.4 + 0.05 * i:.2f}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "exp_cdr"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_disc_cup_train_predict_cdr_any_layout(tmp_path):
    from visionfm.cli import main

    data = _origa_like(tmp_path / "origa")
    run = tmp_path / "run"
    assert (
        main(
            [
                "segment",
                "train",
                "--data",
                str(data),
                "--kind",
                "nested",
                "--classes",
                "disc",
                "cup",
                "--unet",
                "--input-size",
                "32",
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--output",
                str(run),
            ]
        )
        == 0
    )
    # scored on another layout: images and label maps in folders of other names, given explicitly
    other = tmp_path / "other"
    (other / "pics").mkdir(parents=True)
    (other / "labs").mkdir()
    for p in sorted((data / "images").iterdir()):
        (other / "pics" / p.name).write_bytes(p.read_bytes())
        (other / "labs" / f"{p.stem}.png").write_bytes((data / "masks" / f"{p.stem}.png").read_bytes())
    out = tmp_path / "pred"
    assert (
        main(
            [
                "segment",
                "predict",
                "--run",
                str(run),
                "--data",
                str(other / "pics"),
                "--masks",
                str(other / "labs"),
                "--kind",
                "nested",
                "--save-probabilities",
                "--expert-cdr",
                str(data / "manifest.csv"),
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    import json

    res = json.loads((out / "metrics.json").read_text())
    assert res["fov"] == {"estimated": 4} and set(res["metrics"]) == {"disc", "cup", "mean"}
    assert len(res["per_image"]) == 8 and {r["class"] for r in res["per_image"]} == {"disc", "cup"}
    assert res["cdr"]["images"] == 4 and res["cdr"]["scored"] == 4 and res["cdr"]["vertical_cdr_mae"] >= 0
    disc = np.array(Image.open(out / "600_disc.png")) > 0
    cup = np.array(Image.open(out / "600_cup.png")) > 0
    assert not (cup & ~disc).any()  # the cup is kept inside the disc
    prob = np.array(Image.open(out / "600_cup_prob.png"))
    assert prob.shape == (48, 48) and prob.dtype == np.uint8
    with open(out / "cdr.csv") as f:
        assert list(next(csv.DictReader(f))) == ["image", "vertical_cdr", "area_cdr", "expert_cdr", "abs_error"]
    truth = tmp_path / "truth.csv"
    assert (
        main(
            ["cdr", "--masks", str(data / "masks"), "--output", str(truth), "--expert-cdr", str(data / "manifest.csv")]
        )
        == 0
    )
    with open(truth) as f:
        first = next(csv.DictReader(f))
    assert float(first["vertical_cdr"]) == pytest.approx(7 / 17)  # cup radius 3 (7 rows), disc radius 8 (17 rows)


def test_real_origa_label_maps_give_the_expert_cdr_roughly():
    from visionfm.dense.cdr import cdr_from_label_maps

    root = require(DATA / "ORIGA-subset")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        s = cdr_from_label_maps(root / "masks", Path(d) / "c.csv", root / "manifest.csv")
    assert s["images"] == 30 and s["scored"] == 30 and s["vertical_cdr_mae"] < 0.15
