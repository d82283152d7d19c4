"""Heads on frozen (or fine-tuned) encoder features, registered by name in :data:`HEADS`.

* ``linear``: a true linear probe: the features standardised with training-set statistics (fixed buffers, so
  the whole head is one affine map), then one ``Linear``.
* ``mlp``: the official VisionFM classification head (``ClsHead``): BatchNorm over the features, then three
  ``Linear`` layers ``F -> F/2 -> F/4 -> C`` with GELU and dropout 0.1, weights ~ N(0, 0.01), zero biases. The
  official code passes ``momentum=0.99`` to PyTorch's BatchNorm, where momentum is the weight of the *new* batch
  (the Keras convention is the opposite); the intended running average is kept with ``momentum=0.01`` here.
* ``retfound``: RETFound's fine-tuning head: LayerNorm (``fc_norm``) + one ``Linear`` initialised at trunc-normal
  std 2e-5.
* ``forecast``: features + time interval to the next visit -> logit: standardised features concatenated with a
  time encoding (registry :data:`TIME_ENCODINGS`: ``sinusoidal``, ``learned``, or ``none`` for an ablation
  without the interval), then one ``Linear`` (the paper trains "a single linear layer").

Every head maps ``x [B, F]`` (and ``t [B]`` days for the forecast head) to ``[B, C]`` logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..registry import Registry

__all__ = [
    "HEADS",
    "TIME_ENCODINGS",
    "FeatureNorm",
    "ForecastHead",
    "LearnedTime",
    "LinearHead",
    "MLPHead",
    "RetfoundHead",
    "SinusoidalTime",
    "build_head",
    "list_heads",
]

HEADS: Registry[Callable[..., nn.Module]] = Registry("recognition head")
TIME_ENCODINGS: Registry[Callable[[int], nn.Module]] = Registry("time encoding")
DAYS_PER_YEAR = 365.25


class FeatureNorm(nn.Module):
    """Fixed standardisation ``(x - mean) / std`` with statistics set once from training features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set the statistics from ``x [N, F]`` (constant features get std 1)."""
        x = x.float()
        self.mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Standardisation + one linear layer.

    Args:
        in_dim: feature width F.
        out_dim: number of outputs C.
    """

    requires_time = False

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = FeatureNorm(in_dim)
        self.fc = nn.Linear(in_dim, out_dim)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def fit_inputs(self, x: Tensor) -> None:
        self.norm.fit(x)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """``[B, F]`` -> ``[B, C]``."""
        return self.fc(self.norm(x))


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """The official head: BatchNorm, then ``Linear F->F/2, GELU, Dropout, Linear F/2->F/4, GELU, Dropout, Linear``.

    Args:
        in_dim: feature width F (4 x D for the concatenated CLS tokens of the last 4 blocks).
        out_dim: number of outputs C.
        dropout: dropout after each hidden layer (official 0.1).
        bn_momentum: PyTorch-convention momentum (weight of the new batch); 0.01 = the intended 0.99 average.
    """

    requires_time = False

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1, bn_momentum: float = 0.01) -> None:
        super().__init__()
        if in_dim < 4:
            raise UserError(f"the mlp head needs at least 4 input features, got {in_dim}")
        self.bn = nn.BatchNorm1d(in_dim, eps=1e-6, momentum=bn_momentum)
        h1, h2 = in_dim // 2, in_dim // 4
        self.classifier = nn.Sequential(
            nn.Linear(in_dim, h1),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(h1, h2),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(h2, out_dim),
        )
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def fit_inputs(self, x: Tensor) -> None:
        """Nothing to fit: BatchNorm learns its statistics in training."""

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """``[B, F]`` -> ``[B, C]``."""
        return self.classifier(self.bn(x))


@HEADS.register("retfound")
class RetfoundHead(nn.Module):
    """RETFound's fine-tuning head: ``fc_norm`` (LayerNorm over the pooled feature), then one ``Linear`` whose
    weights start at trunc-normal std 2e-5 and bias 0 (as RETFound / MAE initialise it).

    Args:
        in_dim: feature width F (D for the global-average-pooled patch tokens).
        out_dim: number of outputs C.
        fc_norm: apply the LayerNorm (RETFound's global pool); False for its CLS-token variant.
        init_std: standard deviation of the weight initialisation.
    """

    requires_time = False
    has_fc_norm = True  #: with ``fc_norm`` it normalises pooled patch tokens itself (the encoder's norm is dropped)

    def __init__(self, in_dim: int, out_dim: int, fc_norm: bool = True, init_std: float = 2e-5) -> None:
        super().__init__()
        self.fc_norm = nn.LayerNorm(in_dim, eps=1e-6) if fc_norm else nn.Identity()
        self.fc = nn.Linear(in_dim, out_dim)
        nn.init.trunc_normal_(self.fc.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        nn.init.zeros_(self.fc.bias)

    def fit_inputs(self, x: Tensor) -> None:
        """Nothing to fit: the LayerNorm normalises each feature vector."""

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """``[B, F]`` -> ``[B, C]``."""
        return self.fc(self.fc_norm(x))


@TIME_ENCODINGS.register("sinusoidal")
class SinusoidalTime(nn.Module):
    """Fixed sines and cosines of the interval at geometrically spaced periods (no parameters).

    Args:
        dim: even encoding width E.
        min_period: shortest period in years.
        max_period: longest period in years (long periods are nearly linear over a few years).
    """

    def __init__(self, dim: int = 16, min_period: float = 0.25, max_period: float = 64.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise UserError(f"sinusoidal time encoding width must be even and >= 2, got {dim}")
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), dim // 2)
        self.register_buffer("freq", 2 * math.pi / periods, persistent=False)
        self.dim = dim

    def forward(self, t_days: Tensor) -> Tensor:
        """``[B]`` days -> ``[B, E]``."""
        angle = (t_days.float() / DAYS_PER_YEAR)[:, None] * self.freq
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


@TIME_ENCODINGS.register("learned")
class LearnedTime(nn.Module):
    """A small learned map of the interval (in years): ``Linear(1, E), GELU, Linear(E, E)``."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, dim), nn.GELU(), nn.Linear(dim, dim))
        self.dim = dim

    def forward(self, t_days: Tensor) -> Tensor:
        """``[B]`` days -> ``[B, E]``."""
        return self.net((t_days.float() / DAYS_PER_YEAR)[:, None])


@TIME_ENCODINGS.register("none")
class NoTime(nn.Module):
    """The ablation: the interval is ignored (width 0)."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = 0

    def forward(self, t_days: Tensor) -> Tensor:
        return t_days.new_zeros(len(t_days), 0).float()


@HEADS.register("forecast")
class ForecastHead(nn.Module):
    """Glaucoma forecasting: ``Linear([standardised features, time encoding of the interval])``.

    Args:
        in_dim: feature width F.
        out_dim: outputs (1 logit: converts or not).
        time_encoding: name in :data:`TIME_ENCODINGS`.
        time_dim: encoding width E.
    """

    requires_time = True

    def __init__(self, in_dim: int, out_dim: int = 1, time_encoding: str = "sinusoidal", time_dim: int = 16) -> None:
        super().__init__()
        self.norm = FeatureNorm(in_dim)
        self.time = TIME_ENCODINGS.get(time_encoding)(time_dim)
        self.fc = nn.Linear(in_dim + self.time.dim, out_dim)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def fit_inputs(self, x: Tensor) -> None:
        self.norm.fit(x)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """``x [B, F]``, ``t [B]`` days to the next visit -> ``[B, C]``."""
        if t is None:
            raise UserError("the forecast head needs the time interval t [B] (days to the next visit)")
        return self.fc(torch.cat([self.norm(x), self.time(t)], dim=-1))


def list_heads() -> list[str]:
    """Registered head names."""
    return HEADS.names()


def build_head(name: str, in_dim: int, out_dim: int, **options: Any) -> nn.Module:
    """Build head ``name``; ``options`` are its keyword arguments (unknown ones are an error naming them)."""
    cls = HEADS.get(name)
    try:
        return cls(in_dim, out_dim, **options)
    except TypeError as e:
        raise UserError(f"head {name!r}: bad options {sorted(options)} ({e})") from None
