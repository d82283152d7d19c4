"""The contract between the training loop and every task (pretraining, heads, decoders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = ["StepState", "Task", "param_groups_for"]


@dataclass
class StepState:
    """Where training is; passed to every step.

    Attributes:
        epoch: current epoch (0-based).
        step: global optimizer step (0-based) the current batch contributes to.
        total_steps: optimizer steps of the whole run.
        epoch_step: optimizer step within the epoch.
        steps_per_epoch: optimizer steps per epoch.
        lr: learning rate of this step (before per-group scales).
        wd: weight decay of this step.
    """

    epoch: int = 0
    step: int = 0
    total_steps: int = 1
    epoch_step: int = 0
    steps_per_epoch: int = 1
    lr: float = 0.0
    wd: float = 0.0


def param_groups_for(module: nn.Module, lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups over ``module``'s trainable parameters: weight decay on matrices only.

    Biases, norms and other 1-D tensors, and names in ``module.no_weight_decay()`` of any sub-module (position
    embeddings, CLS and mask tokens) get no weight decay, as in the official recipes.
    """
    skip: set[str] = set()
    for prefix, sub in module.named_modules():
        if hasattr(sub, "no_weight_decay"):
            skip |= {f"{prefix}.{n}" if prefix else n for n in sub.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    groups = [
        {"params": decay, "apply_wd": True, "lr_scale": lr_scale},
        {"params": no_decay, "apply_wd": False, "lr_scale": lr_scale},
    ]
    return [g for g in groups if g["params"]]


class Task(nn.Module):
    """A task holds every trainable or stateful module (encoder, heads, EMA teacher, loss centres as buffers).

    ``forward(batch, state)`` is the training step, so DDP's hooks see it: it returns a dict with ``"loss"`` (a
    scalar tensor) and any other scalars to log. Subclasses may override :meth:`param_groups`,
    :meth:`before_optimizer_step`, :meth:`on_after_step` and :meth:`evaluate`.
    """

    def forward(self, batch: Any, state: StepState) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(batch, state)")

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group may carry ``lr_scale`` and ``apply_wd``."""
        return param_groups_for(self)

    def before_optimizer_step(self, state: StepState) -> None:
        """Called after backward (gradients unscaled, accumulated, all-reduced) and before clipping and the
        optimizer step, e.g. to clip per parameter or cancel the gradients of a frozen layer."""

    def on_after_step(self, state: StepState) -> None:
        """Called after every optimizer step (e.g. the EMA teacher update)."""

    def evaluate(self, loader: Any, device: Any) -> dict[str, float]:
        """Validation metrics for model selection; never called with test data by the trainer."""
        return {}
