"""Recognition metrics as pure functions of labels and scores over the WHOLE evaluation set (never per batch).

Threshold-free metrics (AUROC, AP) use the scores; AP is average precision on the scores, never on thresholded
predictions. Per-class values come with a ``"macro"`` entry, the mean over the classes where the metric is defined;
an undefined value (a class with no positives, a label with one class present) is NaN and explained in ``"notes"``.
The bootstrap helpers live in :mod:`visionfm.evaluation.bootstrap` and are re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    r2_score,
    roc_auc_score,
)

from ._checks import as_int_labels, as_multilabel, as_scores, check_names
from .bootstrap import bootstrap_ci, with_ci

__all__ = [
    "bootstrap_ci",
    "classification_metrics",
    "expected_calibration_error",
    "multilabel_metrics",
    "regression_metrics",
    "reliability_bins",
    "with_ci",
]


def _macro(values: dict[str, float]) -> float:
    finite = [v for v in values.values() if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _with_macro(values: dict[str, float]) -> dict[str, float]:
    return {**values, "macro": _macro(values)}


def _binary_score(
    fn: Callable[[np.ndarray, np.ndarray], float], pos: np.ndarray, score: np.ndarray, what: str, notes: list[str]
) -> float:
    """``fn(pos, score)`` or NaN (with a note) when ``pos`` holds a single class."""
    if pos.size == 0 or pos.all() or not pos.any():
        notes.append(f"{what}: undefined, only one class present among {pos.size} labelled samples")
        return float("nan")
    return float(fn(pos, score))


def _prepare(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> tuple:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 and len(class_names) == 2:
        p = np.stack([1.0 - p, p], axis=1)  # binary scores given as P(positive) [N]
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D array [N, C], got shape {p.shape}")
    names = check_names(class_names, p.shape[1])
    if len(names) < 2:
        raise ValueError(f"class_names needs at least 2 classes, got {names}")
    y = as_int_labels(y_true, "y_true", len(names))
    return y, as_scores(p, "probs", len(y), len(names), unit=True), names


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], ordinal: bool = False
) -> dict:
    """Single-label (binary or multi-class) metrics.

    Args:
        y_true: class indices ``[N]`` in ``0..C-1``.
        probs: class probabilities ``[N, C]`` (rows should sum to 1; ``[N]`` = P(class 1) when C == 2).
        class_names: ``C`` names.
        ordinal: the classes are ordered grades; adds quadratic-weighted Cohen's kappa.

    Returns:
        ``auroc`` and ``ap`` ({class: v, "macro": v}; one-vs-rest; binary: only the positive class ``names[1]``),
        ``accuracy``, ``balanced_accuracy``, ``f1`` ({class: v, "macro": v}, argmax predictions),
        ``kappa_quadratic`` (only when ``ordinal``), ``confusion_matrix`` (rows = true, columns = predicted),
        ``ece`` (15 equal-width bins, top-label confidence), ``n`` and ``notes``.

    Raises:
        ValueError: shape mismatch, NaN/inf or non-probability scores, labels out of range (names the argument).
    """
    y, p, names = _prepare(y_true, probs, class_names)
    n_cls = len(names)
    pred = p.argmax(axis=1)
    notes: list[str] = []
    cols = [1] if n_cls == 2 else list(range(n_cls))
    auroc = {names[c]: _binary_score(roc_auc_score, y == c, p[:, c], f"auroc[{names[c]}]", notes) for c in cols}
    ap = {names[c]: _binary_score(average_precision_score, y == c, p[:, c], f"ap[{names[c]}]", []) for c in cols}
    f1 = f1_score(y, pred, labels=list(range(n_cls)), average=None, zero_division=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predicted classes absent from y_true
        bacc = float(balanced_accuracy_score(y, pred))
    out = {
        "auroc": _with_macro(auroc),
        "ap": _with_macro(ap),
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": bacc,
        "f1": _with_macro({name: float(v) for name, v in zip(names, f1)}),
        "confusion_matrix": confusion_matrix(y, pred, labels=list(range(n_cls))).tolist(),
        "ece": expected_calibration_error(y, p),
        "n": len(y),
    }
    if ordinal:
        out["kappa_quadratic"] = _kappa(y, pred, n_cls, notes)
    out["notes"] = notes
    return out


def _kappa(y: np.ndarray, pred: np.ndarray, n_cls: int, notes: list[str]) -> float:
    if len(np.unique(np.concatenate([y, pred]))) < 2:
        notes.append("kappa_quadratic: undefined, truth and predictions are one single class")
        return float("nan")
    return float(cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(n_cls))))


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label reliability table over ``n_bins`` equal-width confidence bins ``(i/n, (i+1)/n]``.

    Args:
        y_true: class indices ``[N]``.
        probs: class probabilities ``[N, C]``.

    Returns:
        ``edges [n_bins+1]``, ``count [n_bins]``, ``confidence [n_bins]`` (mean top probability) and
        ``accuracy [n_bins]`` (fraction correct); NaN in empty bins.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    p = np.asarray(probs, dtype=np.float64)
    y = as_int_labels(y_true, "y_true", p.shape[1] if p.ndim == 2 else None)
    p = as_scores(p, "probs", len(y), unit=True)
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")  # conf == edge goes to the lower bin
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum over bins of ``|B|/N * |accuracy(B) - confidence(B)|`` on the top-label confidence."""
    bins = reliability_bins(y_true, probs, n_bins)
    filled = bins["count"] > 0
    gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] * gap) / bins["count"].sum())


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str], threshold: float = 0.5) -> dict:
    """Per-label binary metrics with missing labels masked.

    Args:
        y_true: targets ``[N, K]`` in {0, 1}, NaN = label missing for that sample.
        probs: per-label probabilities ``[N, K]``.
        names: ``K`` label names.
        threshold: probability at or above which a label is predicted positive (for F1).

    Returns:
        ``auroc``, ``ap``, ``f1`` ({label: v, "macro": v}, each label over its non-missing rows; a label with one
        class present has NaN AUROC/AP plus a note; macro = mean over defined labels), ``n_labelled``
        ({label: count}), ``n`` and ``notes``.
    """
    y = as_multilabel(y_true, "y_true")
    names = check_names(names, y.shape[1], "names")
    p = as_scores(probs, "probs", len(y), len(names), unit=True)
    notes: list[str] = []
    auroc, ap, f1, n_lab = {}, {}, {}, {}
    for k, name in enumerate(names):
        known = ~np.isnan(y[:, k])
        pos, score = y[known, k] == 1, p[known, k]
        n_lab[name] = int(known.sum())
        auroc[name] = _binary_score(roc_auc_score, pos, score, f"auroc[{name}] (and ap)", notes)
        ap[name] = _binary_score(average_precision_score, pos, score, f"ap[{name}]", [])
        f1[name] = float(f1_score(pos, score >= threshold, zero_division=np.nan)) if known.any() else float("nan")
    return {
        "auroc": _with_macro(auroc),
        "ap": _with_macro(ap),
        "f1": _with_macro(f1),
        "n_labelled": n_lab,
        "n": len(y),
        "threshold": float(threshold),
        "notes": notes,
    }


def _as_targets(arr: object, name: str, n_rows: int | None = None) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] == 0:
        raise ValueError(f"{name} must be a 2-D array [N, T], got shape {out.shape}")
    if n_rows is not None and out.shape[0] != n_rows:
        raise ValueError(f"{name} has {out.shape[0]} rows but y_true has {n_rows}")
    return out


def _one_target(t: np.ndarray, q: np.ndarray, tolerance: float, name: str, notes: list[str]) -> dict[str, float]:
    nan = float("nan")
    err = np.abs(q - t)
    nonzero = t != 0
    rel = err[nonzero] / np.abs(t[nonzero])
    mean_true = float(np.mean(t)) if t.size else nan
    constant = t.size < 2 or np.all(t == t[0])
    if constant:
        notes.append(f"r2/pearson[{name}]: undefined, fewer than 2 distinct true values")
    return {
        "mae": float(err.mean()) if t.size else nan,
        "relative_error": float(rel.mean()) if rel.size else nan,
        "accuracy": float(1.0 - err.mean() / abs(mean_true)) if t.size and mean_true != 0 else nan,
        "within_tolerance": float(np.mean(rel <= tolerance)) if rel.size else nan,
        "r2": nan if constant else float(r2_score(t, q)),
        "pearson": nan if constant or np.all(q == q[0]) else float(pearsonr(t, q)[0]),
        "n": int(t.size),
        "n_zero_excluded": int((~nonzero).sum()),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], tolerance: float = 0.1) -> dict:
    """Per-target regression metrics (biomarkers), in the targets' original units.

    Definitions per target, over its non-missing rows (NaN in ``y_true`` = not measured):
    ``mae`` = mean |pred - true|; ``relative_error`` = mean |pred - true| / |true| over rows with true != 0 (the
    excluded rows are counted in ``n_zero_excluded``); ``accuracy`` = 1 - MAE / |mean(true)| -- the VisionFM
    biomarker "accuracy": the paper does not define it, the official evaluation code reports
    mean|pred - true| / mean(true) per target, and the paper's "accuracy" is one minus that;
    ``within_tolerance`` = fraction of rows (true != 0) with relative error <= ``tolerance``;
    ``r2`` (coefficient of determination) and ``pearson`` correlation.

    Args:
        y_true: targets ``[N, T]`` (``[N]`` = one target), NaN = missing.
        y_pred: predictions ``[N, T]``, finite.
        names: ``T`` target names.
        tolerance: relative-error tolerance for ``within_tolerance``.

    Returns:
        ``{metric: {target: v, "macro": v}}`` for the metrics above, ``n`` and ``n_zero_excluded``
        ({target: count}), ``tolerance`` and ``notes``.
    """
    t_all = _as_targets(y_true, "y_true")
    q_all = _as_targets(y_pred, "y_pred", t_all.shape[0])
    names = check_names(names, t_all.shape[1], "names")
    if q_all.shape[1] != t_all.shape[1]:
        raise ValueError(f"y_pred has {q_all.shape[1]} targets but y_true has {t_all.shape[1]}")
    if not np.isfinite(q_all).all():
        raise ValueError(f"y_pred contains NaN/inf at rows {np.flatnonzero(~np.isfinite(q_all).all(1))[:5].tolist()}")
    if np.isinf(t_all).any():
        raise ValueError("y_true contains inf (use NaN for a missing target)")
    if not float(tolerance) > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    notes: list[str] = []
    per = {}
    for j, name in enumerate(names):
        known = ~np.isnan(t_all[:, j])
        per[name] = _one_target(t_all[known, j], q_all[known, j], float(tolerance), name, notes)
    keys = ["mae", "relative_error", "accuracy", "within_tolerance", "r2", "pearson"]
    out: dict = {k: _with_macro({name: per[name][k] for name in names}) for k in keys}
    out["n"] = {name: per[name]["n"] for name in names}
    out["n_zero_excluded"] = {name: per[name]["n_zero_excluded"] for name in names}
    out.update({"tolerance": float(tolerance), "notes": notes})
    return out
