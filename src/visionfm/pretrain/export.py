"""The encoders of a pretraining run: the one reader of a run checkpoint's encoder tensors, and the export as a
``visionfm`` safetensors file.

The file carries the architecture, the modality and the normalisation the run trained with (the modality's, or
ImageNet's for MAE as RETFound; a run over several modalities with their own statistics records none, so
``load_encoder`` asks for the modality of the images it will see), and its source.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..checkpoints import EncoderInfo, safe_torch_load, save_encoder
from ..config import load_config
from ..modalities import IMAGENET_MEAN, IMAGENET_STD, get_modality
from ..models import VisionTransformer
from .checkpoint import encoder_state
from .config import RUN_CONFIG, PretrainConfig
from .data import parse_sources
from .encoders import arch_config

__all__ = ["ENCODER_FILE", "encoder_state", "export_encoder", "run_encoder", "save_pretrained_encoder"]

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
SOURCE_FORMATS = {"ibot": "visionfm-ibot", "mae": "visionfm-mae"}


def _with_info(
    enc: VisionTransformer, cfg: PretrainConfig, modality: str | None, source: str, report: str = ""
) -> VisionTransformer:
    """Record the normalisation facts on ``enc``: ``modality``, else the run's one modality (none for a multi-modality
    run normalised per modality, so ``load_encoder`` asks for the modality of the images it will see)."""
    found = [modality] if modality else sorted({s.modality for s in parse_sources(cfg)})
    name = get_modality(found[0]).name if len(found) == 1 else None
    fmt = SOURCE_FORMATS[cfg.method]
    if cfg.imagenet_stats:
        enc.info = EncoderInfo(enc.cfg, name, IMAGENET_MEAN, IMAGENET_STD, source, fmt, report)
    elif name is not None:
        m = get_modality(name)
        enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, source, fmt, report)
    return enc


def save_pretrained_encoder(backbone: VisionTransformer, cfg: PretrainConfig, path: str | Path, source: str) -> Path:
    """Write ``backbone`` (a copy on CPU, float32) with the run's normalisation facts to ``path``."""
    with torch.device("meta"):  # a copy to hold the modality facts; its tensors are assigned, never initialised
        enc = VisionTransformer(backbone.cfg)
    enc.load_state_dict({k: v.detach().float().cpu() for k, v in backbone.state_dict().items()}, assign=True)
    save_encoder(_with_info(enc, cfg, None, source), path, source=source, source_format=SOURCE_FORMATS[cfg.method])
    log.info("exported encoder to %s", path)
    return Path(path)


def run_encoder(checkpoint: str | Path, which: str | None = None, modality: str | None = None) -> VisionTransformer:
    """An encoder of one checkpoint of a run, in eval mode: the method's exported one by default (iBOT teacher,
    MAE encoder), or ``which`` (``teacher`` / ``student`` for iBOT).

    The architecture comes from the run's ``pretrain.yaml`` beside the checkpoint (the tensors alone cannot tell
    the number of heads), the normalisation from ``modality`` or the run's.

    Raises:
        FileNotFoundError: no checkpoint, or no ``pretrain.yaml`` beside it.
        ValueError: ``which`` is not an encoder of the run's method.
    """
    path = Path(checkpoint)
    if not path.is_file() or not (path.parent / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{path}: not a pretraining checkpoint (a .pth file with {RUN_CONFIG} beside it)")
    cfg = load_config(PretrainConfig, path.parent / RUN_CONFIG)
    sd, method, which = encoder_state(safe_torch_load(path)["task"], which)
    with torch.device("meta"):  # the run's architecture; the checkpoint's tensors are assigned below
        enc = VisionTransformer(arch_config(cfg))
    enc.load_state_dict(sd, strict=True, assign=True)
    report = f"pretraining checkpoint {path} ({cfg.arch}, {method} {which})"
    return _with_info(enc, cfg, modality, str(path), report).eval()


def export_encoder(
    run_dir: str | Path,
    output: str | Path | None = None,
    which: str | None = None,
    checkpoint: str | Path | None = None,
) -> Path:
    """Export an encoder of a run as safetensors: the iBOT teacher (default, as officially) or student, or the MAE
    encoder.

    Args:
        run_dir: a pretraining run folder (holds ``pretrain.yaml`` and ``checkpoint_last.pth``).
        output: the ``.safetensors`` file (default ``run_dir/encoder.safetensors``).
        which: ``"teacher"`` / ``"student"`` (iBOT) or ``"encoder"`` (MAE); default the method's exported one.
        checkpoint: which checkpoint of the run (default ``run_dir/checkpoint_last.pth``).

    Raises:
        FileNotFoundError: the run has no config or checkpoint.
        ValueError: ``which`` is not an encoder of the run's method.
    """
    run_dir = Path(run_dir)
    enc = run_encoder(checkpoint or run_dir / "checkpoint_last.pth", which)  # modality facts set from the run
    path = Path(output or run_dir / ENCODER_FILE)
    save_encoder(enc, path, source=str(run_dir), source_format=enc.info.format if enc.info else "")
    log.info("exported encoder to %s", path)
    return path
