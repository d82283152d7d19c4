"""Drawing attention maps over images: colour overlays and labelled PNG grids (matplotlib's Agg canvas, no GUI)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..checkpoints import atomic_write
from .attention import upsample_maps

__all__ = ["overlay", "save_grid"]


def overlay(image: np.ndarray, heat: torch.Tensor | np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Colour a patch-grid map, upsample it to the image and blend.

    Args:
        image: ``[H, W, 3]`` float in [0, 1] (or uint8).
        heat: ``[rows, cols]`` map (any scale; min-max normalised for display).
        alpha: weight of the heat colours.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    h = upsample_maps(torch.as_tensor(heat)[None], img.shape[:2])[0].numpy()
    colours = colormaps[cmap](h)[..., :3].astype(np.float32)
    return np.round(np.clip((1 - alpha) * img + alpha * colours, 0, 1) * 255).astype(np.uint8)


def save_grid(
    cells: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    title: str = "",
    cell_inches: float = 1.7,
) -> Path:
    """Write a grid of images (rows of ``[H, W, 3]`` uint8 arrays) as one labelled PNG, atomically.

    Args:
        cells: ``rows x cols`` images; a row may be shorter (blank cells).
        col_titles: one per column (top row); row_titles: one per row (left).
    """
    n_rows = len(cells)
    n_cols = max(len(r) for r in cells)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("nothing to draw: the grid has no cells")
    fig = Figure(figsize=(cell_inches * n_cols, cell_inches * n_rows + (0.4 if title else 0.1)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(cells[r]):
                ax.imshow(cells[r][c])
            if r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0 and r < len(row_titles):
                ax.set_ylabel(row_titles[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
