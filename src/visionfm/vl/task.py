"""The vision-language ``Task`` for the one training loop: image-text pairs -> FLAIR's soft-target CLIP loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..engine.task import StepState, Task
from .losses import soft_clip_loss, soft_targets
from .model import VLModel

__all__ = ["VLTask"]


class VLTask(Task):
    """Holds the model; frozen encoders stay outside it (their features arrive cached), so checkpoints hold only
    what trains.

    Args:
        model: the :class:`VLModel` (``image_encoder`` None when image features are cached, ``text_encoder`` None
            when text features are).
        texts: every text by id.
        text_cache: ``[T, width]`` pooled features of ``texts`` from a frozen text encoder, or None.
    """

    def __init__(self, model: VLModel, texts: Sequence[str], text_cache: Tensor | None = None) -> None:
        super().__init__()
        self.model, self.texts = model, list(texts)
        if text_cache is None and model.text_encoder is None:
            raise ValueError("without a text encoder the task needs cached text features")
        self.register_buffer("text_cache", text_cache if text_cache is not None else torch.empty(0), persistent=False)

    def _text_features(self, ids: Tensor) -> Tensor:
        if self.model.text_encoder is None:
            return self.text_cache[ids]
        tok = self.model.text_encoder.tokenize([self.texts[i] for i in ids.tolist()], ids.device)
        return self.model.text_features(**tok)

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Unit image and text embeddings ``[B, E]`` of a batch."""
        feats = batch["feat"] if "feat" in batch else self.model.image_features(batch["image"])
        return self.model.embed_image(feats), self.model.embed_text(self._text_features(batch["text"]))

    def forward(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        img, txt = self.embed(batch)
        loss = soft_clip_loss(self.model.logits(img, txt), soft_targets(batch["key"]))
        return {"loss": loss, "logit_scale": torch.tensor(self.model.logit_scale)}

    def evaluate(self, loader: Any, device: Any) -> dict[str, float]:
        """Validation loss and image->text top-1 accuracy within each batch (a positive ranked first)."""
        losses, hits, n = [], 0, 0
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            img, txt = self.embed(batch)
            logits = self.model.logits(img, txt)
            targets = soft_targets(batch["key"])
            losses.append(float(soft_clip_loss(logits, targets)) * len(img))
            hits += int((targets.gather(1, logits.argmax(1, keepdim=True)) > 0).sum())
            n += len(img)
        return {"loss": sum(losses) / max(n, 1), "i2t_top1": hits / max(n, 1)}
