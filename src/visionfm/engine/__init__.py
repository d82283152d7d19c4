"""The one training loop (:class:`Trainer`) and the contract every task implements (:class:`Task`).

Names load on first use (PEP 562), so ``from visionfm.engine.config import TrainConfig`` (what every task config
and ``--help`` needs) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ResumableSampler": "sampler",
    "cosine_schedule": "schedules",
    "linear_warmup_then_constant": "schedules",
    "StepState": "task",
    "Task": "task",
    "param_groups_for": "task",
    "TrainConfig": "config",
    "Trainer": "trainer",
    "TrainResult": "trainer",
}

__all__ = [
    "ResumableSampler",
    "StepState",
    "Task",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "cosine_schedule",
    "linear_warmup_then_constant",
    "load_config",
    "param_groups_for",
    "save_config",
]


def __getattr__(name: str) -> Any:
    if name in ("load_config", "save_config"):  # the spine's, re-exported for old imports
        value = getattr(importlib.import_module("visionfm.config"), name)
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
