"""MedMNIST archives -> vfm folders: synthetic archive (always runs) and the real RetinaMNIST (skips if absent)."""

import numpy as np
import pytest

from tests.helpers import DATA, require
from visionfm.cli import main
from visionfm.data import medmnist_to_folder, scan


def _archive(path, n=(4, 2, 3)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(k, dtype=np.uint8).reshape(k, 1) % 5
    np.savez(path, **arrays)
    return arrays


def test_round_trip_keeps_pixels_and_labels(tmp_path):
    arrays = _archive(tmp_path / "a.npz")
    out = medmnist_to_folder(tmp_path / "a.npz", tmp_path / "out")
    for split in ("train", "val", "test"):
        coll = scan(out, split=split)
        assert coll.layout == "vfm" and len(coll) == len(arrays[f"{split}_images"])
        first = next(s for s in coll.samples if s.rel == f"{split}/1.png")
        assert first.label == (float(arrays[f"{split}_labels"][1, 0]),)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out / "test" / "2.png")), arrays["test_images"][2])


def test_reuses_conversion_and_refuses_foreign_folder(tmp_path):
    _archive(tmp_path / "a.npz")
    out = medmnist_to_folder(tmp_path / "a.npz", tmp_path / "out")
    (out / "train" / "0.png").unlink()  # a reused conversion is not rewritten
    medmnist_to_folder(tmp_path / "a.npz", out)
    assert not (out / "train" / "0.png").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        medmnist_to_folder(tmp_path / "a.npz", tmp_path / "other")


def test_bad_archives_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        medmnist_to_folder(tmp_path / "missing.npz", tmp_path / "o")
    np.savez(tmp_path / "b.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="b.npz: missing array"):
        medmnist_to_folder(tmp_path / "b.npz", tmp_path / "o2")


def test_cli_on_real_retinamnist(tmp_path):
    npz = require(DATA / "retinamnist" / "retinamnist.npz")
    assert main(["medmnist", "--npz", str(npz), "--output", str(tmp_path / "r")]) == 0
    counts = {s: len(scan(tmp_path / "r", split=s)) for s in ("train", "val", "test")}
    assert counts == {"train": 1080, "val": 120, "test": 400}
    labels = scan(tmp_path / "r", split="test").label_matrix()[:, 0]
    assert np.bincount(labels.astype(int)).tolist() == [174, 46, 92, 68, 20]
