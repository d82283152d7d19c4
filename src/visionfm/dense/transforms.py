"""Image preparation (scale by field of view, contrast) and joint augmentation of image, masks, FOV and landmarks.

:func:`prepare_image` turns a decoded image and its field of view into the model's input, identically at training
and prediction: the image is rescaled so its FOV is ``fov_diameter`` pixels across (vessel widths in pixels then
match across cameras and resolutions) and its contrast optionally normalised (:func:`normalise_contrast`).

One affine matrix in pixel coordinates (pixel centres at integers) moves everything: images and soft masks are
resampled bilinearly, the field of view by nearest neighbour, and landmarks are multiplied by the same matrix, so
a landmark stays on the pixel its heatmap peaks on. Flips and 90-degree rotations are exact permutations of pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..data import resize_image
from .config import CONTRAST_MODES, GREY_MODES, contrast_channels, contrast_parts
from .fov import fov_diameter

__all__ = [
    "CONTRAST_MODES",
    "JointAugment",
    "affine_matrix",
    "contrast_channels",
    "input_stats",
    "normalise_contrast",
    "prepare_image",
    "warp",
    "working_shape",
]


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


def working_shape(
    hw: tuple[int, int], max_side: int | None = None, diameter: float | None = None, fov_diameter: int | None = None
) -> tuple[int, int]:
    """(H, W) of the model's input for an image of ``hw`` (aspect kept).

    ``fov_diameter`` scales the image by ``fov_diameter / diameter`` (its FOV's diameter, :func:`fov_diameter`), up
    or down; otherwise ``max_side`` only scales large images down so the longer side is ``max_side``.
    """
    h, w = hw
    if fov_diameter and diameter:
        s = fov_diameter / diameter
    elif max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
    else:
        return h, w
    return max(1, round(h * s)), max(1, round(w * s))


def _standardise(x: Tensor, inside: Tensor, mean: float = 0.5, sd: float = 0.2) -> Tensor:
    """Each channel of ``[C, H, W]`` shifted and scaled so its pixels inside ``inside`` have ``mean`` and ``sd``."""
    if not inside.any():
        return x
    v = x[:, inside]
    return (x - v.mean(1)[:, None, None]) / v.std(1).clamp_min(1e-3)[:, None, None] * sd + mean


def _clahe(ch: Tensor, inside: Tensor, clip: float, grid: int) -> Tensor:
    """CLAHE of one channel ``[H, W]`` in [0, 1], the outside filled with the inside's mean (no black-edge tiles)."""
    from kornia.enhance import equalize_clahe

    g = (grid, grid) if min(ch.shape) > 2 * grid else (1, 1)
    ch = torch.where(inside, ch, ch[inside].mean() if inside.any() else ch.mean())
    return equalize_clahe(ch[None, None].contiguous(), clip, g)[0, 0]


def normalise_contrast(x: Tensor, fov: Tensor | None, mode: str = "none", clip: float = 2.0, grid: int = 8) -> Tensor:
    """Contrast normalisation of ``[3, H, W]`` in [0, 1]; zero outside ``fov`` ``[H, W]`` bool (if given).

    Fundus sets differ in exposure, colour and illumination (CHASE_DB1 is darker and uneven next to DRIVE). Every
    mode but ``none`` ends by standardising each channel inside the FOV to mean 0.5 and sd 0.2 (clipped to [0, 1]),
    so a model trained on one set sees another in the same range:

    * ``standardize``: only that;
    * ``clahe``: first CLAHE (tiles of ``H/grid x W/grid``, clip limit ``clip``) on the lightness of CIE Lab, colour
      kept: local contrast evened out across the eye (vessels in a dark periphery as in a bright centre);
    * ``green_clahe``: CLAHE on the green channel (the vessels' best contrast), as a grey image in all channels.

    Modes joined by ``+`` (``standardize+green_clahe``) stack their views as channels, ``[C, H, W]`` with C =
    :func:`contrast_channels` (a grey view gives one channel there): bright lesions keep their colour while dark
    ones get the local contrast of CLAHE, in one model.

    CLAHE's tiles see the surround filled with the FOV's mean, so the black border does not skew the edge of the eye.
    """
    parts = contrast_parts(mode)
    if len(parts) > 1:
        return torch.cat([_one_view(x, fov, p, clip, grid, grey=True) for p in parts])
    return _one_view(x, fov, mode, clip, grid)


def _one_view(x: Tensor, fov: Tensor | None, mode: str, clip: float, grid: int, grey: bool = False) -> Tensor:
    """One contrast mode of ``[3, H, W]`` (see :func:`normalise_contrast`); ``grey`` keeps a grey view 1-channel."""
    if mode == "none":
        return x
    inside = torch.ones(x.shape[-2:], dtype=torch.bool) if fov is None else fov.bool()
    if mode == "green_clahe":
        x = _clahe(x[1], inside, clip, grid)[None]
        x = x if grey else x.expand(3, -1, -1)
    elif mode == "clahe":
        from kornia.color import lab_to_rgb, rgb_to_lab

        lab = rgb_to_lab(x[None])[0]
        light = _clahe(lab[0] / 100.0, inside, clip, grid)
        x = lab_to_rgb(torch.cat([light[None] * 100.0, lab[1:]])[None])[0]
    return (_standardise(x, inside) * inside).clamp(0, 1).contiguous()


def input_stats(mean: list[float], std: list[float], contrast: str) -> tuple[list[float], list[float]]:
    """Per-channel normalisation (mean, std) of the model input: the modality's RGB ``mean``/``std`` per colour
    view, its green channel's for a grey view of a stack (:func:`contrast_channels` entries each)."""
    parts = contrast_parts(contrast)
    if len(parts) == 1:
        return list(mean), list(std)
    pick = [[1] if p in GREY_MODES else [0, 1, 2] for p in parts]
    return [mean[i] for ix in pick for i in ix], [std[i] for ix in pick for i in ix]


def prepare_image(
    img: np.ndarray,
    fov: np.ndarray | None,
    size: int | None = None,
    max_side: int | None = None,
    fov_diameter_px: int | None = None,
    contrast: str = "none",
) -> tuple[Tensor, Tensor]:
    """A decoded image and its FOV -> the model's input ``[C, h, w]`` in [0, 1] and the FOV ``[h, w]`` bool.

    C is 3 unless ``contrast`` stacks views (:func:`contrast_channels`).

    Args:
        img: ``[H, W, 3]`` uint8, or float in [0, 1].
        fov: ``[H, W]`` bool, or None (every pixel counts).
        size: S resizes to ``S x S``; None keeps the native resolution (see :func:`working_shape`).
        max_side: scale large images down so the longer side is at most this (``size`` None only).
        fov_diameter_px: rescale so the FOV is this many pixels across (``size`` None only; wins over ``max_side``).
        contrast: a :data:`CONTRAST_MODES` name (:func:`normalise_contrast`, computed after the rescale).
    """
    hw = img.shape[:2]
    if size is not None:
        out = (size, size)
    else:
        d = fov_diameter(fov, hw) if fov_diameter_px else None
        out = working_shape(hw, max_side, d, fov_diameter_px)
    if out == hw:
        arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    else:
        arr = resize_image(img, out)
    x = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()
    if fov is None:
        f = torch.ones(out, dtype=torch.bool)
    elif fov.shape == out:
        f = torch.from_numpy(fov.astype(bool))
    else:  # nearest neighbour keeps the mask binary at any scale (box averaging would need a threshold)
        small = Image.fromarray(fov.astype(np.uint8) * 255).resize(out[::-1], Image.NEAREST)
        f = torch.from_numpy(np.asarray(small) > 127)
    return normalise_contrast(x, f if fov is not None else None, contrast), f
