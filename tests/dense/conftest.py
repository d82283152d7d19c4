"""Fixtures of the dense tests: a tiny DRIVE-style dataset (images, 0/255 vessel maps, FOV masks)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_drive_like(root: Path, n: int = 3, size: tuple[int, int] = (40, 36)) -> Path:
    """``root/training/{images,1st_manual,mask}`` with a dark 'vessel' line the model can learn."""
    rng = np.random.default_rng(0)
    h, w = size
    for sub in ("images", "1st_manual", "mask"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(120, 200, (h, w, 3), dtype=np.uint8)
        vessel = np.zeros((h, w), np.uint8)
        vessel[:, 10 + 3 * i : 13 + 3 * i] = 255
        img[vessel > 0] = 30
        fov = np.zeros((h, w), np.uint8)
        fov[2:-2, 2:-2] = 255
        Image.fromarray(img).save(root / "training" / "images" / f"{21 + i}_training.png")
        Image.fromarray(vessel).save(root / "training" / "1st_manual" / f"{21 + i}_manual1.gif")
        Image.fromarray(fov).save(root / "training" / "mask" / f"{21 + i}_training_mask.gif")
    return root


@pytest.fixture
def drive_like(tmp_path) -> Path:
    return make_drive_like(tmp_path / "drive")
