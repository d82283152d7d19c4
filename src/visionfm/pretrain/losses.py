"""The iBOT objective as pure functions of tensors, and its schedules.

* CLS self-distillation (DINO): cross-entropy between the centred, sharpened teacher distribution of global view
  q and the student distribution of every other view v != q (other global views and all local views), averaged
  over the (q, v) pairs.
* Masked-patch distillation (iBOT MIM): within each global view, cross-entropy between teacher and student patch
  distributions over the masked patches only; per image the sum over its masked patches divided by their number
  (at least 1), then the mean over images (images without a masked patch count as 0), averaged over views.
* KoLeo (optional, DINOv2's regulariser, not in iBOT): ``-mean_i log min_{j != i} ||x_i - x_j||`` over the
  L2-normalised student CLS tokens of each global view, which spreads the features of a batch apart.
* Centres: EMA (momentum 0.9) of the teacher's mean CLS logits and mean patch logits over the global batch
  (all-reduced across processes when a process group is running).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "dino_cls_loss",
    "ibot_patch_loss",
    "ibot_patch_loss_sparse",
    "koleo_loss",
    "teacher_momentum",
    "teacher_probs",
    "teacher_temperature",
    "updated_center",
]


def teacher_probs(logits: Tensor, center: Tensor, temp: float) -> Tensor:
    """Centred, sharpened teacher distribution ``softmax((logits - center) / temp)`` without gradient.

    Args:
        logits: ``[..., K]``.
        center: broadcastable to ``logits`` (``[1, K]`` or ``[1, 1, K]``).
        temp: teacher temperature.
    """
    return F.softmax((logits.float() - center) / temp, dim=-1).detach()


def dino_cls_loss(student: Tensor, teacher: Tensor, n_global: int, student_temp: float = 0.1) -> Tensor:
    """Cross-view CLS distillation.

    Args:
        student: student CLS logits of all views, view-major ``[V*B, K]`` (the first ``n_global`` views global).
        teacher: teacher CLS probabilities of the global views ``[n_global*B, K]``.
        n_global: number of global views.
        student_temp: student temperature.

    Returns:
        Scalar: mean over pairs (q, v), v != q, of ``mean_b sum_k -t_q log s_v``.
    """
    n_views = student.shape[0] * n_global // teacher.shape[0]
    log_s = F.log_softmax(student.float() / student_temp, dim=-1).chunk(n_views)
    t = teacher.chunk(n_global)
    total, terms = student.new_zeros((), dtype=torch.float32), 0
    for q in range(n_global):
        for v in range(n_views):
            if v != q:
                total = total + torch.sum(-t[q] * log_s[v], dim=-1).mean()
                terms += 1
    if terms == 0:
        raise ValueError("the CLS loss needs at least two views (two global crops, or one global and local crops)")
    return total / terms


def ibot_patch_loss(student: Tensor, teacher: Tensor, mask: Tensor, student_temp: float = 0.1) -> Tensor:
    """Masked-patch distillation of one set of views, dense form (the definition).

    Args:
        student: student patch logits ``[G, B, N, K]`` (G global views).
        teacher: teacher patch probabilities ``[G, B, N, K]``.
        mask: ``[G, B, N]`` bool, True = masked in the student's input.
        student_temp: student temperature.

    Returns:
        Scalar: mean over views of ``mean_b (sum_{n masked} CE_bn) / max(#masked_b, 1)``.
    """
    ce = torch.sum(-teacher * F.log_softmax(student.float() / student_temp, dim=-1), dim=-1)  # [G, B, N]
    m = mask.float()
    per_image = (ce * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # [G, B]
    return per_image.mean(-1).mean()


def ibot_patch_loss_sparse(
    student: Tensor, teacher: Tensor, image_index: Tensor, counts: Tensor, student_temp: float = 0.1
) -> Tensor:
    """:func:`ibot_patch_loss` computed on the masked tokens only (what the task runs; equal to the dense form).

    Args:
        student: student logits of the masked tokens ``[M, K]``.
        teacher: teacher probabilities at the same tokens ``[M, K]``.
        image_index: ``[M]`` index of each token's image among the ``G*B`` global images (view-major).
        counts: ``[G, B]`` masked tokens per image.
        student_temp: student temperature.
    """
    ce = torch.sum(-teacher * F.log_softmax(student.float() / student_temp, dim=-1), dim=-1)  # [M]
    per_image = torch.zeros(counts.numel(), dtype=ce.dtype, device=ce.device).index_add_(0, image_index, ce)
    per_image = per_image.view_as(counts) / counts.clamp(min=1).to(ce.dtype)
    return per_image.mean(-1).mean()


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Kozachenko-Leonenko differential-entropy estimate (up to constants), negated: small when rows crowd.

    Args:
        x: ``[B, D]`` features (L2-normalised here), B >= 2.
        eps: added to the nearest-neighbour distances.

    Returns:
        Scalar ``-mean_i log(||x_i - x_nn(i)|| + eps)``, nn(i) the nearest other row (found without gradient).
    """
    if x.shape[0] < 2:
        raise ValueError(f"the KoLeo loss needs at least 2 rows per batch, got {x.shape[0]}")
    x = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.T
        dots.fill_diagonal_(-2.0)  # never one's own neighbour (cosines are >= -1)
        nearest = dots.argmax(1)
    return -torch.log(torch.linalg.vector_norm(x - x[nearest], dim=-1) + eps).mean()


def _global_mean(total: Tensor, n: int) -> Tensor:
    """Sum of ``total`` over processes divided by the global count (``n`` per process)."""
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        world = dist.get_world_size()
    return total / (n * world)


@torch.no_grad()
def updated_center(center: Tensor, teacher_logits: Tensor, momentum: float) -> Tensor:
    """New centre: ``momentum * center + (1 - momentum) * mean`` of the teacher logits over the global batch.

    Args:
        center: ``[1, K]`` (CLS) or ``[1, 1, K]`` (patches).
        teacher_logits: ``[B, K]`` CLS logits, or ``[B, N, K]`` patch logits (averaged over patches first).
        momentum: centre momentum.
    """
    x = teacher_logits.float()
    if x.ndim == 3:
        x = x.mean(1)
    batch_mean = _global_mean(x.sum(0, keepdim=True), x.shape[0]).view_as(center)
    return center * momentum + batch_mean * (1 - momentum)


def teacher_temperature(epoch: int, start: float, end: float, warmup_epochs: int) -> float:
    """Linear warm-up ``start -> end`` over ``warmup_epochs`` epochs (inclusive ends), then ``end``.

    As ``np.linspace(start, end, warmup_epochs)`` indexed by epoch in the official code.
    """
    if epoch >= warmup_epochs:
        return end
    if warmup_epochs == 1:
        return start
    return start + (end - start) * epoch / (warmup_epochs - 1)


def teacher_momentum(step: int, total_steps: int, base: float) -> float:
    """Teacher EMA momentum at ``step``: half-cosine ``base -> 1`` over ``total_steps`` (official schedule)."""
    return 1.0 + 0.5 * (base - 1.0) * (1.0 + math.cos(math.pi * step / total_steps))
