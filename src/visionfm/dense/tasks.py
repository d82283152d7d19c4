"""Dense tasks for the shared training engine: ``forward(batch, state)`` is the training step.

Dense runs train for a fixed schedule and keep the last weights (as the official decoders do); they are scored by
``segment predict`` / ``landmark predict`` on held-out data, never on what they trained on.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..engine.task import Task, param_groups_for
from .decoders import EncoderDense
from .losses import dice_focal_loss, heatmap_kl

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
        gamma: focal exponent.
    """

    def __init__(self, model: nn.Module, gamma: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.gamma = gamma

    def param_groups(self) -> list[dict]:
        return dense_param_groups(self.model)

    def forward(self, batch: dict[str, Tensor], state=None) -> dict[str, Tensor]:
        logits = self.model(batch["image"])
        return dice_focal_loss(logits, batch["target"], batch.get("valid"), gamma=self.gamma)


class LandmarkTask(Task):
    """Heatmaps as spatial distributions: KL divergence to the normalised float Gaussians."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def param_groups(self) -> list[dict]:
        return dense_param_groups(self.model)

    def forward(self, batch: dict[str, Tensor], state=None) -> dict[str, Tensor]:
        return {"loss": heatmap_kl(self.model(batch["image"]), batch["heatmap"])}
