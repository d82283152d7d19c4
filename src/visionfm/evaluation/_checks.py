"""Input validation shared by splits, metrics, plots and results.

Every error is a ``ValueError`` naming the offending argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["as_groups", "as_int_labels", "as_multilabel", "as_scores", "check_names"]


def as_int_labels(labels: object, name: str = "labels", n_classes: int | None = None) -> np.ndarray:
    """Class indices ``[N]`` as int64; integral floats are accepted, NaN/negative/non-integral values are not.

    Raises:
        ValueError: not 1-D, empty, NaN, non-integral, negative, or ``>= n_classes`` (the message names ``name``).
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices [N], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN/inf at rows {np.flatnonzero(~np.isfinite(arr))[:5].tolist()}")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class indices, got non-integral values")
    out = arr.astype(np.int64)
    if out.min() < 0:
        raise ValueError(f"{name} contains negative class index {int(out.min())}")
    if n_classes is not None and out.max() >= n_classes:
        bad = np.flatnonzero(out >= n_classes)[:5].tolist()
        raise ValueError(
            f"{name} contains class index {int(out.max())} out of range for {n_classes} classes (rows {bad})"
        )
    return out


def as_scores(scores: object, name: str, n_rows: int, n_cols: int | None = None, unit: bool = False) -> np.ndarray:
    """Finite float64 scores ``[N, C]`` with ``N == n_rows`` (and ``C == n_cols`` when given).

    Args:
        unit: also require every value in [0, 1] (probabilities, not logits).

    Raises:
        ValueError: wrong shape, NaN/inf, or (``unit``) values outside [0, 1]; the message names ``name``.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, C], got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the labels have {n_rows}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ValueError(f"{name} has {arr.shape[1]} columns but there are {n_cols} names")
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))[:5].tolist()
        raise ValueError(f"{name} contains NaN/inf at rows {rows}")
    if unit and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got range [{arr.min():.4g}, {arr.max():.4g}] "
            "(pass softmax/sigmoid outputs, not logits)"
        )
    return arr


def as_multilabel(y_true: object, name: str = "y_true") -> np.ndarray:
    """Multi-label targets ``[N, K]`` as float64 with values in {0, 1, NaN} (NaN = missing label)."""
    arr = np.asarray(y_true, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, K] (NaN = missing), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    known = arr[~np.isnan(arr)]
    if np.isinf(known).any() or not np.isin(known, (0.0, 1.0)).all():
        bad = sorted(set(known[~np.isin(known, (0.0, 1.0))].tolist()))[:5]
        raise ValueError(f"{name} must hold 0, 1 or NaN (missing), got values {bad}")
    return arr


def as_groups(groups: object, n: int, name: str = "groups") -> np.ndarray:
    """Group ids ``[N]`` (any hashable dtype); rejects shape mismatches and missing (None/NaN) ids."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one id per sample ({n}), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at rows {np.flatnonzero(np.isnan(arr))[:5].tolist()}")
    if arr.dtype.kind == "O" and any(g is None for g in arr):
        raise ValueError(f"{name} contains None ids")
    return arr


def check_names(names: Sequence[str], n: int, name: str = "class_names") -> list[str]:
    """``names`` as a list of ``n`` unique strings."""
    if isinstance(names, str):
        raise ValueError(f"{name} must be a list of strings, got the single string {names!r}")
    out = [str(x) for x in names]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but the scores have {n} columns")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates: {sorted({x for x in out if out.count(x) > 1})}")
    if "macro" in out:
        raise ValueError(f"{name} may not contain 'macro' (reserved for the macro average)")
    return out
