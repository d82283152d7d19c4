"""Percentile bootstrap confidence intervals, seeded, stratified for classification and NaN-safe.

A replicate resamples the evaluation set with replacement (within each class when stratified, so every replicate
keeps the class counts and per-class metrics stay defined), recomputes the metric on the whole resample, and the
interval is the ``alpha/2`` and ``1 - alpha/2`` percentiles of the replicate values. Replicates where the metric is
undefined (NaN) are dropped; when none is finite the interval is ``(nan, nan)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ._checks import as_int_labels

__all__ = ["bootstrap_ci", "resample_indices", "with_ci"]

log = logging.getLogger(__name__)

Key = str | tuple[str, ...]


def resample_indices(n: int, n_boot: int, seed: int, strata: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield ``n_boot`` bootstrap index arrays ``[n]`` (sampled within each stratum when ``strata [n]`` is given)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    if strata is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, size=n)
        return
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise ValueError(f"strata must have shape ({n},), got {strata.shape}")
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for _ in range(n_boot):
        yield np.concatenate([m[rng.integers(0, len(m), size=len(m))] for m in members])


def _interval(values: np.ndarray, alpha: float, what: str) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        log.info(
            "bootstrap %s: %d of %d replicates undefined (NaN), dropped", what, values.size - finite.size, values.size
        )
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` of ``metric_fn(idx)``, with ``idx [n]`` a resample of ``range(n)``.

    Args:
        metric_fn: maps resampled row indices to a float (NaN = undefined on that resample).
        n: number of samples in the evaluation set.
        n_boot: number of replicates.
        seed: RNG seed (same seed, same interval).
        alpha: 1 - confidence level (0.05 -> 95% interval).
        strata: optional ``[n]`` stratum per sample (class labels) for stratified resampling.
    """
    alpha = _check_alpha(alpha)
    values = np.array([float(metric_fn(idx)) for idx in resample_indices(n, n_boot, seed, strata)])
    return _interval(values, alpha, "metric")


def _lookup(metrics: dict, key: Key) -> float:
    parts = key if isinstance(key, tuple) else tuple(key.split("."))
    value: object = metrics
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"keys: {key!r} not found in the metrics (at {part!r})")
        value = value[part]
    if isinstance(value, (dict, list, str)) or value is None:
        raise ValueError(f"keys: {key!r} is not a number in the metrics")
    return float(value)


MAX_AUTO_CLASSES = 100


def _auto_strata(y: np.ndarray) -> np.ndarray | None:
    """Class labels to stratify on: 1-D integer-valued ``y`` with at most ``MAX_AUTO_CLASSES`` distinct values
    (a 1-D regression target is not stratified by value)."""
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        return None
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        return None
    if len(np.unique(y)) > MAX_AUTO_CLASSES:
        return None
    return as_int_labels(y, "y_true")


def with_ci(
    metrics_fn: Callable[[np.ndarray, np.ndarray], dict],
    y_true: np.ndarray,
    probs: np.ndarray,
    keys: Sequence[Key],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratify: bool | None = None,
) -> dict[str, list[float]]:
    """Bootstrap intervals for several entries of one metrics dict, computing ``metrics_fn`` once per replicate.

    Args:
        metrics_fn: ``(y_true_subset, probs_subset) -> metrics dict``, e.g.
            ``lambda y, p: classification_metrics(y, p, names)``.
        y_true: labels ``[N]`` or targets ``[N, K]``.
        probs: scores or predictions ``[N, ...]``.
        keys: entries to bracket, as dotted paths (``"accuracy"``, ``"auroc.macro"``) or tuples of path parts.
        n_boot: number of replicates.
        seed: RNG seed.
        alpha: 1 - confidence level.
        stratify: resample within classes; default: yes for 1-D integer-valued labels with at most 100 distinct
            values (classification), no otherwise (multi-label and regression targets, ``[N, K]``).

    Returns:
        ``{key: [lo, hi]}`` (tuple keys joined with "."); ``[nan, nan]`` where no replicate was defined.
    """
    alpha = _check_alpha(alpha)
    y, p = np.asarray(y_true), np.asarray(probs)
    if len(y) != len(p):
        raise ValueError(f"probs has {len(p)} rows but y_true has {len(y)}")
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty")
    names = [k if isinstance(k, str) else ".".join(k) for k in keys]
    full = metrics_fn(y, p)  # fail on a wrong key before spending n_boot evaluations
    for key in keys:
        _lookup(full, key)
    strata = None
    if stratify or stratify is None:
        strata = _auto_strata(y) if stratify is None else as_int_labels(y, "y_true")
    values = np.full((int(n_boot), len(keys)), np.nan)
    for b, idx in enumerate(resample_indices(len(y), n_boot, seed, strata)):
        m = metrics_fn(y[idx], p[idx])
        values[b] = [_lookup(m, key) for key in keys]
    return {name: list(_interval(values[:, j], alpha, name)) for j, name in enumerate(names)}
