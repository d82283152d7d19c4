"""Volume-level decisions from B-scan features: mean / max pooling or gated-attention MIL, with the B-scan that
drove each decision.

Every head maps a padded bag ``x [B, N, F]`` with ``mask [B, N]`` (True = a real B-scan) to logits ``[B, C]`` and a
per-B-scan relevance ``[B, N]`` (0 on padding):

* ``mean``: standardise, average the B-scans, one ``Linear``. Linear after a mean is the mean of per-B-scan
  logits, so the relevance of B-scan i is exactly its own logit for the predicted class.
* ``max``: standardise, per-feature maximum over the B-scans, one ``Linear``; the relevance of B-scan i is the part
  of the predicted class's logit coming from the features where i was the maximum.
* ``attention``: gated attention pooling (Ilse, Tomczak & Welling, ICML 2018: ``a_i = softmax(w^T (tanh(V h_i) *
  sigmoid(U h_i)))``), then one ``Linear``; the relevance is the attention weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..recognition.heads import FeatureNorm  # light: torch and the head registry only
from ..registry import Registry

__all__ = ["POOLINGS", "MILHead", "pad_bags"]

POOLINGS: Registry[Callable[..., nn.Module]] = Registry("volume pooling")


def pad_bags(bags: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``[N_b, F]`` tensors -> padded ``[B, N_max, F]`` and mask ``[B, N_max]``."""
    n_max = max(len(b) for b in bags)
    x = torch.zeros(len(bags), n_max, bags[0].shape[1], dtype=bags[0].dtype)
    mask = torch.zeros(len(bags), n_max, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)], mask[i, : len(b)] = b, True
    return x, mask


@POOLINGS.register("mean")
class MeanPool(nn.Module):
    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor, fc: nn.Linear) -> tuple[Tensor, Tensor]:
        m = mask.unsqueeze(-1).float()
        logits = fc((h * m).sum(1) / m.sum(1).clamp(min=1))
        inst = fc(h)  # [B, N, C]: their mean over the bag is exactly ``logits``
        pred = logits.argmax(-1)
        rel = inst.gather(-1, pred[:, None, None].expand(-1, h.shape[1], 1)).squeeze(-1)
        return logits, rel.masked_fill(~mask, 0.0)


@POOLINGS.register("max")
class MaxPool(nn.Module):
    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()

    def forward(self, h: Tensor, mask: Tensor, fc: nn.Linear) -> tuple[Tensor, Tensor]:
        pooled, arg = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1)  # [B, F], [B, F]
        logits = fc(pooled)
        w = fc.weight[logits.argmax(-1)]  # [B, F]: weights of the predicted class
        onehot = nn.functional.one_hot(arg, h.shape[1]).float()  # [B, F, N]
        rel = torch.einsum("bf,bfn->bn", w * pooled, onehot)
        return logits, rel.masked_fill(~mask, 0.0)


@POOLINGS.register("attention")
class GatedAttentionPool(nn.Module):
    """Gated attention (Ilse et al. 2018) over the B-scans."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.v, self.u, self.w = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, 1)

    def forward(self, h: Tensor, mask: Tensor, fc: nn.Linear) -> tuple[Tensor, Tensor]:
        score = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1)  # [B, N]
        a = torch.softmax(score.masked_fill(~mask, float("-inf")), dim=1)
        return fc((a.unsqueeze(-1) * h).sum(1)), a


class MILHead(nn.Module):
    """Standardisation + pooling + one linear layer: bag ``[B, N, F]`` -> logits ``[B, C]``, relevance ``[B, N]``.

    Args:
        in_dim: B-scan feature width F.
        n_classes: C.
        pooling: a name in :data:`POOLINGS`.
        hidden: attention width (``attention`` only).
        dropout: dropout on the standardised features in training.
    """

    def __init__(
        self, in_dim: int, n_classes: int, pooling: str = "attention", hidden: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.norm = FeatureNorm(in_dim)
        self.drop = nn.Dropout(dropout)
        self.pool = POOLINGS.get(pooling)(in_dim, hidden)
        self.fc = nn.Linear(in_dim, n_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def fit_inputs(self, x: Tensor) -> None:
        """Standardisation statistics from all training B-scans ``[M, F]``."""
        self.norm.fit(x)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.pool(self.drop(self.norm(x)), mask, self.fc)
