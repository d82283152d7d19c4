"""OCT volumes: reading (folder, multi-frame DICOM, eyepy vendor file), MIL heads with known answers, and the whole
path extract --volumes -> volumes train -> volumes predict, on generated volumes and on real OCT B-scans."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.dicom_factory import OPT, make_dicom
from tests.helpers import DATA, require
from visionfm.cli import main
from visionfm.volumes import (
    MILHead,
    VolumeTrainConfig,
    extract_volume_features,
    list_volumes,
    load_volume_features,
    pad_bags,
    read_volume,
    scan_volumes,
    train_volume_classifier,
)
from visionfm.volumes.extract import VolumeFeatures

RNG = np.random.default_rng(0)


def _bscan_folder(folder, n=3, lesion=None, size=(32, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        arr = RNG.integers(0, 60, size, dtype=np.uint8)
        if k == lesion:
            arr[8:24, 16:32] = 250  # a bright "lesion" in one B-scan
        Image.fromarray(arr).save(folder / f"{k + 1}.png")  # 1..n: natural order puts 10 after 9
    return folder


def test_read_folder_dicom_and_eyepy_volumes(tmp_path):
    folder = _bscan_folder(tmp_path / "eye1", n=11)
    v = read_volume(folder)
    assert v.bscans.shape == (11, 32, 48, 3) and v.names[:3] == ["1.png", "2.png", "3.png"] and v.names[-1] == "11.png"
    vol = RNG.integers(0, 4000, (5, 64, 64)).astype(np.uint16)
    make_dicom(
        tmp_path / "opt.dcm",
        vol,
        sop_class=OPT,
        laterality="L",
        functional_groups=True,
        pixel_spacing=(0.004, 0.012),
        slice_spacing=0.1,
    )
    d = read_volume(tmp_path / "opt.dcm")
    assert len(d) == 5 and d.laterality == "L" and d.pixel_spacing == (0.004, 0.012) and d.slice_spacing == 0.1
    sio = pytest.importorskip("scipy.io")
    pytest.importorskip("eyepy")
    imgs = RNG.integers(0, 255, (40, 60, 4), dtype=np.uint8)
    sio.savemat(
        tmp_path / "duke.mat", {"images": imgs, "layerMaps": np.full((4, 60, 3), np.nan), "Age": np.array([[60]])}
    )
    e = read_volume(tmp_path / "duke.mat")  # parsed by eyepy.import_duke_mat
    np.testing.assert_array_equal(e.bscans[0, ..., 0], imgs[..., 0])
    assert e.slice_spacing == 0.067
    assert list_volumes(tmp_path) == [tmp_path / "duke.mat", tmp_path / "eye1", tmp_path / "opt.dcm"]


def test_mean_pooling_relevance_is_the_bscan_logit_and_padding_is_ignored():
    head = MILHead(4, 2, "mean", dropout=0.0).eval()
    x = torch.randn(1, 3, 4)
    logits, rel = head(x, torch.ones(1, 3, dtype=torch.bool))
    inst, _ = zip(*[head(x[:, i : i + 1], torch.ones(1, 1, dtype=torch.bool)) for i in range(3)])
    torch.testing.assert_close(logits, torch.stack(inst).mean(0))  # linear after mean = mean of B-scan logits
    c = int(logits.argmax())
    torch.testing.assert_close(rel[0], torch.stack([i[0, c] for i in inst]))
    xp, mask = pad_bags([x[0], torch.randn(5, 4)])
    for pooling in ("mean", "max", "attention"):
        h = MILHead(4, 2, pooling, dropout=0.0).eval()
        a, ra = h(x, torch.ones(1, 3, dtype=torch.bool))
        b, rb = h(xp, mask)
        torch.testing.assert_close(b[0], a[0])  # padding changes nothing
        assert rb[0, 3:].abs().sum() == 0


def test_max_pooling_relevance_sums_to_logit_minus_bias():
    head = MILHead(6, 3, "max", dropout=0.0).eval()
    x = torch.randn(2, 4, 6)
    logits, rel = head(x, torch.ones(2, 4, dtype=torch.bool))
    c = logits.argmax(-1)
    torch.testing.assert_close(rel.sum(1), logits.gather(1, c[:, None])[:, 0] - head.fc.bias[c])


def _planted(n_vol=24, n_bscans=5, dim=8, seed=0):
    """Class-1 volumes contain one B-scan whose feature 0 is +6: the MIL head must find and point at it."""
    rng = np.random.default_rng(seed)
    cls, vidx, bidx, y, planted = [], [], [], [], []
    for v in range(n_vol):
        f = rng.normal(0, 1, (n_bscans, dim)).astype(np.float32)
        label = v % 2
        k = int(rng.integers(n_bscans))
        if label:
            f[k, 0] += 6.0
        cls.append(f)
        vidx += [v] * n_bscans
        bidx += list(range(n_bscans))
        y.append(label)
        planted.append(k)
    cls = np.concatenate(cls)
    meta = {"volume_features": "1", "layout": "tree", "label_names": "[]"}
    fs = VolumeFeatures(
        cls,
        cls[:, :2],
        np.array(vidx),
        np.array(bidx),
        np.array(y, np.float32)[:, None],
        [f"v{v}" for v in range(n_vol)],
        [{"laterality": ""}] * n_vol,
        [f"v{v}#{b}" for v, b in zip(vidx, bidx)],
        meta,
    )
    return fs, np.array(planted)


def test_attention_mil_learns_and_points_at_the_lesion_bscan(tmp_path, monkeypatch):
    fs, planted = _planted()
    monkeypatch.setattr("visionfm.volumes.train.load_volume_features", lambda p: fs)
    cfg = VolumeTrainConfig(features="train.safetensors", pooling="attention", hidden=16, dropout=0.0)
    cfg.train.output_dir, cfg.train.epochs, cfg.train.lr, cfg.train.progress = str(tmp_path / "run"), 60, 1e-2, False
    run = train_volume_classifier(cfg)
    from visionfm.volumes import VolumeClassifier

    clf = VolumeClassifier.load(run)
    right = pointed = 0
    for v, bag in enumerate(fs.bags()):
        r = clf.predict_bag(bag)
        right += r["prediction"] == str(v % 2)
        pointed += v % 2 == 1 and r["driving_bscan"] == planted[v]
    assert right >= 22 and pointed >= 11  # of 24 volumes / 12 positive ones


def test_extract_train_predict_volumes_cli(tmp_path, tiny_weights):
    root = tmp_path / "vols"
    for c in ("healthy", "lesion"):
        for i in range(4):
            _bscan_folder(root / c / f"eye{i}", n=3, lesion=1 if c == "lesion" else None)
    make_dicom(
        root / "lesion" / "opt.dcm", RNG.integers(0, 4000, (4, 32, 48)).astype(np.uint16), sop_class=OPT, laterality="R"
    )
    feats = tmp_path / "v.safetensors"
    assert (
        main(
            [
                "extract",
                "--volumes",
                "--weights",
                str(tiny_weights),
                "--data",
                str(root),
                "--layout",
                "imagenet",
                "--output",
                str(feats),
                "--input-size",
                "32",
                "--n-last-blocks",
                "1",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    fs = load_volume_features(feats)
    assert len(fs.volumes) == 9 and fs.cls.shape == (8 * 3 + 4, 64) and fs.labels[:, 0].tolist() == [0] * 4 + [1] * 5
    assert fs.volume_meta[-1]["laterality"] == "R" and fs.meta["interpolation"] == "bilinear"
    run = tmp_path / "run"
    assert (
        main(
            [
                "volumes",
                "train",
                "--features",
                str(feats),
                "--val-features",
                str(feats),
                "--pooling",
                "mean",
                "--output",
                str(run),
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "volumes",
                "predict",
                "--run",
                str(run),
                "--data",
                str(root / "lesion"),
                "--weights",
                str(tiny_weights),
                "--csv",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out)))
    assert [r["volume"] for r in rows] == ["eye0", "eye1", "eye2", "eye3", "opt.dcm"]
    assert set(rows[0]) >= {"prob_healthy", "prob_lesion", "prediction", "driving_bscan", "driving_bscan_name"}
    assert rows[-1]["laterality"] == "R" and rows[-1]["driving_bscan_name"].startswith("opt.dcm#")
    assert json.loads((run / "metrics.json").read_text())["validation"]["auroc"] >= 0


def test_real_oct_bscans_grouped_by_eye(tmp_path, tiny_weights):
    """Real macular OCT B-scans grouped into per-eye pseudo-volumes (patient + eye from the file names; most eyes
    have one B-scan, three have two): the pipeline runs on real images; no accuracy is claimed."""
    src = require(DATA / "OCT-fundus-DME-DR")
    rows = [r for r in csv.DictReader(open(src / "manifest.csv")) if r["modality"] == "OCT"][:24]
    with open(tmp_path / "volumes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "DME"])
        eyes = {}
        for r in rows:
            eyes.setdefault(f"{r['patient']}_{r['eye']}", []).append(r)
        for eye, items in eyes.items():
            (tmp_path / eye).mkdir()
            for k, r in enumerate(items):
                (tmp_path / eye / f"{k}.jpg").symlink_to(src / r["path"])
            w.writerow([eye, items[0]["DME"]])
    coll = scan_volumes(tmp_path / "volumes.csv", label_columns=["DME"])
    out = extract_volume_features(
        tiny_weights, coll, tmp_path / "v.safetensors", input_size=32, n_last_blocks=1, num_workers=0, progress=False
    )
    fs = load_volume_features(out)
    assert len(fs.volumes) == len(coll) and set(fs.labels[:, 0]) <= {0.0, 1.0}
