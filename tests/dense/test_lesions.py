"""Rare-class (lesion) segmentation: AUPR and validation-chosen thresholds by hand, per-class thresholds end to end,
fast mask shrinking, and the IDRiD lesion recipe's config."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visionfm.cli import main
from visionfm.dense.config import load_config
from visionfm.dense.data import resize_map
from visionfm.dense.metrics import (
    SegmentationMeter,
    average_precision_from_histograms,
    best_threshold_from_histograms,
)

REPO = Path(__file__).resolve().parents[2]


def _hist(scores, bins=10):
    return np.bincount((np.asarray(scores) * bins).astype(int), minlength=bins)


def test_average_precision_by_hand():
    # Scores (desc): 0.95 pos, 0.85 neg, 0.75 pos, 0.15 neg -> AP = (1/1 + 2/3) / 2.
    pos, neg = _hist([0.95, 0.75]), _hist([0.85, 0.15])
    assert average_precision_from_histograms(pos, neg) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_from_histograms(_hist([0.9]), _hist([0.1, 0.2])) == pytest.approx(1.0)
    # One score for everything: AP is the prevalence (1 of 4).
    assert average_precision_from_histograms(_hist([0.5]), _hist([0.5, 0.5, 0.5])) == pytest.approx(0.25)
    assert np.isnan(average_precision_from_histograms(_hist([]), _hist([0.3])))


def test_best_threshold_by_hand():
    # Positives at 0.35 and 0.45, negatives at 0.15 and 0.55. Threshold 0.1 marks all 4: Dice 4/6; 0.2 and 0.3
    # mark 0.35, 0.45, 0.55: Dice 0.8; 0.4 marks 0.45, 0.55: Dice 0.5. The lowest of the best, 0.2, is chosen.
    pos, neg = _hist([0.35, 0.45]), _hist([0.15, 0.55])
    t, d = best_threshold_from_histograms(pos, neg)
    assert d == pytest.approx(0.8) and t == pytest.approx(0.2)
    scores = np.array([0.35, 0.45, 0.15, 0.55])
    truth = np.array([1, 1, 0, 0], bool)
    pred = scores > t  # the chosen threshold reproduces its Dice on the raw scores
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) == pytest.approx(d)
    assert best_threshold_from_histograms(_hist([]), _hist([0.3]))[0] == 0.5  # nothing to choose on


def test_meter_per_class_thresholds():
    prob = np.array([[[0.3, 0.1]], [[0.3, 0.1]]])
    gt = np.array([[[True, False]], [[True, False]]])
    m = SegmentationMeter(["a", "b"], threshold=[0.2, 0.5], bins=100, with_hd95=False)
    m.update(prob, gt)
    r = m.compute()
    assert r["a"]["dice"] == pytest.approx(1.0) and r["b"]["dice"] == pytest.approx(0.0)
    assert r["a"]["aupr"] == pytest.approx(1.0)


def test_resize_map_binary_fast_path_matches_float():
    rng = np.random.default_rng(0)
    m = rng.random((57, 83)) < 0.1
    fast = resize_map(m, (13, 19))
    slow = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((19, 13), Image.BOX))
    assert fast.dtype == np.float32 and np.abs(fast - slow).max() <= 1 / 510 + 1e-6
    soft = np.full((4, 4), 0.25, np.float32)  # not 0/1: the float path
    assert np.allclose(resize_map(soft, (2, 2)), 0.25)


def make_lesion_like(root: Path, n: int = 4, size: tuple[int, int] = (48, 64)) -> Path:
    """IDRiD-style ``train_images`` + ``train_masks/{EX,HE}/<stem>_<C>.tif``: bright and dark spots, HE rare."""
    rng = np.random.default_rng(1)
    h, w = size
    (root / "train_images").mkdir(parents=True)
    for c in ("EX", "HE"):
        (root / "train_masks" / c).mkdir(parents=True)
    for i in range(n):
        img = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
        ex, he = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        ex[10 + i : 16 + i, 20:28] = 255
        if i % 2 == 0:  # haemorrhages in every other image only
            he[30:33, 40 + i : 43 + i] = 255
        img[ex > 0], img[he > 0] = 230, 20
        stem = f"IDRiD_{i + 1:02d}"
        Image.fromarray(img).save(root / "train_images" / f"{stem}.jpg", quality=95)
        Image.fromarray(ex).save(root / "train_masks" / "EX" / f"{stem}_EX.tif")
        Image.fromarray(he).save(root / "train_masks" / "HE" / f"{stem}_HE.tif")
    return root


def test_tuned_thresholds_travel_from_validation_to_prediction(tmp_path):
    data = make_lesion_like(tmp_path / "idrid")
    run, out = tmp_path / "run", tmp_path / "pred"
    args = ["--data", str(data), "--split", "train", "--unet", "--crop", "32", "--fg-crop", "0.7"]
    args += ["--loss", "tversky_focal", "--val-fraction", "0.5", "--val-every", "2", "--tune-thresholds"]
    args += ["--max-steps", "4", "--batch-size", "2", "--device", "cpu", "--fov", "none", "--no-progress"]
    assert main(["segment", "train", *args, "--output", str(run)]) == 0
    state = yaml.safe_load((run / "dense.yaml").read_text())["state"]
    thr = state["thresholds"]
    assert len(thr) == 2 and all(0 < t < 1 for t in thr) and state["names"] == ["EX", "HE"]
    summary = json.loads((run / "train_metrics.json").read_text())
    assert summary["select_metric"] == "dice_tuned" and summary["thresholds"] == thr
    common = ["--data", str(data), "--split", "train", "--device", "cpu"]
    assert main(["segment", "predict", "--run", str(run), *common, "--output", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["threshold"] == pytest.approx(thr) and "aupr" in res["metrics"]["EX"]
    assert main(["segment", "predict", "--run", str(run), *common, "--threshold", "0.3", "--output", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["threshold"] == [0.3, 0.3]


def test_tune_thresholds_needs_validation(tmp_path, capsys):
    data = make_lesion_like(tmp_path / "idrid", n=2)
    argv = ["segment", "train", "--data", str(data), "--split", "train", "--unet", "--tune-thresholds"]
    assert main([*argv, "--output", str(tmp_path / "r")]) == 2
    assert "tune_thresholds needs validation" in capsys.readouterr().err


def test_lesion_recipe_config_loads():
    cfg = load_config(REPO / "configs" / "dense" / "idrid_lesions_recipe.yaml")
    assert cfg.tune_thresholds and cfg.val_fraction > 0 and cfg.fg_crop > 0 and cfg.crop and cfg.max_side
    assert cfg.classes == ["MA", "HE", "EX", "SE", "OD"]
    assert cfg.contrast == "green_clahe" and cfg.hard_crop > 0 and cfg.train.max_steps == 6000  # as measured
    stacked = load_config(REPO / "configs" / "dense" / "idrid_lesions_stacked.yaml")
    assert stacked.contrast == "standardize+green_clahe" and stacked.model == "unet"
