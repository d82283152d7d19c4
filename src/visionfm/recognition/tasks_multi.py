"""The task kinds with several outputs per image, registered in :data:`TASKS`: multilabel and regress.

Each class owns its labels, loss, metrics and report (see :class:`~visionfm.recognition.tasks.HeadTask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..evaluation import (
    classification_metrics,
    multilabel_metrics,
    plot_confusion,
    plot_pr,
    plot_reliability,
    plot_roc,
    regression_metrics,
)
from .kinds import TASKS
from .labels import LabelSpec, multilabel_csv_values
from .losses import multilabel_loss, standardised_regression_loss
from .reporting import plot_regression
from .schema import LabelSchema, get_schema
from .tasks import HeadTask

__all__ = ["MultilabelTask", "RegressTask", "multilabel_probs"]


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
            raise UserError(
                f"{path}: no column matches an output or group of schema {s.name!r} ({s.outputs}, "
                f"groups {list(s.groups)}); columns: {header}"
            )
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
                m["groups"][g] = classification_metrics(
                    t[one_hot].argmax(1), scores[one_hot][:, idx], self.schema.groups[g], ordinal=True
                )
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
            paths += [
                plot_confusion(
                    m["groups"][g]["confusion_matrix"], self.schema.groups[g], out / f"confusion_{slug}.png"
                ),
                plot_reliability(t[rows].argmax(1), scores[rows][:, idx], out / f"reliability_{slug}.png"),
            ]
        return paths


@TASKS.register("regress")
class RegressTask(HeadTask):
    """Biomarker regression: targets standardised with training statistics; MSE / L1 in standard units."""

    kind = "regress"
    select = ("mae_std", "min")
    headline = ("mae_std", "mae.macro", "relative_error.macro", "accuracy.macro", "r2.macro")
    ci_keys = ("mae_std", "r2.macro", "accuracy.macro")
    prediction_kind = "regression"
    names_option = "--targets"

    def __init__(
        self, head: nn.Module, names: list[str], mean: Tensor, std: Tensor, loss_kind: str = "mse", **kw: Any
    ) -> None:
        super().__init__(head, **kw)
        self.names, self.loss_kind = list(names), loss_kind
        self.register_buffer("y_mean", mean.float())
        self.register_buffer("y_std", std.float())

    @classmethod
    def label_help(cls, spec: LabelSpec) -> str:
        return f"{cls.label_width(spec)} targets"

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
        return {
            "mae_std": m["mae_std"],
            "mae": m["mae"]["macro"],
            "r2": m["r2"]["macro"],
            "accuracy": m["accuracy"]["macro"],
            "relative_error": m["relative_error"]["macro"],
        }

    def plot(self, out: Path, y: np.ndarray, scores: np.ndarray, m: dict) -> list[Path]:
        return [plot_regression(y, scores, self.names, out / "scatter.png")]
