"""Export the pretrained teacher (or student) encoder of a run as a ``visionfm`` safetensors file.

The file carries the architecture, the modality and its normalisation (single-modality runs; a run over several
modalities records none, so ``load_encoder`` asks for the modality of the images it will see), and its source.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..checkpoints import EncoderInfo, safe_torch_load, save_encoder
from ..engine.trainer import load_config
from ..modalities import get_modality
from ..models import VisionTransformer
from .config import PretrainConfig
from .data import parse_sources
from .encoders import build_encoders

__all__ = ["ENCODER_FILE", "export_encoder", "save_pretrained_encoder"]

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
SOURCE_FORMAT = "visionfm-ibot"


def save_pretrained_encoder(backbone: VisionTransformer, cfg: PretrainConfig, path: str | Path,
                            source: str) -> Path:
    """Write ``backbone`` (a copy on CPU, float32) with the run's modality facts to ``path``."""
    enc = VisionTransformer(backbone.cfg)
    enc.load_state_dict({k: v.detach().float().cpu() for k, v in backbone.state_dict().items()})
    modalities = {s.modality for s in parse_sources(cfg)}
    if len(modalities) == 1:
        m = get_modality(modalities.pop())
        enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, source, SOURCE_FORMAT, "")
    save_encoder(enc, path, source=source, source_format=SOURCE_FORMAT)
    log.info("exported encoder to %s", path)
    return Path(path)


def export_encoder(run_dir: str | Path, output: str | Path | None = None, which: str = "teacher") -> Path:
    """Export the ``teacher`` (default, as officially) or ``student`` encoder of ``run_dir/checkpoint_last.pth``.

    Args:
        run_dir: a pretraining run folder (holds ``pretrain.yaml`` and ``checkpoint_last.pth``).
        output: the ``.safetensors`` file (default ``run_dir/encoder.safetensors``).
        which: ``"teacher"`` or ``"student"``.

    Raises:
        FileNotFoundError: the run has no config or checkpoint.
        ValueError: ``which`` is neither teacher nor student.
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    run_dir = Path(run_dir)
    cfg = load_config(PretrainConfig, run_dir / "pretrain.yaml")
    state = safe_torch_load(run_dir / "checkpoint_last.pth")["task"]
    prefix = f"{which}.backbone."
    sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    backbone = build_encoders(cfg, with_weights=False)[0]
    backbone.load_state_dict(sd, strict=True)
    return save_pretrained_encoder(backbone, cfg, output or run_dir / ENCODER_FILE, str(run_dir))
