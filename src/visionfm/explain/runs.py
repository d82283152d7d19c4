"""Encoders for explanation from any weights, including the checkpoints ``visionfm pretrain`` writes.

A pretraining run folder holds ``pretrain.yaml`` and ``checkpoint_<step>.pth`` files (one every
``--checkpoint-every`` steps and at each epoch end, the last ``--keep-last`` kept) plus ``checkpoint_last.pth``.
Each checkpoint holds the EMA teacher, whose backbone is loaded here with the run's exact architecture (from
``pretrain.yaml``; the tensors alone cannot tell the number of heads) and modality, so the attention of every stage
of pretraining can be drawn (the paper's Figure 6b).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..checkpoints import resolve_encoder
from ..pretrain.config import RUN_CONFIG

__all__ = [
    "RUN_CONFIG",
    "RunCheckpoint",
    "expand_weights",
    "is_pretraining_checkpoint",
    "load_pretraining_checkpoint",
    "load_weights",
    "pretraining_checkpoints",
]

_STEP = re.compile(r"^checkpoint_(\d+)\.pth$")


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a pretraining run: its file, optimizer step and a row title (``step 200``)."""

    path: Path
    step: int
    label: str


def _step_of(path: Path) -> int:
    m = _STEP.match(path.name)
    if m:
        return int(m.group(1))
    from ..checkpoints import safe_torch_load

    return int(safe_torch_load(path).get("step", 0))


def pretraining_checkpoints(run_dir: str | Path) -> list[RunCheckpoint]:
    """The checkpoints of a ``visionfm pretrain`` run in training order.

    The step checkpoints ``checkpoint_<step>.pth``; when the run kept none (``--checkpoint-every 0``), its
    ``checkpoint_last.pth``.

    Raises:
        FileNotFoundError: the folder is no pretraining run (no ``pretrain.yaml``) or holds no checkpoint.
    """
    run = Path(run_dir)
    if not (run / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{run}: not a pretraining run folder (no {RUN_CONFIG})")
    files = sorted((p for p in run.iterdir() if _STEP.match(p.name)), key=_step_of)
    if not files and (run / "checkpoint_last.pth").is_file():
        files = [run / "checkpoint_last.pth"]
    if not files:
        raise FileNotFoundError(
            f"{run}: no checkpoint_*.pth (pretraining writes them every --checkpoint-every "
            f"steps and at epoch ends; --keep-last sets how many are kept)"
        )
    return [RunCheckpoint(p, s, f"step {s}") for p, s in ((p, _step_of(p)) for p in files)]


def is_pretraining_checkpoint(path: str | Path) -> bool:
    """A ``.pth`` file with the run's ``pretrain.yaml`` beside it."""
    p = Path(path)
    return p.suffix == ".pth" and p.is_file() and (p.parent / RUN_CONFIG).is_file()


def load_pretraining_checkpoint(path: str | Path, modality: str | None = None) -> nn.Module:
    """The encoder of one pretraining checkpoint (iBOT: the EMA teacher; MAE: the encoder), with the run's
    architecture and normalisation.

    Args:
        path: a ``checkpoint_*.pth`` of a run folder (``pretrain.yaml`` beside it).
        modality: normalisation to use; default the run's modality (required for a run over several modalities).

    Raises:
        FileNotFoundError: no file or no ``pretrain.yaml`` beside it.
        ValueError: a multi-modality run and no ``modality``.
    """
    from ..pretrain.export import run_encoder

    enc = run_encoder(path, modality=modality)  # the method's exported encoder (iBOT teacher, MAE encoder)
    if getattr(enc, "info", None) is None:
        raise ValueError(f"{path}: the run was pretrained on several modalities; pass modality=... (--modality)")
    return enc


def load_weights(weights: str | Path | nn.Module, modality: str | None = None, arch: str | None = None) -> nn.Module:
    """An encoder from a module (returned as is), a pretraining checkpoint, or any file ``load_encoder`` reads."""
    if not isinstance(weights, nn.Module) and is_pretraining_checkpoint(weights):
        return load_pretraining_checkpoint(weights, modality)
    return resolve_encoder(weights, modality, arch)


def expand_weights(
    weights: Sequence[str | Path | nn.Module] | str | Path, labels: Sequence[str] | None = None
) -> tuple[list[str | Path | nn.Module], list[str]]:
    """Weights in training order with their row titles; a pretraining run folder expands to its checkpoints.

    Args:
        weights: files, encoders and/or run folders.
        labels: row titles, one per item after expansion (default: ``step N`` for run checkpoints, else the
            file name).

    Raises:
        ValueError: no weights, or a label count that does not match.
    """
    items = [weights] if isinstance(weights, (str, Path)) else list(weights)
    out: list[str | Path | nn.Module] = []
    names: list[str] = []
    for i, w in enumerate(items):
        if not isinstance(w, nn.Module) and Path(w).is_dir():
            found = pretraining_checkpoints(w)
            out += [c.path for c in found]
            names += [c.label for c in found]
        else:
            out.append(w)
            names.append(f"checkpoint {i}" if isinstance(w, nn.Module) else Path(w).name)
    if not out:
        raise ValueError("no weights given: pass checkpoint files or a pretraining run folder")
    if labels:
        if len(labels) != len(out):
            raise ValueError(f"{len(labels)} labels for {len(out)} checkpoints")
        names = list(labels)
    return out, names
