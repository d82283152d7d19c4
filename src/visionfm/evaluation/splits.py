"""Pure, seeded split functions: a stratified (optionally patient-grouped) validation split, k-shot draws and
stratified k-fold cross-validation.

Every function returns sorted ``int64`` index arrays into the label array it was given, depends only on its
arguments (no global RNG), and raises ``ValueError`` naming the argument on bad input.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ._checks import as_groups, as_int_labels

__all__ = ["kshot_draws", "kshot_indices", "stratified_kfold", "stratified_split"]

log = logging.getLogger(__name__)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _val_quotas(counts: np.ndarray, val_fraction: float) -> np.ndarray:
    """Validation size per class: largest-remainder rounding of ``val_fraction * count`` to a total of
    ``round(val_fraction * N)``, keeping at least one sample of every class in training."""
    ideal = counts * val_fraction
    cap = np.maximum(counts - 1, 0)
    quota = np.minimum(np.floor(ideal).astype(np.int64), cap)
    missing = int(round(val_fraction * counts.sum())) - int(quota.sum())
    for c in np.argsort(-(ideal - np.floor(ideal)), kind="stable"):
        if missing <= 0:
            break
        if quota[c] < cap[c]:
            quota[c] += 1
            missing -= 1
    return quota


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation split out of a training set, stratified by class.

    Without ``groups`` every class contributes ``val_fraction`` of its samples (largest-remainder rounding; a
    class with a single sample stays in training). With ``groups`` (patient ids) whole groups move together, so no
    group is on both sides: scikit-learn's ``StratifiedGroupKFold`` with ``round(1 / val_fraction)`` folds, first
    fold as validation, which keeps class proportions as close as the group structure allows.

    Args:
        labels: class indices ``[N]``.
        val_fraction: fraction of samples for validation, in (0, 1).
        seed: RNG seed; the same arguments always give the same split.
        groups: optional group (patient) id per sample ``[N]``.

    Returns:
        ``(train_idx, val_idx)``, disjoint, sorted, together covering ``range(N)``.
    """
    y = as_int_labels(labels, "labels")
    seed = _check_seed(seed)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if groups is not None:
        return _grouped_split(y, float(val_fraction), seed, as_groups(groups, len(y)))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quotas = _val_quotas(counts, float(val_fraction))
    val = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quotas)]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    if val_idx.size == 0:
        raise ValueError(f"val_fraction={val_fraction} of {len(y)} samples leaves the validation split empty")
    return np.setdiff1d(np.arange(len(y)), val_idx).astype(np.int64), val_idx


def _grouped_split(y: np.ndarray, val_fraction: float, seed: int, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_splits = max(2, int(round(1.0 / val_fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(
            f"groups has {n_groups} distinct ids, too few for val_fraction={val_fraction} (needs at least {n_splits})"
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only k members"
        train_idx, val_idx = next(cv.split(np.zeros(len(y)), y, groups))
    log.info(
        "grouped split: %d train / %d val samples (%.3f; asked %.3f), %d groups",
        len(train_idx),
        len(val_idx),
        len(val_idx) / len(y),
        val_fraction,
        n_groups,
    )
    return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)


def _kshot(y: np.ndarray, k: int, rng: np.random.Generator, n_classes: int | None) -> np.ndarray:
    classes = np.arange(n_classes) if n_classes is not None else np.unique(y)
    picks = []
    for c in classes:
        members = np.flatnonzero(y == c)
        if len(members) < k:
            raise ValueError(f"class {int(c)} has {len(members)} samples in labels, fewer than k={k}")
        picks.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def kshot_indices(labels: np.ndarray, k: int, seed: int, n_classes: int | None = None) -> np.ndarray:
    """Draw exactly ``k`` samples of every class, without replacement.

    Args:
        labels: class indices ``[N]``.
        k: samples per class.
        seed: RNG seed.
        n_classes: when given, classes ``0..n_classes-1`` must all have ``k`` samples (a class absent from
            ``labels`` is an error); otherwise the classes present in ``labels``.

    Returns:
        Sorted indices ``[k * n_classes]``.

    Raises:
        ValueError: a class has fewer than ``k`` samples (the message names the class).
    """
    y = as_int_labels(labels, "labels", n_classes)
    return _kshot(y, _check_k(k), np.random.default_rng(_check_seed(seed)), n_classes)


def kshot_draws(labels: np.ndarray, k: int, n_draws: int, seed: int, n_classes: int | None = None) -> list[np.ndarray]:
    """``n_draws`` independent k-shot draws (see :func:`kshot_indices`).

    Draw ``i`` uses the ``i``-th child of ``numpy.random.SeedSequence(seed)``, so the first draws do not change
    when ``n_draws`` grows.
    """
    y = as_int_labels(labels, "labels", n_classes)
    k = _check_k(k)
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    children = np.random.SeedSequence(_check_seed(seed)).spawn(int(n_draws))
    return [_kshot(y, k, np.random.default_rng(child), n_classes) for child in children]


def stratified_kfold(
    labels: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold cross-validation (``StratifiedGroupKFold`` when ``groups`` are given).

    Every sample is in exactly one test fold; with groups, no group is in both the train and test side of a fold.

    Args:
        labels: class indices ``[N]``.
        n_folds: number of folds (>= 2).
        seed: RNG seed for the shuffle.
        groups: optional group (patient) id per sample ``[N]``.

    Returns:
        ``[(train_idx, test_idx)] * n_folds``, sorted index arrays.
    """
    y = as_int_labels(labels, "labels")
    seed = _check_seed(seed)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}")
    n_units = len(y) if groups is None else len(np.unique(as_groups(groups, len(y))))
    if n_folds > n_units:
        what = "samples" if groups is None else "groups"
        raise ValueError(f"n_folds={n_folds} is larger than the number of {what} ({n_units})")
    smallest = int(np.bincount(y)[np.unique(y)].min())
    if smallest < n_folds:
        log.warning(
            "the smallest class has %d samples, fewer than n_folds=%d: some test folds miss it", smallest, n_folds
        )
    if groups is None:
        cv = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    else:
        cv = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folds = list(cv.split(np.zeros(len(y)), y, groups))
    return [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in folds]
