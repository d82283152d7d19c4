"""The built-in recognition task kinds, registered in :data:`TASKS`: classify, multilabel, regress, forecast.

Each class owns its labels, loss, metrics and report (see :class:`~visionfm.recognition.tasks.HeadTask`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, UserError
from ..evaluation import (classification_metrics, multilabel_metrics, plot_confusion, plot_pr, plot_reliability,
                          plot_roc, regression_metrics)
from .kinds import TASKS
from .labels import (LabelSpec, check_class_index, class_value, infer_class_names, multilabel_csv_values)
from .losses import (class_balanced_weights, cross_entropy, focal_bce, inverse_frequency_weights, mixed_targets,
                     multilabel_loss, soft_cross_entropy, standardised_regression_loss)
from .reporting import plot_regression
from .schema import LabelSchema, get_schema
from .tasks import HeadTask

__all__ = ["ClassifyTask", "MultilabelTask", "RegressTask", "ForecastTask", "multilabel_probs", "cohen_kappa",
           "class_weights"]


def cohen_kappa(confusion: np.ndarray) -> float:
    """Unweighted Cohen's kappa of a confusion matrix ``[C, C]`` (rows true, columns predicted); NaN if undefined."""
    c = np.asarray(confusion, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return float("nan")
    po, pe = np.trace(c) / n, float((c.sum(0) * c.sum(1)).sum()) / n ** 2
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
        return [plot_roc(truth, scores, self.names, out / "roc.png"), plot_pr(truth, scores, self.names, out / "pr.png"),
                plot_reliability(truth, scores, out / "reliability.png"),
                plot_confusion(m["confusion_matrix"], self.names, out / "confusion.png")]


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

    def __init__(self, head: nn.Module, names: list[str], class_weight: Tensor | None = None,
                 label_smoothing: float = 0.0, ordinal: bool = False, **kw: Any) -> None:
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
            raise UserError(f"class indices {absent} never occur although labels go up to {len(names) - 1}: a label "
                            f"outside the real classes? Declare the classes (--classes NAME ...)")
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
            target = mixed_targets(batch["y"][:, 0], batch["y_b"], batch["mix"], len(self.names),
                                   self.label_smoothing)
            return soft_cross_entropy(logits, target)
        return cross_entropy(logits, batch["y"][:, 0], self.class_weight, self.label_smoothing)

    def scores(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1)

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
        m = classification_metrics(y[:, 0].astype(np.int64), scores, self.names, ordinal=self.ordinal)
        m["kappa"] = cohen_kappa(np.asarray(m["confusion_matrix"]))
        return m

    def flat(self, m: dict) -> dict[str, float]:
        out = {"auroc": m["auroc"]["macro"], "ap": m["ap"]["macro"], "accuracy": m["accuracy"],
               "balanced_accuracy": m["balanced_accuracy"], "f1": m["f1"]["macro"], "ece": m["ece"],
               "kappa": m["kappa"]}
        # RETFound's selection number: the mean of macro-F1, macro-AUROC and Cohen's kappa
        out["f1_auroc_kappa"] = (out["f1"] + out["auroc"] + out["kappa"]) / 3
        if "kappa_quadratic" in m:
            out["kappa_quadratic"] = m["kappa_quadratic"]
        return out

    def bootstrap_keys(self) -> list[str]:
        return list(self.ci_keys) + (["kappa_quadratic"] if self.ordinal else [])


def multilabel_probs(logits: Tensor, schema: LabelSchema) -> Tensor:
    """Softmax within each group, sigmoid for every other output: ``[B, K]`` -> ``[B, K]``."""
    probs = torch.sigmoid(logits)
    for idx in schema.group_indices().values():
        probs[:, idx] = logits[:, idx].softmax(-1)
    return probs


@TASKS.register("multilabel")
class MultilabelTask(HeadTask):
    """Modality-agnostic multi-label decoder: grouped softmax CE + masked BCE over a :class:`LabelSchema`."""

    kind = "multilabel"
    select = ("auroc", "max")
    headline = ("auroc.macro", "ap.macro", "f1.macro")
    ci_keys = ("auroc.macro", "ap.macro", "f1.macro")
    prediction_kind = "multilabel"

    def __init__(self, head: nn.Module, schema: LabelSchema, **kw: Any) -> None:
        super().__init__(head, **kw)
        self.schema = schema
        self.names = list(schema.outputs)

    # labels
    @classmethod
    def label_names(cls, spec: LabelSpec) -> list[str]:
        if spec.schema is None:
            raise UserError("a multilabel task needs a label schema (--schema)")
        return list(spec.schema.outputs)

    @classmethod
    def label_help(cls, spec: LabelSpec) -> str:
        return f"{cls.label_width(spec)} outputs {spec.names}"

    @classmethod
    def check_labels(cls, spec: LabelSpec, vals: tuple[float, ...], where: str) -> tuple[float, ...]:
        bad = [v for v in vals if not (np.isnan(v) or v in (0.0, 1.0))]
        if bad:
            raise UserError(f"{where}: multi-label values must be 0, 1 or missing, got {bad}")
        return vals

    @classmethod
    def csv_columns(cls, spec: LabelSpec, header: list[str], path: Path) -> list[str]:
        s = spec.schema
        found = [c for c in header if c in s.outputs or c in s.groups]
        if not found:
            raise UserError(f"{path}: no column matches an output or group of schema {s.name!r} ({s.outputs}, "
                            f"groups {list(s.groups)}); columns: {header}")
        return found

    @classmethod
    def csv_values(cls, spec: LabelSpec, row: dict[str, str], columns: Sequence[str], where: str) -> list[float]:
        return multilabel_csv_values(row, spec.schema, where)

    @classmethod
    def trim_cache_row(cls, row: np.ndarray) -> np.ndarray:
        return row  # NaN = a missing output, not padding

    @classmethod
    def strata(cls, y: np.ndarray) -> np.ndarray:
        """The first positive output (rows without one: their own stratum)."""
        pos = np.nan_to_num(y, nan=0.0) == 1
        return np.where(pos.any(1), pos.argmax(1), y.shape[1]).astype(np.int64)

    # building
    @classmethod
    def spec_for(cls, cfg: Any) -> LabelSpec:
        return LabelSpec(cls.kind, None, get_schema(cfg.schema))

    @classmethod
    def spec_from_run(cls, info: dict[str, Any]) -> LabelSpec:
        return LabelSpec(cls.kind, None, LabelSchema(**info["schema"]))

    @classmethod
    def out_dim(cls, spec: LabelSpec, y: np.ndarray) -> int:
        return spec.schema.k

    @classmethod
    def from_info(cls, head: nn.Module, info: dict[str, Any], **kw: Any) -> HeadTask:
        return cls(head, LabelSchema(**info["schema"]), **kw)

    # training and scoring
    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return multilabel_loss(logits, batch["y"], self.schema)

    def scores(self, logits: Tensor) -> Tensor:
        return multilabel_probs(logits, self.schema)

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
        m = multilabel_metrics(y, scores, self.names)
        m["groups"] = {}
        for g, idx in self.schema.group_indices().items():
            t = y[:, idx]
            one_hot = ~np.isnan(t).any(1) & (np.nan_to_num(t).sum(1) == 1)
            if one_hot.sum() and len(np.unique(t[one_hot].argmax(1))) > 1:
                m["groups"][g] = classification_metrics(t[one_hot].argmax(1), scores[one_hot][:, idx],
                                                        self.schema.groups[g], ordinal=True)
        return m

    def flat(self, m: dict) -> dict[str, float]:
        out = {"auroc": m["auroc"]["macro"], "ap": m["ap"]["macro"], "f1": m["f1"]["macro"]}
        for g, gm in m.get("groups", {}).items():
            out[f"{g}/accuracy"] = gm["accuracy"]
            out[f"{g}/kappa_quadratic"] = gm["kappa_quadratic"]
        return out

    def plot(self, out: Path, y: np.ndarray, scores: np.ndarray, m: dict) -> list[Path]:
        paths = [plot_roc(y, scores, self.names, out / "roc.png"), plot_pr(y, scores, self.names, out / "pr.png")]
        for g, idx in self.schema.group_indices().items():
            if g not in m.get("groups", {}):
                continue
            t = y[:, idx]
            rows = ~np.isnan(t).any(1) & (np.nan_to_num(t).sum(1) == 1)
            slug = g.replace(" ", "_")
            paths += [plot_confusion(m["groups"][g]["confusion_matrix"], self.schema.groups[g],
                                     out / f"confusion_{slug}.png"),
                      plot_reliability(t[rows].argmax(1), scores[rows][:, idx], out / f"reliability_{slug}.png")]
        return paths


@TASKS.register("regress")
class RegressTask(HeadTask):
    """Biomarker regression: targets standardised with training statistics; MSE / L1 in standard units."""

    kind = "regress"
    select = ("mae_std", "min")
    headline = ("mae_std", "mae.macro", "relative_error.macro", "accuracy.macro", "r2.macro")
    ci_keys = ("mae_std", "r2.macro", "accuracy.macro")
    prediction_kind = "regression"

    def __init__(self, head: nn.Module, names: list[str], mean: Tensor, std: Tensor, loss_kind: str = "mse",
                 **kw: Any) -> None:
        super().__init__(head, **kw)
        self.names, self.loss_kind = list(names), loss_kind
        self.register_buffer("y_mean", mean.float())
        self.register_buffer("y_std", std.float())

    @classmethod
    def label_help(cls, spec: LabelSpec) -> str:
        return f"{cls.label_width(spec)} targets"

    @classmethod
    def csv_columns(cls, spec: LabelSpec, header: list[str], path: Path) -> list[str]:
        if not spec.names:
            raise UserError(f"{path}: name the regression target columns (--targets)")
        return list(spec.names)

    @classmethod
    def spec_for(cls, cfg: Any) -> LabelSpec:
        return LabelSpec(cls.kind, list(cfg.targets) if cfg.targets else None)

    @classmethod
    def out_dim(cls, spec: LabelSpec, y: np.ndarray) -> int:
        if not spec.names:
            spec.names = [f"target_{i}" for i in range(y.shape[1])]
        return y.shape[1]

    @classmethod
    def options(cls, cfg: Any, y: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
        mean, std = np.nanmean(y, 0), np.nanstd(y, 0)
        return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(), "loss_kind": cfg.regression_loss}

    @classmethod
    def from_info(cls, head: nn.Module, info: dict[str, Any], **kw: Any) -> HeadTask:
        opts = dict(info["task_options"])
        mean, std = torch.tensor(opts.pop("mean")), torch.tensor(opts.pop("std"))
        return cls(head, info["names"], mean, std, **opts, **kw)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return standardised_regression_loss(logits, batch["y"], self.y_mean, self.y_std, self.loss_kind)

    def scores(self, logits: Tensor) -> Tensor:
        return logits * self.y_std + self.y_mean

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
        m = regression_metrics(y, scores, self.names)
        std = self.y_std.cpu().numpy()
        m["mae_std"] = float(np.mean([m["mae"][n] / s for n, s in zip(self.names, std)]))
        return m

    def flat(self, m: dict) -> dict[str, float]:
        return {"mae_std": m["mae_std"], "mae": m["mae"]["macro"], "r2": m["r2"]["macro"],
                "accuracy": m["accuracy"]["macro"], "relative_error": m["relative_error"]["macro"]}

    def plot(self, out: Path, y: np.ndarray, scores: np.ndarray, m: dict) -> list[Path]:
        return [plot_regression(y, scores, self.names, out / "scatter.png")]


@TASKS.register("forecast")
class ForecastTask(_SingleLabel):
    """Converts-or-not from features + interval, with the imbalance handled by a positive weight or focal loss."""

    kind = "forecast"
    select = ("auroc", "max")
    headline = ("auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy", "accuracy")
    ci_keys = ("auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy")
    study_keys = ("auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy")
    NAMES = ("no conversion", "converts")

    def __init__(self, head: nn.Module, pos_weight: float = 1.0, focal_gamma: float | None = None,
                 focal_alpha: float | None = None, **kw: Any) -> None:
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
            raise UserError(f"forecasting needs converters and non-converters in training; got {int(pos)} of "
                            f"{len(y)} converting")
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
        return {"auroc": m["auroc"]["macro"], "ap": m["ap"]["macro"], "f1": m["f1"]["converts"],
                "balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"]}
