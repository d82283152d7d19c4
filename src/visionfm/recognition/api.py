"""Train a head on cached features and evaluate a run: the library behind ``visionfm classify|multilabel|...``.

``train_head(cfg)`` loads the feature files, carves a validation split when none is given (stratified, grouped by
patient when ids exist), trains the head with the shared engine, keeps the model that is best on *validation*, and
scores it once on the test features: ``metrics.json`` (with bootstrap 95% CIs), ``predictions.csv`` and figures.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..checkpoints.io import safe_torch_load
from ..distributed import resolve_device
from ..engine import TrainConfig, Trainer
from ..errors import UserError
from ..evaluation import stratified_split, write_results
from .config import HeadConfig
from .data import FeatureDataset, FeatureTable, RepeatDataset, load_table
from .kinds import task_class
from .labels import LabelSpec
from .reporting import plot_split, score_split, write_split_predictions
from .runs import label_spec, load_run, new_task, prepare_run_folder, run_encoders, save_run
from .tasks import HeadTask, select_mode

__all__ = [
    "carve_validation",
    "evaluate_run",
    "evaluate_table",
    "fit_task",
    "report_scores",
    "strata",
    "train_head",
]

log = logging.getLogger(__name__)


def strata(kind: str, y: np.ndarray) -> np.ndarray:
    """Integer strata ``[N]`` for stratified splitting of label rows ``y [N, W]`` (the task kind decides)."""
    return task_class(kind).strata(y)


def carve_validation(
    train: FeatureTable, kind: str, fraction: float, seed: int
) -> tuple[FeatureTable, FeatureTable, str]:
    """Split ``train`` into (train, validation, description), grouped by patient when ids are known."""
    tr, va = stratified_split(strata(kind, train.y), fraction, seed, train.patients)
    how = f"carved {len(va)} of {len(train)} training samples (stratified" + (
        ", grouped by patient)" if train.patients is not None else ")"
    )
    return train.subset(tr), train.subset(va), how


def fit_task(
    task: HeadTask, train: Dataset, val: Dataset | None, cfg: TrainConfig, val_every: int = 1, resume: bool = False
) -> dict[str, Any]:
    """Train ``task`` with the engine and load the validation-selected weights (the last ones without ``val``).

    Args:
        cfg: the loop's settings; ``select_metric`` defaults to the task's own, its direction follows the metric,
            and the batch is capped at the training set's size.
        val_every: validate (select, checkpoint) every this many epochs: the engine then sees one epoch per
            ``val_every`` passes over the data (the learning-rate schedule is per step, so unchanged).
        resume: continue from ``checkpoint_last.pth`` in ``cfg.output_dir``.

    Returns:
        ``{"metric", "mode", "best_epoch", "best_value", "validation"}`` describing the selection (epochs counted
        in passes over the training data).
    """
    epochs, warmup = cfg.epochs, cfg.warmup_epochs
    if val_every > 1:
        train = RepeatDataset(train, len(train) * val_every)
        epochs, warmup = math.ceil(epochs / val_every), warmup / val_every
    key = cfg.select_metric or task.select[0]
    loop = dataclasses.replace(
        cfg,
        epochs=epochs,
        warmup_epochs=warmup,
        batch_size=min(cfg.batch_size, len(train)),
        select_metric=key if val is not None else None,
        select_mode=select_mode(task, key),
    )
    result = Trainer(task, loop, train, val).fit(resume=resume)
    sel: dict[str, Any] = {"metric": key if val is not None else None, "mode": loop.select_mode}
    if result.best_path is not None and result.best_path.is_file():
        task.load_state_dict(safe_torch_load(result.best_path)["task"], strict=True)
        row = next(h for h in result.history if h["epoch"] == result.best_epoch)
        sel.update(
            best_epoch=(result.best_epoch + 1) * val_every - 1,
            best_value=result.best_metric,
            validation={k: v for k, v in row.items() if k not in ("epoch", "step")},
        )
    else:
        sel.update(best_epoch=None, note="no validation data: the last weights are kept")
    task.eval()
    return sel


def evaluate_table(
    task: HeadTask,
    table: FeatureTable,
    out: Path | None,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    plots: bool = True,
) -> dict:
    """Score ``task`` on a labelled table; with ``out``, write ``predictions.csv`` and the figures there."""
    dev = resolve_device(str(device))
    loader = DataLoader(FeatureDataset(table, type(task)), batch_size=1024, shuffle=False)
    scores, y = task.to(dev).predict(loader, dev)
    return report_scores(task, y, scores, table.paths, out, n_boot, seed, plots)


def report_scores(
    task: HeadTask,
    y: np.ndarray,
    scores: np.ndarray,
    paths: list[str],
    out: Path | None,
    n_boot: int = 1000,
    seed: int = 0,
    plots: bool = True,
) -> dict:
    """Metrics (with CIs) of collected scores; with ``out``, also ``predictions.csv`` and figures."""
    m = score_split(task, y, scores, n_boot, seed)
    if out is not None:
        write_split_predictions(out / "predictions.csv", task, paths, scores, y)
        if plots:
            m["figures"] = [p.name for p in plot_split(out, task, y, scores, m)]
    return m


def _tables(cfg: HeadConfig, spec: LabelSpec) -> tuple[FeatureTable, FeatureTable, FeatureTable | None, str]:
    kw = dict(
        feature=cfg.feature,
        label_columns=cfg.label_columns,
        patient_column=cfg.patient_column,
        modality_column=cfg.modality_column,
    )
    shared = cfg.labels if cfg.labels and len(cfg.labels) == 1 else None
    if not cfg.train_features:
        raise UserError("no training features given (--train FILE.safetensors)")
    train = load_table(cfg.train_features, spec, cfg.labels, **kw)
    if cfg.val_features:
        val = load_table(cfg.val_features, spec, cfg.val_labels or shared, encoders=train.encoders, **kw)
        how = f"given ({', '.join(cfg.val_features)})"
    else:
        train, val, how = carve_validation(train, cfg.task, cfg.val_fraction, cfg.train.seed)
    test = (
        load_table(cfg.test_features, spec, cfg.test_labels or shared, encoders=train.encoders, **kw)
        if cfg.test_features
        else None
    )
    return train, val, test, how


def train_head(cfg: HeadConfig) -> Path:
    """Train, select on validation, score on test; returns the run folder.

    The run folder (new, or an existing run with ``cfg.overwrite`` / ``cfg.resume``) holds ``head.safetensors``,
    ``run.yaml`` (encoder reference, names, label files, preprocessing, resolved config), ``metrics.json``,
    ``predictions.csv`` and ``roc.png``/``pr.png``/``reliability.png``/``confusion.png`` (``scatter.png`` for
    regression), plus the engine's ``log.jsonl`` and checkpoints.
    """
    if not cfg.train.output_dir:
        raise UserError("an output run folder is required (--output)")
    run = prepare_run_folder(cfg.train.output_dir, cfg.overwrite, cfg.resume)
    t0 = time.perf_counter()
    spec = label_spec(cfg)
    train, val, test, how = _tables(cfg, spec)
    task, info = new_task(cfg, train, spec)
    log.info(
        "%s head %s on %d x %d features; validation %s; labels %s",
        cfg.task,
        info["head"],
        *train.x.shape,
        how,
        "; ".join(f"{k}: {v}" for k, v in info["labels"].items()),
    )
    rules = type(task)
    sel = fit_task(
        task, FeatureDataset(train, rules), FeatureDataset(val, rules), cfg.train, cfg.resolved_val_every(), cfg.resume
    )
    sel["validation_split"] = how
    info["selection"] = sel
    save_run(run, task.cpu(), info)
    metrics = {
        "task": cfg.task,
        "names": info["names"],
        "selection": sel,
        "train_seconds": time.perf_counter() - t0,
        "n": {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0},
        "labels": info["labels"],
        "encoders": {m: {"weights": r.weights, "sha256": r.sha256, "arch": r.arch} for m, r in train.encoders.items()},
    }
    if test is not None:
        metrics["test"] = evaluate_table(task, test, run, cfg.n_boot, cfg.train.seed)
    write_results(run, metrics)
    log.info("run written to %s", run)
    return run


def evaluate_run(
    run: str | Path,
    features: Sequence[str | Path] | None = None,
    labels: Sequence[str | Path] | None = None,
    output: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    label_columns: Sequence[str] | None = None,
    patient_column: str | None = None,
    data: str | Path | None = None,
    split: str = "test",
    weights: str | Path | None = None,
    modality: str | None = None,
) -> dict:
    """Score a trained run on labelled features, or on labelled images (``data``: features are extracted with
    the run's verified encoder first).

    Writes ``metrics.json``, ``predictions.csv`` and figures to ``output`` (default ``<run>/eval``).

    Args:
        features: feature files of the encoder(s) the run was trained with.
        data: instead of ``features``: an image root (``vfm`` layout: ``split`` names the label file) or manifest.
        weights / modality: the encoder file if moved, and the images' modality (multi-modality runs).

    Raises:
        ValueError: features from another encoder or modality (the file is named), bad labels.
    """
    task, info = load_run(run)
    out = Path(output) if output else Path(run) / "eval"
    if (features is None) == (data is None):
        raise UserError("give either feature files (--features) or labelled images (--data)")
    if data is not None:
        features = [_extract_for_run(info, Path(run), data, split, out, weights, modality)]
    spec = type(task).spec_from_run(info)
    table = load_table(
        list(features),
        spec,
        list(labels) if labels else None,
        feature=info["feature"],
        encoders=run_encoders(info),
        label_columns=label_columns,
        patient_column=patient_column,
    )
    m = {
        "task": info["kind"],
        "run": str(run),
        "features": [str(f) for f in features],
        "n": len(table),
        "test": evaluate_table(task, table, out, n_boot, seed),
    }
    write_results(out, m)
    return m


def _extract_for_run(
    info: dict, run: Path, data: str | Path, split: str, out: Path, weights: str | Path | None, modality: str | None
) -> Path:
    """Features of labelled images with the run's verified encoder and preprocessing."""
    from ..features import extract_features
    from .predict import pick_modality, resolve_encoder

    encoders = run_encoders(info)
    ref = encoders[pick_modality(encoders, modality, run)]
    enc = resolve_encoder(ref, weights, "cpu", str(run))
    path = out / f"features_{split}.safetensors"
    extract_features(
        enc,
        data,
        path,
        split=split,
        input_size=ref.input_size,
        n_last_blocks=ref.n_last_blocks,
        tta=ref.tta,
        interpolation=ref.interpolation,
        num_workers=0,
        progress=False,
    )
    return path
