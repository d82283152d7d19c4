"""Build DICOM files with pydicom for tests: any photometric interpretation, transfer syntax, SOP class, frames."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image Storage
OPT = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage


def make_dicom(
    path: Path,
    px: np.ndarray,
    photometric: str = "MONOCHROME2",
    syntax: str = "explicit",
    sop_class: str = OP_8BIT,
    laterality: str | None = None,
    pixel_spacing=None,
    functional_groups: bool = False,
    slice_spacing: float | None = None,
) -> Path:
    """Write ``px`` (``[H, W]``, ``[H, W, 3]``, ``[F, H, W]`` or ``[F, H, W, 3]``; RGB values for colour) as DICOM.

    ``syntax``: ``explicit`` (uncompressed), ``rle``, ``j2k`` (JPEG 2000 lossless), ``jpeg`` (baseline, encoded with
    PIL as YBR_FULL_422), ``mpeg4`` (encapsulated junk under a video syntax no plugin decodes). For ``YBR_FULL``
    uncompressed the RGB input is converted with pydicom.
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import convert_color_space
    from pydicom.sequence import Sequence
    from pydicom.uid import (
        MPEG4HP41,
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    colour = px.shape[-1] == 3 and px.ndim in (3, 4) and photometric != "MONOCHROME2" and photometric != "MONOCHROME1"
    frames = px.shape[0] if px.ndim == (4 if colour else 3) else 1
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OPT" if sop_class == OPT else "OP"
    h, w = px.shape[-3:-1] if colour else px.shape[-2:]
    ds.Rows, ds.Columns, ds.SamplesPerPixel = h, w, 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = 16 if px.dtype == np.uint16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PhotometricInterpretation = "RGB" if syntax in ("rle", "j2k") and colour else photometric
    if laterality:
        ds.ImageLaterality = laterality
    if functional_groups:
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = list(pixel_spacing or [0.01, 0.01])
        measures.SliceThickness = slice_spacing or 0.1
        shared.PixelMeasuresSequence = Sequence([measures])
        if laterality:
            anatomy = Dataset()
            anatomy.FrameLaterality = laterality
            shared.FrameAnatomySequence = Sequence([anatomy])
            del ds.ImageLaterality
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
    elif pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    arr = np.ascontiguousarray(px)
    if syntax == "explicit":
        if photometric == "YBR_FULL":
            arr = convert_color_space(arr, "RGB", "YBR_FULL")
        ds.PixelData = arr.tobytes()
    elif syntax in ("rle", "j2k"):
        ds.PixelData = arr.tobytes()
        ds.compress(RLELossless if syntax == "rle" else JPEG2000Lossless, arr, generate_instance_uid=False)
    elif syntax == "jpeg":
        from PIL import Image

        stack = arr if frames > 1 else arr[None]
        blobs = []
        for f in stack:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="JPEG", quality=95)
            blobs.append(buf.getvalue())
        ds.PixelData = encapsulate(blobs)
        ds["PixelData"].VR = "OB"
        ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif syntax == "mpeg4":
        ds.PixelData = encapsulate([b"\0" * 64])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = MPEG4HP41
    else:
        raise ValueError(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path
