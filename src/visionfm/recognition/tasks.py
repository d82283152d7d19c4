"""The base of every recognition task kind: a head + its loss + its metrics, and everything the kind decides.

A kind is one subclass registered in :data:`TASKS` (the built-in four live in :mod:`.task_kinds`). The class owns
what differs between kinds, so no other module asks "which kind is this?":

* labels: names, width, checks of one row, CSV columns, strata for splitting (class methods, used before a task
  exists, e.g. by :func:`~visionfm.recognition.labels.read_labels`);
* building: the label spec a config asks for, head options, output width, options fitted on the training labels,
  and rebuilding from a run description;
* training and scoring: loss, scores, metrics, the flat validation numbers, the default selection metric;
* reporting: headline numbers, bootstrapped numbers, prediction-file kind and figures.

Every task reads a batch ``{"x": [B, F], "y": [B, W]}`` of cached features (plus ``"t": [B]`` days for
forecasting), or ``{"image": [B, 3, H, W], "y": ...}`` when it holds an encoder to fine-tune end to end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.task import Task, param_groups_for
from ..errors import UserError
from .data import encoder_features
from .kinds import TASKS
from .labels import LabelSpec

__all__ = ["TASKS", "HeadTask"]


class HeadTask(Task):
    """Shared machinery: features (cached, or from an encoder being fine-tuned), prediction over a loader.

    Args:
        head: ``(x [B, F], t [B] | None) -> [B, C]``.
        encoder: optional encoder to fine-tune (batches then carry images).
        n_last_blocks: CLS tokens of this many last blocks form the ``cls`` feature (with an encoder).
        augment: ``batch -> batch`` applied to training batches (with an encoder; may mix labels, see
            :mod:`.recipes`).
        param_groups_fn: optimizer groups of the encoder (layer-wise lr decay), with an encoder.
        feature: which encoder output feeds the head (``cls``, ``last`` or ``patch``; see
            :func:`~visionfm.recognition.data.encoder_features`).
    """

    kind = ""
    select: tuple[str, str] = ("loss", "min")  #: default selection metric and whether it is maximised
    headline: tuple[str, ...] = ()  #: dotted metric keys the command line prints
    ci_keys: tuple[str, ...] = ()  #: dotted metric keys with bootstrap 95% intervals
    study_keys: tuple[str, ...] | None = None  #: per-draw keys of few-shot / k-fold studies (None: unsupported)
    prediction_kind = "multiclass"  #: ``visionfm.evaluation.write_predictions`` kind
    names_option = "--label-columns"  #: the option naming the CSV label columns in errors
    names: list[str]

    def __init__(
        self,
        head: nn.Module,
        encoder: nn.Module | None = None,
        n_last_blocks: int = 4,
        augment: Callable[[dict], dict] | None = None,
        param_groups_fn: Callable[[nn.Module], list[dict]] | None = None,
        feature: str = "cls",
    ) -> None:
        super().__init__()
        self.head, self.encoder, self.n_last_blocks = head, encoder, n_last_blocks
        self.augment, self._groups_fn, self.feature = augment, param_groups_fn, feature

    # -- labels (class level: used before a task exists) ----------------------------------------------------------
    @classmethod
    def label_names(cls, spec: LabelSpec) -> list[str] | None:
        """The names a spec ends up with (fixed by some kinds, e.g. forecasting)."""
        return spec.names

    @classmethod
    def label_width(cls, spec: LabelSpec) -> int | None:
        """Values per label row (None: not known until the data is read)."""
        return len(spec.names) if spec.names else None

    @classmethod
    def label_help(cls, spec: LabelSpec) -> str:
        return f"{cls.label_width(spec)} value(s)"

    @classmethod
    def check_labels(cls, spec: LabelSpec, vals: tuple[float, ...], where: str) -> tuple[float, ...]:
        """Validate one row (width and finiteness are already checked); default: nothing may be missing."""
        if any(math.isnan(v) for v in vals):
            raise UserError(
                f"{where}: NaN/missing target {list(vals)} (only multi-label outputs may be missing; "
                f"remove the row or give a value)"
            )
        return vals

    @classmethod
    def csv_columns(cls, spec: LabelSpec, header: list[str], path: Path) -> list[str]:
        """Default label columns of a CSV."""
        if not spec.names:
            raise UserError(f"{path}: name the label columns ({cls.names_option})")
        return list(spec.names)

    @classmethod
    def csv_values(cls, spec: LabelSpec, row: dict[str, str], columns: Sequence[str], where: str) -> list[float]:
        """Numbers of one CSV row's label columns."""
        from ..data.datasets import parse_label

        return [parse_label(row[c], f"{where}, column {c!r}") for c in columns]

    @classmethod
    def trim_cache_row(cls, row: np.ndarray) -> np.ndarray:
        """A label row stored in a feature file (NaN-padded to the widest line): this row's own values."""
        known = np.flatnonzero(~np.isnan(row))
        return row[: known[-1] + 1] if len(known) else row[:1]

    @classmethod
    def adopt_stored_names(cls, spec: LabelSpec, names: list[str]) -> None:
        """Names recorded in a feature file at extraction (e.g. ImageNet class folders); default: ignored."""

    @classmethod
    def finish_names(cls, spec: LabelSpec, y: np.ndarray) -> None:
        """Fill in names the data decides (e.g. classes ``"0".."C-1"``) once labels ``[N, W]`` are read."""

    @classmethod
    def strata(cls, y: np.ndarray) -> np.ndarray:
        """Integer strata ``[N]`` for stratified splitting; default: quintiles of the first target."""
        edges = np.nanquantile(y[:, 0], [0.2, 0.4, 0.6, 0.8])
        return np.searchsorted(edges, np.nan_to_num(y[:, 0], nan=float(np.nanmedian(y[:, 0])))).astype(np.int64)

    @classmethod
    def split_targets(cls, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """Label rows ``[N, W]`` -> (the targets the loss sees, the interval ``[N]`` or None)."""
        return y, None

    # -- building ------------------------------------------------------------------------------------------------
    @classmethod
    def spec_for(cls, cfg: Any) -> LabelSpec:
        """The label requirements a config asks for."""
        return LabelSpec(cls.kind)

    @classmethod
    def spec_from_run(cls, info: dict[str, Any]) -> LabelSpec:
        """The label requirements of a saved run (``run.yaml``)."""
        return LabelSpec(cls.kind, list(info["names"]))

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse settings that make no sense for this kind (called when the config is built)."""

    @classmethod
    def head_choice(cls, cfg: Any) -> tuple[str, dict[str, Any]]:
        """The head name and options to build."""
        return cfg.head, dict(cfg.head_options)

    @classmethod
    def out_dim(cls, spec: LabelSpec, y: np.ndarray) -> int:
        return len(spec.names or [])

    @classmethod
    def options(cls, cfg: Any, y: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
        """Task options that depend on the training labels ``[N, W]`` (weights, statistics); saved in the run."""
        return {}

    @classmethod
    def from_info(cls, head: nn.Module, info: dict[str, Any], **kw: Any) -> HeadTask:
        """The (untrained) task a run description names."""
        return cls(head, **info["task_options"], **kw)

    @classmethod
    def study_metrics(cls, cfg: Any) -> list[str]:
        """Metrics recorded per draw / fold of a few-shot or k-fold study."""
        if cls.study_keys is None:
            raise UserError(
                f"few-shot and k-fold studies are not defined for {cls.kind!r} tasks; valid: "
                f"{[k for k in TASKS.names() if TASKS.get(k).study_keys is not None]}"
            )
        return list(cls.study_keys)

    # -- kind-specific training and scoring -------------------------------------------------------------------------
    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, logits: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Logits ``[B, C]`` -> probabilities (or predictions in target units)."""
        raise NotImplementedError

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:  # pragma: no cover - abstract
        """Full metrics from labels ``[N, W]`` and scores over the whole set."""
        raise NotImplementedError

    def flat(self, m: dict) -> dict[str, float]:  # pragma: no cover - abstract
        """The scalar numbers logged per validation and available for selection."""
        raise NotImplementedError

    def truth(self, y: np.ndarray) -> np.ndarray:
        """Labels as the evaluation functions take them (default: the rows ``[N, W]``)."""
        return y

    def bootstrap_keys(self) -> list[str]:
        return list(self.ci_keys)

    def plot(self, out: Path, y: np.ndarray, scores: np.ndarray, m: dict) -> list[Path]:
        """Figures of one scored split (default: none)."""
        return []

    # -- shared -------------------------------------------------------------------------------------------------
    def features(self, batch: dict[str, Tensor]) -> Tensor:
        if self.encoder is None:
            return batch["x"]
        out = self.encoder(batch["image"], n_last_blocks=self.n_last_blocks if self.feature == "cls" else 1)
        return encoder_features(out, self.feature)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head(self.features(batch), batch.get("t"))

    def forward(self, batch: dict[str, Tensor], state: Any = None) -> dict[str, Tensor]:
        if self.training and self.augment is not None and self.encoder is not None:
            batch = self.augment(batch)
        return {"loss": self.loss(self.logits(batch), batch)}

    def param_groups(self) -> list[dict]:
        if self.encoder is None:
            return param_groups_for(self.head)
        return self._groups_fn(self.encoder) + param_groups_for(self.head)

    @torch.no_grad()
    def predict(self, loader: Any, device: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores ``[N, C]``, labels ``[N, W]`` or None) over a whole loader, in eval mode."""
        was = self.training
        self.eval()
        scores, ys = [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            scores.append(self.scores(self.logits(batch).float()).cpu())
            if "y" in batch:
                ys.append(batch["y"].cpu())
        self.train(was)
        y = torch.cat(ys).double().numpy() if ys else None
        return torch.cat(scores).double().numpy(), y

    def evaluate(self, loader: Any, device: Any) -> dict[str, float]:
        """Flat validation metrics; a non-finite selection number counts as the worst value."""
        scores, y = self.predict(loader, device)
        out = self.flat(self.metrics(y, scores))
        for key, value in out.items():
            if not math.isfinite(value):
                out[key] = -math.inf if _maximised(key, self) else math.inf
        return out


_MIN_KEYS = ("loss", "mae", "mae_std", "ece", "relative_error")


def _maximised(key: str, task: Any) -> bool:
    if key == task.select[0]:
        return task.select[1] == "max"
    return key not in _MIN_KEYS


def select_mode(task: Any, key: str) -> str:
    """``max`` or ``min`` for a validation metric of ``task`` (its own default, or by the metric's nature)."""
    return "max" if _maximised(key, task) else "min"
