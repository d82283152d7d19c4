"""Recognition tasks for the shared engine: a head + its loss + its metrics, one class per kind (:data:`TASKS`).

Every task reads a batch ``{"x": [B, F], "y": [B, W]}`` of cached features (plus ``"t": [B]`` days for
forecasting), or ``{"image": [B, 3, H, W], "y": ...}`` when it holds an encoder to fine-tune end to end. Scores are
collected over the whole evaluation set and scored once with :mod:`visionfm.evaluation`; ``evaluate`` returns the
flat numbers the engine selects on (validation only).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.task import Task, param_groups_for
from ..evaluation import classification_metrics, multilabel_metrics, regression_metrics
from ..registry import Registry
from .losses import cross_entropy, focal_bce, multilabel_loss, standardised_regression_loss
from .schema import LabelSchema

__all__ = ["TASKS", "HeadTask", "ClassifyTask", "MultilabelTask", "RegressTask", "ForecastTask",
           "multilabel_probs"]

TASKS: Registry[type] = Registry("recognition task")


class HeadTask(Task):
    """Shared machinery: features (cached, or from an encoder being fine-tuned), prediction over a loader.

    Args:
        head: ``(x [B, F], t [B] | None) -> [B, C]``.
        encoder: optional encoder to fine-tune (batches then carry images).
        n_last_blocks: CLS tokens of this many last blocks form the feature (with an encoder).
        augment: ``[B, 3, H, W] -> [B, 3, H, W]`` applied to training images (with an encoder).
        param_groups_fn: optimizer groups of the encoder (layer-wise lr decay), with an encoder.
    """

    kind = ""
    select = ("loss", "min")

    def __init__(self, head: nn.Module, encoder: nn.Module | None = None, n_last_blocks: int = 4,
                 augment: Callable[[Tensor], Tensor] | None = None,
                 param_groups_fn: Callable[[nn.Module], list[dict]] | None = None) -> None:
        super().__init__()
        self.head, self.encoder, self.n_last_blocks = head, encoder, n_last_blocks
        self.augment, self._groups_fn = augment, param_groups_fn

    # -- kind-specific ------------------------------------------------------------------------------------------
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

    # -- shared -------------------------------------------------------------------------------------------------
    def features(self, batch: dict[str, Tensor]) -> Tensor:
        if self.encoder is None:
            return batch["x"]
        x = batch["image"]
        if self.training and self.augment is not None:
            x = self.augment(x)
        return self.encoder(x, n_last_blocks=self.n_last_blocks).cls_concat()

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head(self.features(batch), batch.get("t"))

    def forward(self, batch: dict[str, Tensor], state: Any = None) -> dict[str, Tensor]:
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
        """Flat validation metrics; the selection metric is never NaN (undefined counts as the worst value)."""
        scores, y = self.predict(loader, device)
        out = self.flat(self.metrics(y, scores))
        key, mode = self.select
        if key in out and not math.isfinite(out[key]):
            out[key] = -math.inf if mode == "max" else math.inf
        return out


@TASKS.register("classify")
class ClassifyTask(HeadTask):
    """Single-label (binary or multi-class): softmax cross-entropy, optional class weights and label smoothing."""

    kind = "classify"
    select = ("auroc", "max")

    def __init__(self, head: nn.Module, names: list[str], class_weight: Tensor | None = None,
                 label_smoothing: float = 0.0, ordinal: bool = False, **kw: Any) -> None:
        super().__init__(head, **kw)
        self.names, self.label_smoothing, self.ordinal = list(names), label_smoothing, ordinal
        self.register_buffer("class_weight", class_weight if class_weight is not None else torch.ones(len(names)))

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return cross_entropy(logits, batch["y"][:, 0], self.class_weight, self.label_smoothing)

    def scores(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1)

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
        return classification_metrics(y[:, 0].astype(np.int64), scores, self.names, ordinal=self.ordinal)

    def flat(self, m: dict) -> dict[str, float]:
        out = {"auroc": m["auroc"]["macro"], "ap": m["ap"]["macro"], "accuracy": m["accuracy"],
               "balanced_accuracy": m["balanced_accuracy"], "f1": m["f1"]["macro"], "ece": m["ece"]}
        if "kappa_quadratic" in m:
            out["kappa_quadratic"] = m["kappa_quadratic"]
        return out


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

    def __init__(self, head: nn.Module, schema: LabelSchema, **kw: Any) -> None:
        super().__init__(head, **kw)
        self.schema = schema
        self.names = list(schema.outputs)

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


@TASKS.register("regress")
class RegressTask(HeadTask):
    """Biomarker regression: targets standardised with training statistics; MSE / L1 in standard units."""

    kind = "regress"
    select = ("mae_std", "min")

    def __init__(self, head: nn.Module, names: list[str], mean: Tensor, std: Tensor, loss_kind: str = "mse",
                 **kw: Any) -> None:
        super().__init__(head, **kw)
        self.names, self.loss_kind = list(names), loss_kind
        self.register_buffer("y_mean", mean.float())
        self.register_buffer("y_std", std.float())

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
        return {"mae_std": m["mae_std"], "r2": m["r2"]["macro"], "accuracy": m["accuracy"]["macro"],
                "relative_error": m["relative_error"]["macro"]}


@TASKS.register("forecast")
class ForecastTask(HeadTask):
    """Converts-or-not from features + interval, with the imbalance handled by a positive weight or focal loss."""

    kind = "forecast"
    select = ("auroc", "max")

    def __init__(self, head: nn.Module, pos_weight: float = 1.0, focal_gamma: float | None = None,
                 focal_alpha: float | None = None, **kw: Any) -> None:
        super().__init__(head, **kw)
        self.names = ["no conversion", "converts"]
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))

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
