"""Building a task for a training set, and saving / restoring it as a run folder.

A run folder holds ``head.safetensors`` (the head and its fixed buffers: feature standardisation, class weights,
target statistics) and ``run.yaml``: the task kind, label names or schema, head name and options, feature choice,
the encoder reference of every modality (path, SHA-256, architecture, modality, preprocessing), the label files
used and the resolved configuration. Nothing else is needed to predict, except the encoder weights it names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from .. import fileio
from ..checkpoints.io import atomic_write, save_safetensors
from ..config import config_from_dict
from ..errors import UserError
from .config import HeadConfig, RecognitionConfig
from .data import EncoderRef, FeatureTable
from .heads import build_head
from .kinds import task_class
from .labels import LabelSpec
from .tasks import HeadTask

__all__ = [
    "HEAD_FILE",
    "RUN_FILE",
    "label_spec",
    "load_run",
    "new_task",
    "prepare_run_folder",
    "run_config",
    "run_encoders",
    "save_run",
    "task_from_info",
]

log = logging.getLogger(__name__)
RUN_FILE, HEAD_FILE = "run.yaml", "head.safetensors"
_RUN_MARKERS = (
    RUN_FILE,
    "metrics.json",
    "fewshot.json",
    "kfold.json",
)


def label_spec(cfg: RecognitionConfig) -> LabelSpec:
    """The label requirements of ``cfg.task`` (its task class reads them from the config)."""
    return task_class(cfg.task).spec_for(cfg)


def prepare_run_folder(run: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Check the output folder before any work (:func:`visionfm.fileio.prepare_run_folder`); returns it."""
    fileio.prepare_run_folder(run, "recognition", _RUN_MARKERS, resume, overwrite)
    return Path(run)


def task_from_info(info: dict[str, Any], **task_kw: Any) -> HeadTask:
    """Rebuild the (untrained) task a run describes; ``task_kw`` adds an encoder to fine-tune."""
    head = build_head(info["head"], info["in_dim"], info["out_dim"], **info["head_options"])
    return task_class(info["kind"]).from_info(head, info, **task_kw)


def new_task(
    cfg: RecognitionConfig, train: FeatureTable, spec: LabelSpec, in_dim: int | None = None, **task_kw: Any
) -> tuple[HeadTask, dict]:
    """A fresh task for ``train`` and the run description (``run.yaml`` contents) to save with it.

    The head's initial weights depend on ``cfg.train.seed`` only (drawn under a forked RNG, so the caller's
    global random state is left as it was).

    Args:
        in_dim: feature width when ``train.x`` holds no features (fine-tuning: the head's input standardisation
            then stays the identity; the encoder's final LayerNorm already scales its tokens).
        task_kw: an encoder to fine-tune and its options (see :class:`HeadTask`).
    """
    rules = task_class(cfg.task)
    out_dim = rules.out_dim(spec, train.y)
    head, head_opts = rules.head_choice(cfg)
    info = {
        "visionfm_run": "recognition",
        "kind": cfg.task,
        "names": list(spec.names or []),
        "schema": spec.schema.to_dict() if spec.schema else None,
        "head": head,
        "head_options": head_opts,
        "in_dim": int(in_dim or train.x.shape[1]),
        "out_dim": int(out_dim),
        "feature": getattr(cfg, "feature", "cls"),
        "task_options": rules.options(cfg, train.y, spec),
        "encoders": {m: r.to_dict() for m, r in train.encoders.items()},
        "labels": dict(train.label_sources),
        "config": cfg.to_dict(),
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
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
        raise UserError(f"{run / RUN_FILE}: not a recognition run description")
    task = task_from_info(info)
    try:
        task.load_state_dict(load_file(str(run / HEAD_FILE)), strict=True)
    except RuntimeError as e:
        raise UserError(f"{run / HEAD_FILE}: does not fit {run / RUN_FILE}: {str(e).splitlines()[0]}") from None
    return task.to(device).eval(), info


def run_config(info: dict[str, Any], cls: type | None = None) -> RecognitionConfig:
    """The resolved config a run description holds (``FinetuneConfig`` for fine-tuned runs, else ``HeadConfig``;
    files written before the nesting, flat, load too)."""
    if cls is None and info.get("finetuned_from"):
        from .finetune import FinetuneConfig  # imported here: fine-tuning builds on this module

        cls = FinetuneConfig
    return config_from_dict(cls or HeadConfig, info.get("config") or {}, f"{RUN_FILE} config")


def run_encoders(info: dict[str, Any]) -> dict[str, EncoderRef]:
    """The encoder references stored in a run description, keyed by modality."""
    return {m: EncoderRef(**r) for m, r in info["encoders"].items()}
