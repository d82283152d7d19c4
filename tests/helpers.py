"""Paths of the shared real data and a skip helper, importable by every test module as ``tests.helpers``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("VISIONFM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = Path(os.environ.get("VISIONFM_DATA", SHARED / "data"))
FIXTURES = SHARED / "fixtures" / "visionfm-official-format"

__all__ = ["SHARED", "DATA", "FIXTURES", "require"]


def require(path: Path) -> Path:
    """Skip the calling test with a clear message when shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set VISIONFM_DATA / VISIONFM_SHARED to run this test)")
    return path
