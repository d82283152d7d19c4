"""Folder layouts: tree, ImageNet class folders, official vfm label files, CSV manifests; errors name file and line."""

import math

import numpy as np
import pytest
from PIL import Image

from visionfm.data import ImageReadError, scan


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)


def test_tree_is_recursive_and_mixed_extensions(image_folder):
    (image_folder / "notes.txt").write_text("not an image")
    coll = scan(image_folder)
    assert coll.layout == "tree" and len(coll) == 6 and not coll.has_labels
    assert coll.samples[0].rel == "a/0.png"


def test_imagenet_layout(image_folder):
    coll = scan(image_folder, layout="imagenet")
    assert coll.label_names == ["a", "b"]
    assert [s.label[0] for s in coll.samples] == [0, 0, 0, 1, 1, 1]


def test_vfm_layout_multilabel_and_missing(tmp_path):
    _img(tmp_path / "training" / "1.jpg")
    _img(tmp_path / "training" / "2.jpg")
    (tmp_path / "training_labels.txt").write_text("training/1.jpg;0, 0, 1\ntraining/2.jpg;1, -, 0\n")
    coll = scan(tmp_path)
    assert coll.layout == "vfm"
    m = coll.label_matrix()
    assert m.shape == (2, 3) and m[0, 2] == 1 and math.isnan(m[1, 1])


def test_vfm_errors_name_file_and_line(tmp_path):
    _img(tmp_path / "training" / "1.jpg")
    (tmp_path / "training_labels.txt").write_text("training/1.jpg;1\ntraining/2.jpg;0\n")
    with pytest.raises(ImageReadError, match=r"training_labels.txt, line 2: image .*2.jpg not found"):
        scan(tmp_path)
    (tmp_path / "training_labels.txt").write_text("training/1.jpg 1\n")
    with pytest.raises(ValueError, match="line 1: expected"):
        scan(tmp_path)
    (tmp_path / "training_labels.txt").write_text("training/1.jpg;abc\n")
    with pytest.raises(ValueError, match="line 1: label 'abc' is not a number"):
        scan(tmp_path)


def test_csv_manifest(tmp_path):
    _img(tmp_path / "x" / "a.png")
    _img(tmp_path / "x" / "b.png")
    (tmp_path / "m.csv").write_text("path,grade,patient\nx/a.png,2,p1\nx/b.png,,p2\n")
    coll = scan(tmp_path / "m.csv", label_columns=["grade"])
    assert coll.layout == "csv" and coll.label_names == ["grade"]
    assert coll.samples[0].label == (2.0,) and math.isnan(coll.samples[1].label[0])
    assert coll.samples[1].extra == {"patient": "p2"}
    with pytest.raises(ValueError, match="label column 'dr' not found"):
        scan(tmp_path / "m.csv", label_columns=["dr"])
    (tmp_path / "bad.csv").write_text("file\nx/a.png\n")
    with pytest.raises(ValueError, match="needs a 'path' column"):
        scan(tmp_path / "bad.csv")


def test_empty_and_missing_sources(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        scan(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothere"):
        scan(tmp_path / "nothere")
    with pytest.raises(ValueError, match="unknown layout"):
        scan(tmp_path, layout="coco")
