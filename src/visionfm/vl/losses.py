"""FLAIR's objective: a CLIP loss with soft targets, so every pair sharing a category is a positive.

For a batch of B image-text pairs with category keys ``k_i``, the target of row i is uniform over the pairs j with
``k_j == k_i`` (the co-occurrence matrix, row-normalised). Free-text reports take the report itself as key, so two
different reports are negatives and identical reports positives: the standard CLIP loss is the special case of B
distinct keys (identity targets).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["similarity_logits", "soft_clip_loss", "soft_targets"]


def soft_targets(keys: Sequence[int] | Tensor) -> Tensor:
    """Row-normalised co-occurrence of category keys.

    Args:
        keys: ``[B]`` integer keys (same key = same category, or the same report).

    Returns:
        ``[B, B]`` float targets; row i is ``1/n_i`` on the ``n_i`` pairs sharing ``keys[i]``, 0 elsewhere.
    """
    k = torch.as_tensor(keys)
    if k.ndim != 1 or k.numel() == 0:
        raise ValueError(f"keys must be a non-empty 1-D sequence, got shape {tuple(k.shape)}")
    same = (k[:, None] == k[None, :]).float()
    return same / same.sum(1, keepdim=True)


def similarity_logits(img: Tensor, txt: Tensor, log_scale: Tensor) -> Tensor:
    """Scaled cosine similarities ``[B_img, B_txt]`` of unit vectors ``img [B_img, E]`` and ``txt [B_txt, E]``.

    The scale is ``exp(log_scale)`` with ``log_scale`` clamped to ``[0, ln 100]`` (CLIP's cap, as FLAIR).
    """
    scale = log_scale.clamp(0.0, 4.605170185988092).exp()
    return scale * img @ txt.t()


def soft_clip_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Symmetric cross-entropy with soft targets: the mean of the image->text and text->image terms.

    Args:
        logits: ``[B, B]`` image-text logits (row = image i, column = text j).
        targets: ``[B, B]`` row-stochastic targets from :func:`soft_targets` (symmetric for category keys).

    Returns:
        scalar loss.
    """
    if logits.shape != targets.shape or logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must be equal squares")
    t = targets.to(logits.dtype)
    image_to_text = F.cross_entropy(logits, t)
    text_to_image = F.cross_entropy(logits.t(), t)
    return (image_to_text + text_to_image) / 2
