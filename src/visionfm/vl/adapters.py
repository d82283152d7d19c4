"""Few-shot transfer of a vision-language run on cached features: the adapters FLAIR compares.

All work on unit image embeddings ``f [N, E]`` (the run's projection of the encoder's final CLS, read from a
``visionfm extract`` features file) and unit class-text embeddings ``T [C, E]`` (prompt ensembles):

- ``zeroshot``: ``s * f T^T`` (no training; the reference row).
- ``linear``: a linear probe ``s * f W^T + b`` whose ``W`` starts at ``T`` (``init="text"``) or at random
  (``init="random"``), trained with cross-entropy.
- ``clip``: CLIP-Adapter (Gao et al., 2021): ``f' = norm(a * MLP(f) + (1 - a) * f)``, ``a = 0.2``, bottleneck E/4,
  logits ``s * f' T^T``; only the MLP trains.
- ``tip``: TIP-Adapter (Zhang et al., 2022), training-free: ``s * f T^T + alpha * exp(-beta (1 - f F^T)) L`` with the
  k-shot embeddings ``F`` and one-hot labels ``L`` as a cache; ``alpha = 1``, ``beta = 5.5`` as published (fixed:
  few-shot sets have no validation split to tune them on, and tuning on the test set would be dishonest).

Trainable adapters run on the one engine (``Trainer``), full batch.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..engine import StepState, Task, TrainConfig, Trainer

__all__ = ["ADAPTERS", "INITS", "ClipAdapter", "LinearAdapter", "TipAdapter", "ZeroShot", "fit_adapter"]

log = logging.getLogger(__name__)
ADAPTERS = ("zeroshot", "linear", "clip", "tip")
INITS = ("text", "random")


class ZeroShot(nn.Module):
    """``s * f T^T``."""

    def __init__(self, text: Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("text", text)
        self.scale = scale

    def forward(self, f: Tensor) -> Tensor:
        return self.scale * f @ self.text.t()


class LinearAdapter(nn.Module):
    """Linear probe ``s * f W^T + b`` on unit embeddings; ``W [C, E]`` from the class texts or random."""

    def __init__(self, text: Tensor, scale: float, init: str = "text", seed: int = 0) -> None:
        super().__init__()
        if init == "text":
            w = text.clone()
        else:
            g = torch.Generator().manual_seed(seed)
            w = F.normalize(torch.randn(text.shape, generator=g), dim=-1)
        self.weight, self.bias = nn.Parameter(w), nn.Parameter(torch.zeros(len(text)))
        self.scale = scale

    def forward(self, f: Tensor) -> Tensor:
        return self.scale * f @ self.weight.t() + self.bias


class ClipAdapter(nn.Module):
    """CLIP-Adapter: residual bottleneck MLP on the image embedding, classified by the fixed class texts."""

    def __init__(self, text: Tensor, scale: float, ratio: float = 0.2, reduction: int = 4) -> None:
        super().__init__()
        e = text.shape[1]
        self.mlp = nn.Sequential(
            nn.Linear(e, e // reduction, bias=False), nn.ReLU(), nn.Linear(e // reduction, e, bias=False), nn.ReLU()
        )
        self.register_buffer("text", text)
        self.scale, self.ratio = scale, ratio

    def forward(self, f: Tensor) -> Tensor:
        g = F.normalize(self.ratio * self.mlp(f) + (1 - self.ratio) * f, dim=-1)
        return self.scale * g @ self.text.t()


class TipAdapter(nn.Module):
    """TIP-Adapter: zero-shot logits plus an affinity-weighted vote of the k-shot cache (no training)."""

    def __init__(
        self, text: Tensor, scale: float, keys: Tensor, labels: Tensor, alpha: float = 1.0, beta: float = 5.5
    ) -> None:
        super().__init__()
        self.register_buffer("text", text)
        self.register_buffer("keys", keys)
        self.register_buffer("values", F.one_hot(labels, len(text)).float())
        self.scale, self.alpha, self.beta = scale, alpha, beta

    def forward(self, f: Tensor) -> Tensor:
        affinity = torch.exp(-self.beta * (1 - f @ self.keys.t()))  # [N, NK]
        return self.scale * f @ self.text.t() + self.alpha * affinity @ self.values


class _Pairs(Dataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


class _AdapterTask(Task):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, batch: tuple[Tensor, Tensor], state: StepState) -> dict[str, Tensor]:
        x, y = batch
        return {"loss": F.cross_entropy(self.head(x), y)}


def fit_adapter(
    kind: str,
    f: Tensor,
    y: Tensor,
    text: Tensor,
    scale: float,
    work: Path,
    init: str = "text",
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Build (and train, for ``linear`` / ``clip``) an adapter on k-shot embeddings ``f [NK, E]``, labels ``[NK]``.

    ``work`` holds the loop's checkpoint while it trains and is removed after.
    """
    if kind not in ADAPTERS:
        raise ValueError(f"adapter {kind!r} is not one of {list(ADAPTERS)}")
    if kind == "zeroshot":
        return ZeroShot(text, scale)
    if kind == "tip":
        return TipAdapter(text, scale, f, y)
    with torch.random.fork_rng():  # CLIP-Adapter's MLP init, seeded without touching the caller's RNG
        torch.manual_seed(seed)
        head = LinearAdapter(text, scale, init, seed) if kind == "linear" else ClipAdapter(text, scale)
    cfg = TrainConfig(
        output_dir=str(work),
        max_steps=steps,
        epochs=steps,
        batch_size=len(f),
        lr=lr,
        weight_decay=0.0,
        seed=seed,
        device="cpu",
        progress=False,
        checkpoint_epochs=steps,
        log_every=steps,
    )
    Trainer(_AdapterTask(head), cfg, _Pairs(f, y)).fit()
    shutil.rmtree(work, ignore_errors=True)
    return head.eval()


@torch.no_grad()
def predict(head: nn.Module, f: Tensor) -> np.ndarray:
    """Class probabilities ``[N, C]``."""
    return head(f).softmax(-1).numpy()
