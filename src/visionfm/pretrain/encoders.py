"""The student and teacher encoders of a pretraining run: architecture, crop size, optional initial weights."""
from __future__ import annotations

import logging

from ..checkpoints import load_encoder
from ..models import ARCHS, VisionTransformer, ViTConfig, interpolate_pos_embed
from .config import PretrainConfig

__all__ = ["build_encoders"]

log = logging.getLogger(__name__)


def _arch_config(cfg: PretrainConfig) -> ViTConfig:
    overrides = {"img_size": cfg.global_size}
    if cfg.patch_size is not None:
        overrides["patch_size"] = cfg.patch_size
    try:
        return ARCHS.get(cfg.arch)(**overrides)
    except ValueError as e:
        raise ValueError(f"arch {cfg.arch!r}: {e}") from None


def _init_weights(student: VisionTransformer, path: str, modality: str) -> None:
    """Copy encoder weights from any supported file into ``student`` (position embeddings resized)."""
    src = load_encoder(path, modality=modality)
    a, b = src.cfg, student.cfg
    if (a.embed_dim, a.depth, a.num_heads, a.patch_size) != (b.embed_dim, b.depth, b.num_heads, b.patch_size):
        raise ValueError(f"--init-from {path}: the weights are D={a.embed_dim}, depth={a.depth}, heads={a.num_heads}, "
                         f"patch={a.patch_size}; arch needs D={b.embed_dim}, depth={b.depth}, heads={b.num_heads}, "
                         f"patch={b.patch_size}")
    sd = src.state_dict()
    grid = b.img_size // b.patch_size
    sd["pos_embed"] = interpolate_pos_embed(sd["pos_embed"], grid, grid)
    missing = [k for k in student.state_dict() if k not in sd]
    if set(missing) - {"mask_token"}:
        raise ValueError(f"--init-from {path}: the weights lack {missing}")
    student.load_state_dict({**student.state_dict(), **sd}, strict=True)
    log.info("initialised from %s", src.info.report)


def build_encoders(cfg: PretrainConfig, with_weights: bool = True) -> tuple[VisionTransformer, VisionTransformer]:
    """Student (drop-path, optional activation checkpointing, ``init_from`` weights) and teacher encoders."""
    vit = _arch_config(cfg)
    student = VisionTransformer(vit, drop_path_rate=cfg.drop_path, grad_checkpointing=cfg.grad_checkpointing)
    if with_weights and cfg.init_from:
        _init_weights(student, cfg.init_from, cfg.modality)
    return student, VisionTransformer(vit)
