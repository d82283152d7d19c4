"""What every phantom generator returns, and the drawing helpers they share (numpy + PIL only, no noise images).

Conventions: images are ``[H, W, 3]`` uint8; masks ``[H, W]`` bool; points ``(x, y)`` in pixels with pixel centres at
integer coordinates (the top-left pixel's centre is (0, 0)), the convention of :mod:`visionfm.dense.landmarks`.
Polygons are drawn with PIL, whose pixel (i, j) covers the point (j, i), so a point drawn at (x, y) lands in the pixel
``(round(y), round(x))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "Phantom",
    "blur",
    "draw_mask",
    "ellipse_mask",
    "paint",
    "smooth_field",
    "speckle",
    "square_size",
    "to_uint8",
]


@dataclass
class Phantom:
    """One generated image with its ground truth.

    Attributes:
        image: ``[H, W, 3]`` uint8.
        masks: structure name -> ``[H, W]`` bool (exactly the pixels the structure was drawn on).
        points: landmark name -> (x, y) pixels.
        labels: label name -> int (class index, grade or 0/1 flag).
        targets: regression target name -> float, measured on the drawn image.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)


def square_size(size: int) -> int:
    """Validate an image side (the generators draw square images)."""
    if int(size) < 32:
        raise ValueError(f"phantom size must be at least 32 pixels, got {size}")
    return int(size)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int = 6) -> np.ndarray:
    """Smooth random texture in [0, 1], ``[H, W]`` float32: a ``cells x cells`` grid upsampled bicubically.

    Cheap (one small resize) and low-frequency, like illumination and choroidal texture, unlike pixel noise.
    """
    h, w = shape
    grid = rng.random((cells, cells)).astype(np.float32)
    out = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def draw_mask(shape: tuple[int, int], fn: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    """Run PIL drawing calls ``fn(draw)`` on an empty ``[H, W]`` canvas (fill with 255) and return it as bool."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    fn(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 127


def ellipse_mask(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """Filled (rotated) ellipse ``[H, W]`` bool, evaluated at pixel centres (sub-pixel centre and radii)."""
    out = np.zeros(shape, bool)
    r = max(rx, ry, 0.5) + 1
    y0, y1 = max(0, int(np.floor(cy - r))), min(shape[0], int(np.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(np.floor(cx - r))), min(shape[1], int(np.ceil(cx + r)) + 1)
    if y0 >= y1 or x0 >= x1:
        return out
    # evaluate only the bounding box: lesions are small and there are many of them
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    out[y0:y1, x0:x1] = (u / max(rx, 0.5)) ** 2 + (v / max(ry, 0.5)) ** 2 <= 1.0
    return out


def paint(img: np.ndarray, mask: np.ndarray, colour: Sequence[float], alpha: float | np.ndarray = 1.0) -> None:
    """Blend ``colour`` (RGB in [0, 1]) into float image ``img [H, W, 3]`` where ``mask`` (bool or [0, 1] weights)."""
    w = mask.astype(np.float32) * alpha
    img += (np.asarray(colour, np.float32) - img) * w[..., None]


def speckle(rng: np.random.Generator, img: np.ndarray, looks: float = 6.0) -> np.ndarray:
    """Multiplicative gamma speckle (the statistics of coherent imaging: OCT, ultrasound), mean 1."""
    noise = rng.gamma(looks, 1.0 / looks, size=img.shape[:2]).astype(np.float32)
    return img * noise[..., None] if img.ndim == 3 else img * noise


def blur(img: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float image ``[H, W, 3]`` in [0, 1] (PIL works in 8 bits here; phantoms are 8-bit anyway)."""
    if radius <= 0:
        return img
    out = Image.fromarray(to_uint8(img)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(out, dtype=np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (clipped, rounded)."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
