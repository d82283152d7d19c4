"""Per-iteration schedules (pure functions), as in DINO/iBOT: linear warm-up then half-cosine."""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_schedule", "linear_warmup_then_constant"]


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Values for steps ``0 .. total_steps-1``: linear ``warmup_start -> base`` over ``warmup_steps``, then a
    half-cosine from ``base`` to ``final`` over the rest.

    Returns:
        ``[total_steps]`` float64.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = min(max(warmup_steps, 0), total_steps)
    warm = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.array([])
    n = total_steps - warmup_steps
    t = np.arange(n) / max(n, 1)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([warm, cos])


def linear_warmup_then_constant(start: float, end: float, warmup_steps: int, total_steps: int) -> np.ndarray:
    """``start -> end`` linearly over ``warmup_steps``, then ``end`` (e.g. the iBOT teacher temperature)."""
    warmup_steps = min(warmup_steps, total_steps)
    return np.concatenate([np.linspace(start, end, warmup_steps), np.full(total_steps - warmup_steps, end)])
