"""Scoring a trained task on a labelled split: metrics with bootstrap CIs, per-image predictions, figures.

Metrics come from :mod:`visionfm.evaluation`, computed once over the whole split from the collected scores; which
numbers get intervals, how truth is written and which figures are drawn is the task kind's (its class attributes
``ci_keys``, ``prediction_kind`` and methods ``truth``, ``plot``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..evaluation import with_ci, write_predictions
from .tasks import HeadTask

__all__ = ["plot_regression", "plot_split", "score_split", "write_split_predictions"]

log = logging.getLogger(__name__)


def score_split(task: HeadTask, y: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Full metrics of one split, with bootstrap 95% intervals of the headline numbers under ``"ci95"``.

    Args:
        task: the trained task (its ``metrics`` define the numbers).
        y: labels ``[N, W]``.
        scores: the task's scores ``[N, C]``.
        n_boot: bootstrap replicates (stratified by class for single-label tasks); 0 skips the intervals.
    """
    m = task.metrics(y, scores)
    if n_boot > 0:
        width, truth = y.shape[1], task.truth(y)

        def fn(yy: np.ndarray, pp: np.ndarray) -> dict:  # resampled truth back to label rows [n, W]
            rows = yy.reshape(len(yy), -1) if truth.ndim == 1 else yy.reshape(-1, width)
            return task.metrics(rows.astype(np.float64), pp)

        m["ci95"] = with_ci(fn, truth, scores, task.bootstrap_keys(), n_boot=n_boot, seed=seed)
    return m


def write_split_predictions(
    path: Path, task: HeadTask, paths: list[str], scores: np.ndarray, y: np.ndarray | None
) -> Path:
    """One CSV row per image: path, true label(s), probabilities per class (or predictions per target)."""
    truth = None if y is None else task.truth(y)
    return write_predictions(path, paths, scores, task.names, truth, kind=task.prediction_kind)


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
    """The task kind's figures of one scored split (ROC, PR, reliability, confusion; scatter for regression)."""
    out.mkdir(parents=True, exist_ok=True)
    return task.plot(out, y, scores, m)
