"""``pretrain(cfg)``: iBOT self-supervised pretraining of a ViT encoder; returns the run folder.

The run folder holds ``pretrain.yaml`` (the resolved config), ``config.yaml`` (the loop's), ``checkpoint_last.pth``
(+ step checkpoints), ``log.jsonl``, ``tensorboard/``, ``bad_images.txt`` when images were skipped, and
``encoder.safetensors``: the teacher encoder, loadable with ``visionfm.load_encoder``.
"""
from __future__ import annotations

from pathlib import Path

from .config import PretrainConfig

__all__ = ["pretrain", "ENCODER_FILE"]

ENCODER_FILE = "encoder.safetensors"


def pretrain(cfg: PretrainConfig, resume: bool = False) -> Path:
    """Pretrain an encoder with iBOT (DINO when ``cfg.mim`` is False) and export the teacher.

    Args:
        cfg: the configuration (data, modality, architecture, crops, masking, optimisation, run folder).
        resume: continue the run in ``cfg.output`` exactly where its last checkpoint stopped.

    Returns:
        The run folder ``Path(cfg.output)``; ``<run>/encoder.safetensors`` is the exported teacher encoder.
    """
    raise NotImplementedError("iBOT pretraining is being implemented (API skeleton; the loop lands next)")
