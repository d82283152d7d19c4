"""Segmentation training on the shared engine, with validation carved from training (or given) for model selection.

Prediction and evaluation live in :mod:`visionfm.dense.predict`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DenseConfig, save_config
from .data import DenseSpec, resolve_spec
from .datasets import SegmentationDataset, select
from .models_io import RUN_CONFIG, build_from_config, is_fundus, prepare_run, save_run
from .predict import overlay, predict_segmentation
from .transforms import JointAugment

__all__ = [
    "fit_dense",
    "overlay",
    "predict_segmentation",
    "spec_from_config",
    "split_validation",
    "train_segmentation",
]

log = logging.getLogger(__name__)


def spec_from_config(cfg: DenseConfig, data: str | None = None, split: str | None = None) -> DenseSpec:
    """The label layout of ``cfg`` applied to ``data``/``split`` (defaults: the training data)."""
    own = data is None
    return resolve_spec(
        data or cfg.data,
        split or cfg.split,
        cfg.masks if own else None,
        cfg.fov if own or cfg.fov in (None, "auto", "estimate", "none") else None,
        cfg.kind,
        cfg.classes,
        cfg.resize_masks,
        is_fundus(cfg.modality),
    )


def split_validation(items: Sequence[Any], fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): ``round(fraction * n)`` items (at least 1, at most n - 1) drawn with a seeded generator.

    Raises:
        ValueError: fewer than 2 items.
    """
    n = len(items)
    if n < 2:
        raise ValueError(f"--val-fraction needs at least 2 training images, got {n}")
    k = min(n - 1, max(1, round(fraction * n)))
    pick = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return [it for i, it in enumerate(items) if i not in pick], [it for i, it in enumerate(items) if i in pick]


def _round_schedule(cfg: DenseConfig, n_train: int) -> int:
    """With validation the engine's epoch is one round of ``val_every`` steps; keep the schedule in real epochs.

    Returns:
        the dataset length that makes one round (``val_every * batch_size`` samples).
    """
    t = cfg.train
    real = max(1, n_train // t.batch_size) // t.accum_steps or 1  # optimizer steps of one pass over the images
    if t.max_steps is None:
        t.max_steps = t.epochs * real
    if t.warmup_steps is None:
        t.warmup_steps = t.warmup_in_steps(real)
    return cfg.val_every * t.batch_size * t.accum_steps


def fit_dense(
    task: torch.nn.Module, cfg: DenseConfig, run: Path, train: Any, val: Any, resume: bool, metric: str, mode: str
) -> None:
    """Train ``task`` on the engine; write the selected (or last) weights as ``model.safetensors`` and metrics.

    With ``val`` the engine keeps ``best.pth`` by ``metric``; its weights become ``model.safetensors`` (the last
    ones ``model_last.safetensors``) and the selected step goes into ``cfg.state`` and ``train_metrics.json``.
    """
    from ..checkpoints.io import safe_torch_load
    from ..engine import Trainer

    if val is not None:
        cfg.train.select_metric, cfg.train.select_mode = cfg.train.select_metric or metric, mode
    save_config(cfg, run / RUN_CONFIG)
    result = Trainer(task, cfg.train, train, val, run_config=(RUN_CONFIG, cfg)).fit(resume=resume)
    summary: dict[str, Any] = {"validation": val is not None, "history": result.history}
    if val is not None and result.best_path is not None:
        save_run(task.model, cfg, run, "model_last.safetensors")
        task.load_state_dict(safe_torch_load(result.best_path)["task"])
        step = next(h["step"] for h in result.history if h["epoch"] == result.best_epoch)
        if cfg.tune_thresholds:  # the per-class thresholds chosen on validation at the selected step
            entry = next(h for h in result.history if h["epoch"] == result.best_epoch)
            cfg.state.thresholds = [float(entry[f"threshold_{k}"]) for k in range(len(cfg.state.names))]
            summary["thresholds"] = cfg.state.thresholds
        cfg.state.selected_step, cfg.state.selected_metric = int(step), float(result.best_metric)
        summary.update(
            select_metric=cfg.train.select_metric, selected_step=int(step), selected_value=float(result.best_metric)
        )
        log.info("selected step %d (%s %.4f on validation)", step, cfg.train.select_metric, result.best_metric)
    else:
        cfg.state.selected_step = cfg.train.max_steps
    save_run(task.model, cfg, run)
    (run / "train_metrics.json").write_text(json.dumps(summary, indent=2))


def train_segmentation(cfg: DenseConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a segmenter (ViT + decoder, or the U-Net baseline) with the shared engine.

    Args:
        resume: continue the unfinished run in ``cfg.train.output_dir`` exactly.
        overwrite: replace a run already in that folder (refused otherwise).

    Returns:
        the run folder holding ``model.safetensors`` (selected on validation, else last), ``dense.yaml``,
        ``train_metrics.json`` and the engine's logs/checkpoints.
    """
    from .tasks import SegmentationTask

    cfg.task = "segment"
    run = prepare_run(cfg, resume, overwrite)
    spec = spec_from_config(cfg)
    items = select(spec.items(), cfg.subset)
    cfg.kind, cfg.classes = spec.kind, list(spec.classes)
    val_items: list = []
    if cfg.val_data:
        vspec = spec_from_config(cfg, cfg.val_data, cfg.val_split or cfg.split)
        val_items = vspec.items()
    elif cfg.val_fraction > 0:
        items, val_items = split_validation(items, cfg.val_fraction, cfg.train.seed)
    model, mean, std = build_from_config(cfg, len(spec.classes))
    st = cfg.state
    st.out_channels, st.names = len(spec.classes), list(spec.classes)
    st.train_images, st.val_images = [str(i.image) for i in items], [str(i.image) for i in val_items]
    length = _round_schedule(cfg, len(items)) if val_items else cfg.train.batch_size
    common = dict(crop=cfg.crop, max_side=cfg.max_side, fov_diameter=cfg.fov_diameter, contrast=cfg.contrast)
    data = SegmentationDataset(
        items,
        spec,
        cfg.input_size,
        mean,
        std,
        JointAugment(scale=(0.8, 1.1)) if cfg.augment else None,
        min_length=length,
        fg_crop=cfg.fg_crop,
        border_crop=cfg.border_crop,
        hard_crop=cfg.hard_crop,
        **common,
    )
    val = (
        SegmentationDataset(val_items, vspec if cfg.val_data else spec, cfg.input_size, mean, std, whole=True, **common)
        if val_items
        else None
    )
    metric = "dice_tuned" if cfg.tune_thresholds else "dice"
    fit_dense(SegmentationTask(model, cfg.loss), cfg, run, data, val, resume, metric, "max")
    return run
