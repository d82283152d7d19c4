"""Fixtures of the synthetic-image tests: small class folders, a tiny generator config, a headless browser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _disc(rng: np.random.Generator, size: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A fundus-like image: a noisy coloured disc on black, [size, size+8, 3] uint8 (not square on purpose)."""
    h, w = size, size + 8
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.45 * h) ** 2
    img = np.zeros((h, w, 3), np.float32)
    img[inside] = colour
    img += rng.normal(0, 12, img.shape) * inside[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def disc_folder(tmp_path) -> Path:
    """Eight 24x32 PNGs in two class folders (imagenet layout): red discs in a/, green discs in b/."""
    rng = np.random.default_rng(0)
    root = tmp_path / "discs"
    for c, colour in (("a", (200, 60, 30)), ("b", (40, 180, 60))):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(_disc(rng, 24, colour)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def tiny_overrides(tmp_path, disc_folder) -> dict:
    """Config overrides for a generator that trains in a fraction of a second per step on one core."""
    return dict(
        data=str(disc_folder),
        output=str(tmp_path / "run"),
        image_size=16,
        block_out_channels=[16, 32],
        attention_levels=[],
        layers_per_block=1,
        norm_num_groups=8,
        batch_size=4,
        steps=4,
        save_every=2,
        warmup_steps=2,
        num_train_timesteps=100,
        device="cpu",
        ema_decay=0.9,
    )
