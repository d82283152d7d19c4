"""Parity from image files: PNG on disk -> features, against the official preprocessing reimplemented here.

The official extraction (``evaluation/extract_features.py``) opens images with PIL, converts to RGB, resizes the
square with torchvision's ``Resize`` (BILINEAR by default in ``evaluation/transforms.py``; on a PIL image that is
PIL's own filter), ``ToTensor`` (/255) and normalises; the fixture's reference outputs were made with a bicubic
resize. Both are reimplemented below with PIL and numpy only (no visionfm preprocessing code).
"""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import DATA, FIXTURES, require
from visionfm.checkpoints import load_encoder
from visionfm.features import extract_features, load_features

IMAGE = DATA / "DRIVE" / "test" / "images" / "01_test.png"


def _official_input(path, size, resample, mean, std):
    """PIL open -> RGB -> resize (size, size) -> /255 -> normalise -> [1, 3, S, S] (independent of visionfm)."""
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    arr = np.asarray(img.resize((size, size), resample), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1)[None].copy())


@pytest.fixture
def one_image(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(require(IMAGE), folder / "01_test.png")
    return folder


def test_bicubic_from_file_reproduces_official_reference_outputs(tmp_path, one_image):
    """With the fixture's bicubic resize, features from the PNG equal the official model's reference CLS tokens."""
    root = require(FIXTURES)
    out = extract_features(
        root / "checkpoint.pth",
        one_image,
        tmp_path / "f.safetensors",
        input_size=224,
        n_last_blocks=3,
        num_workers=0,
        progress=False,
        interpolation="bicubic",
    )
    fs = load_features(out)
    np.testing.assert_allclose(fs.cls, np.load(root / "last4_cls_224.npy"), atol=2e-5)
    assert fs.meta["interpolation"] == "bicubic"


def test_bilinear_default_matches_official_extraction_preprocessing(tmp_path, one_image):
    """The default (bilinear, as the official extraction) from file equals the independent reimplementation."""
    root = require(FIXTURES)
    arch = json.loads((root / "arch.json").read_text())
    enc = load_encoder(root / "checkpoint.pth")
    out = extract_features(
        enc, one_image, tmp_path / "f.safetensors", input_size=224, n_last_blocks=3, num_workers=0, progress=False
    )
    fs = load_features(out)
    assert fs.meta["interpolation"] == "bilinear"
    x = _official_input(IMAGE, 224, Image.BILINEAR, arch["normalisation_mean"], arch["normalisation_std"])
    with torch.no_grad():
        ref = enc(x, n_last_blocks=3).cls_concat().numpy()
    np.testing.assert_allclose(fs.cls, ref, atol=1e-5)
    x_cubic = _official_input(IMAGE, 224, Image.BICUBIC, arch["normalisation_mean"], arch["normalisation_std"])
    with torch.no_grad():
        cubic = enc(x_cubic, n_last_blocks=3).cls_concat().numpy()
    assert np.abs(fs.cls - cubic).max() > 1e-3  # the filter matters: the test would catch the wrong one
