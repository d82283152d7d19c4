"""Reading eye images of every common file type into one representation, and preprocessing them for a ViT.

Every reader returns an RGB ``uint8`` array ``[H, W, 3]`` when the source is 8-bit, or ``float32`` in [0, 1] when it
has more bits (16-bit TIFF/PNG, DICOM), so no precision is thrown away before resizing. Grey images are replicated
to three channels (as the official pipeline does with ``convert('RGB')``); RGBA is composited onto black, the
background of fundus, OCT and ultrasound images.

Decompression bombs (a small file that decodes to billions of pixels) are refused before decoding: the pixel limit
is ``VISIONFM_MAX_PIXELS`` (default 178,956,970, PIL's own hard limit; set it higher for very large montages) or the
``max_pixels`` argument, and the error is an :class:`ImageReadError` naming the file, so pretraining skips the file
like any corrupt image.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "ImageReadError",
    "Preprocess",
    "check_pixels",
    "decode_image",
    "pixel_limit",
    "read_image",
    "resize_image",
    "to_rgb",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom", ".ppm", ".webp"}
)


DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
# Resampling filters by name. The official pipelines differ: feature extraction (evaluation/extract_features.py)
# resizes bilinear (its transforms.Resize default), fine-tuning evaluates bicubic, pretraining crops bicubic.
INTERPOLATIONS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "nearest": Image.NEAREST,
}
_PIL_HARD_LIMIT = 2 * 89_478_485  # PIL raises DecompressionBombError above twice its MAX_IMAGE_PIXELS default


class ImageReadError(ValueError):
    """An image file is missing, unreadable or of an unsupported kind; the message names the file."""


def pixel_limit(override: int | None = None) -> int:
    """The decompression-bomb limit: ``override``, else ``$VISIONFM_MAX_PIXELS``, else 178,956,970.

    Raises:
        ValueError: the setting is not a positive integer.
    """
    if override is not None:
        value, where = override, "max_pixels"
    else:
        raw = os.environ.get("VISIONFM_MAX_PIXELS", "").strip()
        if not raw:
            return _PIL_HARD_LIMIT
        where = "VISIONFM_MAX_PIXELS"
        try:
            value = int(float(raw))
        except ValueError:
            raise ValueError(f"{where}={raw!r} is not a number of pixels") from None
    if value <= 0:
        raise ValueError(f"{where} must be a positive number of pixels, got {value}")
    return int(value)


def check_pixels(n: int, name: str, limit: int) -> None:
    """Refuse an image of ``n`` pixels above ``limit`` (a decompression bomb), naming the file and the limit."""
    if n > limit:
        raise ImageReadError(
            f"{name}: {n:,} pixels exceed the limit of {limit:,} (a decompression bomb?); raise "
            f"VISIONFM_MAX_PIXELS if the image is genuine"
        )


def to_rgb(arr: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Grey ``[H, W]``/``[H, W, 1]``, RGB or RGBA array -> ``[H, W, 3]`` (same dtype; alpha composited on black)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ImageReadError(f"{path}: expected a 2-D image, got an array of shape {arr.shape}")
    c = arr.shape[-1]
    if c == 1:
        return np.repeat(arr, 3, axis=-1)
    if c == 2:  # grey + alpha
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=-1), arr[..., 1:]], axis=-1)
        c = 4
    if c == 4:
        scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
        alpha = arr[..., 3:].astype(np.float32) / scale
        out = arr[..., :3].astype(np.float32) * alpha
        return np.round(out).astype(arr.dtype) if arr.dtype != np.float32 else out
    if c == 3:
        return arr
    raise ImageReadError(f"{path}: unsupported number of channels {c}")


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer/float array of any depth -> float32 in [0, 1] (uint8 is kept as is by callers)."""
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype.kind in "iu":
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return arr if lo >= 0 and hi <= 1 else (arr - lo) / max(hi - lo, 1e-12)


def _decode_pil(fp: str | Path | BinaryIO, name: str, limit: int, draft: int | None) -> np.ndarray:
    """Decode with PIL after checking the pixel count from the header (before any pixel is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(fp) as im:
                check_pixels(im.width * im.height, name, limit)
                if draft and im.format == "JPEG":  # DCT-domain downscale: decodes 2-8x fewer pixels
                    im.draft("RGB", (draft, draft))
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGB")
                elif im.mode == "1":
                    im = im.convert("L")
                arr = np.array(im)
    except Image.DecompressionBombError as e:  # not an OSError: PIL's own limit, when ours is higher
        raise ImageReadError(
            f"{name}: decompression bomb refused by PIL ({e}); the limit is {limit:,} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f"{name}: cannot decode image ({e})") from None
    arr = to_rgb(arr, name)
    return arr if arr.dtype == np.uint8 else _scale_to_unit(arr)


def read_image(path: str | Path, *, max_pixels: int | None = None, draft: int | None = None) -> np.ndarray:
    """Read any supported image file as RGB.

    Args:
        path: the image file (PNG, JPEG, TIFF, BMP, GIF, PPM, WebP, or a single-frame DICOM).
        max_pixels: decompression-bomb limit (default :func:`pixel_limit`).
        draft: for JPEG only, let the decoder downscale by a power of two while both sides stay >= ``draft``
            (fast: reads fewer coefficients; the pixels differ slightly from a full decode, so off by default).

    Returns:
        ``[H, W, 3]`` uint8 for 8-bit sources, float32 in [0, 1] for deeper ones.

    Raises:
        ImageReadError: missing file, unknown extension, undecodable content, too many pixels, or a multi-frame
            DICOM (read it with :func:`visionfm.data.dicom.read_dicom` or as a volume); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}" if not path.is_dir() else f"{path}: is a folder, not an image")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageReadError(f"{path}: unsupported image type {ext!r}; supported: {sorted(IMAGE_EXTENSIONS)}")
    limit = pixel_limit(max_pixels)
    if ext in DICOM_EXTENSIONS:
        from .dicom import read_dicom  # lazily: only DICOM users pay for pydicom

        return read_dicom(path, max_pixels=limit).single_frame()
    return _decode_pil(path, str(path), limit, draft)


def decode_image(
    data: bytes, name: str = "<upload>", *, max_pixels: int | None = None, draft: int | None = None
) -> np.ndarray:
    """Decode an image (any PIL format, or DICOM: detected by its ``DICM`` marker) from bytes, as :func:`read_image`.

    ``name`` is used in error messages (an upload's file name); ``draft``: JPEG only, as in :func:`read_image`.
    """
    limit = pixel_limit(max_pixels)
    if (len(data) >= 132 and data[128:132] == b"DICM") or name.lower().endswith(tuple(DICOM_EXTENSIONS)):
        from .dicom import read_dicom

        return read_dicom(data, name=name, max_pixels=limit).single_frame()
    return _decode_pil(io.BytesIO(data), name, limit, draft)


def _filter(interpolation: str) -> int:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[interpolation]


def resize_image(img: np.ndarray, size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """Resize to ``(height, width)`` with PIL, as the official torchvision pipelines do on PIL images.

    uint8 images go through PIL's 8-bit path (bit-identical to torchvision's ``Resize`` on a PIL image with the
    same filter); float images are resized channel by channel in PIL's 32-bit float mode.

    Args:
        interpolation: one of :data:`INTERPOLATIONS` (``bicubic``: fine-tuning and pretraining; ``bilinear``: the
            official feature extraction).

    Returns:
        float32 ``[h, w, 3]`` in [0, 1].
    """
    h, w = size
    if h <= 0 or w <= 0:
        raise ValueError(f"resize size must be positive, got {size}")
    flt = _filter(interpolation)
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize((w, h), flt), dtype=np.float32) / 255.0
    chans = [
        np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize((w, h), flt))
        for c in range(img.shape[-1])
    ]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


class Preprocess:
    """Image array -> normalised tensor ``[3, S, S]``: square resize, scale to [0, 1], normalise.

    Args:
        size: output side in pixels (a multiple of the patch size).
        mean: per-channel mean.
        std: per-channel std.
        interpolation: resampling filter (see :data:`INTERPOLATIONS`); bicubic by default, bilinear for the
            official feature-extraction pipeline.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], interpolation: str = "bicubic") -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        _filter(interpolation)
        self.size, self.interpolation = size, interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def describe(self) -> dict:
        """What this preprocessing does, recorded with features."""
        return {
            "resize": [self.size, self.size],
            "interpolation": self.interpolation,
            "scale": "1/255",
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
        }

    def __call__(self, img: np.ndarray) -> Tensor:
        x = torch.from_numpy(resize_image(img, (self.size, self.size), self.interpolation)).permute(2, 0, 1)
        return (x - self.mean) / self.std
