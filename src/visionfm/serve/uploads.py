"""Uploaded bytes -> an RGB image array, through the project's image reader, with limits checked first.

Decoding is :func:`visionfm.data.images.decode_image`, the reader every other command uses (PIL formats and DICOM,
recognised by content; grey / RGBA / 16-bit handling; DICOM photometric interpretations and compressed transfer
syntaxes). Its pixel limit is checked from the header before any pixel is decoded, so a small file claiming a huge
image (a decompression bomb) is refused (413) without allocating it. Whatever a client sends ends as an
:class:`UploadError` naming the file, never another exception.
"""

from __future__ import annotations

import io
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Upload", "UploadError", "decode_upload", "decode_volume_upload", "stack_bscans"]


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
    full_size: tuple[int, int] | None = None  # (width, height) of the file when ``image`` was draft-decoded smaller

    @property
    def frames(self) -> int:
        """B-scans of a volume upload (``image`` then holds ``[N, H, W, 3]``); 1 for an image."""
        return int(self.image.shape[0]) if self.image.ndim == 4 else 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image as sent (of each B-scan for a volume), also when decoded smaller."""
        return self.full_size or (int(self.image.shape[-2]), int(self.image.shape[-3]))


def _too_large(message: str) -> bool:
    return "decompression bomb" in message or "exceed the limit" in message


def decode_upload(data: bytes, name: str, max_pixels: int, draft: int | None = None) -> Upload:
    """Check and decode one uploaded file (image or single-frame DICOM) with the project's reader.

    ``draft``: JPEGs are decoded with a DCT-domain downscale to at least this side, as the served run's features
    were extracted (:meth:`~visionfm.export.ModelCard.draft_side`); other formats ignore it.

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
            img = decode_image(data, name, max_pixels=max_pixels, draft=draft)
    except (ValueError, EOFError) as e:  # ImageReadError names the file and what is wrong
        msg = str(e).splitlines()[0] if str(e) else f"{name}: cannot decode ({type(e).__name__})"
        raise UploadError(msg, 413 if _too_large(msg) else 400) from None
    except (OSError, MemoryError, RuntimeError, TypeError, AttributeError, IndexError, KeyError) as e:
        # corrupt files can trip decoders in odd ways; the client hears about its file, the service goes on
        raise UploadError(f"{name}: cannot decode ({type(e).__name__}: {e})") from None
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
        raise UploadError(f"{name}: decoded to an unusable array of shape {tuple(img.shape)}")
    return Upload(name, img, _dicom_facts(data, name), _header_size(data) if draft else None)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PIL image's header (no pixels decoded), or None when PIL cannot open it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height)
    except (OSError, ValueError, SyntaxError):  # DICOM and the like: the decoded size (never drafted) stands
        return None


def _dicom_facts(data: bytes, name: str) -> dict | None:
    """What a DICOM upload says about the eye and the pixels (read from its header), or None for other files."""
    if data[128:132] != b"DICM" and not name.lower().endswith((".dcm", ".dicom")):
        return None
    from ..data.dicom import dicom_header

    facts = dicom_header(data, name)
    keep = ("laterality", "pixel_spacing", "sop_class", "modality", "transfer_syntax", "photometric")
    return {k: facts.get(k) for k in keep}


def _decode_error(e: Exception, name: str) -> UploadError:
    if isinstance(e, (ValueError, EOFError)):  # ImageReadError names the file and what is wrong
        msg = str(e).splitlines()[0] if str(e) else f"{name}: cannot decode ({type(e).__name__})"
        return UploadError(msg, 413 if _too_large(msg) else 400)
    return UploadError(f"{name}: cannot decode ({type(e).__name__}: {e})")


_DECODE_ERRORS = (
    ValueError,
    EOFError,
    OSError,
    MemoryError,
    RuntimeError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
)


def decode_volume_upload(data: bytes, name: str, max_pixels: int) -> Upload:
    """An OCT volume upload -> ``image`` ``[N, H, W, 3]``: a multi-frame DICOM, a zip of B-scan images (a folder
    zipped: natural order of the file names, as ``read_volume`` orders a folder), a vendor file eyepy reads
    (``.vol``, ``.e2e``, ``.fda``, ``.mat``: recognised by the file name); a single image is a one-B-scan volume.

    Raises:
        UploadError: as :func:`decode_upload`; the pixel limit counts every B-scan.
    """
    from ..volumes.io import EYEPY_READERS

    name = Path(name or "upload").name or "upload"
    if not data:
        raise UploadError(f"{name}: empty file")
    if data[:4] == b"PK\x03\x04":
        return _zip_volume(data, name, max_pixels)
    if Path(name).suffix.lower() in EYEPY_READERS:
        return _vendor_volume(data, name, max_pixels)
    if data[128:132] != b"DICM" and not name.lower().endswith((".dcm", ".dicom")):
        one = decode_upload(data, name, max_pixels)
        return Upload(one.filename, one.image[None], one.dicom)
    from ..data.dicom import read_dicom

    try:
        d = read_dicom(data, name, max_pixels=max_pixels)
    except _DECODE_ERRORS as e:
        raise _decode_error(e, name) from None
    return Upload(name, d.frames, _dicom_facts(data, name))


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def stack_bscans(uploads: list[Upload], name: str, max_pixels: int) -> Upload:
    """Single images (B-scans of one volume) -> one volume upload, in natural order of their file names.

    Raises:
        UploadError: a multi-frame file among them, B-scans of different sizes, or more than ``max_pixels`` in all.
    """
    uploads = sorted(uploads, key=lambda u: _natural_key(u.filename))
    frames = [u.image[0] if u.image.ndim == 4 and len(u.image) == 1 else u.image for u in uploads]
    multi = [u.filename for u, f in zip(uploads, frames) if f.ndim != 3]
    if multi:
        raise UploadError(f"{multi[0]}: a volume in itself; send B-scans as single images to stack them")
    shapes = sorted({f.shape for f in frames})
    if len(shapes) > 1:
        raise UploadError(f"{name}: B-scans of different sizes {shapes}; a volume needs one size")
    total = sum(f.shape[0] * f.shape[1] for f in frames)
    if total > max_pixels:
        raise UploadError(f"{name}: {total:,} pixels in all B-scans exceed the limit of {max_pixels:,}", 413)
    if any(f.dtype != np.uint8 for f in frames):  # mixed bit depths: all as float in [0, 1]
        frames = [f if f.dtype == np.float32 else f.astype(np.float32) / 255.0 for f in frames]
    return Upload(name, np.stack(frames), uploads[0].dicom)


def _zip_volume(data: bytes, name: str, max_pixels: int, max_members: int = 2048) -> Upload:
    """The B-scan images of a zip (read in memory, nothing extracted to disk), stacked as one volume."""
    from ..data.images import IMAGE_EXTENSIONS

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [
            i
            for i in zf.infolist()
            if not i.is_dir()
            and Path(i.filename).suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith((".", "__MACOSX")) for part in Path(i.filename).parts)
        ]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UploadError(f"{name}: not a readable zip file ({e})") from None
    if not members:
        raise UploadError(f"{name}: zip without B-scan images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(members) > max_members:
        raise UploadError(f"{name}: {len(members)} files in the zip; at most {max_members} B-scans", 413)
    budget = 64 * max_pixels  # compressed images expand; far beyond this is a zip bomb, refused before reading
    if sum(i.file_size for i in members) > budget:
        raise UploadError(f"{name}: the zip expands to more than {budget:,} bytes", 413)
    bscans = []
    for i in members:
        try:
            raw = zf.read(i)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as e:  # corrupt member, encrypted entry
            raise UploadError(f"{name}: cannot read {i.filename} from the zip ({e})") from None
        bscans.append(decode_upload(raw, f"{name}:{i.filename}", max_pixels))
        bscans[-1].filename = i.filename
    return stack_bscans(bscans, name, max_pixels)


def _vendor_volume(data: bytes, name: str, max_pixels: int) -> Upload:
    """A vendor OCT file, parsed by eyepy (which reads paths: the bytes go to a private temporary file)."""
    from ..volumes.io import read_volume

    with tempfile.TemporaryDirectory(prefix="visionfm-upload-") as tmp:
        path = Path(tmp) / f"volume{Path(name).suffix.lower()}"
        path.write_bytes(data)
        try:
            vol = read_volume(path, max_pixels=max_pixels)
        except _DECODE_ERRORS as e:  # messages name the upload, not the temporary file
            err = _decode_error(e, name)
            raise UploadError(str(err).replace(str(path), name), err.status) from None
    facts = {"laterality": vol.laterality, "pixel_spacing": list(vol.pixel_spacing) if vol.pixel_spacing else None}
    return Upload(name, vol.bscans, facts)
