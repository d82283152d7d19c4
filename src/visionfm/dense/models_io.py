"""Building dense models from a config and saving / restoring them with their run folder."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..checkpoints import load_encoder, save_safetensors
from ..modalities import get_modality
from ..models import ViTConfig, create_encoder
from .config import DenseConfig, load_config, save_config
from .decoders import build_dense_model

__all__ = ["build_from_config", "engine_config", "save_run", "load_run"]

log = logging.getLogger(__name__)


def build_from_config(cfg: DenseConfig, out_channels: int) -> tuple[nn.Module, list[float], list[float]]:
    """Model plus normalisation (mean, std) for a new run; records the encoder facts in ``cfg.extra``."""
    if cfg.model == "unet":
        if cfg.weights:
            raise ValueError("--unet trains a U-Net from scratch; do not pass --weights with it")
        m = get_modality(cfg.modality or "Fundus")
        cfg.extra.update(mean=list(m.mean), std=list(m.std), encoder=None)
        return build_dense_model("unet", None, out_channels), list(m.mean), list(m.std)
    if not cfg.weights:
        raise ValueError(f"model {cfg.model!r} needs encoder weights (--weights FILE) or --unet")
    enc = load_encoder(cfg.weights, cfg.modality)
    mean, std = list(enc.info.mean), list(enc.info.std)
    cfg.extra.update(mean=mean, std=std, encoder=enc.cfg.to_dict(), encoder_source=str(cfg.weights))
    log.info("encoder %s (%s), %s decoder, encoder %s", cfg.weights, enc.info.arch, cfg.model,
             "fine-tuned" if cfg.finetune else "frozen")
    return build_dense_model(cfg.model, enc, out_channels, cfg.finetune), mean, std


def engine_config(cfg: DenseConfig, n_samples: int):
    """The shared engine's :class:`~visionfm.engine.TrainConfig` for a dense run over ``n_samples`` per epoch.

    Epochs of random-crop and few-shot training are a few steps long, so ``checkpoint_last.pth`` (which holds the
    whole model, frozen encoder included) is written about every 100 optimizer steps rather than every epoch.
    """
    from ..engine import TrainConfig

    steps_per_epoch = max(1, n_samples // cfg.batch_size)
    return TrainConfig(output_dir=cfg.output_dir, epochs=cfg.epochs, max_steps=cfg.max_steps,
                       batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup_epochs=cfg.warmup_epochs, precision=cfg.precision, device=cfg.device, seed=cfg.seed,
                       num_workers=cfg.num_workers, checkpoint_epochs=max(1, 100 // steps_per_epoch))


def save_run(model: nn.Module, cfg: DenseConfig, run: Path) -> Path:
    """Write ``model.safetensors`` (all weights, atomic) and ``dense.yaml`` into ``run``."""
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "dense.yaml")
    path = run / "model.safetensors"
    return save_safetensors(model.state_dict(), path)


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, DenseConfig]:
    """Rebuild the model of a finished run (no original weights file needed) in eval mode."""
    run = Path(run)
    for f in ("dense.yaml", "model.safetensors"):
        if not (run / f).is_file():
            raise FileNotFoundError(f"{run / f} not found: is {run} a finished dense run?")
    cfg = load_config(run / "dense.yaml")
    k = int(cfg.extra["out_channels"])
    enc = None if cfg.extra.get("encoder") is None else create_encoder(ViTConfig(**cfg.extra["encoder"]))
    model = build_dense_model(cfg.model, enc, k, cfg.finetune)
    model.load_state_dict(load_file(str(run / "model.safetensors")), strict=True)
    return model.to(device).eval(), cfg
