"""Image collections in the layouts users have, as one list of samples, and a torch ``Dataset`` over them.

Layouts:
    ``tree``: every image under a folder, recursively (no labels).
    ``imagenet``: ``<root>/<class>/**/<image>``; class names sorted, labels are their indices.
    ``vfm``: the official VisionFM layout, ``<root>/<split>_labels.txt`` with lines ``<split>/1.jpg;<labels>``
        (labels a comma-separated list of numbers: one class index, a multi-label vector or regression targets).
    ``csv``: a manifest with a ``path`` column (relative to the CSV's folder or absolute) and any label columns.

``layout="auto"``: a ``.csv`` file is a manifest; a folder with ``<split>_labels.txt`` is ``vfm``; otherwise ``tree``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import UserError
from .images import IMAGE_EXTENSIONS, ImageReadError, read_image

__all__ = [
    "LAYOUTS",
    "MISSING",
    "ImageCollection",
    "ImageDataset",
    "Sample",
    "list_images",
    "parse_label",
    "read_csv_rows",
    "read_vfm_labels",
    "scan",
    "scan_manifest",
    "walk_files",
]

LAYOUTS = ("auto", "tree", "imagenet", "vfm", "csv")


@dataclass
class Sample:
    """One image: its path, path relative to the collection root, and label vector (NaN = missing) if any."""

    path: Path
    rel: str
    label: tuple[float, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageCollection:
    """Samples plus what their labels mean.

    Attributes:
        root: the folder (or manifest's folder).
        samples: in a stable, sorted order.
        label_names: names of the label columns / classes, if known.
        layout: the layout the collection was read as.
    """

    root: Path
    samples: list[Sample]
    label_names: list[str] = field(default_factory=list)
    layout: str = "tree"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_labels(self) -> bool:
        return any(s.label is not None for s in self.samples)

    def label_matrix(self) -> np.ndarray:
        """Labels as ``[N, K]`` float64 with NaN for missing values (K = widest label vector)."""
        k = max((len(s.label) for s in self.samples if s.label is not None), default=0)
        out = np.full((len(self.samples), k), np.nan)
        for i, s in enumerate(self.samples):
            if s.label is not None:
                out[i, : len(s.label)] = s.label
        return out


def walk_files(root: str | Path, keep: Callable[[str], bool]) -> list[Path]:
    """Files under ``root`` whose names pass ``keep``, recursively, sorted; hidden files and folders skipped.

    Symbolic links are followed, but a folder reached twice (a link loop such as ``ln -s . loop``, or two links to
    one place) is walked once, and a file reached through several paths is listed once (its first path in sorted
    order), so a loop can neither hang the walk nor multiply images.
    """
    root = Path(root)
    seen_dirs: set[tuple[int, int]] = set()
    found: list[tuple[Path, tuple[int, int] | None]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.startswith(".") or not keep(f):
                continue
            p = Path(dirpath) / f
            try:
                fst = p.stat()
                found.append((p, (fst.st_dev, fst.st_ino)))
            except OSError:  # a dangling link: listed, so that reading it names the file
                found.append((p, None))
    seen_files: set[tuple[int, int]] = set()
    out = []
    for p, key in sorted(found):
        if key is None or key not in seen_files:
            if key is not None:
                seen_files.add(key)
            out.append(p)
    return out


def list_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, any supported extension, hidden files skipped), sorted.

    Link loops are walked once and no file is listed twice (see :func:`walk_files`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return walk_files(root, lambda f: Path(f).suffix.lower() in IMAGE_EXTENSIONS)


MISSING = ("", "-", "nan", "NaN", "NA", "N/A", "None", "none", "?")  # spellings of a missing label


def parse_label(text: str, where: str) -> float:
    """One numeric label; a missing one (see ``MISSING``) is NaN. ``where`` names the file and line in errors."""
    text = text.strip()
    if text in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: label {text!r} is not a number") from None


def read_vfm_labels(label_file: Path) -> Iterator[tuple[str, str, list[float]]]:
    """``(where, image, labels)`` of each line ``<image>;<l1>,<l2>,...`` of an official ``*_labels.txt``.

    Blank lines and ``#`` comments are skipped; ``where`` is ``"<file>, line <n>"``.
    """
    try:
        text = label_file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = label_file.read_bytes()[: e.start].count(b"\n") + 1
        raise UserError(f"{label_file}, line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{label_file}, line {n}"
        if ";" not in line:
            raise ValueError(f"{where}: expected '<image>;<labels>', got {line!r}")
        rel, labels = line.split(";", 1)
        yield where, rel.strip(), [parse_label(t, where) for t in labels.split(",")]


def _scan_vfm(root: Path, split: str) -> ImageCollection:
    label_file = root / f"{split}_labels.txt"
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file} not found (official vfm layout needs <root>/{split}_labels.txt)")
    samples = []
    for where, rel, vals in read_vfm_labels(label_file):
        path = root / rel
        if not path.is_file():
            raise ImageReadError(f"{where}: image {path} not found")
        samples.append(Sample(path, rel, tuple(vals)))
    return ImageCollection(root, samples, [], "vfm")


def read_csv_rows(manifest: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line number, row)`` pairs of a CSV manifest.

    A UTF-8 byte-order mark (Excel's default) is accepted; a file that is not UTF-8 is named with the line of the
    first bad byte; a row with more or fewer fields than the header is named by its line.
    """
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = manifest.read_bytes()[: e.start].count(b"\n") + 1
        raise UserError(
            f"{manifest}, line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); save the CSV as "
            f"UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if not header:
            raise UserError(f"{manifest}: empty manifest (no header line)")
        header = [h.strip() for h in header]
        rows = []
        for fields in reader:
            n = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{manifest}, line {n}: {len(fields)} fields, but the header has {len(header)} "
                    f"({', '.join(header)})"
                )
            rows.append((n, dict(zip(header, fields))))
    except csv.Error as e:
        raise UserError(f"{manifest}, line {reader.line_num}: malformed CSV ({e})") from None
    return header, rows


def _scan_csv(manifest: Path, label_columns: Sequence[str] | None) -> ImageCollection:
    return scan_manifest(manifest, label_columns)


def scan_manifest(
    manifest: Path,
    label_columns: Sequence[str] | None,
    exists: Callable[[Path], bool] = Path.is_file,
    what: str = "image",
) -> ImageCollection:
    """A CSV manifest's samples: ``path`` (relative to the CSV's folder, or absolute) and label columns.

    ``exists`` checks each path (files for images; files or folders for volumes); ``what`` names it in errors.
    """
    cols, rows = read_csv_rows(manifest)
    if "path" not in cols:
        raise UserError(f"{manifest}: manifest needs a 'path' column; found {cols}")
    if label_columns is None:
        label_columns = [c for c in ("label",) if c in cols]
    for c in label_columns:
        if c not in cols:
            raise UserError(f"{manifest}: label column {c!r} not found; columns: {cols}")
    samples = []
    for n, row in rows:
        path = Path(row["path"])
        path = path if path.is_absolute() else manifest.parent / path
        if not exists(path):
            raise ImageReadError(f"{manifest}, line {n}: {what} {path} not found")
        label = tuple(parse_label(row[c], f"{manifest}, line {n}, column {c}") for c in label_columns)
        extra = {k: v for k, v in row.items() if k != "path" and k not in label_columns}
        samples.append(Sample(path, row["path"], label or None, extra))
    return ImageCollection(manifest.parent, samples, list(label_columns), "csv")


def _scan_imagenet(root: Path) -> ImageCollection:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: the imagenet layout needs one sub-folder per class, found none")
    samples = [
        Sample(p, p.relative_to(root).as_posix(), (float(i),))
        for i, c in enumerate(classes)
        for p in list_images(root / c)
    ]
    return ImageCollection(root, samples, classes, "imagenet")


def scan(
    source: str | Path, layout: str = "auto", split: str = "training", label_columns: Sequence[str] | None = None
) -> ImageCollection:
    """Read a folder or manifest as an :class:`ImageCollection`.

    Args:
        source: a folder, or a ``.csv`` manifest.
        layout: one of ``LAYOUTS``.
        split: for ``vfm``: which ``<split>_labels.txt`` to read.
        label_columns: for ``csv``: the label columns (default: ``label`` when present).

    Raises:
        FileNotFoundError / ValueError: missing source, unknown layout, bad label line (file and line named),
            or no images at all.
    """
    source = Path(source)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if not source.exists():
        raise FileNotFoundError(f"data not found: {source}")
    if layout == "auto":
        if source.is_file():
            layout = "csv"
        elif (source / f"{split}_labels.txt").is_file():
            layout = "vfm"
        else:
            layout = "tree"
    if layout == "csv":
        coll = _scan_csv(source, label_columns)
    elif layout == "vfm":
        coll = _scan_vfm(source, split)
    elif layout == "imagenet":
        coll = _scan_imagenet(source)
    else:
        coll = ImageCollection(source, [Sample(p, p.relative_to(source).as_posix()) for p in list_images(source)])
    if not coll.samples:
        raise ValueError(f"{source}: no images found (layout {layout}; extensions {sorted(IMAGE_EXTENSIONS)})")
    return coll


class ImageDataset(Dataset):
    """Reads and transforms the samples of a collection; item = (image tensor, index).

    Args:
        samples: the samples to serve.
        transform: ``[H, W, 3]`` array -> tensor.
        draft: decode JPEGs downscaled (by a power of two) to no less than this side (see :func:`read_image`).
    """

    def __init__(
        self, samples: Sequence[Sample], transform: Callable[[np.ndarray], Tensor], draft: int | None = None
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.draft = draft

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(read_image(self.samples[i].path, draft=self.draft)), i
