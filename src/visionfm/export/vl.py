"""Vision-language runs (``visionfm vl train``) as inference modules: image -> unit embedding; classes come as text.

A zero-shot model has no fixed outputs: the classes are named by the caller, embedded by the run's text encoder as
prompt ensembles (:meth:`visionfm.vl.VLRun.class_embeddings`) and compared with the image embedding. What is
exported or batched is the image side (encoder CLS -> image projection -> unit vector ``[B, E]``); the text side
runs beside it, cached per class list.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..fileio import file_sha256

__all__ = ["VLImagePipeline", "is_vl_run", "load_vl"]


def is_vl_run(path: Path) -> bool:
    """A folder holding a vision-language run's ``run.json``."""
    info = path / "run.json"
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text()).get("kind") == "vision-language"
    except (OSError, ValueError):
        return False


class VLImagePipeline(nn.Module):
    """Normalised images ``[B, 3, S, S]`` -> unit image embeddings ``[B, E]`` (the run's image side)."""

    def __init__(self, encoder: nn.Module, image_proj: nn.Module) -> None:
        super().__init__()
        self.encoder, self.image_proj = encoder, image_proj

    def forward(self, image: Tensor) -> Tensor:
        return self.image_proj(self.encoder(image).cls.float())


def load_vl(run: Path, device: torch.device, encoder_only: bool):
    """A vision-language run (every file verified by SHA-256 by :func:`visionfm.vl.load`) as a
    :class:`~visionfm.export.LoadedModel` of kind ``vl``; ``.vl`` holds the :class:`~visionfm.vl.VLRun`."""
    from ..vl import load as load_vl_run
    from .pipelines import EncoderPipeline, LoadedModel, ModelCard

    vl = load_vl_run(run, device=str(device))
    enc = vl.model.image_encoder.eval()
    img = vl.info["image_encoder"]
    weights = Path(img["weights"]) if Path(img["weights"]).is_absolute() else run / img["weights"]
    files = {str(weights.resolve()): img["sha256"] or file_sha256(weights)}
    proj = run / "projection.safetensors"
    files[str(proj.resolve())] = file_sha256(proj)
    card = ModelCard(
        run.name,
        "encoder" if encoder_only else "vl",
        str(run.resolve()),
        files,
        files[str(weights.resolve())],
        enc.info.arch,
        img.get("modality") or "",
        vl.input_size,
        list(enc.info.mean),
        list(enc.info.std),
        ["cls", "patch_mean"] if encoder_only else [],
        resize="bilinear",  # as visionfm.vl.VLRun.image_features (and extract) resize
        n_last_blocks=1,
    )
    if encoder_only:
        return LoadedModel(card, EncoderPipeline(enc, 1).eval(), enc)
    return LoadedModel(card, VLImagePipeline(enc, vl.model.image_proj).eval(), enc, vl=vl)
