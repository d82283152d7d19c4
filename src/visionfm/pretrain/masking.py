"""Patch masks for masked-image modelling: BEiT block masking and random masking, as the official iBOT loader.

Per image a prediction ratio is drawn (one of ``pred_ratio``, jittered uniformly by ``pred_ratio_var``); block
masking then adds rectangles of random area (at least ``(min(rows, cols) // 3) ** 2`` patches) and log-uniform
aspect ratio in ``[aspect_min, 1 / aspect_min]`` until the ratio is reached or no rectangle fits (10 tries each).
All randomness comes from the ``numpy.random.Generator`` passed in, so masks are a pure function of the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["block_mask", "make_mask", "random_mask", "sample_pred_ratio"]


def sample_pred_ratio(ratios: Sequence[float], variances: Sequence[float], rng: np.random.Generator) -> float:
    """One prediction ratio: each ratio ``r`` jittered to ``U(r - v, r + v)``, then one of them chosen uniformly.

    Args:
        ratios: candidate ratios, e.g. ``[0.0, 0.3]``.
        variances: half-widths, one per ratio (0: no jitter), e.g. ``[0.0, 0.2]``.
        rng: random source.
    """
    drawn = [rng.uniform(r - v, r + v) if v > 0 else float(r) for r, v in zip(ratios, variances)]
    return float(drawn[0] if len(drawn) == 1 else drawn[rng.integers(len(drawn))])


def block_mask(rows: int, cols: int, ratio: float, rng: np.random.Generator, aspect_min: float = 0.3) -> np.ndarray:
    """BEiT-style block mask covering about ``ratio * rows * cols`` patches.

    Returns:
        ``[rows, cols]`` bool, True = masked.
    """
    mask = np.zeros((rows, cols), dtype=bool)
    goal = ratio * rows * cols
    low = (min(rows, cols) // 3) ** 2
    log_aspect = (math.log(aspect_min), math.log(1.0 / aspect_min))
    count = 0
    while count < goal:
        room = goal - count
        added = 0
        for _ in range(10):
            area = rng.uniform(low, room) if room > low else rng.uniform(room, low)
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if w < cols and h < rows:
                top, left = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
                window = mask[top : top + h, left : left + w]
                new = h * w - int(window.sum())
                if 0 < new <= room:
                    window[...] = True
                    added = new
            if added:
                break
        if not added:
            break
        count += added
    return mask


def random_mask(rows: int, cols: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``int(ratio * rows * cols)`` patches masked at random positions; ``[rows, cols]`` bool."""
    flat = np.zeros(rows * cols, dtype=bool)
    flat[: int(ratio * rows * cols)] = True
    return rng.permutation(flat).reshape(rows, cols)


def make_mask(
    rows: int,
    cols: int,
    ratios: Sequence[float],
    variances: Sequence[float],
    rng: np.random.Generator,
    shape: str = "block",
    aspect_min: float = 0.3,
) -> np.ndarray:
    """Draw a ratio for one image and mask it; ``[rows, cols]`` bool."""
    ratio = sample_pred_ratio(ratios, variances, rng)
    if ratio <= 0:
        return np.zeros((rows, cols), dtype=bool)
    if shape == "block":
        return block_mask(rows, cols, ratio, rng, aspect_min)
    if shape == "rand":
        return random_mask(rows, cols, ratio, rng)
    raise ValueError(f"unknown mask shape {shape!r}; valid: block, rand")
