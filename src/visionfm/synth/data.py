"""Images for the generator: one square preprocessing used for training, the Turing test and pixel comparisons.

Every image (real or synthetic) goes through :func:`square_image`, so a reader in the Turing test or a pixel
distance never sees a difference of size or aspect ratio that the generator did not make.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import ImageCollection, read_image, resize_image, scan

__all__ = [
    "GeneratorDataset",
    "TrainingData",
    "from_model_range",
    "load_square_images",
    "load_training_data",
    "read_square_uint8",
    "scan_sources",
    "square_image",
    "to_model_range",
]

log = logging.getLogger(__name__)


def square_image(img: np.ndarray, size: int, crop: str = "center") -> np.ndarray:
    """``[H, W, 3]`` image (uint8 or float [0, 1]) -> float32 ``[size, size, 3]`` in [0, 1].

    Args:
        crop: ``center`` takes the central square first (the fundus disc stays round); ``none`` squashes.
    """
    if crop == "center":
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    elif crop != "none":
        raise ValueError(f"crop {crop!r} not one of center, none")
    return resize_image(np.ascontiguousarray(img), (size, size))


def read_square_uint8(path: str | Path, size: int, crop: str = "center") -> Tensor:
    """Read one image and square it: uint8 ``[3, size, size]``."""
    arr = square_image(read_image(path), size, crop)
    return torch.from_numpy(np.round(arr * 255.0).astype(np.uint8)).permute(2, 0, 1)


def load_square_images(
    paths: list[Path], size: int, crop: str = "center", progress: bool = True, desc: str = "decode"
) -> Tensor:
    """Decode and square every image: uint8 ``[N, 3, size, size]``."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress)):
        out[i] = read_square_uint8(p, size, crop)
    return out


@dataclass
class TrainingData:
    """The training set as the generator sees it.

    Attributes:
        collection: the scanned images.
        labels: ``[N]`` int64 class indices; ``num_classes`` (the "no class" token) where the label is missing or
            the model is unconditional.
        num_classes: real classes (0 = unconditional).
        label_names: class names (folder names for the imagenet layout, else the indices as text).
        images: uint8 ``[N, 3, S, S]`` when cached in memory, else None.
    """

    collection: ImageCollection
    labels: Tensor
    num_classes: int
    label_names: list[str] = field(default_factory=list)
    images: Tensor | None = None


def _class_labels(coll: ImageCollection, num_classes: int, where: str) -> tuple[Tensor, int]:
    mat = coll.label_matrix()
    if mat.shape[1] == 0 or np.isnan(mat[:, 0]).all():
        raise ValueError(
            f"{where}: conditional training needs class labels, but the data has none (use the "
            "imagenet layout, a vfm label file or a manifest with a label column)"
        )
    col = mat[:, 0]
    known = col[~np.isnan(col)]
    if (known < 0).any() or (known != np.round(known)).any():
        bad = known[(known < 0) | (known != np.round(known))][:5]
        raise ValueError(f"{where}: class labels must be integers >= 0, found {bad.tolist()}")
    k = num_classes or int(known.max()) + 1
    if known.max() >= k:
        raise ValueError(f"{where}: label {int(known.max())} >= num_classes {k}")
    labels = np.where(np.isnan(col), k, col).astype(np.int64)  # missing label -> "no class" token
    return torch.from_numpy(labels), k


def scan_sources(
    data: str | Path | list, layout: str = "auto", split: str = "training", label_column: str | None = None
) -> ImageCollection:
    """Scan one folder/manifest, or several concatenated (e.g. DRIVE + CHASEDB1 + IDRiD training images)."""
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    if not sources or not all(sources):
        raise ValueError("no training data given (--data FOLDER_OR_MANIFEST [...])")
    colls = [scan(src, layout, split, [label_column] if label_column else None) for src in sources]
    if len(colls) == 1:
        return colls[0]
    names = colls[0].label_names if all(c.label_names == colls[0].label_names for c in colls) else []
    return ImageCollection(colls[0].root, [s for c in colls for s in c.samples], names, "multi")


def load_training_data(
    data: str | Path | list,
    layout: str = "auto",
    split: str = "training",
    label_column: str | None = None,
    conditional: bool = False,
    num_classes: int = 0,
    image_size: int = 64,
    crop: str = "center",
    cache: bool = True,
    progress: bool = True,
) -> TrainingData:
    """Scan ``data`` and (optionally) decode it into memory at ``image_size``."""
    coll = scan_sources(data, layout, split, label_column)
    if conditional:
        labels, k = _class_labels(coll, num_classes, str(data))
        names = coll.label_names if len(coll.label_names) == k else [str(i) for i in range(k)]
        log.info("%d images, %d classes: %s", len(coll), k, np.bincount(labels.numpy(), minlength=k + 1)[:k])
    else:
        labels, k, names = torch.zeros(len(coll), dtype=torch.int64), 0, []
    images = load_square_images([s.path for s in coll.samples], image_size, crop, progress) if cache else None
    return TrainingData(coll, labels, k, names, images)


class GeneratorDataset(Dataset):
    """Training items of the generator: ``(uint8 image [3, S, S], class index)``.

    Args:
        data: the training set (decoded in memory, or decoded here per item when ``data.images`` is None).
        size: square side.
        crop: see :func:`square_image`.
        repeats: how many times the set is listed per epoch, so that an epoch of a small set is long enough for
            the engine's per-epoch work (checkpoint) not to dominate; each image still appears equally often.
    """

    def __init__(self, data: TrainingData, size: int, crop: str = "center", repeats: int = 1) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.data, self.size, self.crop, self.repeats = data, size, crop, repeats
        self.n = len(data.labels)

    def __len__(self) -> int:
        return self.n * self.repeats

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        j = i % self.n
        if self.data.images is not None:
            return self.data.images[j], self.data.labels[j]
        return read_square_uint8(self.data.collection.samples[j].path, self.size, self.crop), self.data.labels[j]


def to_model_range(x: Tensor) -> Tensor:
    """uint8 ``[B, 3, S, S]`` -> float in [-1, 1] (the diffusion model's data range)."""
    return x.float().div(127.5).sub(1.0)


def from_model_range(x: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8, clamped."""
    return x.clamp(-1, 1).add(1.0).mul(127.5).round().to(torch.uint8)
