"""Field of view (FOV) of a fundus photograph, estimated when the data set ships no FOV masks.

A fundus camera images a bright disc on a black surround. Most data sets (IDRiD, ORIGA, a clinic's own folders)
give no FOV mask, and a model that never saw the surround may mark it as vessel or lesion. The estimate:

1. work on a copy whose longer side is at most 512 px (the border is smooth; full 4288x2848 is not needed);
2. take ``max(red, luminance)`` per pixel: the red channel is the brightest of a fundus, luminance covers grey
   images (FFA, red-free);
3. smooth it with a Gaussian (sigma 1% of the longer side) so vessels, JPEG noise and dark lesions do not cut holes
   or leak;
4. threshold at ``max(floor, rel * p99)`` — a fraction of the bright level (robust to exposure) with an absolute
   floor above the black of JPEG surrounds;
5. keep the largest connected component (drops text overlays and reflections in the corners) and fill its holes
   (a dark macula or haemorrhage inside the disc stays inside);
6. resize back to the image's size (nearest neighbour).

If nothing, or almost everything (> 99.5%), passes the threshold the whole image is the FOV (no dark surround:
OCT, cropped images), so the estimate never removes a real image area it cannot see an edge for.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["estimate_fov", "fov_diameter", "fov_edge"]


def _work_copy(img: np.ndarray, max_side: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 or float in [0, 1] -> float32 ``[h, w, 3]`` in [0, 1], longer side <= ``max_side``."""
    arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    h, w = arr.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        arr = np.stack([np.asarray(Image.fromarray(arr[..., c]).resize(size, Image.BOX)) for c in range(3)], -1)
    return arr[..., :3]


def estimate_fov(
    img: np.ndarray, rel: float = 0.15, floor: float = 0.04, sigma: float = 0.01, max_side: int = 512
) -> np.ndarray:
    """Estimated field of view of a fundus image (see the module docstring for the method).

    Args:
        img: ``[H, W, 3]`` uint8, or float in [0, 1].
        rel: threshold as a fraction of the 99th percentile of the smoothed brightness.
        floor: lowest threshold (brightness in [0, 1]).
        sigma: Gaussian sigma as a fraction of the longer side of the working copy.
        max_side: longer side of the working copy.

    Returns:
        ``[H, W]`` bool.
    """
    h, w = img.shape[:2]
    arr = _work_copy(img, max_side)
    lum = arr @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = ndimage.gaussian_filter(np.maximum(arr[..., 0], lum), sigma=max(1.0, sigma * max(arr.shape[:2])))
    mask = bright > max(floor, rel * float(np.percentile(bright, 99)))
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones((h, w), bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if mask.mean() > 0.995:
        return np.ones((h, w), bool)
    if mask.shape != (h, w):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
    return mask


def fov_edge(fov: np.ndarray, width: int = 3) -> np.ndarray:
    """Pixels ``[N, 2]`` (y, x) within ``width`` px inside the boundary of an FOV ``[H, W]`` (none for a full FOV)."""
    if fov.all():
        return np.zeros((0, 2), np.int64)
    inner = ndimage.binary_erosion(fov, iterations=width, border_value=1)
    return np.argwhere(fov & ~inner)


def fov_diameter(fov: np.ndarray | None, shape: tuple[int, int] | None = None) -> float:
    """Diameter in pixels of a field of view ``[H, W]``: the larger extent of its bounding box.

    Cameras crop the round FOV at the top and bottom (DRIVE, IDRiD) or nowhere (CHASE_DB1), rarely left and right,
    so the larger of width and height is the disc's diameter. No FOV (None, or ``fov`` empty / all true): the longer
    side of ``shape`` (or of ``fov``), i.e. the image itself.
    """
    if fov is None or not fov.any() or fov.all():
        hw = shape if shape is not None else (fov.shape if fov is not None else None)
        if hw is None:
            raise ValueError("fov_diameter needs a FOV mask or an image shape")
        return float(max(hw))
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
