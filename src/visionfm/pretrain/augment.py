"""Multi-crop views as in the official ``DataAugmentationiBOT``, split where each part runs best.

Geometry (per image, in the data workers): RandomResizedCrop with torchvision's sampling rule (10 tries, then a
centre crop clamped to the ratio range), bicubic resampling with PIL, horizontal flip p 0.5. Randomness comes from
a per-sample ``numpy`` generator, so crops depend only on (seed, epoch, index), never on workers or resumes.

Photometry (per batch, on the training device, :func:`photometric`), official defaults: colour jitter (brightness
0.4, contrast 0.4, saturation 0.2, hue 0.1, in a random order per image) with p 0.8, grayscale p 0.2, Gaussian blur
(sigma 0.1-2 px at 224 px, scaled with the crop side) with the view's probability (1.0 for global view 1, 0.1 for
the others, 0.5 for local views), solarisation (threshold 128/255) with the view's probability (0.2 on global view
2), then normalisation with each image's modality statistics. Every strength and probability is a
:class:`ViewSpec` field (``view_specs`` builds them from a config), because colour invariance is not always wanted:
disease grades can live in the colours the jitter teaches an encoder to ignore. Parameters come from torch's global
generator, which the trainer checkpoints, so a resumed run draws the same values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "GLOBAL_VIEWS",
    "LOCAL_VIEW",
    "ViewSpec",
    "crop_box",
    "crop_resize",
    "normalize",
    "photometric",
    "view_specs",
]


@dataclass(frozen=True)
class ViewSpec:
    """Photometric augmentation of one view.

    Attributes:
        blur_p, solarize_p: probabilities of Gaussian blur and solarisation.
        jitter: colour-jitter strengths (brightness, contrast, saturation, hue): factors are drawn from
            U(1 - s, 1 + s) for the first three and the hue shift from U(-s, s).
        jitter_p: probability of colour jitter.
        grayscale_p: probability of grayscale conversion.
    """

    blur_p: float
    solarize_p: float
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2


GLOBAL_VIEWS = (ViewSpec(1.0, 0.0), ViewSpec(0.1, 0.2))  # global view 1, then every further global view
LOCAL_VIEW = ViewSpec(0.5, 0.0)


def view_specs(
    jitter: Sequence[float], jitter_p: float, grayscale_p: float, blur_p: Sequence[float], solarize_p: Sequence[float]
) -> tuple[ViewSpec, ViewSpec, ViewSpec]:
    """Specs of global view 1, the further global views and the local views.

    ``blur_p`` and ``solarize_p`` hold one probability per kind of view, in that order (official: blur 1.0, 0.1,
    0.5 and solarisation 0, 0.2, 0).
    """
    j = tuple(float(v) for v in jitter)
    return tuple(
        ViewSpec(float(b), float(s), j, float(jitter_p), float(grayscale_p))  # type: ignore[return-value]
        for b, s in zip(blur_p, solarize_p)
    )


def crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """RandomResizedCrop box ``(top, left, h, w)`` with torchvision's sampling rule."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(
    img: Image.Image, size: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """One random resized crop with flip p 0.5: RGB PIL image -> ``[size, size, 3]`` uint8."""
    top, left, h, w = crop_box(img.height, img.width, scale, ratio, rng)
    out = np.asarray(img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h)))
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


# -- photometry on batches ------------------------------------------------------------------------------------------
def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` of ``[B, 3, H, W]``."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    return (f.view(-1, 1, 1, 1) * a + (1 - f.view(-1, 1, 1, 1)) * b).clamp(0, 1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack(
        [torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0
    )  # [6, B, 3, H, W]
    return table.gather(0, i.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)).squeeze(0)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + f.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv).clamp(0, 1)


_JITTER = (
    lambda x, f: _blend(x, torch.zeros_like(x), f),  # brightness
    lambda x, f: _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), f),  # contrast
    lambda x, f: _blend(x, _gray(x), f),  # saturation
    _hue,
)


def _blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur with one sigma per image; ``[B, 3, H, W]``, reflect padding."""
    b, c, h, w = x.shape
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, 2r+1]
    pad = min(radius, h - 1, w - 1)
    k = k[:, radius - pad : radius + pad + 1]
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    return y.reshape(b, c, h, w)


def photometric(x: Tensor, spec: ViewSpec, generator: torch.Generator | None = None) -> Tensor:
    """Random photometric augmentation of one view of a batch.

    Args:
        x: ``[B, 3, H, W]`` float in [0, 1] (any device).
        spec: the view's jitter strengths and blur, solarisation, jitter and grayscale probabilities.
        generator: CPU generator for the random parameters (default: torch's global one).

    Returns:
        ``[B, 3, H, W]`` float in [0, 1].
    """
    b, dev = x.shape[0], x.device

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return (torch.rand(b, *shape, generator=generator) * (hi - lo) + lo).to(dev, x.dtype)

    bs, cs, ss, hs = spec.jitter
    jitter = torch.rand(b, generator=generator) < spec.jitter_p
    factors = torch.stack([u(1 - bs, 1 + bs), u(1 - cs, 1 + cs), u(1 - ss, 1 + ss), u(-hs, hs)], 1)  # [B, 4]
    order = torch.argsort(torch.rand(b, 4, generator=generator), dim=1)  # a random op order per image
    gray = torch.rand(b, generator=generator) < spec.grayscale_p
    blur = torch.rand(b, generator=generator) < spec.blur_p
    sigma = u(0.1, 2.0) * (x.shape[-1] / 224.0)
    solar = torch.rand(b, generator=generator) < spec.solarize_p
    x = x.clone()
    for k in range(4):
        for op in range(4):
            idx = torch.nonzero(jitter & (order[:, k] == op)).flatten().to(dev)
            if idx.numel():
                x[idx] = _JITTER[op](x[idx], factors[idx, op])
    if gray.any():
        idx = torch.nonzero(gray).flatten().to(dev)
        x[idx] = _gray(x[idx]).expand(-1, 3, -1, -1)
    if blur.any():
        idx = torch.nonzero(blur).flatten().to(dev)
        radius = max(1, math.ceil(3 * 2.0 * x.shape[-1] / 224.0))
        x[idx] = _blur(x[idx], sigma[idx], radius)
    if solar.any():
        idx = torch.nonzero(solar).flatten().to(dev)
        x[idx] = torch.where(x[idx] >= 128 / 255, 1.0 - x[idx], x[idx])
    return x


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-image normalisation: ``x [B, 3, H, W]``, ``mean``/``std`` ``[B, 3]``."""
    return (x - mean[:, :, None, None].to(x.dtype)) / std[:, :, None, None].to(x.dtype)
