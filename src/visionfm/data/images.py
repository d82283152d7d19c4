"""Reading eye images of every common file type into one representation, and preprocessing them for a ViT.

Every reader returns an RGB ``uint8`` array ``[H, W, 3]`` when the source is 8-bit, or ``float32`` in [0, 1] when it
has more bits (16-bit TIFF/PNG, DICOM), so no precision is thrown away before resizing. Grey images are replicated
to three channels (as the official pipeline does with ``convert('RGB')``); RGBA is composited onto black, the
background of fundus, OCT and ultrasound images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "to_rgb", "resize_image", "Preprocess"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom", ".ppm",
                              ".webp"})


class ImageReadError(ValueError):
    """An image file is missing, unreadable or of an unsupported kind; the message names the file."""


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


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom  # imported lazily: only DICOM users pay for it

    try:
        ds = pydicom.dcmread(str(path))
        px = ds.pixel_array
    except Exception as e:  # pydicom raises many types for corrupt files
        raise ImageReadError(f"{path}: unreadable DICOM ({type(e).__name__}: {e})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(f"{path}: multi-frame DICOM ({frames} frames); export the frames as single images")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        px = px.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0)
        lo, hi = float(px.min()), float(px.max())
        px = (px - lo) / max(hi - lo, 1e-12)
        if photometric == "MONOCHROME1":  # 0 is white
            px = 1.0 - px
        return to_rgb(px.astype(np.float32), path)
    if photometric != "RGB":
        from pydicom.pixels import convert_color_space

        px = convert_color_space(px, photometric, "RGB")
    return to_rgb(px if px.dtype == np.uint8 else _scale_to_unit(px), path)


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported image file as RGB.

    Returns:
        ``[H, W, 3]`` uint8 for 8-bit sources, float32 in [0, 1] for deeper ones.

    Raises:
        ImageReadError: missing file, unknown extension, or undecodable content (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageReadError(f"{path}: unsupported image type {ext!r}; supported: {sorted(IMAGE_EXTENSIONS)}")
    if ext in (".dcm", ".dicom"):
        return _read_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from None
    arr = to_rgb(arr, path)
    return arr if arr.dtype == np.uint8 else _scale_to_unit(arr)


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize to ``(height, width)`` with PIL, as the official torchvision pipeline does.

    uint8 images go through PIL's 8-bit path (bit-identical to ``transforms.Resize`` on a PIL image); float images
    are resized channel by channel in PIL's 32-bit float mode.

    Returns:
        float32 ``[h, w, 3]`` in [0, 1].
    """
    h, w = size
    if img.dtype == np.uint8:
        out = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
        return out
    chans = [np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize((w, h), Image.BICUBIC))
             for c in range(img.shape[-1])]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


class Preprocess:
    """Image array -> normalised tensor ``[3, S, S]``: square bicubic resize, scale to [0, 1], normalise.

    Args:
        size: output side in pixels (a multiple of the patch size).
        mean: per-channel mean.
        std: per-channel std.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: np.ndarray) -> Tensor:
        x = torch.from_numpy(resize_image(img, (self.size, self.size))).permute(2, 0, 1)
        return (x - self.mean) / self.std
