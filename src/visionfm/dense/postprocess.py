"""Post-processing of predicted masks: drop elongated components (vessel-like false positives of blob-like classes).

Dark lesions (haemorrhages) are blobs; the vessels a model confuses them with are long and thin. A connected
component's *elongation* is its area over that of its largest inscribed disc (``area / (pi r^2)``, ``r`` the
largest distance to the background): about 1 for a disc, ``4 L / (pi w)`` for a bar of length L and width w.
Components more elongated than a limit chosen on validation are removed (their probability set to 0, so the masks,
Dice and AUPR all see the edit). An option of ``segment predict`` (``--drop-elongated HE=6``), off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["drop_elongated", "elongation", "parse_elongation_limits"]


def elongation(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label the 8-connected components of ``mask`` ``[H, W]`` bool and measure each one's elongation.

    Returns:
        (labels ``[H, W]`` int32, 0 = background; elongation per component ``[N]`` float, index i = label i + 1).
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return labels.astype(np.int32), np.zeros(0)
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(mask, labels, idx)
    # distance to the nearest background pixel (pixel centres): a 1-px line has r = 1, a disc of radius R about R
    radius = ndimage.maximum(ndimage.distance_transform_edt(mask), labels, idx)
    return labels.astype(np.int32), np.asarray(area, float) / (np.pi * np.square(np.asarray(radius, float)))


def drop_elongated(prob: np.ndarray, threshold: float, limit: float) -> np.ndarray:
    """``prob`` ``[H, W]`` with every component of ``prob > threshold`` more elongated than ``limit`` set to 0."""
    labels, ratio = elongation(prob > threshold)
    if not (ratio > limit).any():
        return prob
    gone = np.concatenate([[False], ratio > limit])[labels]
    return np.where(gone, 0.0, prob).astype(prob.dtype, copy=False)


def parse_elongation_limits(specs: Sequence[str] | None, names: Sequence[str]) -> dict[int, float]:
    """``["HE=6"]`` -> ``{class index: limit}``; every problem names the entry.

    Raises:
        ValueError: not ``CLASS=LIMIT``, an unknown class, or a limit below 1 (a disc is 1).
    """
    out: dict[int, float] = {}
    for s in specs or []:
        name, sep, value = str(s).partition("=")
        if not sep or name not in names:
            raise ValueError(f"--drop-elongated {s!r}: expected CLASS=LIMIT with CLASS one of {list(names)}")
        try:
            limit = float(value)
        except ValueError:
            raise ValueError(f"--drop-elongated {s!r}: the limit must be a number") from None
        if limit < 1:
            raise ValueError(f"--drop-elongated {s!r}: a disc has elongation 1, so the limit must be >= 1")
        out[list(names).index(name)] = limit
    return out
