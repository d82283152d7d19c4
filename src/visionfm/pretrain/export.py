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
from .config import RUN_CONFIG, PretrainConfig
from .data import parse_sources
from .encoders import build_encoders

__all__ = ["ENCODER_FILE", "export_encoder", "run_encoder", "save_pretrained_encoder"]

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
SOURCE_FORMAT = "visionfm-ibot"


def _with_info(enc: VisionTransformer, cfg: PretrainConfig, modality: str | None, source: str,
               report: str = "") -> VisionTransformer:
    """Record the modality facts on ``enc``: ``modality``, else the run's one modality (none for a multi-modality
    run, so ``load_encoder`` asks for the modality of the images it will see)."""
    found = [modality] if modality else sorted({s.modality for s in parse_sources(cfg)})
    if len(found) == 1:
        m = get_modality(found[0])
        enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, source, SOURCE_FORMAT, report)
    return enc


def save_pretrained_encoder(backbone: VisionTransformer, cfg: PretrainConfig, path: str | Path,
                            source: str) -> Path:
    """Write ``backbone`` (a copy on CPU, float32) with the run's modality facts to ``path``."""
    with torch.device("meta"):  # a copy to hold the modality facts; its tensors are assigned, never initialised
        enc = VisionTransformer(backbone.cfg)
    enc.load_state_dict({k: v.detach().float().cpu() for k, v in backbone.state_dict().items()}, assign=True)
    save_encoder(_with_info(enc, cfg, None, source), path, source=source, source_format=SOURCE_FORMAT)
    log.info("exported encoder to %s", path)
    return Path(path)


def run_encoder(checkpoint: str | Path, which: str = "teacher", modality: str | None = None) -> VisionTransformer:
    """The ``teacher`` (as officially) or ``student`` encoder of one checkpoint of a run, in eval mode.

    The architecture comes from the run's ``pretrain.yaml`` beside the checkpoint (the tensors alone cannot tell
    the number of heads), the normalisation from ``modality`` or the run's one modality.

    Raises:
        FileNotFoundError: no checkpoint, or no ``pretrain.yaml`` beside it.
        ValueError: ``which`` is neither teacher nor student.
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    path = Path(checkpoint)
    if not path.is_file() or not (path.parent / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{path}: not a pretraining checkpoint (a .pth file with {RUN_CONFIG} beside it)")
    cfg = load_config(PretrainConfig, path.parent / RUN_CONFIG)
    state = safe_torch_load(path)["task"]
    prefix = f"{which}.backbone."
    with torch.device("meta"):  # the run's architecture; the checkpoint's tensors are assigned below
        enc = build_encoders(cfg, with_weights=False)[0 if which == "student" else 1]
    enc.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True,
                        assign=True)
    report = f"pretraining checkpoint {path} ({cfg.arch}, {which})"
    return _with_info(enc, cfg, modality, str(path), report).eval()


def export_encoder(run_dir: str | Path, output: str | Path | None = None, which: str = "teacher",
                   checkpoint: str | Path | None = None) -> Path:
    """Export the ``teacher`` (default, as officially) or ``student`` encoder of a run as safetensors.

    Args:
        run_dir: a pretraining run folder (holds ``pretrain.yaml`` and ``checkpoint_last.pth``).
        output: the ``.safetensors`` file (default ``run_dir/encoder.safetensors``).
        which: ``"teacher"`` or ``"student"``.
        checkpoint: which checkpoint of the run (default ``run_dir/checkpoint_last.pth``).

    Raises:
        FileNotFoundError: the run has no config or checkpoint.
        ValueError: ``which`` is neither teacher nor student.
    """
    run_dir = Path(run_dir)
    enc = run_encoder(checkpoint or run_dir / "checkpoint_last.pth", which)  # modality facts set from the run
    path = Path(output or run_dir / ENCODER_FILE)
    save_encoder(enc, path, source=str(run_dir), source_format=SOURCE_FORMAT)
    log.info("exported encoder to %s", path)
    return path
