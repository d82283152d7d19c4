"""Losses of the recognition heads: pure functions of tensors (no state), tested against hand-computed answers.

Missing labels are NaN in every target tensor and are masked out, never treated as negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .schema import LabelSchema

__all__ = [
    "class_balanced_weights",
    "cross_entropy",
    "focal_bce",
    "group_cross_entropy",
    "inverse_frequency_weights",
    "masked_bce",
    "mixed_targets",
    "multilabel_loss",
    "soft_cross_entropy",
    "standardised_regression_loss",
]


def cross_entropy(
    logits: Tensor, target: Tensor, class_weight: Tensor | None = None, label_smoothing: float = 0.0
) -> Tensor:
    """Softmax cross-entropy.

    Args:
        logits: ``[B, C]``.
        target: ``[B]`` class indices (integer or integral float).
        class_weight: ``[C]`` per-class weights (weighted mean as in ``torch.nn.CrossEntropyLoss``).
        label_smoothing: in [0, 1).

    Returns:
        scalar loss.
    """
    return F.cross_entropy(logits.float(), target.long(), weight=class_weight, label_smoothing=label_smoothing)


def masked_bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Binary cross-entropy per output over the labelled rows only.

    Args:
        logits: ``[B, K]``.
        target: ``[B, K]`` in {0, 1} (soft values allowed), NaN = missing.
        pos_weight: ``[K]`` weight of the positive term (``BCEWithLogitsLoss`` convention).

    Returns:
        (mean loss per output ``[K]``, 0 where an output has no labelled row; labelled-row count ``[K]``).
    """
    valid = ~torch.isnan(target)
    t = torch.where(valid, target, torch.zeros_like(target)).float()
    per = F.binary_cross_entropy_with_logits(logits.float(), t, pos_weight=pos_weight, reduction="none")
    per = torch.where(valid, per, torch.zeros_like(per))
    n = valid.sum(0)
    return per.sum(0) / n.clamp(min=1), n


def group_cross_entropy(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy of one mutually exclusive group (e.g. the DR grade) over rows that name one class.

    A row counts when its group targets are all known and exactly one is 1 (a one-hot row). Rows with a missing
    value or no positive member (e.g. a glaucoma image with no grade given: Healthy 0 and DR-1..4 all 0) give no
    loss, like the all-zero soft target of the official code.

    Args:
        logits: ``[B, G]`` logits of the group's outputs.
        target: ``[B, G]`` multi-hot with NaN = missing.

    Returns:
        (mean loss over the counted rows, 0 when none; number of counted rows).
    """
    known = ~torch.isnan(target).any(1)
    t = torch.nan_to_num(target, nan=0.0)
    one_hot = known & (t.sum(1) == 1) & ((t == 0) | (t == 1)).all(1)
    n = one_hot.sum()
    if n == 0:
        return logits.float().sum() * 0.0, n
    loss = F.cross_entropy(logits[one_hot].float(), t[one_hot].argmax(1))
    return loss, n


def multilabel_loss(logits: Tensor, target: Tensor, schema: LabelSchema, pos_weight: Tensor | None = None) -> Tensor:
    """Weighted sum of one softmax CE per group and one masked BCE per binary output (the official combination).

    Args:
        logits: ``[B, K]`` over ``schema.outputs``.
        target: ``[B, K]`` multi-hot, NaN = missing.
        schema: which outputs form groups, and the loss weights.
        pos_weight: optional ``[K]`` positive weights for the binary outputs (entries of grouped outputs unused).

    Returns:
        scalar loss; outputs without a labelled row in the batch contribute 0.
    """
    if logits.shape[-1] != schema.k or target.shape != logits.shape:
        raise ValueError(
            f"multilabel_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} must "
            f"both be [B, {schema.k}] for schema {schema.name!r}"
        )
    total = logits.float().sum() * 0.0
    for g, idx in schema.group_indices().items():
        loss, _ = group_cross_entropy(logits[:, idx], target[:, idx])
        total = total + schema.weight(g) * loss
    b = schema.binary_indices()
    if b:
        pw = pos_weight[b] if pos_weight is not None else None
        per, _ = masked_bce(logits[:, b], target[:, b], pw)
        w = torch.tensor([schema.weight(schema.outputs[i]) for i in b], device=per.device)
        total = total + (w * per).sum()
    return total


def focal_bce(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | None = 0.25) -> Tensor:
    """Binary focal loss (Lin et al. 2017), mean over the batch.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``; ``gamma = 0`` and ``alpha = None`` give plain BCE.

    Args:
        logits: ``[B]`` (or any shape).
        target: same shape, in {0, 1}.
        gamma: focusing exponent (>= 0).
        alpha: weight of the positive class (negatives get ``1 - alpha``); None for no weighting.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    logits, target = logits.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.mean()


def inverse_frequency_weights(counts: Sequence[int]) -> np.ndarray:
    """``n / (C * n_c)`` per class (scikit-learn's ``class_weight='balanced'``); empty classes get weight 0."""
    c = np.asarray(counts, dtype=np.float64)
    w = np.where(c > 0, c.sum() / (len(c) * np.maximum(c, 1)), 0.0)
    return w


def class_balanced_weights(counts: Sequence[int], beta: float = 0.999) -> np.ndarray:
    """Class-balanced weights of Cui et al. 2019: ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to C.

    ``beta -> 1`` approaches inverse frequency, ``beta = 0`` gives equal weights.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}")
    c = np.asarray(counts, dtype=np.float64)
    eff = np.where(c > 0, (1 - np.power(beta, c)) / (1 - beta), np.inf)
    w = np.where(c > 0, 1.0 / eff, 0.0)
    return w * (len(c) / w.sum()) if w.sum() > 0 else w


def standardised_regression_loss(pred: Tensor, target: Tensor, mean: Tensor, std: Tensor, kind: str = "mse") -> Tensor:
    """MSE or L1 between standardised predictions and standardised targets, missing targets masked.

    Args:
        pred: ``[B, T]`` predictions in standardised units.
        target: ``[B, T]`` targets in original units, NaN = missing.
        mean, std: ``[T]`` training-set statistics of the targets.
        kind: ``mse``, ``l1`` or ``smooth_l1``.

    Returns:
        mean over the known entries (0 when none).
    """
    fns = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}
    if kind not in fns:
        raise ValueError(f"unknown regression loss {kind!r}; valid: {', '.join(fns)}")
    valid = ~torch.isnan(target)
    z = (torch.nan_to_num(target, nan=0.0) - mean) / std
    per = fns[kind](pred.float(), z.float(), reduction="none")
    return torch.where(valid, per, torch.zeros_like(per)).sum() / valid.sum().clamp(min=1)


def mixed_targets(y_a: Tensor, y_b: Tensor, weight_b: Tensor, n_classes: int, smoothing: float = 0.0) -> Tensor:
    """Soft targets of mixed images (mixup / cutmix), label-smoothed as timm does it.

    Args:
        y_a, y_b: ``[B]`` class indices of the two images mixed into each sample.
        weight_b: ``[B]`` share of image ``b`` in the mix (0 = only ``a``).
        n_classes: C.
        smoothing: label smoothing: each one-hot becomes ``1 - s + s/C`` on its class and ``s/C`` elsewhere.

    Returns:
        ``[B, C]`` target distributions (rows sum to 1).
    """
    off = smoothing / n_classes

    def one_hot(y: Tensor) -> Tensor:
        return F.one_hot(y.long(), n_classes).float() * (1.0 - smoothing) + off

    w = weight_b.float()[:, None]
    return one_hot(y_a) * (1 - w) + one_hot(y_b) * w


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy against target distributions: ``mean_b sum_c -t[b, c] log softmax(z)[b, c]``.

    Args:
        logits: ``[B, C]``.
        target: ``[B, C]`` distributions.
    """
    return (-target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
