"""Building dense models from a config, preparing run folders, and saving / restoring a run's model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..checkpoints import load_encoder, save_safetensors
from ..errors import UserError
from ..fileio import prepare_run_folder
from ..modalities import get_modality
from ..models import ViTConfig, create_encoder
from .config import DenseConfig, contrast_channels, load_config, save_config
from .decoders import build_dense_model

__all__ = ["RUN_CONFIG", "RUN_MARKERS", "build_from_config", "is_fundus", "load_run", "prepare_run", "save_run"]

log = logging.getLogger(__name__)
RUN_CONFIG = "dense.yaml"
RUN_MARKERS = (RUN_CONFIG, "model.safetensors")


def is_fundus(modality: str | None) -> bool:
    """Whether a run's modality is fundus photography (the default), where a missing FOV is estimated."""
    return modality is None or get_modality(modality).name == "Fundus"


def build_from_config(cfg: DenseConfig, out_channels: int) -> tuple[nn.Module, list[float], list[float]]:
    """Model plus normalisation (mean, std) for a new run; records the encoder facts in ``cfg.state``."""
    st = cfg.state
    if cfg.model == "unet":
        if cfg.weights:
            raise UserError("--unet trains a U-Net from scratch; do not pass --weights with it")
        from .transforms import input_stats  # per input channel: stacked contrast views add channels

        m = get_modality(cfg.modality or "Fundus")
        st.mean, st.std = input_stats(list(m.mean), list(m.std), cfg.contrast)
        st.encoder = None
        return _model(cfg, None, out_channels), list(st.mean), list(st.std)
    if not cfg.weights:
        raise UserError(f"model {cfg.model!r} needs encoder weights (--weights FILE) or --unet")
    enc = load_encoder(cfg.weights, cfg.modality)
    st.mean, st.std = list(enc.info.mean), list(enc.info.std)
    st.encoder, st.encoder_source = enc.cfg.to_dict(), str(cfg.weights)
    log.info(
        "encoder %s (%s), %s decoder, encoder %s",
        cfg.weights,
        enc.info.arch,
        cfg.model,
        "fine-tuned" if cfg.finetune else "frozen",
    )
    return _model(cfg, enc, out_channels), st.mean, st.std


def _model(cfg: DenseConfig, enc: nn.Module | None, out_channels: int) -> nn.Module:
    # The decoder's random init follows the run's seed, whatever the caller's RNG did before; fork_rng restores the
    # caller's global RNG afterwards (library code does not move it).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_dense_model(
            cfg.model, enc, out_channels, cfg.finetune, contrast_channels(cfg.contrast), cfg.unet_width
        )
    if hasattr(model, "encoder_dtype") and cfg.encoder_precision == "bf16":
        model.encoder_dtype = torch.bfloat16
    return model


def prepare_run(cfg: DenseConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Check the run folder before any image is read (:func:`visionfm.fileio.prepare_run_folder`); returns it.

    Raises:
        UserError: no output folder, or the folder policy's errors.
    """
    if not cfg.output_dir:
        raise UserError("an output run folder is required (--output)")
    prepare_run_folder(cfg.output_dir, "dense", RUN_MARKERS, resume, overwrite)
    return Path(cfg.output_dir)


def save_run(model: nn.Module, cfg: DenseConfig, run: Path, name: str = "model.safetensors") -> Path:
    """Write ``name`` (all weights, atomic) and ``dense.yaml`` into ``run``."""
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / RUN_CONFIG)
    return save_safetensors(model.state_dict(), run / name)


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, DenseConfig]:
    """Rebuild the model of a finished run (no original weights file needed) in eval mode.

    ``model.safetensors`` holds the weights selected on validation when the run had validation, else the last.
    """
    run = Path(run)
    for f in (RUN_CONFIG, "model.safetensors"):
        if not (run / f).is_file():
            raise UserError(f"{run / f} not found: is {run} a finished dense run?")
    cfg = load_config(run / RUN_CONFIG)
    if not cfg.state.out_channels:
        raise UserError(f"{run / RUN_CONFIG}: no out_channels recorded; not a finished dense run")
    enc = None if cfg.state.encoder is None else create_encoder(ViTConfig(**cfg.state.encoder))
    model = _model(cfg, enc, int(cfg.state.out_channels))
    model.load_state_dict(load_file(str(run / "model.safetensors")), strict=True)
    return model.to(device).eval(), cfg
