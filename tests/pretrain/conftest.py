"""Fixtures for the pretraining tests: small real fundus images and a tiny configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import DATA, require


@pytest.fixture(scope="session")
def retina_folder(tmp_path_factory) -> Path:
    """48 RetinaMNIST *train* fundus photographs (28x28) written as PNGs to a temporary folder (never the repo)."""
    npz = require(DATA / "retinamnist" / "retinamnist.npz")
    root = tmp_path_factory.mktemp("retina") / "fundus"
    root.mkdir()
    images = np.load(npz)["train_images"][:48]
    for i, im in enumerate(images):
        Image.fromarray(im).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def drive_folder() -> Path:
    """The 20 real DRIVE training photographs (565x584 TIFF/PNG)."""
    return require(DATA / "DRIVE" / "training" / "images")


def tiny_config(data, output, **overrides):
    """A test-sized config (iBOT unless ``method="mae"``): vit_test (depth 2, width 64, patch 8) at 32 px, small
    head or decoder, one thread; flat loop keys (``epochs``, ``lr``, ``output``) reach the ``train`` section."""
    from visionfm.pretrain import pretrain_config

    base = {
        "data": [str(d) for d in data],
        "modality": "Fundus",
        "arch": "vit_test",
        "output": str(output),
        "global_size": 32,
        "out_dim": 128,
        "patch_out_dim": 128,
        "head_hidden_dim": 64,
        "head_bottleneck_dim": 32,
        "batch_size": 8,
        "epochs": 2,
        "num_workers": 0,
        "progress": False,
        "log_every": 1,
        "warmup_epochs": 0.5,
        "warmup_teacher_temp_epochs": 2,
        "freeze_last_layer": 1,
        "device": "cpu",
        "lr": 5e-3,
        "decoder_embed_dim": 32,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
        "precision": "fp32",
    }
    return pretrain_config(**{**base, **overrides})
