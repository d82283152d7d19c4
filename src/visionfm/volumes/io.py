"""OCT volumes as one sample each: multi-frame DICOM, a folder of B-scans, or a vendor file eyepy reads.

Sources:
    * a multi-frame DICOM (ophthalmic tomography or any multi-frame object), read by :mod:`visionfm.data.dicom`;
    * a folder of B-scan images (any supported image type, single-frame DICOM slices included), in natural order
      of their file names (``2.png`` before ``10.png``);
    * vendor formats through eyepy: Heidelberg ``.vol`` and ``.e2e``, Topcon ``.fda``, the Duke ``.mat`` volumes.

Collections of volumes (:func:`scan_volumes`) use the image layouts: ``tree`` (every volume under a folder: volume
files, multi-frame DICOMs, and each folder holding B-scan images), ``imagenet`` (``<root>/<class>/<volume>``) and
``csv`` (a manifest whose ``path`` column names volume files or B-scan folders).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import ImageCollection, Sample, scan_manifest, walk_files
from ..data.images import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, ImageReadError, _scale_to_unit, pixel_limit, read_image
from ..errors import UserError

__all__ = [
    "EYEPY_READERS",
    "VOLUME_LAYOUTS",
    "Volume",
    "list_volumes",
    "read_volume",
    "scan_volumes",
    "volume_header",
]

# extension -> eyepy importer (eyepy parses the vendor formats; no hand-written vendor parsers here)
EYEPY_READERS = {
    ".vol": "import_heyex_vol",
    ".e2e": "import_heyex_e2e",
    ".fda": "import_topcon_fda",
    ".mat": "import_duke_mat",
}
VOLUME_LAYOUTS = ("auto", "tree", "imagenet", "csv")
_LATERALITY = {"OD": "R", "OS": "L", "R": "R", "L": "L", "RIGHT": "R", "LEFT": "L"}


@dataclass
class Volume:
    """The B-scans of one volume and what is known about it.

    Attributes:
        bscans: ``[N, H, W, 3]``, uint8 or float32 in [0, 1].
        source: the file or folder.
        names: one name per B-scan (file names for folders, ``frame<k>`` otherwise).
        laterality: ``R``, ``L``, ``B`` or ``""``.
        pixel_spacing: (row, column) spacing in mm within a B-scan, or None.
        slice_spacing: spacing between B-scans in mm, or None.
    """

    bscans: np.ndarray
    source: Path
    names: list[str] = field(default_factory=list)
    laterality: str = ""
    pixel_spacing: tuple[float, float] | None = None
    slice_spacing: float | None = None

    def __len__(self) -> int:
        return int(self.bscans.shape[0])

    def meta(self) -> dict[str, Any]:
        return {
            "n_bscans": len(self),
            "laterality": self.laterality,
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "slice_spacing": self.slice_spacing,
        }


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _is_multiframe_dicom(path: Path) -> bool:
    from ..data.dicom import dicom_header

    try:
        return dicom_header(path)["frames"] > 1
    except ImageReadError:
        return False


def _bscan_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=_natural_key)


def _stack(frames: list[np.ndarray], where: Path) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ImageReadError(f"{where}: B-scans of different sizes {sorted(shapes)}; a volume needs one size")
    if any(f.dtype != np.uint8 for f in frames):
        frames = [f if f.dtype == np.float32 else f.astype(np.float32) / 255.0 for f in frames]
    return np.stack(frames)


def _read_eyepy(path: Path, limit: int) -> Volume:
    try:
        import eyepy
    except ImportError:
        raise ImageReadError(
            f"{path}: reading {path.suffix} volumes needs eyepy (pip install 'visionfm[dicom]')"
        ) from None
    try:
        vol = getattr(eyepy, EYEPY_READERS[path.suffix.lower()])(path)
        data = np.asarray(vol.data)
    except Exception as e:  # vendor parsers raise anything on a foreign or truncated file
        raise ImageReadError(f"{path}: eyepy cannot read this volume ({type(e).__name__}: {e})") from None
    if data.size > limit:
        raise ImageReadError(f"{path}: {data.size:,} voxels exceed the limit of {limit:,}")
    data = data if data.dtype == np.uint8 else _scale_to_unit(data)
    meta = vol.meta
    lat = meta["laterality"] if "laterality" in getattr(meta, "_store", {}) else ""
    return Volume(
        np.repeat(data[..., None], 3, axis=-1),
        path,
        [f"frame{k}" for k in range(len(data))],
        _LATERALITY.get(str(lat).upper(), ""),
        (float(vol.scale_y), float(vol.scale_x)),
        float(vol.scale_z),
    )


def read_volume(path: str | Path, *, max_pixels: int | None = None) -> Volume:
    """Read one volume (multi-frame DICOM file, B-scan folder, or eyepy vendor file).

    Raises:
        ImageReadError: not a volume, unreadable, B-scans of different sizes, or too many pixels (file named).
    """
    path = Path(path)
    limit = pixel_limit(max_pixels)
    if path.is_dir():
        files = _bscan_files(path)
        if not files:
            raise ImageReadError(f"{path}: folder without B-scan images")
        frames = [read_image(f, max_pixels=limit) for f in files]
        lat, spacing = "", None
        if files[0].suffix.lower() in DICOM_EXTENSIONS:  # DICOM slices carry the facts
            from ..data.dicom import dicom_header

            head = dicom_header(files[0])
            lat, spacing = head["laterality"], tuple(head["pixel_spacing"]) if head["pixel_spacing"] else None
        return Volume(_stack(frames, path), path, [f.name for f in files], lat, spacing)
    if not path.is_file():
        raise ImageReadError(f"volume not found: {path}")
    ext = path.suffix.lower()
    if ext in DICOM_EXTENSIONS:
        from ..data.dicom import read_dicom

        d = read_dicom(path, max_pixels=limit)
        return Volume(
            d.frames, path, [f"frame{k}" for k in range(d.n_frames)], d.laterality, d.pixel_spacing, d.slice_spacing
        )
    if ext in EYEPY_READERS:
        return _read_eyepy(path, limit)
    raise ImageReadError(
        f"{path}: not a volume (a multi-frame .dcm, a folder of B-scans, or one of {sorted(EYEPY_READERS)})"
    )


def volume_header(path: str | Path) -> dict[str, Any]:
    """B-scan count, laterality and spacing of a volume, from headers and listings where possible (eyepy vendor
    files are read whole)."""
    from ..data.dicom import dicom_header

    path = Path(path)
    files = _bscan_files(path) if path.is_dir() else [path]
    if path.is_dir() and not (files and files[0].suffix.lower() in DICOM_EXTENSIONS):
        return {"n_bscans": len(files), "laterality": "", "pixel_spacing": None, "slice_spacing": None}
    if files[0].suffix.lower() in DICOM_EXTENSIONS:
        head = dicom_header(files[0])
        return {
            "n_bscans": len(files) if path.is_dir() else int(head["frames"]),
            "laterality": head["laterality"],
            "pixel_spacing": head["pixel_spacing"],
            "slice_spacing": head["slice_spacing"],
        }
    return read_volume(path).meta()


def list_volumes(root: str | Path) -> list[Path]:
    """Every volume under ``root``: vendor files, multi-frame DICOMs, and each folder that holds B-scan images.

    Link loops are walked once (:func:`visionfm.data.walk_files`). Single-frame DICOMs count as B-scans of their
    folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"volume folder not found: {root}")
    files = walk_files(root, lambda f: Path(f).suffix.lower() in IMAGE_EXTENSIONS | set(EYEPY_READERS))
    volumes, folders = [], set()
    for f in files:
        ext = f.suffix.lower()
        if ext in EYEPY_READERS or (ext in DICOM_EXTENSIONS and _is_multiframe_dicom(f)):
            volumes.append(f)
        else:
            folders.add(f.parent)
    return sorted(volumes + sorted(folders))


def scan_volumes(
    source: str | Path, layout: str = "auto", label_columns: Sequence[str] | None = None
) -> ImageCollection:
    """A collection whose samples are volumes (``Sample.path`` is the volume's file or folder).

    Raises:
        FileNotFoundError / UserError: missing source, unknown layout, bad manifest (file and line named), none found.
    """
    source = Path(source)
    if layout not in VOLUME_LAYOUTS:
        raise UserError(f"unknown volume layout {layout!r}; valid: {', '.join(VOLUME_LAYOUTS)}")
    if not source.exists():
        raise FileNotFoundError(f"data not found: {source}")
    if layout == "auto":
        layout = "csv" if source.is_file() and source.suffix.lower() == ".csv" else "tree"
    if layout == "csv":
        coll = scan_manifest(source, label_columns, lambda p: p.is_dir() or p.is_file(), "volume")
    elif layout == "imagenet":
        classes = sorted(d.name for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
        samples = [
            Sample(p, p.relative_to(source).as_posix(), (float(i),))
            for i, c in enumerate(classes)
            for p in list_volumes(source / c)
        ]
        coll = ImageCollection(source, samples, classes, "imagenet")
    else:
        vols = [source] if source.is_file() else list_volumes(source)
        root = source.parent if source.is_file() else source
        coll = ImageCollection(root, [Sample(v, v.relative_to(root).as_posix() or ".") for v in vols])
    if not coll.samples:
        raise UserError(f"{source}: no volumes found (layout {layout})")
    return coll
