"""``describe_weights``: what a weights file is, in a few lines (the ``visionfm info`` command)."""

from __future__ import annotations

import os

from ..models import POS_INTERP
from .loader import load_encoder

__all__ = ["describe_weights"]


def describe_weights(
    weights: str | os.PathLike,
    modality: str | None = None,
    arch: str | None = None,
    format: str | None = None,
    allow_nonfinite: bool = False,
) -> list[str]:
    """Load ``weights`` strictly and describe them: the load report, family and format, normalisation and where it
    comes from, native input size, position-embedding resizing, and a classification head if one is saved.

    Raises:
        CheckpointError: as :func:`load_encoder` (unreadable file, unknown format, shapes that do not fit, ...).
    """
    enc = load_encoder(
        weights, modality, arch, format=format, allow_nonfinite=allow_nonfinite, require_normalisation=False
    )
    info, cfg = enc.info, enc.cfg
    if info.mean:
        norm = f"mean={info.mean} std={info.std} ({info.normalisation_from})"
    else:
        norm = "not recorded: pass --modality so inputs are normalised as in pretraining"
    grid = cfg.img_size // cfg.patch_size
    lines = [
        info.report,
        f"family: {info.family or 'unknown'}; format: {info.format}; modality: {info.modality or 'not recorded'}",
        f"normalisation: {norm}",
        (
            f"input: {cfg.img_size} px native ({grid}x{grid} patches of {cfg.patch_size}); other sizes resize the "
            f"position embeddings by {cfg.pos_interp}: {POS_INTERP[cfg.pos_interp]}"
        ),
        (
            f"tokens: CLS + {cfg.num_register_tokens} register(s) + patches; layer scale: {cfg.layer_scale}; "
            f"final norm: {cfg.final_norm}"
        ),
    ]
    if info.head_tensors:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(info.head_tensors.items()))
        lines.append(f"head: {shapes} (visionfm.checkpoints.load_head returns it)")
    return lines
