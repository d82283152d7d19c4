"""The single-label task kinds, registered in :data:`TASKS`: classify and forecast (one class index per image).

Each class owns its labels, loss, metrics and report (see :class:`~visionfm.recognition.tasks.HeadTask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, UserError
from ..evaluation import classification_metrics, plot_confusion, plot_pr, plot_reliability, plot_roc
from .kinds import TASKS
from .labels import LabelSpec, check_class_index, class_value, infer_class_names
from .losses import (
    class_balanced_weights,
    cross_entropy,
    focal_bce,
    inverse_frequency_weights,
    mixed_targets,
    soft_cross_entropy,
)
from .tasks import HeadTask

__all__ = ["ClassifyTask", "ForecastTask", "class_weights", "cohen_kappa"]


def cohen_kappa(confusion: np.ndarray) -> float:
    """Unweighted Cohen's kappa of a confusion matrix ``[C, C]`` (rows true, columns predicted); NaN if undefined."""
    c = np.asarray(confusion, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return float("nan")
    po, pe = np.trace(c) / n, float((c.sum(0) * c.sum(1)).sum()) / n**2
    return float("nan") if pe == 1 else float((po - pe) / (1 - pe))


def class_weights(y: np.ndarray, n: int, balance: str) -> np.ndarray:
    """Per-class loss weights ``[n]`` from class indices ``y [N]``: ``none``, ``inverse`` or ``effective``."""
    counts = np.bincount(y.astype(np.int64), minlength=n)
    if balance == "inverse":
        return inverse_frequency_weights(counts)
    if balance == "effective":
        return class_balanced_weights(counts, 0.999)
    return np.ones(n)


class _SingleLabel(HeadTask):
    """Kinds whose truth is one class index per row (classify, forecast): shared reporting."""

    @classmethod
    def strata(cls, y: np.ndarray) -> np.ndarray:
        return y[:, 0].astype(np.int64)

    def truth(self, y: np.ndarray) -> np.ndarray:
        return y[:, 0].astype(np.int64)

    def plot(self, out: Path, y: np.ndarray, scores: np.ndarray, m: dict) -> list[Path]:
        truth = self.truth(y)
        return [
            plot_roc(truth, scores, self.names, out / "roc.png"),
            plot_pr(truth, scores, self.names, out / "pr.png"),
            plot_reliability(truth, scores, out / "reliability.png"),
            plot_confusion(m["confusion_matrix"], self.names, out / "confusion.png"),
        ]


@TASKS.register("classify")
class ClassifyTask(_SingleLabel):
    """Single-label (binary or multi-class): softmax cross-entropy, optional class weights and label smoothing.

    Batches mixed by mixup / cutmix carry ``"y_b"`` (the other image's class) and ``"mix"`` (its share); the loss is
    then the cross-entropy against the mixed, smoothed target distribution.
    """

    kind = "classify"
    select = ("auroc", "max")
    mixable = True  #: the loss reads mixed batches (mixup / cutmix)
    headline = ("auroc.macro", "ap.macro", "accuracy", "balanced_accuracy", "f1.macro", "kappa_quadratic", "ece")
    ci_keys = ("auroc.macro", "ap.macro", "accuracy", "balanced_accuracy", "f1.macro")
    study_keys = ("auroc.macro", "ap.macro", "accuracy", "balanced_accuracy", "f1.macro")

    def __init__(
        self,
        head: nn.Module,
        names: list[str],
        class_weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        ordinal: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(head, **kw)
        self.names, self.label_smoothing, self.ordinal = list(names), label_smoothing, ordinal
        self.register_buffer("class_weight", class_weight if class_weight is not None else torch.ones(len(names)))

    # labels
    @classmethod
    def label_width(cls, spec: LabelSpec) -> int:
        return 1

    @classmethod
    def label_help(cls, spec: LabelSpec) -> str:
        return "1 class index"

    @classmethod
    def check_labels(cls, spec: LabelSpec, vals: tuple[float, ...], where: str) -> tuple[float, ...]:
        vals = super().check_labels(spec, vals, where)
        check_class_index(vals[0], spec.names, where)
        return vals

    @classmethod
    def csv_columns(cls, spec: LabelSpec, header: list[str], path: Path) -> list[str]:
        return ["label"]

    @classmethod
    def csv_values(cls, spec: LabelSpec, row: dict[str, str], columns: Sequence[str], where: str) -> list[float]:
        return [class_value(row[columns[0]], spec.names, f"{where}, column {columns[0]!r}")]

    @classmethod
    def adopt_stored_names(cls, spec: LabelSpec, names: list[str]) -> None:
        spec.names = list(names) or None

    @classmethod
    def finish_names(cls, spec: LabelSpec, y: np.ndarray) -> None:
        """Classes ``"0".."C-1"`` when none were declared; every one of them must occur, as a gap means a label
        outside the real classes (a 7 on a 0-4 grading would otherwise make an 8-class head)."""
        if spec.names is not None:
            return
        names = infer_class_names(y[:, 0])
        absent = sorted(set(range(len(names))) - set(y[:, 0].astype(np.int64).tolist()))
        if absent:
            raise UserError(
                f"class indices {absent} never occur although labels go up to {len(names) - 1}: a label "
                f"outside the real classes? Declare the classes (--classes NAME ...)"
            )
        spec.names = names

    # building
    @classmethod
    def spec_for(cls, cfg: Any) -> LabelSpec:
        return LabelSpec(cls.kind, list(cfg.classes) if cfg.classes else None)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.balance == "focal":
            raise ConfigError("balance 'focal' is for forecasting; use 'inverse' or 'effective' for classification")

    @classmethod
    def out_dim(cls, spec: LabelSpec, y: np.ndarray) -> int:
        if len(spec.names or []) < 2:
            raise UserError(f"classification needs at least 2 classes, got {spec.names}")
        return len(spec.names)

    @classmethod
    def options(cls, cfg: Any, y: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
        w = class_weights(y[:, 0], len(spec.names), cfg.balance or "none")
        return {"class_weight": w.tolist(), "label_smoothing": cfg.label_smoothing, "ordinal": cfg.ordinal}

    @classmethod
    def from_info(cls, head: nn.Module, info: dict[str, Any], **kw: Any) -> HeadTask:
        opts = dict(info["task_options"])
        opts["class_weight"] = torch.tensor(opts["class_weight"], dtype=torch.float32)
        return cls(head, info["names"], **opts, **kw)

    @classmethod
    def study_metrics(cls, cfg: Any) -> list[str]:
        return list(cls.study_keys) + (["kappa_quadratic"] if cfg.ordinal else [])

    # training and scoring
    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        if "mix" in batch:
            target = mixed_targets(batch["y"][:, 0], batch["y_b"], batch["mix"], len(self.names), self.label_smoothing)
            return soft_cross_entropy(logits, target)
        return cross_entropy(logits, batch["y"][:, 0], self.class_weight, self.label_smoothing)

    def scores(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1)

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
        m = classification_metrics(y[:, 0].astype(np.int64), scores, self.names, ordinal=self.ordinal)
        m["kappa"] = cohen_kappa(np.asarray(m["confusion_matrix"]))
        return m

    def flat(self, m: dict) -> dict[str, float]:
        out = {
            "auroc": m["auroc"]["macro"],
            "ap": m["ap"]["macro"],
            "accuracy": m["accuracy"],
            "balanced_accuracy": m["balanced_accuracy"],
            "f1": m["f1"]["macro"],
            "ece": m["ece"],
            "kappa": m["kappa"],
        }
        # RETFound's selection number: the mean of macro-F1, macro-AUROC and Cohen's kappa
        out["f1_auroc_kappa"] = (out["f1"] + out["auroc"] + out["kappa"]) / 3
        if "kappa_quadratic" in m:
            out["kappa_quadratic"] = m["kappa_quadratic"]
        return out

    def bootstrap_keys(self) -> list[str]:
        return list(self.ci_keys) + (["kappa_quadratic"] if self.ordinal else [])


@TASKS.register("forecast")
class ForecastTask(_SingleLabel):
    """Converts-or-not from features + interval, with the imbalance handled by a positive weight or focal loss."""

    kind = "forecast"
    select = ("auroc", "max")
    headline = ("auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy", "accuracy")
    ci_keys = ("auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy")
    study_keys = ("auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy")
    NAMES = ("no conversion", "converts")

    def __init__(
        self,
        head: nn.Module,
        pos_weight: float = 1.0,
        focal_gamma: float | None = None,
        focal_alpha: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(head, **kw)
        self.names = list(self.NAMES)
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))

    # labels
    @classmethod
    def label_names(cls, spec: LabelSpec) -> list[str]:
        return list(cls.NAMES)

    @classmethod
    def label_width(cls, spec: LabelSpec) -> int:
        return 2

    @classmethod
    def label_help(cls, spec: LabelSpec) -> str:
        return "2 values (converts, interval days)"

    @classmethod
    def check_labels(cls, spec: LabelSpec, vals: tuple[float, ...], where: str) -> tuple[float, ...]:
        vals = super().check_labels(spec, vals, where)
        if vals[0] not in (0.0, 1.0):
            raise UserError(f"{where}: 'converts' must be 0 or 1, got {vals[0]}")
        if vals[1] < 0:
            raise UserError(f"{where}: the interval to the next visit must be >= 0 days, got {vals[1]}")
        return vals

    @classmethod
    def csv_columns(cls, spec: LabelSpec, header: list[str], path: Path) -> list[str]:
        return ["converts", "interval_days"]

    @classmethod
    def split_targets(cls, y: Tensor) -> tuple[Tensor, Tensor | None]:
        return y[:, :1], y[:, 1]

    # building
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if getattr(cfg, "head", "forecast") not in ("forecast", "linear"):
            raise ConfigError(f"forecasting uses the 'forecast' head (features + interval), not {cfg.head!r}")

    @classmethod
    def head_choice(cls, cfg: Any) -> tuple[str, dict[str, Any]]:
        return "forecast", {"time_encoding": cfg.time_encoding, **cfg.head_options}

    @classmethod
    def out_dim(cls, spec: LabelSpec, y: np.ndarray) -> int:
        return 1

    @classmethod
    def options(cls, cfg: Any, y: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
        balance = cfg.balance or "inverse"
        pos = float(np.nansum(y[:, 0]))
        if pos == 0 or pos == len(y):
            raise UserError(
                f"forecasting needs converters and non-converters in training; got {int(pos)} of {len(y)} converting"
            )
        w = class_weights(y[:, 0], 2, balance if balance != "focal" else "none")
        opts: dict[str, Any] = {"pos_weight": float(w[1] / w[0])}
        if balance == "focal":
            opts.update(focal_gamma=cfg.focal_gamma, focal_alpha=1 - pos / len(y))
        return opts

    # training and scoring
    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        z, y = logits[:, 0], batch["y"][:, 0]
        if self.focal_gamma is not None:
            return focal_bce(z, y, self.focal_gamma, self.focal_alpha)
        return nn.functional.binary_cross_entropy_with_logits(z.float(), y.float(), pos_weight=self.pos_weight)

    def scores(self, logits: Tensor) -> Tensor:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=-1)

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
        return classification_metrics(y[:, 0].astype(np.int64), scores, self.names)

    def flat(self, m: dict) -> dict[str, float]:
        return {
            "auroc": m["auroc"]["macro"],
            "ap": m["ap"]["macro"],
            "f1": m["f1"]["converts"],
            "balanced_accuracy": m["balanced_accuracy"],
            "accuracy": m["accuracy"],
        }
