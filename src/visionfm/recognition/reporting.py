"""Scoring a trained task on a labelled split: metrics with bootstrap CIs, per-image predictions, figures.

Metrics come from :mod:`visionfm.evaluation`, computed once over the whole split from the collected scores.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..evaluation import (plot_confusion, plot_pr, plot_reliability, plot_roc, with_ci, write_predictions)
from .tasks import HeadTask

__all__ = ["CI_KEYS", "score_split", "write_split_predictions", "plot_split", "plot_regression"]

log = logging.getLogger(__name__)
CI_KEYS = {"classify": ["auroc.macro", "ap.macro", "accuracy", "balanced_accuracy", "f1.macro"],
           "forecast": ["auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy"],
           "multilabel": ["auroc.macro", "ap.macro", "f1.macro"],
           "regress": ["mae_std", "r2.macro", "accuracy.macro"]}
PRED_KIND = {"classify": "multiclass", "forecast": "multiclass", "multilabel": "multilabel", "regress": "regression"}


def _truth(task: HeadTask, y: np.ndarray) -> np.ndarray:
    """Labels as the evaluation functions take them: class indices ``[N]`` or targets ``[N, W]``."""
    return y[:, 0].astype(np.int64) if task.kind in ("classify", "forecast") else y


def score_split(task: HeadTask, y: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Full metrics of one split, with bootstrap 95% intervals of the headline numbers under ``"ci95"``.

    Args:
        task: the trained task (its ``metrics`` define the numbers).
        y: labels ``[N, W]``.
        scores: the task's scores ``[N, C]``.
        n_boot: bootstrap replicates (stratified by class for single-label tasks); 0 skips the intervals.
    """
    m = task.metrics(y, scores)
    keys = list(CI_KEYS[task.kind])
    if task.kind == "classify" and getattr(task, "ordinal", False):
        keys.append("kappa_quadratic")
    if n_boot > 0:
        width = y.shape[1]
        fn = (lambda yy, pp: task.metrics(yy.reshape(len(yy), -1).astype(np.float64), pp)) \
            if task.kind in ("classify", "forecast") else (lambda yy, pp: task.metrics(yy.reshape(-1, width), pp))
        m["ci95"] = with_ci(fn, _truth(task, y), scores, keys, n_boot=n_boot, seed=seed)
    return m


def write_split_predictions(path: Path, task: HeadTask, paths: list[str], scores: np.ndarray,
                            y: np.ndarray | None) -> Path:
    """One CSV row per image: path, true label(s), probabilities per class (or predictions per target)."""
    truth = None if y is None else _truth(task, y)
    return write_predictions(path, paths, scores, task.names, truth, kind=PRED_KIND[task.kind])


def plot_regression(y: np.ndarray, pred: np.ndarray, names: list[str], path: Path) -> Path:
    """Predicted vs true value per target (up to 12 panels), identity line dashed."""
    k = min(len(names), 12)
    cols = min(k, 4)
    rows = -(-k // cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows))
    for j in range(k):
        ax = fig.add_subplot(rows, cols, j + 1)
        known = ~np.isnan(y[:, j])
        ax.scatter(y[known, j], pred[known, j], s=8, alpha=0.6)
        lo = float(min(y[known, j].min(), pred[known, j].min())) if known.any() else 0.0
        hi = float(max(y[known, j].max(), pred[known, j].max())) if known.any() else 1.0
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(title=names[j], xlabel="true", ylabel="predicted")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_split(out: Path, task: HeadTask, y: np.ndarray, scores: np.ndarray, m: dict[str, Any]) -> list[Path]:
    """ROC, PR, reliability and confusion PNGs (classification kinds) or a scatter plot (regression)."""
    out.mkdir(parents=True, exist_ok=True)
    if task.kind == "regress":
        return [plot_regression(y, scores, task.names, out / "scatter.png")]
    truth = _truth(task, y)
    paths = [plot_roc(truth, scores, task.names, out / "roc.png"), plot_pr(truth, scores, task.names, out / "pr.png")]
    if task.kind in ("classify", "forecast"):
        paths += [plot_reliability(truth, scores, out / "reliability.png"),
                  plot_confusion(m["confusion_matrix"], task.names, out / "confusion.png")]
        return paths
    for g, idx in task.schema.group_indices().items():
        if g not in m.get("groups", {}):
            continue
        t = y[:, idx]
        rows = ~np.isnan(t).any(1) & (np.nan_to_num(t).sum(1) == 1)
        slug = g.replace(" ", "_")
        paths += [plot_confusion(m["groups"][g]["confusion_matrix"], task.schema.groups[g],
                                 out / f"confusion_{slug}.png"),
                  plot_reliability(t[rows].argmax(1), scores[rows][:, idx], out / f"reliability_{slug}.png")]
    return paths
