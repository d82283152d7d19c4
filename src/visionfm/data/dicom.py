"""DICOM reading for eye imaging: photographs, OCT B-scans and multi-frame OCT volumes, from a path or bytes.

Handled: single- and multi-frame objects of any SOP class (ophthalmic photography 8/16 bit, ophthalmic tomography
(OPT), secondary capture, ...); MONOCHROME1/2, RGB and YBR_FULL/YBR_FULL_422/YBR_ICT/YBR_RCT photometric
interpretations (converted to RGB by pydicom); native and compressed transfer syntaxes through pydicom's
pixel-data plugins (RLE by pydicom itself; JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000 through
``pylibjpeg`` + ``pylibjpeg-libjpeg`` + ``pylibjpeg-openjpeg``, installed by the ``dicom`` extra). When a plugin is
missing the error names the file, the transfer syntax and what to install.

What the outputs carry: laterality (``ImageLaterality``, else the series ``Laterality``, else the per-frame
``FrameLaterality`` of the functional groups), pixel spacing in mm (``PixelSpacing``, else the functional groups'
``PixelMeasuresSequence``, else ``ImagerPixelSpacing``) and, for volumes, the spacing between B-scans.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .images import ImageReadError, _scale_to_unit, check_pixels, pixel_limit, to_rgb

__all__ = ["OPHTHALMIC_SOP_CLASSES", "DicomImage", "dicom_header", "dicom_meta", "read_dicom"]

OPHTHALMIC_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.4": "Ophthalmic Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.7": "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.8": "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.6": "Ophthalmic Optical Coherence Tomography En Face Image Storage",
}
_LATERALITY = {"R": "R", "L": "L", "B": "B", "OD": "R", "OS": "L", "OU": "B"}


@dataclass
class DicomImage:
    """Pixels and the facts of one DICOM object.

    Attributes:
        frames: ``[F, H, W, 3]``, uint8 for 8-bit colour, float32 in [0, 1] otherwise (F = 1 for a single frame).
        name: the file (or upload) name, used in messages.
        laterality: ``R``, ``L``, ``B`` (both) or ``""`` when not recorded.
        pixel_spacing: (row, column) spacing in mm, or None.
        slice_spacing: spacing between frames in mm (volumes), or None.
        sop_class: SOP class name (e.g. "Ophthalmic Tomography Image Storage").
        modality: the Modality attribute (``OP``, ``OPT``, ...).
        transfer_syntax: transfer syntax name.
        photometric: photometric interpretation of the stored pixels.
    """

    frames: np.ndarray
    name: str
    laterality: str = ""
    pixel_spacing: tuple[float, float] | None = None
    slice_spacing: float | None = None
    sop_class: str = ""
    modality: str = ""
    transfer_syntax: str = ""
    photometric: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def single_frame(self) -> np.ndarray:
        """The one frame ``[H, W, 3]``; a multi-frame object is a volume and is refused here."""
        if self.n_frames != 1:
            raise ImageReadError(
                f"{self.name}: multi-frame DICOM ({self.n_frames} frames, "
                f"{self.sop_class or 'unknown SOP class'}): a volume; read it with --volumes "
                f"(visionfm.volumes.read_volume)"
            )
        return self.frames[0]

    def meta(self) -> dict[str, Any]:
        """Laterality, spacing and identity as plain data (for features metadata and manifests)."""
        return {
            "laterality": self.laterality,
            "pixel_spacing": list(self.pixel_spacing or []) or None,
            "slice_spacing": self.slice_spacing,
            "sop_class": self.sop_class,
            "modality": self.modality,
            "transfer_syntax": self.transfer_syntax,
            "frames": self.n_frames,
        }


def _open(source: str | Path | bytes | BinaryIO, name: str, pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    fp: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    if isinstance(fp, (str, Path)):
        fp = str(fp)
    try:
        return pydicom.dcmread(fp, stop_before_pixels=not pixels)
    except InvalidDicomError:
        try:  # files without the 128-byte preamble and DICM marker (older devices)
            if hasattr(fp, "seek"):
                fp.seek(0)
            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=not pixels)
        except Exception as e:
            raise ImageReadError(f"{name}: not a DICOM file ({type(e).__name__}: {e})") from None
        if "Rows" not in ds and "SOPClassUID" not in ds:
            raise ImageReadError(f"{name}: not a DICOM file (no DICM marker and no image attributes)") from None
        return ds
    except Exception as e:  # pydicom raises many types for truncated or corrupt files
        raise ImageReadError(f"{name}: unreadable DICOM ({type(e).__name__}: {e})") from None


def _first(ds: Any, *paths: tuple[str, ...]) -> Any:
    """The first present value along attribute paths through (functional-group) sequences."""
    for path in paths:
        node: Any = ds
        for key in path:
            node = getattr(node, key, None)
            if node is None:
                break
            if hasattr(node, "__len__") and not isinstance(node, (str, bytes)) and key.endswith("Sequence"):
                node = node[0] if len(node) else None
        if node not in (None, ""):
            return node
    return None


def dicom_meta(ds: Any) -> dict[str, Any]:
    """Laterality, spacing, SOP class, modality and transfer syntax of a pydicom dataset."""
    lat = _first(
        ds,
        ("ImageLaterality",),
        ("Laterality",),
        ("SharedFunctionalGroupsSequence", "FrameAnatomySequence", "FrameLaterality"),
        ("PerFrameFunctionalGroupsSequence", "FrameAnatomySequence", "FrameLaterality"),
    )
    spacing = _first(
        ds,
        ("PixelSpacing",),
        ("SharedFunctionalGroupsSequence", "PixelMeasuresSequence", "PixelSpacing"),
        ("PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence", "PixelSpacing"),
        ("ImagerPixelSpacing",),
    )
    between = _first(
        ds,
        ("SpacingBetweenSlices",),
        ("SharedFunctionalGroupsSequence", "PixelMeasuresSequence", "SpacingBetweenSlices"),
        ("SharedFunctionalGroupsSequence", "PixelMeasuresSequence", "SliceThickness"),
        ("SliceThickness",),
    )
    sop = str(getattr(ds, "SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "laterality": _LATERALITY.get(str(lat or "").strip().upper(), ""),
        "pixel_spacing": (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) >= 2 else None,
        "slice_spacing": float(between) if between is not None else None,
        "sop_class": OPHTHALMIC_SOP_CLASSES.get(sop) or _uid_name(sop),
        "modality": str(getattr(ds, "Modality", "") or ""),
        "transfer_syntax": ts.name if ts is not None else "",
        "photometric": str(getattr(ds, "PhotometricInterpretation", "") or ""),
    }


def dicom_header(source: str | Path | bytes | BinaryIO, name: str | None = None) -> dict[str, Any]:
    """:func:`dicom_meta` plus the frame count and size, read without decoding any pixel (JSON-ready)."""
    name = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    ds = _open(source, name, pixels=False)
    meta = dicom_meta(ds)
    meta["pixel_spacing"] = list(meta["pixel_spacing"]) if meta["pixel_spacing"] else None
    meta.update(
        frames=int(getattr(ds, "NumberOfFrames", 1) or 1),
        rows=int(getattr(ds, "Rows", 0) or 0),
        columns=int(getattr(ds, "Columns", 0) or 0),
    )
    return meta


def _uid_name(uid: str) -> str:
    if not uid:
        return ""
    from pydicom.uid import UID

    return UID(uid).name


def _decode(ds: Any, name: str) -> np.ndarray:
    """All frames as stored (after colour conversion to RGB), or an error naming the missing plugin."""
    from pydicom.pixels import get_decoder, pixel_array

    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            raise ImageReadError(
                f"{name}: transfer syntax {ts.name} ({ts}) has no pixel-data decoder in pydicom; "
                f"convert the file to an uncompressed or JPEG syntax (e.g. with dcmtk or gdcmconv)"
            ) from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
            raise ImageReadError(
                f"{name}: transfer syntax {ts.name} ({ts}) needs a pixel-data plugin that is not "
                f"installed ({missing}); install the dicom extra: pip install 'visionfm[dicom]'"
            )
    try:
        return pixel_array(ds)  # YBR_* is converted to RGB by pydicom (as_rgb)
    except Exception as e:
        raise ImageReadError(f"{name}: cannot decode the pixel data ({ts.name}: {type(e).__name__}: {e})") from None


def _to_rgb_frames(px: np.ndarray, ds: Any, n_frames: int, name: str) -> np.ndarray:
    """Decoded array -> ``[F, H, W, 3]`` RGB, monochrome windowed by the stored range (MONOCHROME1 inverted)."""
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if n_frames == 1:
        px = px[None]
    if spp == 1 and px.ndim == 4 and px.shape[-1] == 1:
        px = px[..., 0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if spp == 1:
        if photometric.startswith("PALETTE"):
            from pydicom.pixels import apply_color_lut

            px = apply_color_lut(px, ds)
            return np.stack([to_rgb(_scale_to_unit(f) if f.dtype != np.uint8 else f, name) for f in px])
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        if px.dtype == np.uint8 and slope == 1 and intercept == 0:  # an 8-bit grey photo: as its PNG would read
            px = 255 - px if photometric == "MONOCHROME1" else px
            return np.repeat(px[..., None], 3, axis=-1)
        px = px.astype(np.float32) * slope + intercept
        lo, hi = float(px.min()), float(px.max())  # one window over the whole volume keeps B-scans comparable
        px = (px - lo) / max(hi - lo, 1e-12)
        if photometric == "MONOCHROME1":  # 0 is white
            px = 1.0 - px
        return np.repeat(px[..., None], 3, axis=-1).astype(np.float32)
    if px.dtype == np.uint8:
        return px
    return _scale_to_unit(px) if px.dtype.kind in "iu" else np.clip(px.astype(np.float32), 0, 1)


def read_dicom(
    source: str | Path | bytes | BinaryIO, name: str | None = None, *, max_pixels: int | None = None
) -> DicomImage:
    """Read a DICOM object (file path, bytes or binary file object) as RGB frames with its eye-imaging facts.

    Args:
        source: a path, the file's bytes (an upload), or an open binary file.
        name: name used in messages (default: the path, or ``<upload>``).
        max_pixels: decompression-bomb limit over all frames (default :func:`visionfm.data.images.pixel_limit`).

    Raises:
        ImageReadError: not DICOM, no pixel data, too many pixels, an unsupported or plugin-less transfer syntax
            (named), or undecodable pixel data; every message names the file.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageReadError(f"DICOM file not found: {source}")
    ds = _open(source, name, pixels=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = _uid_name(str(getattr(ds, "SOPClassUID", "")))
        raise ImageReadError(f"{name}: DICOM object without pixel data ({sop or 'unknown SOP class'})")
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ImplicitVRLittleEndian

        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the default of files without a meta header
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    check_pixels(rows * cols * n_frames, name, pixel_limit(max_pixels))
    frames = _to_rgb_frames(_decode(ds, name), ds, n_frames, name)
    meta = dicom_meta(ds)
    return DicomImage(frames=frames, name=name, **meta)
