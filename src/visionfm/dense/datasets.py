"""In-memory training sets for segmentation and landmarks at a fixed square input size.

Images are decoded once and kept resized (a fundus image of 4288x2848 is read in ~0.3 s; re-reading it every step
would dominate a CPU run); augmentation (:class:`JointAugment`) and normalisation run per step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from ..data import read_image, resize_image
from .data import DenseSpec, SegItem, item_fov, load_target
from .fov import fov_edge
from .landmarks import gaussian_heatmaps, scale_points
from .transforms import JointAugment, prepare_image

__all__ = ["LandmarkDataset", "SegmentationDataset", "as_rgb8", "load_rgb01", "select", "to_rgb01", "working_size"]

log = logging.getLogger(__name__)


def select(seq: Sequence, subset: str | None) -> list:
    """Python-style slice ``"a:b"`` (or a count ``"n"`` = first n) of a sorted item list; None keeps all."""
    if not subset:
        return list(seq)
    try:
        parts = [int(p) if p else None for p in subset.split(":")] if ":" in subset else [None, int(subset)]
    except ValueError:
        raise ValueError(f"--subset {subset!r}: expected 'n' or 'start:end'") from None
    out = list(seq)[slice(*parts[:2])]
    if not out:
        raise ValueError(f"--subset {subset!r} selects no images out of {len(seq)}")
    return out


def working_size(hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(H, W) scaled down (aspect kept) so the longer side is at most ``max_side``; unchanged when None or smaller."""
    h, w = hw
    if not max_side or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def load_rgb01(path: Path, size: int | None, max_side: int | None = None) -> tuple[Tensor, tuple[int, int]]:
    """Image file -> (float ``[3, h, w]`` in [0, 1], original (H, W)); see :func:`to_rgb01`."""
    img = read_image(path)
    return to_rgb01(img, size, max_side), img.shape[:2]


def to_rgb01(img: np.ndarray, size: int | None, max_side: int | None = None) -> Tensor:
    """``[H, W, 3]`` image (uint8 or float in [0, 1]) -> float ``[3, h, w]`` in [0, 1].

    ``size`` S gives ``[3, S, S]``; None keeps the native resolution, or scales it down to ``max_side`` (aspect
    kept, see :func:`working_size`).
    """
    hw = img.shape[:2]
    out = (size, size) if size is not None else working_size(hw, max_side)
    if out == hw:
        arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    else:
        arr = resize_image(img, out)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def as_rgb8(img: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 or float in [0, 1] -> uint8 (for overlays and plots)."""
    return img if img.dtype == np.uint8 else (img * 255).round().astype(np.uint8)


def random_crop(sample: dict[str, Tensor], crop: int, around: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """The same random ``crop x crop`` window of every map in ``sample`` (zero-padded if the image is smaller).

    With ``around`` (y, x) the window is drawn among those that contain that pixel (foreground oversampling).
    """
    h, w = sample["image"].shape[-2:]
    ph, pw = max(0, crop - h), max(0, crop - w)
    out = {k: torch.nn.functional.pad(v, (0, pw, 0, ph)) for k, v in sample.items()}
    ly, lx = h + ph - crop, w + pw - crop  # largest top-left corner
    if around is None:
        y, x = int(torch.randint(0, ly + 1, ())), int(torch.randint(0, lx + 1, ()))
    else:
        y = min(ly, max(0, around[0] - int(torch.randint(0, crop, ()))))
        x = min(lx, max(0, around[1] - int(torch.randint(0, crop, ()))))
    return {k: v[:, y : y + crop, x : x + crop] for k, v in out.items()}


def _thin(pts: Tensor, limit: int) -> Tensor:
    return pts[:: max(1, len(pts) // limit)].to(torch.int32)


def _foreground(target: Tensor, limit: int = 20000) -> list[Tensor]:
    """Per class, up to ``limit`` (y, x) pixels where the soft mask is >= 0.5 (evenly thinned), as ``[N, 2]``."""
    return [_thin((t >= 0.5).nonzero(), limit) for t in target]


def hard_negatives(
    green: np.ndarray, fov: np.ndarray, target: np.ndarray, size: int = 15, top: float = 0.05, limit: int = 20000
) -> Tensor:
    """Pixels of unlabelled dark thin structures (vessels): windows around them are hard negatives for dark lesions.

    A black top-hat (greyscale closing minus the image, ``size`` x ``size``) of the green channel is large on
    structures darker than their surround and narrower than ``size``; its top ``top`` fraction inside the FOV
    (eroded by ``size`` so the FOV's own edge is not the structure), minus every labelled pixel dilated by
    ``size // 2``, is kept.

    Args:
        green: ``[H, W]`` float (the model input's green channel).
        fov: ``[H, W]`` bool.
        target: ``[K, H, W]`` soft masks.

    Returns:
        up to ``limit`` (y, x) pixels ``[N, 2]`` int32 (evenly thinned; empty when nothing qualifies).
    """
    from scipy import ndimage

    g = np.where(fov, green, green[fov].mean() if fov.any() else 0).astype(np.float32)
    tophat = ndimage.grey_closing(g, size=(size, size)) - g
    inside = ndimage.binary_erosion(fov, np.ones((size, size), bool))
    if not inside.any():
        return torch.zeros((0, 2), dtype=torch.int32)
    cut = np.quantile(tophat[inside], 1 - top)
    near_label = ndimage.binary_dilation((target >= 0.5).any(0), np.ones((size // 2 * 2 + 1,) * 2, bool))
    keep = inside & (tophat >= cut) & (tophat > 1e-6) & ~near_label  # >= : ties at the cut count; flat: none
    return _thin(torch.from_numpy(np.argwhere(keep)), limit)


class _Normalise:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class _Repeat(Dataset):
    """Few-shot sets shorter than a batch repeat (each pass differently augmented) so an epoch holds one batch."""

    min_length: int = 0

    def __len__(self) -> int:
        return max(len(self.images), self.min_length)


class SegmentationDataset(_Repeat):
    """Items -> dicts ``{'image' [3,S,S] normalised, 'target' [K,S,S] float, 'valid' [1,S,S] float, 'fov'}``.

    ``min_length`` repeats a few-shot set up to that length (e.g. the batch size). With ``crop`` the images stay
    at their native resolution (or are scaled down to ``max_side``) and every sample is a random ``crop x crop``
    window (``size`` is ignored); with probability ``fg_crop`` the window is placed around a pixel of a class the
    image holds (classes drawn uniformly), so rare lesions are seen (nnU-Net's foreground oversampling), with
    probability ``border_crop`` around the edge of the field of view, and with probability ``hard_crop`` around an
    unlabelled dark thin structure (:func:`hard_negatives`: vessels, which dark lesions are confused with).

    The field of view (given or estimated, :func:`~visionfm.dense.data.item_fov`) zeroes the target outside it and
    the loss counts every pixel: the black surround is learned as background, so a model meets no unseen border at
    prediction. ``whole=True`` (validation) returns whole images at the working size, unaugmented, with their FOV.
    ``fov_diameter`` and ``contrast`` prepare every image as prediction does (:func:`~.transforms.prepare_image`).
    """

    def __init__(
        self,
        items: Sequence[SegItem],
        spec: DenseSpec,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: JointAugment | None = None,
        min_length: int = 0,
        crop: int | None = None,
        max_side: int | None = None,
        fg_crop: float = 0.0,
        border_crop: float = 0.0,
        whole: bool = False,
        fov_diameter: int | None = None,
        contrast: str = "none",
        hard_crop: float = 0.0,
    ) -> None:
        self.augment, self.norm, self.min_length, self.crop = augment, _Normalise(mean, std), min_length, crop
        self.fg_crop, self.border_crop, self.hard_crop, self.whole = fg_crop, border_crop, hard_crop, whole
        self.images, self.targets, self.valid, self.fg, self.edges, self.fovs = [], [], [], [], [], []
        self.hard: list[Tensor] = []
        self.fov_sources: list[str] = []
        for it in tqdm(items, desc="loading images", leave=False):
            raw = read_image(it.image)
            fov, source = item_fov(it, spec, raw)
            img, f = prepare_image(raw, fov, None if crop else size, max_side, fov_diameter, contrast)
            f = f.numpy()
            out = tuple(img.shape[-2:])
            target, _ = load_target(it, spec, raw.shape[:2], out)
            self.images.append(img)
            self.targets.append(torch.from_numpy(target * f[None]))
            self.valid.append(torch.ones((1, *out)))
            self.fovs.append(torch.from_numpy(f))
            self.fov_sources.append(source)
            self.fg.append([f for f in _foreground(self.targets[-1]) if len(f)] if crop and fg_crop else [])
            self.edges.append(torch.from_numpy(fov_edge(f)) if crop and border_crop else torch.zeros((0, 2)))
            hard = crop and hard_crop
            self.hard.append(hard_negatives(img[1].numpy(), f, target) if hard else torch.zeros((0, 2)))
        log.info(
            "loaded %d images %s; field of view: %s",
            len(self.images),
            f"(random {crop}-px crops)" if crop else f"at {size} px",
            ", ".join(f"{s} {self.fov_sources.count(s)}" for s in sorted(set(self.fov_sources))),
        )

    def _around(self, i: int) -> tuple[int, int] | None:
        """A pixel the next window must contain: a labelled one, one on the FOV edge, a hard negative, or None."""
        u = float(torch.rand(()))
        if self.fg[i] and u < self.fg_crop:
            pts = self.fg[i][int(torch.randint(0, len(self.fg[i]), ()))]
        elif len(self.edges[i]) and u < self.fg_crop + self.border_crop:
            pts = self.edges[i]
        elif len(self.hard[i]) and u < self.fg_crop + self.border_crop + self.hard_crop:
            pts = self.hard[i]
        else:
            return None
        return tuple(int(v) for v in pts[int(torch.randint(0, len(pts), ()))].tolist())

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        i %= len(self.images)
        s = {"image": self.images[i], "target": self.targets[i], "valid": self.valid[i]}
        if self.whole:
            return {**s, "image": self.norm(s["image"]), "fov": self.fovs[i]}
        if self.crop:
            s = random_crop(s, self.crop, self._around(i))
        if self.augment is not None:
            s = self.augment(s)
        s["image"] = self.norm(s["image"])
        return s


class LandmarkDataset(_Repeat):
    """Images + ``[N, K, 2]`` original-pixel landmarks -> ``{'image', 'heatmap' [K,S,S], 'points' [K,2] (input px)}``.

    Raises:
        ValueError: a landmark outside its image (names the file).
    """

    def __init__(
        self,
        images: Sequence[Path],
        points: np.ndarray,
        size: int,
        sigma: float,
        mean: Sequence[float],
        std: Sequence[float],
        augment: JointAugment | None = None,
        min_length: int = 0,
    ) -> None:
        self.augment, self.norm, self.sigma, self.size = augment, _Normalise(mean, std), sigma, size
        self.min_length = min_length
        self.images, self.points = [], []
        for path, pts in tqdm(list(zip(images, points)), desc="loading images", leave=False):
            img, (h, w) = load_rgb01(path, size)
            bad = (pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > h - 0.5)
            if bad.any():
                raise ValueError(f"{path}: landmark {pts[bad][0].tolist()} lies outside the {w}x{h} image")
            self.images.append(img)
            self.points.append(torch.from_numpy(scale_points(pts, (h, w), (size, size))).float())

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        i %= len(self.images)
        s = {"image": self.images[i], "points": self.points[i]}
        if self.augment is not None:
            s = self.augment(s)
        s["heatmap"] = gaussian_heatmaps(s["points"], (self.size, self.size), self.sigma)
        s["image"] = self.norm(s["image"])
        return s
