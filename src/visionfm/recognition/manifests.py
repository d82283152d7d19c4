"""Patient-level train/test splits of a CSV manifest (``visionfm split``).

The written manifests keep every column and make image paths absolute, so each is at once an extraction manifest
(``visionfm extract --data train.csv``) and a label file (``--labels train.csv``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..evaluation import stratified_split
from ..fileio import atomic_write
from .labels import read_csv_rows

__all__ = ["parse_where", "split_manifest"]

log = logging.getLogger(__name__)


def parse_where(items: Sequence[str] | None) -> dict[str, str]:
    """``["modality=OCT", ...]`` -> ``{"modality": "OCT"}``."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UserError(f"--where {it!r}: expected COLUMN=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def split_manifest(
    manifest: str | Path,
    out_prefix: str | Path,
    test_fraction: float = 0.3,
    seed: int = 0,
    group_column: str | None = None,
    stratify_column: str | None = None,
    where: dict[str, str] | None = None,
    by: str | None = None,
) -> tuple[Path, Path]:
    """Split a manifest's rows into ``<out_prefix>_train.csv`` and ``<out_prefix>_test.csv``.

    Args:
        manifest: CSV with a ``path`` column.
        out_prefix: output path prefix.
        test_fraction: fraction of rows (of groups, with ``group_column``) for test.
        seed: split seed.
        group_column: patient id column: no patient on both sides.
        stratify_column: column whose values are kept in proportion (missing values form their own stratum).
        where: keep only rows whose columns equal these values.
        by: also write ``<out_prefix>_<split>_<value>.csv`` per value of this column (e.g. one manifest per
            modality, to extract each with its own encoder).

    Raises:
        ValueError: unknown columns (named), no row left after ``where``.
    """
    manifest = Path(manifest)
    if not 0 < test_fraction < 1:  # checked here: the splitter below would name its own val_fraction
        raise UserError(f"--test-fraction must be in (0, 1), got {test_fraction!r}")
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    header, numbered = read_csv_rows(manifest)  # BOM accepted; ragged rows and non-UTF-8 named by line
    rows = [r for _, r in numbered]
    for c in [*(where or {}), group_column, stratify_column, by, "path"]:
        if c and c not in header:
            raise UserError(f"{manifest}: column {c!r} not found; columns: {header}")
    rows = [r for r in rows if all(r[k] == v for k, v in (where or {}).items())]
    if not rows:
        raise UserError(f"{manifest}: no row matches {where}")
    values = [r[stratify_column] if stratify_column else "" for r in rows]
    strata = np.unique(values, return_inverse=True)[1]
    groups = np.array([r[group_column] for r in rows]) if group_column else None
    train_idx, test_idx = stratified_split(strata, test_fraction, seed, groups)
    for r in rows:
        p = Path(r["path"])
        r["path"] = str(p if p.is_absolute() else (manifest.parent / p).resolve())
    out = []
    for name, idx in (("train", train_idx), ("test", test_idx)):
        part = [rows[i] for i in idx]
        out.append(_write(Path(f"{out_prefix}_{name}.csv"), header, part))
        for value in sorted({r[by] for r in part}) if by else []:
            _write(Path(f"{out_prefix}_{name}_{value}.csv"), header, [r for r in part if r[by] == value])
    log.info(
        "%s: %d train / %d test rows%s",
        manifest,
        len(train_idx),
        len(test_idx),
        f" (grouped by {group_column})" if group_column else "",
    )
    return out[0], out[1]


def _write(path: Path, header: list[str], rows: list[dict]) -> Path:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path
