"""Cup-to-disc ratio (CDR) from optic disc and cup masks: the glaucoma biomarker clinicians read.

* vertical CDR: the cup's vertical extent (rows it spans) over the disc's, each measured on its largest connected
  component (stray blobs do not stretch the extent);
* area CDR: cup area over disc area (same components).

The disc mask is the whole disc, cup included (as the ``nested`` mask kind gives it). A missing disc gives NaN; a
missing cup gives 0.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import UserError

__all__ = ["area_cdr", "cdr_from_label_maps", "cdr_rows", "largest_component", "read_expert_cdr", "vertical_cdr"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean map ``[H, W]`` (empty stays empty)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def _rows(mask: np.ndarray) -> int:
    r = np.flatnonzero(mask.any(axis=1))
    return int(r[-1] - r[0] + 1) if r.size else 0


def vertical_cdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """Vertical cup-to-disc ratio of boolean maps ``[H, W]`` (largest components; NaN without a disc)."""
    d = _rows(largest_component(disc))
    return _rows(largest_component(cup)) / d if d else math.nan


def area_cdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """Cup area / disc area of boolean maps ``[H, W]`` (largest components; NaN without a disc)."""
    d = int(largest_component(disc).sum())
    return int(largest_component(cup).sum()) / d if d else math.nan


def read_expert_cdr(path: str | Path, column: str | None = None) -> dict[str, float]:
    """Expert CDR per image stem from a CSV with an image column (``path``, ``image`` or ``file``) and a CDR column.

    Args:
        column: the CDR column (default: the first of ``exp_cdr``, ``cdr``, ``vcdr``).

    Raises:
        UserError: missing file or columns, or a value that is not a number (named with the line).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--expert-cdr: file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    cols = list(rows[0]) if rows else []
    key = next((c for c in ("path", "image", "file", "filename") if c in cols), None)
    col = column or next((c for c in ("exp_cdr", "cdr", "vcdr", "ExpCDR") if c in cols), None)
    if key is None or col is None or col not in cols:
        raise UserError(
            f"{path}: needs an image column (path/image/file) and a CDR column "
            f"({column or 'exp_cdr/cdr/vcdr'}); found {cols}"
        )
    out = {}
    for i, r in enumerate(rows, start=2):
        try:
            out[Path(r[key]).stem] = float(r[col])
        except (TypeError, ValueError):
            raise UserError(f"{path} line {i}: {col} {r[col]!r} is not a number") from None
    return out


def cdr_rows(
    names: Sequence[str],
    discs: Sequence[np.ndarray],
    cups: Sequence[np.ndarray],
    expert: dict[str, float] | None = None,
) -> tuple[list[dict], dict]:
    """Per-image CDR rows and a summary (MAE of vertical and area CDR against the expert's, where known)."""
    rows = []
    for name, d, c in zip(names, discs, cups):
        row = {"image": name, "vertical_cdr": vertical_cdr(d, c), "area_cdr": area_cdr(d, c)}
        if expert is not None:
            e = expert.get(Path(name).stem, math.nan)
            row.update(expert_cdr=e, abs_error=abs(row["vertical_cdr"] - e))
        rows.append(row)
    summary: dict = {"images": len(rows)}
    if expert is not None:
        err = np.array([r["abs_error"] for r in rows], float)
        ok = ~np.isnan(err)
        # Expert CDRs are vertical ratios: only the vertical CDR is scored against them.
        summary.update(scored=int(ok.sum()), vertical_cdr_mae=float(err[ok].mean()) if ok.any() else math.nan)
    return rows, summary


def cdr_from_label_maps(masks: str | Path, output: str | Path, expert: str | Path | None = None) -> dict:
    """CDR of every label map in ``masks`` (disc = value >= 1, cup = value >= 2) written as a CSV to ``output``.

    Returns:
        the summary (images, and with ``expert`` the vertical CDR MAE).
    """
    from ..data import list_images
    from .data import read_mask

    files = list_images(masks)
    if not files:
        raise UserError(f"--masks: no mask images in {masks}")
    discs, cups = [], []
    for f in files:
        arr = read_mask(f)
        discs.append(arr >= 1)
        cups.append(arr >= 2)
    rows, summary = cdr_rows([f.name for f in files], discs, cups, read_expert_cdr(expert) if expert else None)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    return summary
