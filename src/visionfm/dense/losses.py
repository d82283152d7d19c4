"""Pure loss functions for dense tasks (known-answer tested).

Segmentation is multi-label: logits ``[B, K, H, W]`` against float targets ``[B, K, H, W]`` in [0, 1] (one channel
per foreground class; soft values come from area-averaged downsampling of thin structures). An optional
``valid`` map ``[B, 1, H, W]`` (the field of view) restricts every loss to the pixels that count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SEG_LOSSES",
    "dice_bce_loss",
    "dice_focal_loss",
    "focal_loss",
    "heatmap_kl",
    "soft_dice_loss",
    "tversky_focal_loss",
    "tversky_loss",
]


def _valid(target: Tensor, valid: Tensor | None) -> Tensor:
    return torch.ones_like(target[:, :1]) if valid is None else valid.to(target.dtype)


def soft_dice_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None, eps: float = 1.0) -> Tensor:
    """1 - soft Dice per class, pooled over batch and pixels, averaged over classes.

    Pooling over the batch keeps the loss defined for images where a lesion class is absent.

    Args:
        logits: ``[B, K, H, W]``.
        target: ``[B, K, H, W]`` in [0, 1].
        valid: ``[B, 1, H, W]`` 0/1 or None.
        eps: smoothing added to numerator and denominator.

    Returns:
        scalar.
    """
    v = _valid(target, valid)
    p = torch.sigmoid(logits) * v
    t = target * v
    inter = (p * t).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def focal_loss(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, gamma: float = 2.0, alpha: float | None = None
) -> Tensor:
    """Binary focal loss ``(1 - p_t)^gamma * BCE`` averaged over valid pixels and classes.

    Args:
        logits: ``[B, K, H, W]``.
        target: ``[B, K, H, W]`` in [0, 1].
        valid: ``[B, 1, H, W]`` or None.
        gamma: focusing exponent (0 gives plain BCE).
        alpha: optional weight of the positive class (negatives get ``1 - alpha``).

    Returns:
        scalar.
    """
    v = _valid(target, valid).expand_as(target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = (1 - p_t).pow(gamma) * bce
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return (loss * v).sum() / v.sum().clamp_min(1.0)


def dice_focal_loss(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    dice_weight: float = 1.0,
    focal_weight: float = 1.0,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """Dice + focal; returns ``{'loss', 'dice_loss', 'focal_loss'}`` (scalars)."""
    d = soft_dice_loss(logits, target, valid)
    f = focal_loss(logits, target, valid, gamma)
    return {"loss": dice_weight * d + focal_weight * f, "dice_loss": d.detach(), "focal_loss": f.detach()}


def dice_bce_loss(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, gamma: float | None = None
) -> dict[str, Tensor]:
    """Soft Dice + plain binary cross-entropy, the classic vessel loss; returns ``{'loss', 'dice_loss', 'bce_loss'}``.

    BCE keeps the probabilities calibrated, so 0.5 is a sensible threshold; focal loss (gamma 2) flattens them for
    easy pixels, and with the Dice term short runs then over-segment at 0.5. ``gamma`` is ignored (BCE is the focal
    loss with gamma 0); it is accepted so every segmentation loss takes the same arguments.
    """
    d = soft_dice_loss(logits, target, valid)
    b = focal_loss(logits, target, valid, gamma=0.0)
    return {"loss": d + b, "dice_loss": d.detach(), "bce_loss": b.detach()}


def tversky_loss(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, alpha: float = 0.3, beta: float = 0.7, eps: float = 1.0
) -> Tensor:
    """1 - Tversky index per class (pooled over batch and pixels), averaged over classes.

    ``TI = TP / (TP + alpha * FP + beta * FN)`` with soft counts; ``alpha = beta = 0.5`` is the soft Dice. With
    ``beta > alpha`` a missed lesion pixel costs more than a false alarm, which keeps small rare classes (micro-
    aneurysms, haemorrhages) from collapsing to "predict nothing" (Salehi et al. 2017).

    Args:
        logits / target / valid: as :func:`soft_dice_loss`.
        alpha: weight of false positives.
        beta: weight of false negatives.
    """
    v = _valid(target, valid)
    p = torch.sigmoid(logits) * v
    t = target * v
    tp = (p * t).sum(dim=(0, 2, 3))
    fp = (p * (1 - t) * v).sum(dim=(0, 2, 3))
    fn = ((1 - p) * t).sum(dim=(0, 2, 3))
    # Written as (2TP + eps) / (2TP + 2a FP + 2b FN + eps): the same smoothing as soft_dice_loss, so a = b = 0.5
    # gives exactly the soft Dice.
    return (1 - (2 * tp + eps) / (2 * tp + 2 * alpha * fp + 2 * beta * fn + eps)).mean()


def tversky_focal_loss(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, gamma: float = 2.0
) -> dict[str, Tensor]:
    """Tversky (0.3 / 0.7) + focal with positives weighted 0.75: the rare-class recipe (lesions)."""
    d = tversky_loss(logits, target, valid)
    f = focal_loss(logits, target, valid, gamma, alpha=0.75)
    return {"loss": d + f, "tversky_loss": d.detach(), "focal_loss": f.detach()}


SEG_LOSSES = {"dice_focal": dice_focal_loss, "dice_bce": dice_bce_loss, "tversky_focal": tversky_focal_loss}


def heatmap_kl(logits: Tensor, target: Tensor) -> Tensor:
    """KL divergence from the normalised target heatmap to the spatial softmax of the logits, mean over B and K.

    Each map is a distribution over pixels, so the loss cannot be minimised by predicting all zeros (the failure
    of plain MSE on mostly-empty Gaussian targets), and ``logits - max`` is then the log of a peak-1 heatmap.

    Args:
        logits: ``[B, K, H, W]``.
        target: ``[B, K, H, W]`` non-negative heatmaps (e.g. Gaussians with peak 1).
    """
    b, k = logits.shape[:2]
    logp = torch.log_softmax(logits.reshape(b, k, -1).float(), dim=-1)
    t = target.reshape(b, k, -1).float()
    t = t / t.sum(-1, keepdim=True).clamp_min(1e-12)
    return (t * (torch.log(t.clamp_min(1e-12)) - logp)).sum(-1).mean()
