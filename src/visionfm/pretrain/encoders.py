"""The modules of a pretraining run: the encoder(s) of the run's architecture and crop size, optional initial
weights (and, for MAE, the decoder of a RETFound/MAE file), and the method's task."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..checkpoints import load_encoder, safe_torch_load
from ..engine.task import Task
from ..models import ARCHS, VisionTransformer, ViTConfig, interpolate_pos_embed
from .config import PretrainConfig

__all__ = ["arch_config", "build_encoders", "build_task", "init_decoder"]

log = logging.getLogger(__name__)


def arch_config(cfg: PretrainConfig) -> ViTConfig:
    """The run's encoder architecture (``arch`` at ``global_size``, optional patch size)."""
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
    # heads are not in the tensors (a file without metadata reads as width / 64): the run's arch decides them
    if (a.embed_dim, a.depth, a.patch_size) != (b.embed_dim, b.depth, b.patch_size):
        raise ValueError(
            f"--init-from {path}: the weights are D={a.embed_dim}, depth={a.depth}, patch={a.patch_size}; "
            f"arch needs D={b.embed_dim}, depth={b.depth}, patch={b.patch_size}"
        )
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
    vit = arch_config(cfg)
    student = VisionTransformer(vit, drop_path_rate=cfg.drop_path, grad_checkpointing=cfg.grad_checkpointing)
    if with_weights and cfg.init_from:
        _init_weights(student, cfg.init_from, cfg.modality)
    return student, VisionTransformer(vit)


_DECODER_PREFIXES = (
    "decoder_embed.",
    "mask_token",
    "decoder_pos_embed",
    "decoder_blocks.",
    "decoder_norm.",
    "decoder_pred.",
)


def init_decoder(decoder: torch.nn.Module, path: str) -> str:
    """Load the MAE decoder of a RETFound/MAE checkpoint (``model`` key, MAE names) into ``decoder`` when the file
    has one; returns what happened, for the log. The fixed sin-cos positions are recomputed for the run's grid.

    Raises:
        ValueError: the file's decoder has another shape than the run's (the message names the settings).
    """
    if Path(path).suffix == ".safetensors":
        return f"{path} holds an encoder only: the MAE decoder starts fresh"
    obj = safe_torch_load(path)
    sd = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    sd = {k.removeprefix("module."): v for k, v in sd.items()} if isinstance(sd, dict) else {}
    found = {k: v for k, v in sd.items() if k.startswith(_DECODER_PREFIXES) and k != "decoder_pos_embed"}
    if not found:
        return f"{path} has no MAE decoder: the MAE decoder starts fresh"
    own = decoder.state_dict()
    missing = sorted(set(own) - set(found) - {"decoder_pos_embed"})
    unexpected = sorted(set(found) - set(own))
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in found.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or bad:
        raise ValueError(
            f"--init-from {path}: its MAE decoder does not fit this run's (missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, shapes {bad[:3]}); set --decoder-embed-dim, "
            f"--decoder-depth and --decoder-num-heads to the file's (RETFound: 512, 8, 16)"
        )
    decoder.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in found.items()}}, strict=True)
    return f"continuing the MAE decoder of {path} ({len(found)} tensors; fixed sin-cos positions recomputed)"


def build_task(
    cfg: PretrainConfig, with_weights: bool = True, main: bool = True, modalities: list[str] | None = None
) -> Task:
    """The method's task with freshly initialised (or ``init_from``) modules.

    Args:
        cfg: the run's configuration.
        with_weights: load ``init_from`` (False when the weights come from a checkpoint: resume).
        main: whether this process reports (collapse warnings).
        modalities: the run's modalities (MAE's default mask ratio); default ``[cfg.modality]``.
    """
    if cfg.method == "ibot":
        from .task import IBOTTask

        student, teacher = build_encoders(cfg, with_weights)
        return IBOTTask(student, teacher, cfg, main)
    from .mae import MAEDecoder, MAETask, init_mae_weights

    vit = arch_config(cfg)
    encoder = VisionTransformer(vit, drop_path_rate=cfg.drop_path, grad_checkpointing=cfg.grad_checkpointing)
    decoder = MAEDecoder(
        vit.embed_dim,
        vit.img_size // vit.patch_size,
        vit.patch_size,
        cfg.decoder_embed_dim,
        cfg.decoder_depth,
        cfg.decoder_num_heads,
        vit.in_chans,
    )
    init_mae_weights(encoder)
    init_mae_weights(decoder)
    if with_weights and cfg.init_from:
        _init_weights(encoder, cfg.init_from, cfg.modality)
        log.info("%s", init_decoder(decoder, cfg.init_from))
    ratio = cfg.mae_mask_ratio(modalities or [cfg.modality])
    return MAETask(encoder, decoder, ratio, cfg.norm_pix_loss, cfg.train.log_every, main)
