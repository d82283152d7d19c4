"""The one reader of a pretraining checkpoint's encoder: which tensors of ``checkpoint["task"]`` are the encoder.

The tasks name their modules (iBOT: ``student`` / ``teacher`` with ``backbone`` and ``head``; MAE: ``encoder`` and
``decoder``); each method declares its encoders' key prefixes in :data:`visionfm.pretrain.config.METHODS`, and
everything that reads a run checkpoint (export, explain, ``load_encoder``'s ``visionfm-run`` format) asks here.
No torch import: this module only looks at key names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import METHODS

__all__ = ["encoder_prefix", "encoder_state", "is_run_state"]


def encoder_prefix(task_state: Mapping[str, Any], which: str | None = None) -> tuple[str, str, str]:
    """(key prefix, method, which) of an encoder in a pretraining task's state dict.

    Args:
        task_state: ``checkpoint["task"]`` of a ``visionfm pretrain`` checkpoint.
        which: ``teacher`` / ``student`` (iBOT) or ``encoder`` (MAE); default the method's exported one (the iBOT
            teacher, the MAE encoder).

    Raises:
        ValueError: the state is not a pretraining task's, or ``which`` is not one of its encoders.
    """
    for name in METHODS:
        encoders = METHODS.get(name).encoders
        default = next(iter(encoders))
        if not any(k.startswith(encoders[default]) for k in task_state):
            continue
        pick = which or default
        if pick not in encoders:
            raise ValueError(f"a {name} run has the encoders {list(encoders)}, not {pick!r}")
        return encoders[pick], name, pick
    raise ValueError(f"not a pretraining checkpoint's task state (no {', '.join(METHODS.names())} encoder in it)")


def encoder_state(task_state: Mapping[str, Any], which: str | None = None) -> tuple[dict[str, Any], str, str]:
    """(encoder state dict in ``VisionTransformer`` naming, method, which); see :func:`encoder_prefix`."""
    prefix, method, which = encoder_prefix(task_state, which)
    return {k[len(prefix) :]: v for k, v in task_state.items() if k.startswith(prefix)}, method, which


def is_run_state(task_state: Any) -> bool:
    """Whether ``task_state`` (a mapping) holds a pretraining task's encoder."""
    if not isinstance(task_state, Mapping):
        return False
    try:
        encoder_prefix(task_state)
    except ValueError:
        return False
    return True
