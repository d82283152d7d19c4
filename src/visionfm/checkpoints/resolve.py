"""The one resolver from "weights" (a file, an ``hf-hub:`` reference, or an encoder already built) to an encoder."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..modalities import get_modality
from ..models import EncoderInfo, VisionTransformer
from .loader import load_encoder

__all__ = ["resolve_encoder"]


def resolve_encoder(
    weights: str | os.PathLike | nn.Module,
    modality: str | None = None,
    arch: str | None = None,
    format: str | None = None,
    device: str | torch.device | None = None,
    allow_nonfinite: bool = False,
) -> nn.Module:
    """An encoder from ``weights``, whatever the caller was given.

    Args:
        weights: an encoder module (returned as it is, moved to ``device`` when one is named), a weights file in any
            format :func:`load_encoder` reads, or ``hf-hub:ORG/NAME[@REV][:FILE]``.
        modality: for a file, as in :func:`load_encoder`; for a :class:`VisionTransformer` without ``info``, its
            normalisation is declared from this modality.
        arch: registered architecture name (checked against the file).
        format: force a checkpoint format.
        device: where to put the encoder (default: where it is / CPU).
        allow_nonfinite: load weights holding NaN or inf.

    Returns:
        The encoder, in eval mode when it was loaded here.
    """
    if isinstance(weights, nn.Module):
        if isinstance(weights, VisionTransformer) and weights.info is None and modality:
            m = get_modality(modality)
            weights.set_info(EncoderInfo(weights.cfg, m.name, m.mean, m.std, "module", "module", "given as a module"))
        return weights if device is None else weights.to(device)
    return load_encoder(weights, modality, arch, device=device or "cpu", format=format, allow_nonfinite=allow_nonfinite)
