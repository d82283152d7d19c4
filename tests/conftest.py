"""Shared test fixtures: tiny models, the shared real data (skipped cleanly when absent), temp folders."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores on CI: keep every test single-threaded so parallel work never oversubscribes.
torch.set_num_threads(int(os.environ.get("VISIONFM_TEST_THREADS", "1")))

from tests.helpers import DATA, FIXTURES, SHARED, require  # noqa: F401  (re-exported)


@pytest.fixture
def shared_data() -> Path:
    return require(DATA)


@pytest.fixture
def official_fixture() -> Path:
    return require(FIXTURES)


@pytest.fixture
def tiny_encoder():
    """A randomly initialised test-sized ViT (depth 2, width 64, 32-px input) with Fundus facts attached."""
    from visionfm.checkpoints import EncoderInfo
    from visionfm.models import create_encoder
    from visionfm.modalities import get_modality

    torch.manual_seed(0)
    enc = create_encoder("vit_test").eval()
    m = get_modality("Fundus")
    enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, "random", "random", "random init")
    return enc


@pytest.fixture
def tiny_weights(tmp_path, tiny_encoder) -> Path:
    """The tiny encoder saved as visionfm safetensors."""
    from visionfm.checkpoints import save_encoder

    path = tmp_path / "tiny.safetensors"
    save_encoder(tiny_encoder, path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six small RGB PNGs in two class folders (imagenet layout; also a plain tree)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root
