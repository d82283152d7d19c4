"""The iBOT projection head: MLP -> L2 normalisation -> weight-normalised linear layer onto K prototypes.

Parameter names follow the official ``models/head.py`` (``mlp.{0,2,4}``, ``last_layer.weight_g``,
``last_layer.weight_v``, ``last_layer2.*``), so official checkpoints' heads map one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IBOTHead", "WeightNormLinear"]


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation ``W = g * V / ||V||`` (norm per output row).

    Args:
        in_dim: input width.
        out_dim: output width (prototypes).
        freeze_norm: keep ``g`` at 1 (official ``norm_last_layer``).
    """

    def __init__(self, in_dim: int, out_dim: int, freeze_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's default, as officially
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not freeze_norm)

    def weight(self) -> Tensor:
        """The effective weight ``[out, in]``."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., in]`` -> ``[..., out]``."""
        return F.linear(x, self.weight())


class IBOTHead(nn.Module):
    """Projection head for CLS and patch tokens.

    Args:
        in_dim: encoder width D.
        out_dim: CLS prototypes K.
        patch_out_dim: patch prototypes (used only without a shared last layer).
        hidden_dim: MLP hidden width.
        bottleneck_dim: MLP output width before normalisation.
        nlayers: MLP layers (GELU between them).
        norm_last_layer: freeze the last layer's weight-norm magnitude.
        shared: one last layer for CLS and patch tokens.
        with_patch: whether patch tokens are projected at all (False: DINO).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        patch_out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        shared: bool = True,
        with_patch: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1 or bottleneck_dim < 1:
            raise ValueError(f"head needs nlayers >= 1 and bottleneck_dim >= 1, got {nlayers}, {bottleneck_dim}")
        if nlayers == 1:
            self.mlp = nn.Sequential(nn.Linear(in_dim, bottleneck_dim))
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, norm_last_layer)
        self.last_layer2 = (
            WeightNormLinear(bottleneck_dim, patch_out_dim, norm_last_layer) if with_patch and not shared else None
        )

    def project(self, tokens: Tensor) -> Tensor:
        """MLP then L2 normalisation: ``[..., D]`` -> ``[..., bottleneck]``."""
        return F.normalize(self.mlp(tokens), dim=-1, p=2)

    def cls_logits(self, z: Tensor) -> Tensor:
        """Projected CLS tokens ``[..., bottleneck]`` -> ``[..., K]``."""
        return self.last_layer(z)

    def patch_logits(self, z: Tensor) -> Tensor:
        """Projected patch tokens ``[..., bottleneck]`` -> ``[..., K_patch]``."""
        return (self.last_layer2 or self.last_layer)(z)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """All tokens ``[B, 1+N, D]`` -> (CLS logits ``[B, K]``, patch logits ``[B, N, K_patch]``)."""
        z = self.project(tokens)
        return self.cls_logits(z[:, 0]), self.patch_logits(z[:, 1:])
