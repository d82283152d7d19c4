"""Landmarks: float Gaussian heatmaps, sub-pixel decoding, exact coordinate mapping through resizes, label files.

Convention: a landmark is ``(x, y)`` in pixels with pixel centres at integer coordinates (the top-left pixel's
centre is (0, 0)). Resizing a W-wide image to W' maps ``x -> (x + 0.5) * W'/W - 0.5``, which is exactly how
bilinear/area resizing moves image content, so coordinates survive any resize without rounding.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "argmax_subpixel",
    "centre_of_mask",
    "gaussian_heatmaps",
    "heatmap_from_logits",
    "read_landmarks",
    "scale_points",
    "soft_argmax",
    "write_landmarks",
]


def gaussian_heatmaps(points: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Float Gaussian heatmaps (peak 1 at the sub-pixel landmark; never rounded).

    Args:
        points: ``[K, 2]`` (x, y) pixels.
        size: (H, W).
        sigma: standard deviation in pixels.

    Returns:
        ``[K, H, W]`` float32.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    h, w = size
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    px = points[:, 0].float().view(-1, 1, 1)
    py = points[:, 1].float().view(-1, 1, 1)
    return torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))


def heatmap_from_logits(logits: Tensor) -> Tensor:
    """Spatial-softmax logits ``[B, K, H, W]`` -> float heatmaps with peak 1 (``softmax / max = exp(l - max)``)."""
    return torch.exp(logits.float() - logits.float().amax(dim=(-2, -1), keepdim=True))


def scale_points(points: np.ndarray | Tensor, from_size: tuple[int, int], to_size: tuple[int, int]):
    """Map ``[..., 2]`` (x, y) points from an (H, W) image to its resized (H', W') version (pixel-centre exact)."""
    sx = to_size[1] / from_size[1]
    sy = to_size[0] / from_size[0]
    out = points.clone().float() if isinstance(points, Tensor) else np.asarray(points, dtype=np.float64).copy()
    out[..., 0] = (out[..., 0] + 0.5) * sx - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * sy - 0.5
    return out


def _parabola_offset(lm: Tensor, l0: Tensor, lp: Tensor) -> Tensor:
    """Vertex of the parabola through (-1, lm), (0, l0), (1, lp); exact for log-Gaussians."""
    denom = lm - 2 * l0 + lp
    off = 0.5 * (lm - lp) / torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, -1e-12))
    return off.clamp(-1.5, 1.5)


def argmax_subpixel(heatmaps: Tensor) -> Tensor:
    """Argmax with sub-pixel refinement: a parabola fit to the log-heatmap around the peak in x and in y.

    For a Gaussian heatmap the log is an exact parabola, so the refined peak is exact, also at the border
    (where the parabola goes through the peak's two inner neighbours).

    Args:
        heatmaps: ``[B, K, H, W]``.

    Returns:
        ``[B, K, 2]`` (x, y) pixels.
    """
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    idx = flat.argmax(-1)
    iy, ix = idx // w, idx % w
    hm = heatmaps.float()
    # Shift so the peak is positive before the log; tiny floor keeps log finite.
    hm = hm - hm.amin(dim=(-2, -1), keepdim=True) + 1e-6
    log = hm.log()

    def at(y: Tensor, x: Tensor) -> Tensor:
        return log.reshape(b, k, -1).gather(-1, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1))[..., 0]

    # Fit around the peak, or around its inner neighbour at the border (the parabola is exact either way).
    cx, cy = ix.clamp(1, max(w - 2, 1)), iy.clamp(1, max(h - 2, 1))
    dx = _parabola_offset(at(iy, cx - 1), at(iy, cx), at(iy, cx + 1)) if w >= 3 else torch.zeros_like(ix).float()
    dy = _parabola_offset(at(cy - 1, ix), at(cy, ix), at(cy + 1, ix)) if h >= 3 else torch.zeros_like(iy).float()
    cx, cy = (cx, cy) if w >= 3 and h >= 3 else (ix, iy)
    return torch.stack([cx.float() + dx, cy.float() + dy], dim=-1)


def soft_argmax(heatmaps: Tensor, radius: int | None = None) -> Tensor:
    """Expected coordinates under the heatmap normalised to a distribution (integral regression).

    Negative values are clipped to zero. With ``radius`` only a ``(2r+1)^2`` window around the argmax counts,
    which removes the pull of background noise towards the image centre; a window of about 3 sigma makes the
    estimate unbiased for a Gaussian peak (a spatial softmax with a large temperature would alias instead).

    Args:
        heatmaps: ``[B, K, H, W]``.
        radius: window half-size in pixels, or None for the whole map.

    Returns:
        ``[B, K, 2]`` (x, y) pixels.
    """
    b, k, h, w = heatmaps.shape
    p = heatmaps.float().clamp_min(0)
    xs = torch.arange(w, dtype=p.dtype, device=p.device).view(1, 1, 1, w)
    ys = torch.arange(h, dtype=p.dtype, device=p.device).view(1, 1, h, 1)
    if radius is not None:
        idx = heatmaps.reshape(b, k, -1).argmax(-1)
        cy, cx = (idx // w).view(b, k, 1, 1), (idx % w).view(b, k, 1, 1)
        p = p * (((xs - cx).abs() <= radius) & ((ys - cy).abs() <= radius))
    p = p / p.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return torch.stack([(p * xs).sum((-2, -1)), (p * ys).sum((-2, -1))], dim=-1)


def _from_npy(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """Official heatmap file -> ``[K, 2]`` sub-pixel peaks in the pixels of an ``image_size`` (H, W) image.

    The official VisionFM labels are ``[H, W, K]`` (channels last, K small); ``[K, H, W]`` and ``[H, W]`` are
    accepted too, at any float or integer precision (values are read as float32, never rounded). Channels-last
    is recognised by a last axis shorter than both others. Heatmaps at another size than their image are decoded
    at their own size and mapped exactly onto the image (:func:`scale_points`).
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read heatmap array ({e})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"{path}: heatmap array must be numeric [H, W, K], [K, H, W] or [H, W], got {arr.dtype} {arr.shape}"
        )
    if arr.shape[-1] < min(arr.shape[:2]):
        arr = arr.transpose(2, 0, 1)
    hm = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    empty = (hm.flatten(1).amax(1) <= 0).nonzero().flatten().tolist()
    if empty:  # what the official integer cast leaves of a landmark after resizing
        raise ValueError(f"{path}: heatmap channel(s) {empty} have no positive value: the landmark is lost")
    pts = argmax_subpixel(hm[None])[0].double().numpy()
    return scale_points(pts, tuple(arr.shape[1:]), image_size)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read image header ({e})") from None


def _read_csv(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 3 or (len(rows[0]) - 1) % 2:
        raise ValueError(f"{path}: header must be 'image,<name>_x,<name>_y,...'")
    header = rows[0]
    names = [header[i][:-2] if header[i].endswith("_x") else f"landmark{i // 2}" for i in range(1, len(header), 2)]
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path} line {n}: {len(row)} fields, expected {len(header)}")
        try:
            out[row[0]] = np.array([float(v) for v in row[1:]], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise ValueError(f"{path} line {n}: non-numeric coordinate in {row[1:]}") from None
    return out, names


def _read_json(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{image: [[x, y], ...]}} or {{image: {{name: [x, y]}}}}")
    out, names = {}, None
    for img, pts in data.items():
        if isinstance(pts, dict):
            names = names or list(pts)
            pts = [pts[n] for n in names]
        arr = np.asarray(pts, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"{path}: landmarks of {img!r} must be a list of [x, y], got shape {arr.shape}")
        out[img] = arr
    k = len(next(iter(out.values()))) if out else 0
    return out, names or [f"landmark{i}" for i in range(k)]


def read_landmarks(source: str | Path, images: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """Landmarks for ``images`` from a CSV, a JSON file or a folder of ``<image stem>.npy`` heatmaps.

    Returns:
        (``[N, K, 2]`` (x, y) pixels in each image's own resolution, landmark names).

    Raises:
        FileNotFoundError: missing label file or image entry (named).
    """
    source = Path(source)
    if source.is_dir():
        pts = []
        for p in images:
            f = source / f"{p.stem}.npy"
            if not f.is_file():
                raise FileNotFoundError(f"missing landmark heatmap {f} for image {p}")
            pts.append(_from_npy(f, _image_size(p)))
        return np.stack(pts), [f"landmark{i}" for i in range(pts[0].shape[0])]
    if not source.is_file():
        raise FileNotFoundError(f"landmark file not found: {source}")
    table, names = _read_json(source) if source.suffix.lower() == ".json" else _read_csv(source)
    out = []
    for p in images:
        key = p.name if p.name in table else p.stem
        if key not in table:
            raise FileNotFoundError(f"{source}: no landmarks for image {p.name}")
        out.append(table[key])
    return np.stack(out), names


def write_landmarks(path: str | Path, names: Sequence[str], images: Sequence[str], points: np.ndarray) -> None:
    """Write ``[N, K, 2]`` points as ``image,<name>_x,<name>_y,...`` CSV."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image"] + [f"{n}_{a}" for n in names for a in ("x", "y")])
        for img, pts in zip(images, points):
            w.writerow([img] + [f"{v:.3f}" for v in np.asarray(pts).reshape(-1)])


def centre_of_mask(mask: np.ndarray, where: str = "<mask>") -> np.ndarray:
    """Centroid (x, y) of a binary mask ``[H, W]`` (e.g. the optic disc) in pixel-centre coordinates."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError(f"{where}: empty mask has no centre")
    return np.array([xs.mean(), ys.mean()], dtype=np.float64)
