"""Dense-task data: pairing images with masks, reading and validating masks, and in-memory training sets.

Three mask styles, one internal form (a float target ``[K, H, W]`` with one channel per foreground class):

* ``binary``: one 0/v map per image (DRIVE, CHASE_DB1, OCTA), optionally with a field-of-view (FOV) mask;
* ``per-class``: one folder per class holding a 0/v map per image (IDRiD: ``MA/IDRiD_01_MA.tif``);
* ``labelmap``: one PNG per image with values 0..C-1 (0 = background) -> K = C-1 channels;
* ``nested``: a label map whose classes lie inside each other (ORIGA: 0 background, 1 optic disc, 2 cup) ->
  channel c = value >= c+1 (the disc channel holds the cup too), and prediction keeps every class inside the last.

The field of view (FOV) of an item is a given mask (a DRIVE-style ``mask`` folder or ``--fov DIR``), estimated
from the image (:func:`visionfm.dense.fov.estimate_fov`; fundus images without masks, or ``--fov estimate``), or
none (``--fov none``): :func:`item_fov`.

Images and label files are paired by name: equal stems, a label stem that extends the image stem
(``Image_01L`` / ``Image_01L_1stHO``), an image stem that extends the label stem (``G_2023`` / ``2023``), or the same
leading number (DRIVE ``21_training`` / ``21_manual1``). Every problem names the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import list_images
from ..data.images import IMAGE_EXTENSIONS

__all__ = [
    "MASK_KINDS",
    "DenseSpec",
    "SegItem",
    "item_fov",
    "load_target",
    "pair_files",
    "read_fov",
    "read_mask",
    "resolve_spec",
]

MASK_KINDS = ("binary", "per-class", "labelmap", "nested")


def _label_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _matches(img: str, lab: str) -> bool:
    if img == lab or lab.startswith((img + "_", img + "-")):
        return True
    if img.endswith(("_" + lab, "-" + lab)):
        return True
    m_i, m_l = re.match(r"(\d+)[_-]", img + "_"), re.match(r"(\d+)[_-]", lab + "_")
    return bool(m_i and m_l and m_i.group(1) == m_l.group(1))


def pair_files(images: Sequence[Path], folder: Path, what: str, required: bool = True) -> list[Path | None]:
    """For each image the one file in ``folder`` whose name matches it (see the module docstring).

    Raises:
        FileNotFoundError: missing folder, or an image without a matching file when ``required``.
        ValueError: an image matching several files.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    labels = _label_files(folder)
    out: list[Path | None] = []
    for img in images:
        hits = [p for p in labels if p.stem == img.stem] or [p for p in labels if _matches(img.stem, p.stem)]
        if len(hits) > 1:
            raise ValueError(f"{img}: several {what} files match: {', '.join(p.name for p in hits)}")
        if not hits and required:
            raise FileNotFoundError(f"{img}: no {what} file in {folder}")
        out.append(hits[0] if hits else None)
    return out


def read_mask(path: Path) -> np.ndarray:
    """Mask file -> integer array ``[H, W]`` in the file's own integer type (palette indices kept, 1-bit -> 0/1 uint8,
    grey RGB -> first channel, one colour on black -> 0/1; float files must hold whole numbers)."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read mask ({e})") from None
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not (rgb == rgb[..., :1]).all():  # one colour on black (IDRiD ships some red masks) -> 0/1
            fg = rgb.any(axis=-1)
            if not (rgb[fg] == rgb[fg][0]).all():
                raise ValueError(
                    f"{path}: colour mask with several colours; masks must be grey (0/255 maps or "
                    "class indices 0..C-1) or one colour on black"
                )
            return fg.view(np.uint8)
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{path}: mask holds fractional values; masks must be whole numbers")
        arr = arr.astype(np.int64)
    return arr


def _binary(arr: np.ndarray, path: Path) -> np.ndarray:
    """0/v map -> bool; anything else is an error naming the file (checked without a slow ``np.unique``)."""
    top = arr.max()
    if arr.min() < 0 or not ((arr == 0) | (arr == top)).all():
        vals = np.unique(arr)[:8].tolist()
        raise ValueError(f"{path}: a binary mask must hold 0 and one other value, found {vals}")
    return arr > 0


@dataclass
class SegItem:
    """One image with its label files."""

    image: Path
    masks: list[Path | None]  # one per class (binary / per-class), or [labelmap]
    fov: Path | None = None


@dataclass
class DenseSpec:
    """Where images, masks and FOV masks live and how masks encode classes.

    Attributes:
        images: image folder.
        masks: mask folder (per-class: a folder holding one sub-folder per class).
        kind: one of :data:`MASK_KINDS`.
        classes: foreground class names (per-class: the sub-folder names; labelmap: names of values 1..C-1).
        fov: optional FOV mask folder.
        resize_masks: allow masks of another size than the image (resampled by area, e.g. OCTA's 4x labels).
        estimate_fov: estimate the FOV of items without a given FOV mask.
    """

    images: Path
    masks: Path | None
    kind: str = "binary"
    classes: list[str] = field(default_factory=lambda: ["vessel"])
    fov: Path | None = None
    resize_masks: bool = False
    estimate_fov: bool = False

    def items(self, require_masks: bool = True) -> list[SegItem]:
        """Pair every image with its masks (optional FOV)."""
        if self.kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; valid: {', '.join(MASK_KINDS)}")
        imgs = list_images(self.images)
        if not imgs:
            raise FileNotFoundError(f"no images in {self.images}")
        if self.masks is None or not require_masks:
            masks = [[] for _ in imgs]
        elif self.kind == "per-class":
            # IDRiD ships empty placeholders, but a truly absent file is an error, not a silent empty mask.
            cols = [pair_files(imgs, self.masks / c, f"{c} mask") for c in self.classes]
            masks = [list(m) for m in zip(*cols)]
        else:
            masks = [[m] for m in pair_files(imgs, self.masks, "mask")]
        fovs = pair_files(imgs, self.fov, "FOV mask") if self.fov is not None else [None] * len(imgs)
        return [SegItem(i, m, f) for i, m, f in zip(imgs, masks, fovs)]


def _fit(arr: np.ndarray, size: tuple[int, int], path: Path, allow: bool) -> np.ndarray:
    """Map ``[H', W']`` -> ``[H, W]`` by area resampling when allowed; else a size error naming the file.

    A map of the right size is returned as it is (bool stays bool: the float copy of a 4288x2848 mask is made, if
    at all, after any shrinking).
    """
    if arr.shape == size:
        return arr
    if not allow:
        raise ValueError(
            f"{path}: mask size {arr.shape[1]}x{arr.shape[0]} differs from its image "
            f"{size[1]}x{size[0]} (use --resize-masks if the masks are at another resolution)"
        )
    return resize_map(arr.astype(np.float32), size)


def resize_map(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average (box) resize of a float map ``[H, W]`` -> ``size`` (H', W'); keeps thin structures as fractions.

    0/1 maps (masks) are resampled in 8 bits: ~14x faster on a 4288x2848 IDRiD mask than PIL's float mode (which
    made loading a lesion set take minutes), fractions exact to 1/510.
    """
    if arr.dtype == bool or ((arr == 0) | (arr == 1)).all():
        small = Image.fromarray(arr.astype(np.uint8) * np.uint8(255)).resize((size[1], size[0]), Image.BOX)
        return np.asarray(small, dtype=np.float32) / 255.0
    return np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BOX))


def load_target(
    item: SegItem, spec: DenseSpec, size: tuple[int, int], out_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks of one item, checked against its image size ``(H, W)``.

    Args:
        out_size: resample every class map to this (H', W') by area right after reading (training copies of
            very large images); None keeps ``size``.

    Returns:
        (target ``[K, H, W]`` (or ``[K, H', W']``) float32 in [0, 1], FOV ``[H, W]`` bool or None).
    """
    k = len(spec.classes)
    if spec.kind in ("labelmap", "nested"):
        path = item.masks[0]
        arr = read_mask(path)
        if arr.min() < 0 or arr.max() > k:
            raise ValueError(f"{path}: mask values {np.unique(arr)[:8].tolist()} outside the classes 0..{k}")
        hit = (lambda c: arr >= c + 1) if spec.kind == "nested" else (lambda c: arr == c + 1)
        maps = [_fit(hit(c), size, path, spec.resize_masks) for c in range(k)]
    else:
        maps = [_fit(_binary(read_mask(p), p), size, p, spec.resize_masks) for p in item.masks]
    if out_size is not None and tuple(out_size) != tuple(size):
        maps = [resize_map(m, out_size) for m in maps]
    return np.clip(np.stack(maps).astype(np.float32, copy=False), 0, 1), read_fov(item, size)


def read_fov(item: SegItem, size: tuple[int, int]) -> np.ndarray | None:
    """The item's field-of-view mask ``[H, W]`` bool (None without one); its size must be the image's."""
    if item.fov is None:
        return None
    f = _binary(read_mask(item.fov), item.fov)
    if f.shape != size:
        raise ValueError(f"{item.fov}: FOV size {f.shape[1]}x{f.shape[0]} differs from its image {size[1]}x{size[0]}")
    return f


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def resolve_spec(
    data: str | Path,
    split: str = "training",
    masks: str | None = None,
    fov: str | None = None,
    kind: str | None = None,
    classes: Sequence[str] | None = None,
    resize_masks: bool = False,
    fundus: bool = True,
) -> DenseSpec:
    """Find images/masks/FOV under ``data`` for the common layouts, with explicit overrides.

    Recognised: ``<data>/<split>/{images,1st_manual,mask}`` (DRIVE, CHASE_DB1), ``<data>/<split>_images`` +
    ``<data>/<split>_masks/<class>/`` (IDRiD, split "train"/"test"), ``<data>/{images,labels|masks}`` (OCTA, ORIGA or
    any plain pair of folders); ``data`` may also be the image folder itself when ``masks`` is given.

    Args:
        fov: a folder of FOV masks, "auto"/None (the DRIVE-style ``mask`` folder, else estimated when ``fundus``),
            "estimate" (always estimated) or "none".
        fundus: the images are fundus photographs (``auto`` estimates their FOV when no masks are given).
    """
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"data folder not found: {root}")
    base = root / split if (root / split).is_dir() else root
    images = _first_dir(base, ["images"]) or _first_dir(root, [f"{split}_images"]) or root
    mask_dir = (
        Path(masks)
        if masks
        else (_first_dir(base, ["1st_manual", "labels", "masks"]) or _first_dir(root, [f"{split}_masks"]))
    )
    mode = "auto" if fov is None else str(fov)
    fov_dir = None
    if mode == "auto":
        fov_dir = _first_dir(base, ["mask"]) if (base / "1st_manual").is_dir() else None
    elif mode not in ("estimate", "none"):
        fov_dir = Path(mode)
        if not fov_dir.is_dir():
            raise FileNotFoundError(f"--fov: FOV mask folder not found: {fov_dir} (or use auto, estimate, none)")
    if kind is None:
        kind = "per-class" if mask_dir is not None and any(p.is_dir() for p in mask_dir.iterdir()) else "binary"
    if classes is None:
        classes = sorted(p.name for p in mask_dir.iterdir() if p.is_dir()) if kind == "per-class" else ["vessel"]
    estimate = mode == "estimate" or (mode == "auto" and fundus)
    return DenseSpec(images, mask_dir, kind, list(classes), fov_dir, resize_masks, estimate)


def item_fov(item: SegItem, spec: DenseSpec, img: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The FOV ``[H, W]`` bool of one item and where it came from: "given", "estimated" or "none"."""
    from .fov import estimate_fov

    if item.fov is not None:
        return read_fov(item, img.shape[:2]), "given"
    if spec.estimate_fov:
        return estimate_fov(img), "estimated"
    return None, "none"
