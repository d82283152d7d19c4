"""The iBOT step computed the way the official ``main_pretrain.py`` computes it, on this package's modules.

Kept as the reference the fast path is tested against (same loss, same gradients) and as the "official-style"
baseline of ``benchmarks/pretrain.py``: the student head projects *every* token of the global views onto the
prototypes (``MultiCropWrapper`` + ``iBOTHead``), local views go through a second call, the losses are the dense
loops of ``iBOTLoss``, attention is the explicit softmax (the official ViT without flash attention), gradients are
clipped per parameter with a host sync per tensor (``utils.clip_gradients``), and the teacher is updated by a
Python loop over parameter pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine.task import StepState
from .losses import dino_cls_loss, ibot_patch_loss, teacher_probs, teacher_temperature, updated_center
from .task import IBOTTask

__all__ = ["official_style_clip", "official_style_ema", "official_style_losses"]


def _encode(backbone: torch.nn.Module, x: Tensor, mask: Tensor | None, explicit_attention: bool) -> Tensor:
    """All tokens ``[B, 1+N, D]``; with ``explicit_attention`` every block takes the softmax path."""
    return backbone(x, mask=mask, return_attention="all" if explicit_attention else False).tokens


def official_style_losses(
    task: IBOTTask,
    x: Tensor,
    local: Tensor | None,
    mask: Tensor,
    n_global: int,
    state: StepState,
    explicit_attention: bool = True,
) -> dict[str, Tensor]:
    """The iBOT losses as the official code computes them (dense over all tokens); updates the centres.

    Args: as :meth:`IBOTTask.losses` (MIM on).
    """
    cfg = task.cfg
    with torch.no_grad():
        t_cls, t_patch = task.teacher["head"](_encode(task.teacher["backbone"], x, None, explicit_attention))
    s_cls, s_patch = task.student["head"](_encode(task.student["backbone"], x, mask, explicit_attention))
    if local is not None:
        s_local = task.student["head"](_encode(task.student["backbone"], local, None, explicit_attention))[0]
        s_cls = torch.cat([s_cls, s_local])
    warm = task.temp_warmup(state)
    temp = teacher_temperature(state.epoch, cfg.warmup_teacher_temp, cfg.teacher_temp, warm)
    temp2 = teacher_temperature(state.epoch, cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp, warm)
    cls_loss = dino_cls_loss(s_cls, teacher_probs(t_cls, task.center, temp), n_global, cfg.student_temp)
    g, n, k = n_global, s_patch.shape[1], s_patch.shape[2]
    t_probs = teacher_probs(t_patch, task.center2, temp2)
    patch_loss = ibot_patch_loss(
        s_patch.view(g, -1, n, k), t_probs.view(g, -1, n, k), mask.view(g, -1, n), cfg.student_temp
    )
    task.center.copy_(updated_center(task.center, t_cls, cfg.center_momentum))
    task.center2.copy_(updated_center(task.center2, t_patch, cfg.center_momentum))
    return {"cls_loss": cls_loss, "patch_loss": patch_loss, "loss": cfg.lambda1 * cls_loss + cfg.lambda2 * patch_loss}


def official_style_clip(model: torch.nn.Module, clip: float) -> list[float]:
    """``utils.clip_gradients``: each parameter's gradient norm clipped to ``clip``, one ``.item()`` per tensor."""
    norms = []
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.data.norm(2)
            norms.append(norm.item())
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.data.mul_(coef)
    return norms


@torch.no_grad()
def official_style_ema(task: IBOTTask, momentum: float) -> None:
    """The official teacher update: a Python loop over the common (student, teacher) parameter pairs."""
    s, t = dict(task.student.named_parameters()), dict(task.teacher.named_parameters())
    for name in sorted(set(s) & set(t)):
        t[name].data.mul_(momentum).add_((1 - momentum) * s[name].detach().data)
