"""Dense tasks for the shared training engine: ``forward(batch, state)`` is the training step.

With validation data (carved from training or given) the engine calls :meth:`evaluate` after every round and keeps
the best weights (``select_metric``: mean Dice for segmentation, mean radial error for landmarks); without it the
last weights are kept. Test data is scored by ``segment predict`` / ``landmark predict``, never here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import Task, param_groups_for
from .decoders import EncoderDense
from .landmarks import argmax_subpixel, heatmap_from_logits
from .losses import SEG_LOSSES, heatmap_kl
from .metrics import best_threshold_from_histograms, confusion, scores_from_confusion

__all__ = ["LandmarkTask", "SegmentationTask", "dense_param_groups", "padded_logits"]


def dense_param_groups(model: nn.Module, encoder_lr_scale: float = 0.1) -> list[dict]:
    """AdamW groups; a fine-tuned encoder learns at ``encoder_lr_scale`` times the decoder's rate."""
    if isinstance(model, EncoderDense) and model.finetune:
        return param_groups_for(model.encoder, encoder_lr_scale) + param_groups_for(model.decoder)
    return param_groups_for(model)


def padded_logits(model: nn.Module, x: Tensor, multiple: int = 32) -> Tensor:
    """Logits of ``[B, 3, H, W]`` inputs of any size: zero-padded to a multiple of ``multiple``, cropped back."""
    rows, cols = x.shape[-2:]
    x = F.pad(x, (0, -cols % multiple, 0, -rows % multiple))
    return model(x).float()[..., :rows, :cols]


class SegmentationTask(Task):
    """Multi-label segmentation (sigmoid per class) with a Dice- or Tversky-type loss plus focal loss.

    Args:
        model: ``[B, 3, H, W]`` -> logits ``[B, K, H, W]``.
        loss: a name of :data:`~visionfm.dense.losses.SEG_LOSSES`.
        gamma: focal exponent.
    """

    def __init__(self, model: nn.Module, loss: str = "dice_focal", gamma: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = SEG_LOSSES[loss]
        self.gamma = gamma

    def param_groups(self) -> list[dict]:
        return dense_param_groups(self.model)

    def forward(self, batch: dict[str, Tensor], state=None) -> dict[str, Tensor]:
        logits = self.model(batch["image"]).float()  # the loss's sums in fp32 under bf16 autocast
        return self.loss_fn(logits, batch["target"], batch.get("valid"), gamma=self.gamma)

    @torch.no_grad()
    def evaluate(self, loader: Any, device: Any) -> dict[str, float]:
        """Pooled Dice per class inside the FOV over whole validation images (one at a time: sizes differ).

        Besides Dice at 0.5 it reports, per class, the threshold that maximises the pooled validation Dice and that
        Dice (:func:`~visionfm.dense.metrics.best_threshold_from_histograms`, 200 bins): runs with
        ``tune_thresholds`` select their step by ``dice_tuned`` and keep those thresholds for prediction.

        Returns:
            ``{'dice': mean over classes, 'dice_<k>': per class index, 'dice_tuned', 'dice_tuned_<k>',
            'threshold_<k>'}`` (a class absent from every validation image counts Dice 0, threshold 0.5).
        """
        counts, pos, neg, bins = None, None, None, 200
        self.model.eval()
        data = loader.dataset
        for s in (data[i] for i in range(len(data))):  # indexed: the sets wrap indices, iteration would not end
            prob = torch.sigmoid(padded_logits(self.model, s["image"][None].to(device)))[0].cpu().numpy()
            gt, fov = s["target"].numpy() > 0.5, s["fov"].numpy()
            c = np.array([confusion(prob[k] > 0.5, gt[k], fov) for k in range(len(prob))])
            idx = np.clip((prob[:, fov] * bins).astype(np.int64), 0, bins - 1)
            g = gt[:, fov]
            hp = np.stack([np.bincount(i[t], minlength=bins) for i, t in zip(idx, g)])
            hn = np.stack([np.bincount(i[~t], minlength=bins) for i, t in zip(idx, g)])
            counts, pos, neg = (c, hp, hn) if counts is None else (counts + c, pos + hp, neg + hn)
        dice = [scores_from_confusion(*map(int, row))["dice"] for row in counts]
        out = {f"dice_{k}": float(np.nan_to_num(d)) for k, d in enumerate(dice)}
        tuned = [best_threshold_from_histograms(p, n) for p, n in zip(pos, neg)]
        out_t = {f"dice_tuned_{k}": float(np.nan_to_num(d)) for k, (_, d) in enumerate(tuned)}
        thr = {f"threshold_{k}": t for k, (t, _) in enumerate(tuned)}
        return {
            "dice": float(np.mean(list(out.values()))),
            **out,
            "dice_tuned": float(np.mean(list(out_t.values()))),
            **out_t,
            **thr,
        }


class LandmarkTask(Task):
    """Heatmaps as spatial distributions: KL divergence to the normalised float Gaussians."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def param_groups(self) -> list[dict]:
        return dense_param_groups(self.model)

    def forward(self, batch: dict[str, Tensor], state=None) -> dict[str, Tensor]:
        return {"loss": heatmap_kl(self.model(batch["image"]), batch["heatmap"])}

    @torch.no_grad()
    def evaluate(self, loader: Any, device: Any) -> dict[str, float]:
        """Mean radial error in input pixels (argmax + sub-pixel refinement) over the validation images."""
        self.model.eval()
        errs = []
        for batch in loader:
            hm = heatmap_from_logits(self.model(batch["image"].to(device)).cpu())
            errs.append((argmax_subpixel(hm) - batch["points"]).norm(dim=-1).flatten())
        return {"mre": float(torch.cat(errs).mean())}
