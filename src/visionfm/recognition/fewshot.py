"""Few-shot studies on cached features: k-shot with repeated random draws, and stratified k-fold cross-validation.

* **k-shot** (the paper's 1/5/10-shot linear probes): for every k and draw, exactly k training images per class
  are drawn (seeded, reproducible; :func:`visionfm.evaluation.kshot_draws`), a fresh head is trained for a fixed
  number of steps (a k-shot set is too small to carve a validation split; a given ``val`` split is used for
  selection), and scored once on the whole test split. Results: every draw, and mean +- sd over draws per k.
* **k-fold** (the paper's intracranial-tumour design): stratified folds over the training features (grouped by
  patient when ids are known); per fold a validation split is carved from the training folds for selection and
  the held-out fold is scored. Results: every fold, mean +- sd, and the pooled out-of-fold predictions with
  bootstrap CIs, ``predictions.csv`` and figures.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from ..errors import UserError
from ..evaluation import kshot_draws, stratified_kfold, write_results
from .api import carve_validation, evaluate_table, fit_task, strata
from .config import HeadConfig
from .data import FeatureDataset, FeatureTable, RepeatDataset, load_table
from .kinds import task_class
from .reporting import plot_split, score_split, write_split_predictions
from .runs import label_spec, new_task, prepare_run_folder

__all__ = ["fewshot", "kfold", "summarise"]

log = logging.getLogger(__name__)


def _get(m: dict, key: str) -> float:
    for part in key.split("."):
        m = m.get(part, float("nan")) if isinstance(m, dict) else float("nan")
    return float("nan") if m is None else float(m)


def summarise(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof 1) of each key over rows, NaN-safe."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[k] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "n": int(v.size),
        }
    return out


def _keys(cfg: HeadConfig) -> list[str]:
    """Metrics reported per draw/fold (the task kind's; an error for kinds without studies)."""
    return task_class(cfg.task).study_metrics(cfg)


def _target_rows(cfg: HeadConfig, y: np.ndarray) -> np.ndarray:
    """Label rows as the task's scores see them (forecasting: without the interval)."""
    return task_class(cfg.task).split_targets(torch.from_numpy(y))[0].numpy()


def _one(cfg: HeadConfig, spec, train: FeatureTable, val: FeatureTable | None, work: Path, steps: int) -> Any:
    task, _ = new_task(cfg, train, spec)
    batch = min(cfg.train.batch_size, len(train))
    data = RepeatDataset(FeatureDataset(train, cfg.task), batch * max(1, steps // 10))
    loop = dataclasses.replace(
        cfg.train,
        output_dir=str(work),
        epochs=10,
        max_steps=steps,
        batch_size=batch,
        progress=False,
        warmup_epochs=0.0,
        warmup_steps=None,
    )
    fit_task(task, data, FeatureDataset(val, cfg.task) if val is not None else None, loop)
    shutil.rmtree(work, ignore_errors=True)
    return task


def fewshot(cfg: HeadConfig, shots: Sequence[int] = (1, 5, 10), n_draws: int = 5, steps: int = 200) -> dict:
    """k-shot study; writes ``fewshot.json`` (every draw + mean/sd), ``fewshot.csv`` and ``fewshot.png``.

    Args:
        cfg: head settings; ``train`` is the pool to draw from, ``test`` is required, ``val`` optional.
        shots: values of k (images per class).
        n_draws: independent draws per k (draw i is the same whatever ``n_draws``).
        steps: optimizer steps per head (batch = the whole k-shot set, up to ``batch_size``).
    """
    keys = _keys(cfg)
    if not cfg.test_features:
        raise UserError("a few-shot study needs test features (--test)")
    out = prepare_run_folder(cfg.train.output_dir or "runs/fewshot", cfg.overwrite)
    spec = label_spec(cfg)
    pool = _load(cfg, spec, cfg.train_features, cfg.labels)
    shared = cfg.labels if cfg.labels and len(cfg.labels) == 1 else None
    val = _load(cfg, spec, cfg.val_features, cfg.val_labels or shared, pool.encoders) if cfg.val_features else None
    test = _load(cfg, spec, cfg.test_features, cfg.test_labels or shared, pool.encoders)
    rows = []
    for k in shots:
        for d, idx in enumerate(kshot_draws(strata(cfg.task, pool.y), k, n_draws, cfg.train.seed)):
            task = _one(cfg, spec, pool.subset(idx), val, out / f"_work_k{k}_d{d}", steps)
            m = evaluate_table(task, test, None, n_boot=0)
            rows.append({"k": int(k), "draw": d, "n_train": len(idx), **{key: _get(m, key) for key in keys}})
            log.info("%d-shot draw %d: %s", k, d, {key: round(rows[-1][key], 4) for key in keys[:2]})
    result = {
        "task": cfg.task,
        "shots": list(shots),
        "n_draws": n_draws,
        "steps": steps,
        "n_test": len(test),
        "selection": "validation features" if val is not None else f"none (fixed {steps} steps)",
        "draws": rows,
        "summary": {str(k): summarise([r for r in rows if r["k"] == k], keys) for k in shots},
        "config": cfg.to_dict(),
    }
    write_results(out, result)
    (out / "metrics.json").rename(out / "fewshot.json")
    _write_rows(out / "fewshot.csv", rows)
    _plot_shots(result, keys[0], out / "fewshot.png")
    return result


def _load(
    cfg: HeadConfig, spec, caches: Sequence[str], labels: Sequence[str] | None, encoders: dict | None = None
) -> FeatureTable:
    return load_table(
        caches,
        spec,
        labels,
        feature=cfg.feature,
        encoders=encoders,
        label_columns=cfg.label_columns,
        patient_column=cfg.patient_column,
        modality_column=cfg.modality_column,
    )


def kfold(cfg: HeadConfig, n_folds: int = 5) -> dict:
    """Stratified k-fold cross-validation over ``cfg.train_features``; writes ``kfold.json``, ``predictions.csv``
    (out of fold) and figures in ``cfg.train.output_dir``."""
    keys = _keys(cfg)
    out = prepare_run_folder(cfg.train.output_dir or "runs/kfold", cfg.overwrite)
    spec = label_spec(cfg)
    data = _load(cfg, spec, cfg.train_features, cfg.labels)
    folds = stratified_kfold(strata(cfg.task, data.y), n_folds, cfg.train.seed, data.patients)
    oof, rows, task = None, [], None
    for f, (tr, te) in enumerate(folds):
        train, val, how = carve_validation(data.subset(tr), cfg.task, cfg.val_fraction, cfg.train.seed)
        task = _one(cfg, spec, train, val, out / f"_work_fold{f}", cfg.train.max_steps or 200)
        held = data.subset(te)
        dev = next(task.parameters()).device
        scores, _ = task.predict(DataLoader(FeatureDataset(held, cfg.task), batch_size=1024), dev)
        m = score_split(task, _target_rows(cfg, held.y), scores, n_boot=0)
        oof = np.zeros((len(data), scores.shape[1])) if oof is None else oof
        oof[te] = scores
        rows.append(
            {
                "fold": f,
                "n_train": len(train),
                "n_val": len(val),
                "n_test": len(te),
                **{key: _get(m, key) for key in keys},
            }
        )
    y = _target_rows(cfg, data.y)
    pooled = score_split(task, y, oof, cfg.n_boot, cfg.train.seed)
    write_split_predictions(out / "predictions.csv", task, data.paths, oof, y)
    pooled["figures"] = [p.name for p in plot_split(out, task, y, oof, pooled)]
    result = {
        "task": cfg.task,
        "n_folds": n_folds,
        "n": len(data),
        "grouped_by_patient": data.patients is not None,
        "folds": rows,
        "summary": summarise(rows, keys),
        "pooled_out_of_fold": pooled,
        "config": cfg.to_dict(),
    }
    write_results(out, result)
    (out / "metrics.json").rename(out / "kfold.json")
    return result


def _write_rows(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plot_shots(result: dict, key: str, path: Path) -> Path:
    ks = result["shots"]
    mean = [result["summary"][str(k)][key]["mean"] for k in ks]
    sd = [np.nan_to_num(result["summary"][str(k)][key]["sd"]) for k in ks]
    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    ax.errorbar(ks, mean, yerr=sd, marker="o", capsize=4)
    ax.set(
        xlabel="images per class (k)",
        ylabel=key,
        title=f"k-shot {key} (mean +- sd, {result['n_draws']} draws)",
        xscale="log" if max(ks) / min(ks) >= 10 else "linear",
    )
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
