"""Label files for the recognition tasks, read strictly: every error names the file and the line.

Formats (picked from the path): the official ``vfm`` label file (``<split>_labels.txt``, lines
``training/1.jpg;<v1>, <v2>, ...``), a CSV manifest (``path`` column plus label columns; class *names* allowed),
or an ImageNet-style folder (one sub-folder per class). What a line must hold depends on the task (:class:`LabelSpec`):

* ``classify``: one class index (or, in CSV, a class name);
* ``multilabel``: the K outputs of the schema, each 0/1, NaN/empty/``-`` = missing; in CSV one column per output
  and/or one column per softmax group holding a member name or index within the group;
* ``regress``: T numbers, none missing;
* ``forecast``: ``converts`` (0/1) and the interval to the next visit in days.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.datasets import MISSING, list_images, parse_label, read_vfm_labels
from .schema import LabelSchema

__all__ = ["KINDS", "LabelSpec", "LabelRow", "LabelTable", "read_labels", "normalise_rel", "infer_class_names",
           "MISSING"]

KINDS = ("classify", "multilabel", "regress", "forecast")


def normalise_rel(rel: str) -> str:
    """A relative image path in one spelling: forward slashes, no leading ``./``."""
    rel = rel.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


@dataclass
class LabelSpec:
    """What labels a task needs.

    Attributes:
        kind: one of :data:`KINDS`.
        names: class names (classify; None = infer from the indices), target names (regress).
        schema: output schema (multilabel).
    """

    kind: str
    names: list[str] | None = None
    schema: LabelSchema | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "multilabel" and self.schema is None:
            raise ValueError("a multilabel LabelSpec needs a schema")
        if self.kind == "multilabel":
            self.names = list(self.schema.outputs)
        if self.kind == "forecast":
            self.names = ["no conversion", "converts"]

    @property
    def width(self) -> int | None:
        """Label values per row (None: regression targets not named yet)."""
        if self.kind == "classify":
            return 1
        if self.kind == "forecast":
            return 2
        return len(self.names) if self.names else None

    def check(self, values: Sequence[float], where: str) -> tuple[float, ...]:
        """Validate one row's numbers; ``where`` (file, line) prefixes every error."""
        vals = tuple(float(v) for v in values)
        if self.width is not None and len(vals) != self.width:
            what = {"classify": "1 class index", "forecast": "2 values (converts, interval days)",
                    "multilabel": f"{self.width} outputs {self.names}", "regress": f"{self.width} targets"}[self.kind]
            raise ValueError(f"{where}: expected {what}, got {len(vals)} value(s) {list(vals)}")
        if self.kind == "multilabel":
            bad = [v for v in vals if not (math.isnan(v) or v in (0.0, 1.0))]
            if bad:
                raise ValueError(f"{where}: multi-label values must be 0, 1 or missing, got {bad}")
            return vals
        if any(math.isnan(v) for v in vals):
            raise ValueError(f"{where}: NaN/missing target {list(vals)} (only multi-label outputs may be missing; "
                             f"remove the row or give a value)")
        if self.kind == "classify":
            self._check_class(vals[0], where)
        if self.kind == "forecast":
            if vals[0] not in (0.0, 1.0):
                raise ValueError(f"{where}: 'converts' must be 0 or 1, got {vals[0]}")
            if vals[1] < 0:
                raise ValueError(f"{where}: the interval to the next visit must be >= 0 days, got {vals[1]}")
        return vals

    def _check_class(self, v: float, where: str) -> None:
        if v != int(v) or v < 0:
            raise ValueError(f"{where}: class index must be a non-negative integer, got {v}")
        if self.names is not None and v >= len(self.names):
            raise ValueError(f"{where}: class index {int(v)} out of range for {len(self.names)} classes "
                             f"{self.names}")


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
            raise ValueError(f"{row.where}: image {row.rel} already labelled at {self.rows[row.rel].where}")
        self.rows[row.rel] = row


def _read_vfm(path: Path, spec: LabelSpec, check_images: bool) -> LabelTable:
    table = LabelTable(path)
    for where, rel, vals in read_vfm_labels(path):
        rel = normalise_rel(rel)
        if check_images and not (path.parent / rel).is_file():
            raise FileNotFoundError(f"{where}: image {path.parent / rel} not found")
        table.add(LabelRow(rel, spec.check(vals, where), where))
    return table


def _class_value(text: str, names: list[str] | None, where: str) -> float:
    """A class given by name (preferred) or by index."""
    text = text.strip()
    if text in MISSING:
        return math.nan
    if names is not None and text in names:
        return float(names.index(text))
    try:
        v = float(text)
    except ValueError:
        valid = names if names is not None else "(indices only: pass class names to use names)"
        raise ValueError(f"{where}: unknown class name {text!r}; valid: {valid}") from None
    if v != int(v):
        raise ValueError(f"{where}: unknown class name {text!r}; valid: {names}")
    return v


def _multilabel_csv(row: dict, schema: LabelSchema, where: str) -> list[float]:
    vals = [math.nan] * schema.k
    for i, o in enumerate(schema.outputs):
        if o in row:
            vals[i] = parse_label(row[o], f"{where}, column {o!r}")
    for g, idx in schema.group_indices().items():
        if g not in row:
            continue
        members = schema.groups[g]
        v = _class_value(row[g], members, f"{where}, column {g!r}")
        if not math.isnan(v) and not 0 <= v < len(members):
            raise ValueError(f"{where}, column {g!r}: index {int(v)} out of range for group {members}")
        for j, i in enumerate(idx):
            if g in row and schema.outputs[i] not in row:
                vals[i] = math.nan if math.isnan(v) else float(j == int(v))
    return vals


def _row_values(row: dict, spec: LabelSpec, columns: Sequence[str], where: str) -> list[float]:
    if spec.kind == "classify":
        return [_class_value(row[columns[0]], spec.names, f"{where}, column {columns[0]!r}")]
    if spec.kind == "multilabel":
        return _multilabel_csv(row, spec.schema, where)
    return [parse_label(row[c], f"{where}, column {c!r}") for c in columns]


def _default_columns(spec: LabelSpec, header: list[str], path: Path) -> list[str]:
    if spec.kind == "classify":
        return ["label"]
    if spec.kind == "forecast":
        return ["converts", "interval_days"]
    if spec.kind == "regress":
        if not spec.names:
            raise ValueError(f"{path}: name the regression target columns (--targets)")
        return list(spec.names)
    found = [c for c in header if c in spec.schema.outputs or c in spec.schema.groups]
    if not found:
        raise ValueError(f"{path}: no column matches an output or group of schema {spec.schema.name!r} "
                         f"({spec.schema.outputs}, groups {list(spec.schema.groups)}); columns: {header}")
    return found


def _read_csv(path: Path, spec: LabelSpec, columns: Sequence[str] | None, patient_column: str | None,
              modality_column: str | None, check_images: bool) -> LabelTable:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if "path" not in header:
        raise ValueError(f"{path}: a label CSV needs a 'path' column; found {header}")
    columns = list(columns) if columns else _default_columns(spec, header, path)
    for c in columns + [x for x in (patient_column, modality_column) if x]:
        if c not in header:
            raise ValueError(f"{path}: column {c!r} not found; columns: {header}")
    table = LabelTable(path)
    for n, row in enumerate(rows, 2):  # line 1 is the header
        where = f"{path}, line {n}"
        rel = normalise_rel(row["path"])
        if check_images and not (path.parent / rel).is_file() and not Path(rel).is_file():
            raise FileNotFoundError(f"{where}: image {path.parent / rel} not found")
        sub = {c: row[c] for c in columns}
        vals = spec.check(_row_values(sub, spec, columns, where), where)
        table.add(LabelRow(rel, vals, where, row[patient_column] if patient_column else None,
                           row[modality_column] if modality_column else None))
    return table


def _read_imagenet(root: Path, spec: LabelSpec) -> LabelTable:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: the imagenet layout needs one sub-folder per class, found none")
    names = spec.names or classes
    table = LabelTable(root)
    for c in classes:
        if c not in names:
            raise ValueError(f"{root / c}: unknown class name {c!r}; valid: {names}")
        for p in list_images(root / c):
            table.add(LabelRow(p.relative_to(root).as_posix(), (float(names.index(c)),), str(p)))
    if spec.names is None:
        spec.names = list(classes)
    return table


def read_labels(source: str | Path, spec: LabelSpec, columns: Sequence[str] | None = None,
                patient_column: str | None = None, modality_column: str | None = None,
                check_images: bool = True) -> LabelTable:
    """Read a label file (``.txt`` vfm, ``.csv``) or an ImageNet-style folder.

    Args:
        source: the file or folder.
        spec: the task's label requirements (class names are filled in for ImageNet folders).
        columns: CSV label columns (defaults: ``label``; ``converts, interval_days``; the target names; the
            schema's output/group names).
        patient_column: CSV column of patient ids (for grouped splits).
        modality_column: CSV column of the image modality.
        check_images: every listed image must exist (relative to the label file's folder).

    Raises:
        FileNotFoundError: the source or a listed image is missing (file and line named).
        ValueError: wrong number of labels, unknown class name, NaN target, bad value (file and line named).
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
