"""Paths of the shared real data and a skip helper, importable by every test module as ``tests.helpers``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("VISIONFM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = Path(os.environ.get("VISIONFM_DATA", SHARED / "data"))
FIXTURES = SHARED / "fixtures" / "visionfm-official-format"

__all__ = ["DATA", "FIXTURES", "SHARED", "require", "save_tiny_encoder", "tiny_encoder"]


def require(path: Path) -> Path:
    """Skip the calling test with a clear message when shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set VISIONFM_DATA / VISIONFM_SHARED to run this test)")
    return path


def tiny_encoder(seed: int = 0, modality: str = "Fundus"):
    """A randomly initialised test-sized ViT (``vit_test``: depth 2, width 64, 32 px) with ``modality``'s facts."""
    from visionfm.checkpoints import random_encoder

    return random_encoder("vit_test", seed, modality)


def save_tiny_encoder(path: Path, seed: int = 0, modality: str = "Fundus") -> Path:
    """:func:`tiny_encoder` saved as visionfm safetensors at ``path``."""
    from visionfm.checkpoints import save_encoder

    save_encoder(tiny_encoder(seed, modality), path)
    return path
