"""Results files: ``metrics.json`` (+ the resolved config beside it) and per-image predictions as CSV.

Prediction CSV layouts (one row per image, floats written with full precision so they read back exactly):

- ``multiclass``: ``path, true, prob_<name>..., predicted`` (``true`` and ``predicted`` are class names)
- ``multilabel``: ``path, true_<name>..., prob_<name>..., predicted`` (``true_*`` is 1, 0 or empty = missing;
  ``predicted`` joins the names with probability >= 0.5 by ";")
- ``regression``: ``path, true_<name>..., pred_<name>...``

The ``true`` columns are left out when no labels are given (prediction on new images).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..checkpoints.io import atomic_write
from ._checks import as_int_labels, check_names

__all__ = ["Predictions", "read_predictions", "to_jsonable", "write_predictions", "write_results"]

KINDS = ("multiclass", "multilabel", "regression")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and dataclasses to JSON types; NaN/inf become ``None``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise ValueError(f"metrics: cannot write a value of type {type(obj).__name__} to JSON: {obj!r}")


def write_results(out_dir: str | Path, metrics: dict, config: Any = None) -> Path:
    """Write ``out_dir/metrics.json`` (NaN as null) and, when given, the config as ``out_dir/config.yaml``.

    Args:
        out_dir: results folder (created).
        metrics: nested dict of metric values (numpy values allowed).
        config: a dataclass config or a plain dict, saved beside the metrics.

    Returns:
        Path of ``metrics.json``.
    """
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
    out_dir = Path(out_dir)
    path = out_dir / "metrics.json"
    text = json.dumps(to_jsonable(metrics), indent=2, allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n")
    if config is not None:
        if not (isinstance(config, dict) or dataclasses.is_dataclass(config)):
            raise ValueError(f"config must be a dataclass or a dict, got {type(config).__name__}")
        with atomic_write(out_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(to_jsonable(config), sort_keys=False))
    return path


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def _resolve_kind(kind: str | None, y_true: np.ndarray | None) -> str:
    if kind is None:
        return "multilabel" if y_true is not None and y_true.ndim == 2 and y_true.shape[1] > 1 else "multiclass"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _rows(
    kind: str, paths: list[str], p: np.ndarray, names: list[str], y: np.ndarray | None, threshold: float
) -> tuple[list[str], list[list[str]]]:
    if kind == "multiclass":
        y = None if y is None else as_int_labels(y, "y_true", len(names))
        header = ["path"] + (["true"] if y is not None else []) + [f"prob_{n}" for n in names] + ["predicted"]
        rows = [
            [paths[i]]
            + ([names[y[i]]] if y is not None else [])
            + [_fmt(v) for v in p[i]]
            + [names[int(p[i].argmax())]]
            for i in range(len(paths))
        ]
        return header, rows
    if y is not None:
        y = np.asarray(y, dtype=np.float64).reshape(len(paths), -1)
        if y.shape[1] != len(names):
            raise ValueError(f"y_true has {y.shape[1]} columns but there are {len(names)} names")
    true_cols = [f"true_{n}" for n in names] if y is not None else []
    if kind == "regression":
        header = ["path"] + true_cols + [f"pred_{n}" for n in names]
        return header, [
            [paths[i]] + ([_fmt(v) for v in y[i]] if y is not None else []) + [_fmt(v) for v in p[i]]
            for i in range(len(paths))
        ]
    header = ["path"] + true_cols + [f"prob_{n}" for n in names] + ["predicted"]
    rows = [
        [paths[i]]
        + ([_fmt(v) for v in y[i]] if y is not None else [])
        + [_fmt(v) for v in p[i]]
        + [";".join(n for n, v in zip(names, p[i]) if v >= threshold)]
        for i in range(len(paths))
    ]
    return header, rows


def write_predictions(
    path_csv: str | Path,
    paths: Sequence[str],
    probs: np.ndarray,
    names: Sequence[str],
    y_true: np.ndarray | None = None,
    kind: str | None = None,
    threshold: float = 0.5,
) -> Path:
    """Write one CSV row per image (layouts in the module docstring).

    Args:
        path_csv: output CSV path (parent folders are created).
        paths: image path per row ``[N]``.
        probs: class/label probabilities ``[N, C]`` (regression: predictions ``[N, T]``).
        names: class, label or target names ``[C]``.
        y_true: optional truth: class indices ``[N]`` (multiclass) or targets ``[N, K]`` with NaN = missing.
        kind: "multiclass", "multilabel" or "regression"; default multilabel when ``y_true`` is 2-D, else
            multiclass.
        threshold: multilabel probability at or above which a label is listed in ``predicted``.

    Returns:
        ``path_csv`` as a Path.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D array [N, C], got shape {p.shape}")
    paths = [str(x) for x in paths]
    if len(paths) != len(p):
        raise ValueError(f"paths has {len(paths)} entries but probs has {len(p)} rows")
    if not np.isfinite(p).all():
        raise ValueError(f"probs contains NaN/inf at rows {np.flatnonzero(~np.isfinite(p).all(1))[:5].tolist()}")
    names = check_names(names, p.shape[1], "names")
    y = None if y_true is None else np.asarray(y_true)
    if y is not None and len(y) != len(paths):
        raise ValueError(f"y_true has {len(y)} rows but probs has {len(paths)}")
    header, rows = _rows(_resolve_kind(kind, y), paths, p, names, y, threshold)
    path_csv = Path(path_csv)
    with atomic_write(path_csv) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path_csv


@dataclasses.dataclass
class Predictions:
    """Contents of a predictions CSV.

    Attributes:
        paths: image path per row ``[N]``.
        names: class, label or target names ``[C]``.
        probs: probabilities ``[N, C]`` (regression: predictions).
        y_true: class indices ``[N]`` (multiclass), targets ``[N, C]`` with NaN = missing, or None.
        predicted: the ``predicted`` column (None for regression).
        kind: "multiclass", "multilabel" or "regression".
    """

    paths: list[str]
    names: list[str]
    probs: np.ndarray
    y_true: np.ndarray | None
    predicted: list[str] | None
    kind: str


def _float(text: str, where: str) -> float:
    if text == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: not a number: {text!r}") from None


def read_predictions(path_csv: str | Path, kind: str | None = None) -> Predictions:
    """Read a CSV written by :func:`write_predictions`.

    The layout is recognised from the header (``pred_*`` -> regression, ``true_*`` -> multilabel, else
    multiclass); a multilabel file written without labels needs ``kind="multilabel"``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing columns, an unknown class name or a non-number (names the file and line).
    """
    path_csv = Path(path_csv)
    if not path_csv.is_file():
        raise FileNotFoundError(f"predictions file not found: {path_csv}")
    with open(path_csv, newline="") as f:
        table = list(csv.reader(f))
    if not table or "path" not in table[0]:
        raise ValueError(f"{path_csv}:1: header has no 'path' column")
    header, body = table[0], table[1:]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"{path_csv}:{i + 2}: {len(row)} fields, the header has {len(header)}")
    col = {h: i for i, h in enumerate(header)}
    pred_cols = [h for h in header if h.startswith("pred_")]
    prob_cols = [h for h in header if h.startswith("prob_")]
    value_cols = pred_cols or prob_cols
    if not value_cols:
        raise ValueError(f"{path_csv}:1: header has no prob_<name> or pred_<name> columns")
    names = [h.split("_", 1)[1] for h in value_cols]
    kind = (
        _resolve_kind(kind, None)
        if kind
        else (
            "regression" if pred_cols else "multilabel" if any(h.startswith("true_") for h in header) else "multiclass"
        )
    )
    probs = np.array(
        [[_float(r[col[h]], f"{path_csv}:{i + 2}") for h in value_cols] for i, r in enumerate(body)], dtype=np.float64
    ).reshape(len(body), len(names))
    y_true = None
    if kind == "multiclass" and "true" in col:
        index = {n: j for j, n in enumerate(names)}
        bad = [(i + 2, r[col["true"]]) for i, r in enumerate(body) if r[col["true"]] not in index]
        if bad:
            raise ValueError(f"{path_csv}:{bad[0][0]}: unknown class name {bad[0][1]!r}; valid: {names}")
        y_true = np.array([index[r[col["true"]]] for r in body], dtype=np.int64)
    elif kind != "multiclass" and f"true_{names[0]}" in col:
        y_true = np.array(
            [[_float(r[col[f"true_{n}"]], f"{path_csv}:{i + 2}") for n in names] for i, r in enumerate(body)],
            dtype=np.float64,
        ).reshape(len(body), len(names))
    predicted = [r[col["predicted"]] for r in body] if "predicted" in col else None
    return Predictions([r[col["path"]] for r in body], names, probs, y_true, predicted, kind)
