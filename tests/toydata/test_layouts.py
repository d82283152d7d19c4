"""Every layout the toy data writes is read back by the toolkit's readers with the generator's ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionfm.cli import main
from visionfm.data import read_image, scan
from visionfm.toydata import (
    KINDS,
    MULTILABEL_CLASSES,
    forecast_converts,
    generate,
    make_all,
    make_dataset,
    split_of,
)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_all(root, n=12, seed=3, size=48, progress=False)
    return root


def test_make_all_writes_one_dataset_per_kind(toy_root):
    for name in KINDS.names():
        meta = json.loads((toy_root / name / "toydata.json").read_text())
        assert meta["kind"] == name and meta["complete"] and meta["n"] == 12 and sum(meta["counts"].values()) == 12
        assert meta["counts"]["test"] >= 1 and meta["counts"]["training"] >= 1


@pytest.mark.parametrize("kind", ["fundus-dr", "oct-dme", "slitlamp", "external"])
def test_classification_layouts_agree(toy_root, kind):
    root, k = toy_root / kind, KINDS.get(kind)
    vfm = scan(root, "vfm", split="training")
    csv_ = scan(root / "manifest.csv", label_columns=["label"])
    net = scan(root / "imagenet" / "training", "imagenet")
    assert net.label_names == [f"{c}_{name}" for c, name in enumerate(k.classes)]
    by_rel = {s.rel: s.label for s in csv_.samples}
    for s in vfm.samples:
        i = int(s.path.stem)
        _, values = generate(kind, i, seed=3, size=48)
        assert s.label == tuple(float(v) for v in values) == by_rel[s.rel]
        assert split_of(k, i) == "training"
        assert np.array_equal(read_image(s.path), generate(kind, i, seed=3, size=48)[0].image)
    for s in net.samples:  # the ImageNet reader's class indices are the generator's
        assert s.label == by_rel[f"training/{s.path.name}"]


def test_multilabel_official_line_format(toy_root):
    root = toy_root / "fundus-multilabel"
    line = (root / "training_labels.txt").read_text().splitlines()[0]
    rel, labels = line.split(";")
    assert rel == "training/0.png" and len(labels.split(", ")) == 13
    m = scan(root, "vfm", split="test").label_matrix()
    assert m.shape[1] == len(MULTILABEL_CLASSES) and set(np.unique(m)) <= {0.0, 1.0}
    assert np.all((m[:, 0] == 1) == (m[:, 1:].sum(1) == 0))  # Healthy iff nothing else
    csv_ = scan(root / "manifest.csv", label_columns=list(MULTILABEL_CLASSES))
    assert csv_.label_matrix().shape == (12, 13)


def test_regression_and_forecasting_labels(toy_root):
    reg = scan(toy_root / "fundus-biomarkers", "vfm").label_matrix()
    assert reg.shape[1] == 3 and np.all((reg[:, 0] > 0.1) & (reg[:, 0] < 0.9)) and np.all(reg[:, 1] > 0)
    fc = scan(toy_root / "glaucoma-forecast", "vfm")
    for s in fc.samples:
        converts, interval = s.label
        p, _ = generate("glaucoma-forecast", int(s.path.stem), seed=3, size=48)
        cdr = p.targets["cup_disc_ratio"]
        assert 90 <= interval <= 1825 and converts == forecast_converts(cdr, p.targets["vessel_density"], interval, 48)


def test_segmentation_masks_match_generator(toy_root):
    root = toy_root / "oct-layers"
    k = KINDS.get("oct-layers")
    img = root / "test" / "images" / "1.png"
    p, _ = generate("oct-layers", 1, seed=3, size=48)
    lab = np.array(Image.open(root / "test" / "labels" / "1.png"))
    assert lab.shape == (48, 48) and lab.max() <= len(k.classes)
    for c, name in enumerate(k.classes, start=1):
        assert np.array_equal(lab == c, p.masks[name])
        assert np.array_equal(np.array(Image.open(root / "test" / "masks" / name / "1.png")) > 0, p.masks[name])
    assert img.is_file()
    vessels = np.array(Image.open(toy_root / "fundus-vessels" / "training" / "labels" / "0.png"))
    assert set(np.unique(vessels)) <= {0, 1} and vessels.any()


def test_dense_readers_accept_the_layouts(toy_root):
    data = pytest.importorskip("visionfm.dense.data")
    lm = pytest.importorskip("visionfm.dense.landmarks")
    spec = data.resolve_spec(toy_root / "fundus-vessels", split="training")
    items = spec.items()
    target, _ = data.load_target(items[0], spec, (48, 48))
    p, _ = generate("fundus-vessels", int(items[0].image.stem), seed=3, size=48)
    assert np.array_equal(target[0] > 0, p.masks["vessel"])
    root = toy_root / "ubm-landmarks" / "training"
    images = sorted((root / "images").iterdir())
    pts_csv, names = lm.read_landmarks(root / "landmarks.csv", images)
    pts_json, _ = lm.read_landmarks(root / "landmarks.json", images)
    assert names == ["scleral_spur", "angle_recess", "auxiliary_point"]
    np.testing.assert_allclose(pts_csv, pts_json, atol=1e-3)
    pts_npy, _ = lm.read_landmarks(root / "labels", images)  # official .npy heatmaps, decoded sub-pixel
    np.testing.assert_allclose(pts_npy, pts_csv, atol=0.05)
    p, _ = generate("ubm-landmarks", int(images[0].stem), seed=3, size=48)
    np.testing.assert_allclose(pts_csv[0], [p.points[n] for n in names], atol=1e-3)


def test_sample_is_independent_of_n(tmp_path):
    a = make_dataset("external", tmp_path / "a", n=4, seed=1, size=32, progress=False)
    b = make_dataset("external", tmp_path / "b", n=9, seed=1, size=32, progress=False)
    assert (a.root / "training" / "1.png").read_bytes() == (b.root / "training" / "1.png").read_bytes()


def test_cli_toy_data(tmp_path, capsys):
    out = tmp_path / "ubm"
    assert main(["toy-data", "--kind", "ubm-landmarks", "--output", str(out), "--n", "8", "--size", "32"]) == 0
    assert "ubm-landmarks" in capsys.readouterr().out
    assert (out / "test" / "landmarks.csv").is_file()
    # a second run refuses to clobber, --overwrite replaces
    assert main(["toy-data", "--kind", "ubm-landmarks", "--output", str(out), "--n", "8", "--size", "32"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (
        main(["toy-data", "--kind", "ubm-landmarks", "--output", str(out), "--n", "4", "--size", "32", "--overwrite"])
        == 0
    )
    assert len(list((out / "training" / "images").iterdir())) == 3
    assert main(["toy-data", "--kind", "nope", "--output", str(tmp_path / "x")]) == 2
    assert "fundus-dr" in capsys.readouterr().err  # the error lists the valid kinds
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["toy-data", "--kind", "external", "--output", str(other), "--overwrite"]) == 2
    assert (other / "keep.txt").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least 4 for external"):
        make_dataset("external", tmp_path / "never", n=2)
    with pytest.raises(ValueError, match="at least 10 for fundus-dr"):
        make_dataset("fundus-dr", tmp_path / "never", n=8)
    with pytest.raises(ValueError, match="at least 32"):
        generate("external", 0, size=16)
    with pytest.raises(ValueError, match="at least 32"):
        make_dataset("external", tmp_path / "never", n=8, size=16)
    assert not (tmp_path / "never").exists()
