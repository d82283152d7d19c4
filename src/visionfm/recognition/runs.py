"""Building a task for a training set, and saving / restoring it as a run folder.

A run folder holds ``head.safetensors`` (the head and its fixed buffers: feature standardisation, class weights,
target statistics) and ``run.yaml``: the task kind, label names or schema, head name and options, feature choice,
the encoder reference of every modality (path, SHA-256, architecture, modality, preprocessing) and the resolved
configuration. Nothing else is needed to predict, except the encoder weights it names.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from ..checkpoints.io import atomic_write, save_safetensors
from .config import HeadConfig
from .data import EncoderRef, FeatureTable
from .heads import build_head
from .labels import LabelSpec
from .losses import class_balanced_weights, inverse_frequency_weights
from .schema import LabelSchema, get_schema
from .tasks import TASKS, HeadTask

__all__ = ["label_spec", "new_task", "task_from_info", "save_run", "load_run", "run_encoders", "RUN_FILE",
           "HEAD_FILE"]

log = logging.getLogger(__name__)
RUN_FILE, HEAD_FILE = "run.yaml", "head.safetensors"


def label_spec(cfg: HeadConfig) -> LabelSpec:
    """The label requirements of ``cfg.task``."""
    names = cfg.targets if cfg.task == "regress" else cfg.classes
    return LabelSpec(cfg.task, list(names) if names else None,
                     get_schema(cfg.schema) if cfg.task == "multilabel" else None)


def _class_weights(y: np.ndarray, n: int, balance: str) -> np.ndarray:
    counts = np.bincount(y.astype(np.int64), minlength=n)
    if balance == "inverse":
        return inverse_frequency_weights(counts)
    if balance == "effective":
        return class_balanced_weights(counts, 0.999)
    return np.ones(n)


def _task_options(cfg: HeadConfig, train: FeatureTable, spec: LabelSpec) -> dict[str, Any]:
    """Options of the task that depend on the training labels (weights, statistics)."""
    y = train.y
    if cfg.task == "classify":
        w = _class_weights(y[:, 0], len(spec.names), cfg.balance or "none")
        return {"class_weight": w.tolist(), "label_smoothing": cfg.label_smoothing, "ordinal": cfg.ordinal}
    if cfg.task == "regress":
        mean, std = np.nanmean(y, 0), np.nanstd(y, 0)
        return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(), "loss_kind": cfg.regression_loss}
    if cfg.task == "forecast":
        balance = cfg.balance or "inverse"
        pos = float(np.nansum(y[:, 0]))
        if pos == 0 or pos == len(y):
            raise ValueError(f"forecasting needs converters and non-converters in training; got {int(pos)} of "
                             f"{len(y)} converting")
        w = _class_weights(y[:, 0], 2, balance if balance != "focal" else "none")
        opts: dict[str, Any] = {"pos_weight": float(w[1] / w[0])}
        if balance == "focal":
            opts.update(focal_gamma=cfg.focal_gamma, focal_alpha=1 - pos / len(y))
        return opts
    return {}


def task_from_info(info: dict[str, Any], **task_kw: Any) -> HeadTask:
    """Rebuild the (untrained) task a run describes; ``task_kw`` adds an encoder to fine-tune."""
    head = build_head(info["head"], info["in_dim"], info["out_dim"], **info["head_options"])
    opts = dict(info["task_options"])
    kind = info["kind"]
    if kind == "classify":
        opts["class_weight"] = torch.tensor(opts["class_weight"], dtype=torch.float32)
        return TASKS.get(kind)(head, info["names"], **opts, **task_kw)
    if kind == "regress":
        mean, std = torch.tensor(opts.pop("mean")), torch.tensor(opts.pop("std"))
        return TASKS.get(kind)(head, info["names"], mean, std, **opts, **task_kw)
    if kind == "multilabel":
        return TASKS.get(kind)(head, LabelSchema(**info["schema"]), **task_kw)
    return TASKS.get(kind)(head, **opts, **task_kw)


def new_task(cfg: HeadConfig, train: FeatureTable, spec: LabelSpec, in_dim: int | None = None,
             **task_kw: Any) -> tuple[HeadTask, dict]:
    """A fresh task for ``train`` and the run description (``run.yaml`` contents) to save with it.

    Args:
        in_dim: feature width when ``train.x`` holds no features (fine-tuning: the head's input standardisation
            then stays the identity; the encoder's final LayerNorm already scales its tokens).
        task_kw: an encoder to fine-tune and its options (see :class:`HeadTask`).
    """
    out_dim = {"classify": len(spec.names or []), "multilabel": spec.schema.k if spec.schema else 0,
               "regress": train.y.shape[1], "forecast": 1}[cfg.task]
    if cfg.task == "classify" and out_dim < 2:
        raise ValueError(f"classification needs at least 2 classes, got {spec.names}")
    head_opts = dict(cfg.head_options)
    if cfg.task == "forecast":
        head_opts.setdefault("time_encoding", cfg.time_encoding)
    names = spec.names if cfg.task != "regress" else (spec.names or [f"target_{i}" for i in range(out_dim)])
    info = {"visionfm_run": "recognition", "kind": cfg.task, "names": list(names),
            "schema": spec.schema.to_dict() if spec.schema else None, "head": cfg.head, "head_options": head_opts,
            "in_dim": int(in_dim or train.x.shape[1]), "out_dim": int(out_dim), "feature": cfg.feature,
            "task_options": _task_options(cfg, train, spec),
            "encoders": {m: r.to_dict() for m, r in train.encoders.items()}, "config": cfg.to_dict()}
    torch.manual_seed(cfg.seed)  # the head's initial weights depend on the seed only
    task = task_from_info(info, **task_kw)
    if in_dim is None:
        task.head.fit_inputs(torch.from_numpy(train.x))
    return task, info


def save_run(run: str | Path, task: HeadTask, info: dict[str, Any]) -> Path:
    """Write ``head.safetensors`` (task state without any encoder) and ``run.yaml`` atomically."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v for k, v in task.state_dict().items() if not k.startswith("encoder.")}, run / HEAD_FILE)
    with atomic_write(run / RUN_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(info, sort_keys=False))
    return run


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[HeadTask, dict[str, Any]]:
    """The trained task of a run folder (eval mode) and its description.

    Raises:
        FileNotFoundError: the folder is not a finished recognition run.
    """
    run = Path(run)
    for f in (RUN_FILE, HEAD_FILE):
        if not (run / f).is_file():
            raise FileNotFoundError(f"{run / f} not found: is {run} a finished recognition run?")
    info = yaml.safe_load((run / RUN_FILE).read_text())
    if not isinstance(info, dict) or info.get("visionfm_run") != "recognition":
        raise ValueError(f"{run / RUN_FILE}: not a recognition run description")
    task = task_from_info(info)
    try:
        task.load_state_dict(load_file(str(run / HEAD_FILE)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{run / HEAD_FILE}: does not fit {run / RUN_FILE}: {str(e).splitlines()[0]}") from None
    return task.to(device).eval(), info


def run_encoders(info: dict[str, Any]) -> dict[str, EncoderRef]:
    """The encoder references stored in a run description, keyed by modality."""
    return {m: EncoderRef(**r) for m, r in info["encoders"].items()}

