"""Joint geometric augmentation keeping image, masks, field of view and landmarks aligned.

One affine matrix in pixel coordinates (pixel centres at integers) moves everything: images and soft masks are
resampled bilinearly, the field of view by nearest neighbour, and landmarks are multiplied by the same matrix, so
a landmark stays on the pixel its heatmap peaks on. Flips and 90-degree rotations are exact permutations of pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["JointAugment", "affine_matrix", "warp"]


def affine_matrix(
    size: tuple[int, int],
    angle: float = 0.0,
    scale: float = 1.0,
    translate: tuple[float, float] = (0, 0),
    hflip: bool = False,
    vflip: bool = False,
) -> Tensor:
    """3x3 matrix mapping input pixel (x, y, 1) to output pixel, about the image centre.

    Args:
        size: (H, W).
        angle: counter-clockwise rotation in degrees as seen on screen (y points down).
        scale: zoom factor (> 1 enlarges).
        translate: (dx, dy) pixels.
        hflip: mirror left-right (applied first).
        vflip: mirror top-bottom (applied first).
    """
    h, w = size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = math.radians(angle)
    cos, sin = round(math.cos(a), 12), round(math.sin(a), 12)  # exact 0/1 at multiples of 90 degrees
    flip = torch.diag(torch.tensor([-1.0 if hflip else 1.0, -1.0 if vflip else 1.0, 1.0], dtype=torch.float64))
    # y points down, so a screen-counter-clockwise rotation is [[cos, sin], [-sin, cos]].
    rot = torch.tensor([[cos * scale, sin * scale, 0], [-sin * scale, cos * scale, 0], [0, 0, 1]], dtype=torch.float64)
    to_c = torch.tensor([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=torch.float64)
    back = torch.tensor([[1, 0, cx + translate[0]], [0, 1, cy + translate[1]], [0, 0, 1]], dtype=torch.float64)
    return back @ rot @ flip @ to_c


def warp(x: Tensor, matrix: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample ``[C, H, W]`` so that input pixel p lands on output pixel ``matrix @ p`` (zeros outside)."""
    _, h, w = x.shape
    inv = torch.linalg.inv(matrix)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inv.T  # [H, W, 3] source pixels
    gx = 2 * pts[..., 0] / max(w - 1, 1) - 1
    gy = 2 * pts[..., 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).to(x.dtype if x.is_floating_point() else torch.float32)
    out = F.grid_sample(x.unsqueeze(0).float(), grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0].to(x.dtype)


def warp_points(points: Tensor, matrix: Tensor) -> Tensor:
    """``[K, 2]`` (x, y) -> the same points after ``matrix``."""
    homo = torch.cat([points.double(), torch.ones_like(points[:, :1]).double()], dim=1)
    return (homo @ matrix.T)[:, :2].to(points.dtype)


@dataclass
class JointAugment:
    """Random flips, rotation, zoom, shift and brightness/contrast, applied jointly to a sample dict.

    The sample holds ``image`` ``[3, H, W]`` in [0, 1] and optionally ``target`` ``[K, H, W]`` (soft masks),
    ``valid`` ``[1, H, W]`` (field of view) and ``points`` ``[K, 2]``; every present key is transformed.
    """

    hflip: float = 0.5
    vflip: float = 0.0
    degrees: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1

    def __call__(self, sample: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        def u(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator))

        h, w = sample["image"].shape[-2:]
        m = affine_matrix(
            (h, w),
            u(-self.degrees, self.degrees),
            u(*self.scale),
            (u(-self.translate, self.translate) * w, u(-self.translate, self.translate) * h),
            u(0, 1) < self.hflip,
            u(0, 1) < self.vflip,
        )
        return apply(sample, m, 1 + u(-self.brightness, self.brightness), 1 + u(-self.contrast, self.contrast))


def apply(sample: dict[str, Tensor], matrix: Tensor, brightness: float = 1.0, contrast: float = 1.0) -> dict:
    """Apply one affine ``matrix`` to every key of ``sample`` (see :class:`JointAugment`), then intensity changes."""
    out = dict(sample)
    img = warp(sample["image"], matrix)
    mean = img.mean()
    out["image"] = ((img - mean) * contrast + mean * brightness).clamp(0, 1)
    if "target" in sample:
        out["target"] = warp(sample["target"], matrix).clamp(0, 1)
    if "valid" in sample:
        out["valid"] = warp(sample["valid"], matrix, mode="nearest")
    if "points" in sample:
        out["points"] = warp_points(sample["points"], matrix)
    return out
