"""Dense tasks for the shared training engine: ``forward(batch, state)`` is the training step."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.task import Task, param_groups_for
from .decoders import EncoderDense
from .landmarks import argmax_subpixel, heatmap_from_logits
from .losses import dice_focal_loss, heatmap_kl
from .metrics import SegmentationMeter, radial_errors

__all__ = ["SegmentationTask", "LandmarkTask", "dense_param_groups"]


def dense_param_groups(model: nn.Module, encoder_lr_scale: float = 0.1) -> list[dict]:
    """AdamW groups; a fine-tuned encoder learns at ``encoder_lr_scale`` times the decoder's rate."""
    if isinstance(model, EncoderDense) and model.finetune:
        return param_groups_for(model.encoder, encoder_lr_scale) + param_groups_for(model.decoder)
    return param_groups_for(model)


class SegmentationTask(Task):
    """Multi-label segmentation with Dice + focal loss.

    Args:
        model: ``[B, 3, H, W]`` -> logits ``[B, K, H, W]``.
        class_names: K names (for validation metrics).
        gamma: focal exponent.
    """

    def __init__(self, model: nn.Module, class_names: list[str], gamma: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.class_names = list(class_names)
        self.gamma = gamma

    def param_groups(self) -> list[dict]:
        return dense_param_groups(self.model)

    def forward(self, batch: dict[str, Tensor], state=None) -> dict[str, Tensor]:
        logits = self.model(batch["image"])
        return dice_focal_loss(logits, batch["target"], batch.get("valid"), gamma=self.gamma)

    @torch.no_grad()
    def evaluate(self, loader, device) -> dict[str, float]:
        """Pooled Dice/AUC per class at the training size (model selection on validation data only)."""
        was = self.training
        self.eval()
        meter = SegmentationMeter(self.class_names, with_hd95=False)
        for batch in loader:
            prob = torch.sigmoid(self.model(batch["image"].to(device))).cpu().numpy()
            for p, t, v in zip(prob, batch["target"].numpy(), batch["valid"].numpy()):
                meter.update(p, t > 0.5, v[0] > 0.5)
        self.train(was)
        res = meter.compute()
        return {"dice": res["mean"]["dice"], "auc": res["mean"]["auc"]}


class LandmarkTask(Task):
    """Heatmaps as spatial distributions: KL to the normalised float Gaussians; validation MRE in input pixels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def param_groups(self) -> list[dict]:
        return dense_param_groups(self.model)

    def forward(self, batch: dict[str, Tensor], state=None) -> dict[str, Tensor]:
        return {"loss": heatmap_kl(self.model(batch["image"]), batch["heatmap"])}

    @torch.no_grad()
    def evaluate(self, loader, device) -> dict[str, float]:
        was = self.training
        self.eval()
        errs = []
        for batch in loader:
            pred = argmax_subpixel(heatmap_from_logits(self.model(batch["image"].to(device)).cpu()))
            errs.append(radial_errors(pred.numpy(), batch["points"].numpy()))
        self.train(was)
        return {"mre": float(np.concatenate(errs).mean())}
