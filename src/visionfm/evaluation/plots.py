"""Evaluation figures as PNG files: ROC and precision-recall curves, reliability diagram, confusion matrix.

Figures are drawn on matplotlib's Agg canvas through :class:`matplotlib.figure.Figure` (no pyplot state, no GUI).
``y_true`` is either class indices ``[N]`` (single-label; binary draws the positive class ``names[1]`` only,
multi-class draws one-vs-rest curves) or multi-label targets ``[N, K]`` with NaN = missing (masked per label).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ._checks import as_int_labels, as_multilabel, as_scores, check_names
from .metrics import expected_calibration_error, reliability_bins

__all__ = ["plot_confusion", "plot_pr", "plot_reliability", "plot_roc"]

log = logging.getLogger(__name__)


def _binary_columns(
    y_true: np.ndarray, probs: np.ndarray, names: Sequence[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(name, is_positive [n_k], score [n_k])]`` per curve to draw; curves with one class present are skipped."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim == 2 and not (y.shape[1] == 1 and p.ndim == 2 and p.shape[1] > 1):
        y = as_multilabel(y, "y_true")
        names = check_names(names, y.shape[1], "names")
        p = as_scores(p, "probs", len(y), len(names), unit=True)
        cols = [(names[k], y[~np.isnan(y[:, k]), k] == 1, p[~np.isnan(y[:, k]), k]) for k in range(len(names))]
    else:
        names = check_names(names, p.shape[1] if p.ndim == 2 else -1, "names")
        y = as_int_labels(y, "y_true", len(names))
        p = as_scores(p, "probs", len(y), len(names), unit=True)
        idx = [1] if len(names) == 2 else range(len(names))
        cols = [(names[c], y == c, p[:, c]) for c in idx]
    kept = []
    for name, pos, score in cols:
        if 0 < pos.sum() < len(pos):
            kept.append((name, pos, score))
        else:
            log.warning("no curve for %r: only one class present", name)
    return kept


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _curve_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(5.0, 4.6))
    ax = fig.add_subplot()
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_roc(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """ROC curve per class/label with its AUROC in the legend; chance diagonal dashed. Returns ``path``."""
    fig, ax = _curve_figure("ROC", "false positive rate", "true positive rate")
    aucs = []
    for name, pos, score in _binary_columns(y_true, probs, names):
        fpr, tpr, _ = roc_curve(pos, score)
        aucs.append(roc_auc_score(pos, score))
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {aucs[-1]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    if aucs:
        ax.set_title(f"ROC (macro AUC {np.mean(aucs):.3f})")
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pr(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """Precision-recall curve per class/label with its average precision (on scores) in the legend."""
    fig, ax = _curve_figure("Precision-recall", "recall", "precision")
    aps = []
    for name, pos, score in _binary_columns(y_true, probs, names):
        precision, recall, _ = precision_recall_curve(pos, score)
        aps.append(average_precision_score(pos, score))
        ax.step(recall, precision, where="post", lw=1.5, label=f"{name} (AP {aps[-1]:.3f}, prev {pos.mean():.2f})")
    if aps:
        ax.set_title(f"Precision-recall (mean AP {np.mean(aps):.3f})")
        ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, path: str | Path, n_bins: int = 15) -> Path:
    """Top-label reliability diagram: accuracy vs mean confidence per bin, bin counts below, ECE in the title.

    Args:
        y_true: class indices ``[N]``.
        probs: class probabilities ``[N, C]``.
    """
    bins = reliability_bins(y_true, probs, n_bins)
    ece = expected_calibration_error(y_true, probs, n_bins)
    fig = Figure(figsize=(5.0, 5.6))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centers = (bins["edges"][:-1] + bins["edges"][1:]) / 2
    width = 1.0 / n_bins
    filled = bins["count"] > 0
    ax.bar(centers[filled], bins["accuracy"][filled], width=width, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot(bins["confidence"][filled], bins["accuracy"][filled], "o", color="C1", ms=4, label="(confidence, acc)")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"Reliability ({n_bins} bins, ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(centers, bins["count"], width=width, edgecolor="k", color="C2")
    ax_n.set(xlabel="top-label confidence", ylabel="count")
    return _save(fig, path)


def plot_confusion(cm: np.ndarray | list, names: Sequence[str], path: str | Path) -> Path:
    """Confusion matrix (rows = true, columns = predicted): counts written in the cells, colour = row fraction."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square 2-D matrix, got shape {cm.shape}")
    if cm.dtype.kind not in "iuf" or (cm < 0).any():
        raise ValueError("cm must hold non-negative counts")
    names = check_names(names, cm.shape[0], "names")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = 2.0 + 0.6 * len(names)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{cm[i, j]:g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    return _save(fig, path)
