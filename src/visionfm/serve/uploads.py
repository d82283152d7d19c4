"""Uploaded bytes -> an RGB image array, through the project's image reader, with limits checked first.

Decoding is :func:`visionfm.data.images.decode_image`, the reader every other command uses (PIL formats and DICOM,
recognised by content; grey / RGBA / 16-bit handling; DICOM photometric interpretations and compressed transfer
syntaxes). Its pixel limit is checked from the header before any pixel is decoded, so a small file claiming a huge
image (a decompression bomb) is refused (413) without allocating it. Whatever a client sends ends as an
:class:`UploadError` naming the file, never another exception.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Upload", "UploadError", "decode_upload", "decode_volume_upload"]


class UploadError(ValueError):
    """An upload that cannot be used; ``status`` is the HTTP status to answer with (400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """A decoded upload: its name, the RGB image ``[H, W, 3]`` (uint8, or float32 in [0, 1]) and, for DICOM, the
    object's facts (laterality, pixel spacing in mm, SOP class, modality, transfer syntax; JSON-ready)."""

    filename: str
    image: np.ndarray
    dicom: dict | None = None

    @property
    def frames(self) -> int:
        """B-scans of a volume upload (``image`` then holds ``[N, H, W, 3]``); 1 for an image."""
        return int(self.image.shape[0]) if self.image.ndim == 4 else 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image (of each B-scan for a volume)."""
        return int(self.image.shape[-2]), int(self.image.shape[-3])


def _too_large(message: str) -> bool:
    return "decompression bomb" in message or "exceed the limit" in message


def decode_upload(data: bytes, name: str, max_pixels: int) -> Upload:
    """Check and decode one uploaded file (image or single-frame DICOM) with the project's reader.

    Raises:
        UploadError: empty, not an image, undecodable, multi-frame, or more than ``max_pixels`` pixels (413).
    """
    from ..data.images import decode_image

    name = Path(name or "upload").name or "upload"
    if not data:
        raise UploadError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncated-file and EXIF warnings: real decode errors still raise
            img = decode_image(data, name, max_pixels=max_pixels)
    except (ValueError, EOFError) as e:  # ImageReadError names the file and what is wrong
        msg = str(e).splitlines()[0] if str(e) else f"{name}: cannot decode ({type(e).__name__})"
        raise UploadError(msg, 413 if _too_large(msg) else 400) from None
    except (OSError, MemoryError, RuntimeError, TypeError, AttributeError, IndexError, KeyError) as e:
        # corrupt files can trip decoders in odd ways; the client hears about its file, the service goes on
        raise UploadError(f"{name}: cannot decode ({type(e).__name__}: {e})") from None
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
        raise UploadError(f"{name}: decoded to an unusable array of shape {tuple(img.shape)}")
    return Upload(name, img, _dicom_facts(data, name))


def _dicom_facts(data: bytes, name: str) -> dict | None:
    """What a DICOM upload says about the eye and the pixels (read from its header), or None for other files."""
    if data[128:132] != b"DICM" and not name.lower().endswith((".dcm", ".dicom")):
        return None
    from ..data.dicom import dicom_header

    facts = dicom_header(data, name)
    keep = ("laterality", "pixel_spacing", "sop_class", "modality", "transfer_syntax", "photometric")
    return {k: facts.get(k) for k in keep}


def decode_volume_upload(data: bytes, name: str, max_pixels: int) -> Upload:
    """An OCT volume upload: a multi-frame DICOM (``image`` ``[N, H, W, 3]``); a single image is a one-B-scan volume.

    Raises:
        UploadError: as :func:`decode_upload`; the pixel limit counts every frame.
    """
    name = Path(name or "upload").name or "upload"
    if not data:
        raise UploadError(f"{name}: empty file")
    if data[128:132] != b"DICM" and not name.lower().endswith((".dcm", ".dicom")):
        one = decode_upload(data, name, max_pixels)
        return Upload(one.filename, one.image[None], one.dicom)
    from ..data.dicom import read_dicom

    try:
        d = read_dicom(data, name, max_pixels=max_pixels)
    except (ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else f"{name}: cannot decode ({type(e).__name__})"
        raise UploadError(msg, 413 if _too_large(msg) else 400) from None
    except (OSError, MemoryError, RuntimeError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise UploadError(f"{name}: cannot decode ({type(e).__name__}: {e})") from None
    return Upload(name, d.frames, _dicom_facts(data, name))
