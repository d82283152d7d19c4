"""Training health: collapse indicators of a pretraining run, a one-line warning when they trip, ``health.json``.

A self-supervised encoder can "learn" a constant: every image gets the same features, the losses look fine, and
every later number is the number of a broken model. Three indicators catch it, computed on the CLS features of
each batch (teacher CLS for iBOT, the visible-patch CLS for MAE) and logged with every log line:

- ``teacher_entropy_ratio`` (iBOT): mean entropy of the teacher's prototype distribution / ln K. Near 1 the
  teacher is uniform over the K prototypes (the collapse DINO's centring alone produces); near 0 every image sharpens
  onto one prototype.
- ``feature_std``: the standard deviation across the batch of the L2-normalised features, averaged over channels
  and multiplied by sqrt(D): about 1 for features spread over the sphere, 0 when all images map to one point.
- ``effective_rank``: exp(entropy of the normalised singular values) of the centred batch of features (Roy &
  Vetterli 2007): how many directions the batch really spans; 1 or less is a collapse to a line or a point.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import atomic_write

__all__ = [
    "HEALTH_FILE",
    "HealthThresholds",
    "HealthWatch",
    "collapse_indicators",
    "effective_rank",
    "entropy_ratio",
    "feature_std",
    "health_problems",
    "summarize_health",
    "write_health",
]

log = logging.getLogger(__name__)
HEALTH_FILE = "health.json"


@dataclass(frozen=True)
class HealthThresholds:
    """When an indicator counts as collapsed.

    Attributes:
        max_entropy_ratio: teacher entropy above this fraction of ln K (uniform teacher).
        min_feature_std: normalised feature spread below this (all images at one point).
        min_effective_rank: batch features spanning fewer directions than this.
        grace_fraction: the first fraction of the run is not judged: a freshly initialised teacher is close to
            uniform before the centring and the temperature schedule sharpen it.
    """

    max_entropy_ratio: float = 0.95
    min_feature_std: float = 0.01
    min_effective_rank: float = 2.0
    grace_fraction: float = 0.2


def feature_std(feats: Tensor) -> float:
    """Spread of ``feats`` ``[B, D]`` across the batch: mean per-channel std of the L2-normalised rows x sqrt(D).

    About 1 for random directions, 0 for identical rows. Needs B >= 2.
    """
    z = torch.nn.functional.normalize(feats.float(), dim=-1)
    return float(z.std(dim=0, unbiased=False).mean() * math.sqrt(z.shape[1]))


def effective_rank(feats: Tensor) -> float:
    """exp(Shannon entropy of the singular-value distribution) of the centred ``feats`` ``[B, D]``; 0 if constant.

    k orthogonal directions of equal energy give k.
    """
    x = feats.float() - feats.float().mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if not total > 1e-12 * max(1.0, float(feats.abs().max())):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def entropy_ratio(entropy: float, k: int) -> float:
    """Entropy (nats) of a distribution over ``k`` outcomes as a fraction of its maximum ln k."""
    return float(entropy) / math.log(k)


def collapse_indicators(feats: Tensor) -> dict[str, Tensor]:
    """``feature_std`` and ``effective_rank`` of one batch of features ``[B, D]``, as scalars for the log."""
    with torch.no_grad():
        return {"feature_std": torch.tensor(feature_std(feats)), "effective_rank": torch.tensor(effective_rank(feats))}


def health_problems(row: Mapping[str, float], th: HealthThresholds = HealthThresholds()) -> list[str]:
    """What is wrong in one log row (empty when healthy); indicators absent from the row are not judged."""
    out = []
    r = row.get("teacher_entropy_ratio")
    if r is not None and r > th.max_entropy_ratio:
        out.append(f"teacher entropy {r:.3f} x ln K > {th.max_entropy_ratio} (uniform teacher)")
    s = row.get("feature_std")
    if s is not None and s < th.min_feature_std:
        out.append(f"feature std {s:.4f} < {th.min_feature_std} (all images alike)")
    k = row.get("effective_rank")
    if k is not None and k < th.min_effective_rank:
        out.append(f"effective rank {k:.2f} < {th.min_effective_rank}")
    return out


class HealthWatch:
    """Judges the indicators of every logged step (the loop logs steps ``log_every``, ``2*log_every``, ... and
    the last); logs one WARNING line the first time the run looks collapsed.

    Args:
        log_every: the loop's ``log_every``.
        main: whether this process reports (the main one under torchrun).
        thresholds: collapse thresholds.
    """

    def __init__(self, log_every: int, main: bool = True, thresholds: HealthThresholds = HealthThresholds()) -> None:
        self.log_every, self.main, self.thresholds, self.warned = log_every, main, thresholds, False

    def after_step(self, step: int, total_steps: int, scalars: Mapping[str, Any]) -> None:
        """Called after optimizer step ``step`` (0-based) with the step's scalars (tensors or floats)."""
        done = step + 1
        if done <= self.thresholds.grace_fraction * total_steps:
            return
        if self.main and (done % self.log_every == 0 or done == total_steps):
            self(done, {k: float(v) for k, v in scalars.items()})

    def __call__(self, step: int, row: Mapping[str, float]) -> None:
        problems = health_problems(row, self.thresholds)
        if problems and not self.warned:
            self.warned = True
            log.warning(
                "pretraining health: possible collapse at step %d: %s (see health.json)", step, "; ".join(problems)
            )


def summarize_health(rows: Iterable[Mapping[str, Any]], th: HealthThresholds = HealthThresholds()) -> dict[str, Any]:
    """The run's health from its log rows: first / last / worst of every indicator, the steps after the grace
    period that tripped, and ``healthy`` (the last logged row trips nothing)."""
    rows = [r for r in rows if any(k in r for k in ("feature_std", "effective_rank", "teacher_entropy_ratio"))]
    grace = th.grace_fraction * rows[-1]["step"] if rows else 0.0
    keys = [k for k in ("teacher_entropy_ratio", "feature_std", "effective_rank") if any(k in r for r in rows)]
    worst = {"teacher_entropy_ratio": max, "feature_std": min, "effective_rank": min}
    indicators = {}
    for k in keys:
        vals = [(r["step"], r[k]) for r in rows if k in r]
        indicators[k] = {"first": vals[0][1], "last": vals[-1][1], "worst": worst[k](v for _, v in vals)}
    tripped = [{"step": r["step"], "problems": p} for r in rows if r["step"] > grace and (p := health_problems(r, th))]
    last = health_problems(rows[-1], th) if rows else []
    return {
        "healthy": bool(rows) and not last,
        "last_step": rows[-1]["step"] if rows else None,
        "problems_at_end": last,
        "tripped": tripped[:20],
        "n_tripped": len(tripped),
        "indicators": indicators,
        "thresholds": asdict(th),
    }


def write_health(run_dir: str | Path, th: HealthThresholds = HealthThresholds()) -> dict[str, Any]:
    """Summarise ``run_dir/log.jsonl`` into ``run_dir/health.json`` (atomically); returns the summary."""
    run_dir = Path(run_dir)
    log_file = run_dir / "log.jsonl"
    rows = (
        [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()] if log_file.is_file() else []
    )
    summary = summarize_health((r for r in rows if "loss" in r), th)
    with atomic_write(run_dir / HEALTH_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
