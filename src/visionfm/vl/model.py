"""The vision-language model: a visionfm image encoder and a text encoder meeting in one 512-d space.

As in FLAIR, each side is L2-normalised, projected by a bias-free linear map and L2-normalised again; a learnable
logit scale starts at 1/0.07 and is capped at 100. The image side uses the encoder's final CLS token (the last
``D`` columns of a ``visionfm extract`` features file's ``cls``), so projections also run on cached features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import VisionTransformer
from .config import IMAGE_TRAINING
from .losses import similarity_logits
from .text import TextEncoder

__all__ = ["IMAGE_TRAINING", "ProjectionHead", "VLModel", "set_image_training"]


class ProjectionHead(nn.Module):
    """``x [B, D_in] -> unit [B, D_out]``: normalise, bias-free linear, normalise."""

    def __init__(self, in_dim: int, out_dim: int = 512) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.proj(F.normalize(x.float(), dim=-1)), dim=-1)


def set_image_training(encoder: VisionTransformer, mode: str, unfreeze_blocks: int = 2) -> None:
    """Freeze the encoder (``frozen``), train its last ``unfreeze_blocks`` blocks and final norm (``partial``), or
    train all of it (``full``)."""
    if mode not in IMAGE_TRAINING:
        raise ValueError(f"image_training {mode!r} is not one of {list(IMAGE_TRAINING)}")
    if mode == "partial" and not 1 <= unfreeze_blocks <= encoder.cfg.depth:
        raise ValueError(f"unfreeze_blocks must be in 1..{encoder.cfg.depth}, got {unfreeze_blocks}")
    encoder.requires_grad_(mode == "full")
    if mode == "partial":
        for blk in encoder.blocks[encoder.cfg.depth - unfreeze_blocks :]:
            blk.requires_grad_(True)
        encoder.norm.requires_grad_(True)


class VLModel(nn.Module):
    """Image encoder + text encoder + projections + logit scale.

    Args:
        image_encoder: any visionfm encoder (with ``info`` for its normalisation), or None when only cached image
            features are projected.
        text_encoder: a :class:`TextEncoder`, or None when only cached text features are projected.
        image_dim: image feature width (default: the encoder's).
        text_dim: text feature width (default: the text encoder's).
        embed_dim: width of the shared space.
        logit_scale_init: initial temperature (the scale starts at its inverse).
    """

    def __init__(
        self,
        image_encoder: VisionTransformer | None,
        text_encoder: TextEncoder | None,
        image_dim: int | None = None,
        text_dim: int | None = None,
        embed_dim: int = 512,
        logit_scale_init: float = 0.07,
    ) -> None:
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        image_dim = image_dim or image_encoder.cfg.embed_dim
        text_dim = text_dim or text_encoder.width
        self.image_proj = ProjectionHead(image_dim, embed_dim)
        self.text_proj = ProjectionHead(text_dim, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / logit_scale_init)))

    @property
    def logit_scale(self) -> float:
        """The scale in use (clamped at 100)."""
        return float(self.log_scale.detach().clamp(0, math.log(100)).exp())

    def image_features(self, x: Tensor) -> Tensor:
        """Final CLS token ``[B, D]`` of normalised images ``x [B, 3, H, W]``."""
        return self.image_encoder(x).cls

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled text features ``[B, width]``."""
        return self.text_encoder(input_ids, attention_mask)

    def embed_image(self, feats: Tensor) -> Tensor:
        """Unit image embeddings ``[B, E]`` from image features ``[B, D]``."""
        return self.image_proj(feats)

    def embed_text(self, feats: Tensor) -> Tensor:
        """Unit text embeddings ``[B, E]`` from pooled text features ``[B, width]``."""
        return self.text_proj(feats)

    def logits(self, img: Tensor, txt: Tensor) -> Tensor:
        """``[B_img, B_txt]`` scaled cosine similarities of unit embeddings."""
        return similarity_logits(img, txt, self.log_scale)

    def projection_state(self) -> dict[str, Tensor]:
        """The tensors a run saves beside its encoders: both projections and the logit scale."""
        return {
            "image_proj.weight": self.image_proj.proj.weight.detach(),
            "text_proj.weight": self.text_proj.proj.weight.detach(),
            "log_scale": self.log_scale.detach(),
        }

    def load_projection_state(self, sd: dict[str, Tensor], source: str) -> None:
        """Strictly load what :meth:`projection_state` saved; errors name the file and the mismatch."""
        own = self.projection_state()
        if set(sd) != set(own):
            raise ValueError(f"{source}: expected tensors {sorted(own)}, found {sorted(sd)}")
        bad = [
            f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if sd[k].shape != own[k].shape
        ]
        if bad:
            raise ValueError(f"{source}: projection shapes do not fit: {bad}")
        with torch.no_grad():
            self.image_proj.proj.weight.copy_(sd["image_proj.weight"])
            self.text_proj.proj.weight.copy_(sd["text_proj.weight"])
            self.log_scale.copy_(sd["log_scale"])
