"""Label files for the recognition tasks, read strictly: every error names the file and the line.

Formats (picked from the path): the official ``vfm`` label file (``<split>_labels.txt``, lines
``training/1.jpg;<v1>, <v2>, ...``), a CSV manifest (``path`` column plus label columns; class *names* allowed; a
byte-order mark, as Excel writes, is accepted), or an ImageNet-style folder (one sub-folder per class). What a line
must hold is the task kind's business (its class in :data:`~visionfm.recognition.kinds.TASKS` checks the values and
picks the CSV columns): one class index, the K outputs of a multi-label schema (NaN / empty / ``-`` = missing), T
regression targets, or ``converts`` and the interval in days for forecasting.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.datasets import MISSING, list_images, parse_label, read_vfm_labels
from ..errors import UserError
from .kinds import task_class
from .schema import LabelSchema

__all__ = [
    "MISSING",
    "LabelRow",
    "LabelSpec",
    "LabelTable",
    "check_class_index",
    "class_value",
    "infer_class_names",
    "multilabel_csv_values",
    "normalise_rel",
    "read_csv_rows",
    "read_labels",
]


def normalise_rel(rel: str) -> str:
    """A relative image path in one spelling: forward slashes, no leading ``./``."""
    rel = rel.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


@dataclass
class LabelSpec:
    """What labels a task needs; the kind's task class does the checking.

    Attributes:
        kind: a registered task kind (``classify``, ``multilabel``, ``regress``, ``forecast``, ...).
        names: class names (classify; None = infer from the indices), target names (regress).
        schema: output schema (multilabel).
    """

    kind: str
    names: list[str] | None = None
    schema: LabelSchema | None = None

    def __post_init__(self) -> None:
        self.rules = task_class(self.kind)
        self.names = self.rules.label_names(self)

    @property
    def width(self) -> int | None:
        """Label values per row (None: not known until the data is read)."""
        return self.rules.label_width(self)

    def check(self, values: Sequence[float], where: str) -> tuple[float, ...]:
        """Validate one row's numbers; ``where`` (file, line) prefixes every error."""
        vals = tuple(float(v) for v in values)
        if self.width is not None and len(vals) != self.width:
            raise UserError(f"{where}: expected {self.rules.label_help(self)}, got {len(vals)} value(s) {list(vals)}")
        if any(math.isinf(v) for v in vals):
            raise UserError(f"{where}: infinite label {list(vals)}; give a finite number")
        return self.rules.check_labels(self, vals, where)


def check_class_index(v: float, names: Sequence[str] | None, where: str) -> None:
    """A class index must be a whole number in ``0..C-1`` (C = len(names) when the classes are declared)."""
    if math.isnan(v):
        raise UserError(
            f"{where}: missing class label (only multi-label outputs may be missing; remove the row or give a value)"
        )
    if v != int(v) or v < 0:
        raise UserError(f"{where}: class index must be a non-negative integer, got {v}")
    if names is not None and v >= len(names):
        raise UserError(
            f"{where}: class index {int(v)} out of range for the {len(names)} declared classes {list(names)}"
        )


@dataclass
class LabelRow:
    """One labelled image: relative path, values, where it came from, and optional patient id / modality."""

    rel: str
    values: tuple[float, ...]
    where: str
    patient: str | None = None
    modality: str | None = None


@dataclass
class LabelTable:
    """Rows of a label file keyed by normalised relative path."""

    source: Path
    rows: dict[str, LabelRow] = field(default_factory=dict)

    def add(self, row: LabelRow) -> None:
        if row.rel in self.rows:
            raise UserError(f"{row.where}: image {row.rel} already labelled at {self.rows[row.rel].where}")
        self.rows[row.rel] = row


def _read_vfm(path: Path, spec: LabelSpec, check_images: bool) -> LabelTable:
    table = LabelTable(path)
    for where, rel, vals in read_vfm_labels(path):
        rel = normalise_rel(rel)
        if check_images and not (path.parent / rel).is_file():
            raise FileNotFoundError(f"{where}: image {path.parent / rel} not found")
        table.add(LabelRow(rel, spec.check(vals, where), where))
    return table


def class_value(text: str, names: Sequence[str] | None, where: str) -> float:
    """A class given by name (preferred) or by index; a missing value is NaN."""
    text = text.strip()
    if text in MISSING:
        return math.nan
    if names is not None and text in names:
        return float(list(names).index(text))
    try:
        v = float(text)
    except ValueError:
        valid = list(names) if names is not None else "(indices only: pass class names to use names)"
        raise UserError(f"{where}: unknown class name {text!r}; valid: {valid}") from None
    if not math.isfinite(v) or v != int(v):
        raise UserError(f"{where}: unknown class name {text!r}; valid: {names}")
    return v


def multilabel_csv_values(row: dict, schema: LabelSchema, where: str) -> list[float]:
    """The K outputs of one CSV row: one column per output and/or one per softmax group (member name or index)."""
    vals = [math.nan] * schema.k
    for i, o in enumerate(schema.outputs):
        if o in row:
            vals[i] = parse_label(row[o], f"{where}, column {o!r}")
    for g, idx in schema.group_indices().items():
        if g not in row:
            continue
        members = schema.groups[g]
        v = class_value(row[g], members, f"{where}, column {g!r}")
        if not math.isnan(v) and not 0 <= v < len(members):
            raise UserError(f"{where}, column {g!r}: index {int(v)} out of range for group {members}")
        for j, i in enumerate(idx):
            if schema.outputs[i] not in row:
                vals[i] = math.nan if math.isnan(v) else float(j == int(v))
    return vals


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line, row)`` pairs of a CSV; ragged rows and non-UTF-8 text are errors naming the line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is accepted
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        rows = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                raise UserError(
                    f"{path}, line {reader.line_num}: {len(fields)} fields, but the header has {len(header)} ({header})"
                )
            rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as e:
        raise UserError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    return header, rows


def _read_csv(
    path: Path,
    spec: LabelSpec,
    columns: Sequence[str] | None,
    patient_column: str | None,
    modality_column: str | None,
    check_images: bool,
) -> LabelTable:
    header, rows = read_csv_rows(path)
    if "path" not in header:
        raise UserError(f"{path}: a label CSV needs a 'path' column; found {header}")
    columns = list(columns) if columns else spec.rules.csv_columns(spec, header, path)
    for c in columns + [x for x in (patient_column, modality_column) if x]:
        if c not in header:
            raise UserError(f"{path}: column {c!r} not found; columns: {header}")
    table = LabelTable(path)
    for n, row in rows:
        where = f"{path}, line {n}"
        rel = normalise_rel(row["path"])
        if check_images and not (path.parent / rel).is_file() and not Path(rel).is_file():
            raise FileNotFoundError(f"{where}: image {path.parent / rel} not found")
        sub = {c: row[c] for c in columns}
        vals = spec.check(spec.rules.csv_values(spec, sub, columns, where), where)
        table.add(
            LabelRow(
                rel,
                vals,
                where,
                row[patient_column] if patient_column else None,
                row[modality_column] if modality_column else None,
            )
        )
    return table


def _read_imagenet(root: Path, spec: LabelSpec) -> LabelTable:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{root}: the imagenet layout needs one sub-folder per class, found none")
    names = spec.names or classes
    table = LabelTable(root)
    for c in classes:
        if c not in names:
            raise UserError(f"{root / c}: unknown class name {c!r}; valid: {names}")
        for p in list_images(root / c):
            table.add(LabelRow(p.relative_to(root).as_posix(), (float(names.index(c)),), str(p)))
    if spec.names is None:
        spec.names = list(classes)
    return table


def read_labels(
    source: str | Path,
    spec: LabelSpec,
    columns: Sequence[str] | None = None,
    patient_column: str | None = None,
    modality_column: str | None = None,
    check_images: bool = True,
) -> LabelTable:
    """Read a label file (``.txt`` vfm, ``.csv``) or an ImageNet-style folder.

    Args:
        source: the file or folder.
        spec: the task's label requirements (class names are filled in for ImageNet folders).
        columns: CSV label columns (default: the kind's, e.g. ``label``; ``converts, interval_days``; the target
            names; the schema's output/group names).
        patient_column: CSV column of patient ids (for grouped splits).
        modality_column: CSV column of the image modality.
        check_images: every listed image must exist (relative to the label file's folder).

    Raises:
        FileNotFoundError: the source or a listed image is missing (file and line named).
        UserError: wrong number of labels, unknown class name, NaN/inf target, ragged CSV (file and line named).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"label source not found: {source}")
    if source.is_dir():
        return _read_imagenet(source, spec)
    if source.suffix.lower() == ".csv":
        return _read_csv(source, spec, columns, patient_column, modality_column, check_images)
    return _read_vfm(source, spec, check_images)


def infer_class_names(values: np.ndarray) -> list[str]:
    """Names ``"0" .. "C-1"`` for class indices ``values [N]`` (C = largest index + 1)."""
    return [str(i) for i in range(int(np.nanmax(values)) + 1)]
