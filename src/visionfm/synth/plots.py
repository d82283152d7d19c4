"""Figures of the synthetic-image tools: real-vs-synthetic sample grids and the ratio-study curve (paper Fig. 5f)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from ..checkpoints import atomic_write

__all__ = ["plot_ratio_curve", "save_image_grid"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_image_grid(rows: Mapping[str, Tensor], path: str | Path, per_row: int = 8) -> Path:
    """One labelled row of images per set (e.g. ``{"real": ..., "synthetic": ...}``), written as a PNG.

    Args:
        rows: set name -> uint8 images ``[N, 3, S, S]`` (the first ``per_row`` of each are shown).
        per_row: images per row.
    """
    if not rows:
        raise ValueError("save_image_grid needs at least one set of images")
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), per_row, figsize=(1.2 * per_row, 1.3 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(imgs[c].permute(1, 2, 0).cpu().numpy())
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def plot_ratio_curve(
    labels: Sequence[str],
    values: Sequence[Sequence[float]],
    path: str | Path,
    metric: str = "test AUC",
    title: str = "",
    reference: tuple[str, float] | None = None,
) -> Path:
    """The probe metric against the real:synthetic ratio: mean +- sd over seeds, and every seed as a dot.

    Args:
        labels: ratio labels in plotting order (``"1:0"``, ``"1:1"``, ...).
        values: per ratio, the metric of each seed.
        reference: (name, value) drawn as a dashed horizontal line (e.g. the random-init encoder).
    """
    if len(labels) != len(values) or not labels:
        raise ValueError(f"{len(labels)} ratio labels but {len(values)} value lists")
    plt = _pyplot()
    x = np.arange(len(labels))
    mean = np.array([np.mean(v) for v in values])
    sd = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar(x, mean, yerr=sd, marker="o", capsize=4, color="tab:blue", label="mean +- sd")
    for xi, v in zip(x, values):
        ax.scatter(np.full(len(v), xi) + 0.06, v, s=10, color="tab:gray", zorder=3)
    if reference is not None:
        ax.axhline(reference[1], color="tab:red", linestyle="--", linewidth=1, label=reference[0])
        ax.legend(fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_xlabel("real : synthetic")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
