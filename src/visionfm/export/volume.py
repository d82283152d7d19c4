"""OCT volume classifiers (``visionfm volumes train``) as inference modules: one volume's B-scans in, the volume's
logits and per-B-scan relevance out, through the run's own MIL head (so the torch service, the ONNX export and
``volumes predict`` share one implementation of the pooling)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..fileio import file_sha256
from .pipelines import EncoderPipeline, LoadedModel, ModelCard, _encode

__all__ = ["VolumePipeline", "load_volume"]


class VolumePipeline(nn.Module):
    """An OCT volume classifier: the B-scans of ONE volume ``image [N, 3, S, S]`` -> (volume logits ``[1, C]``,
    per-B-scan relevance ``[1, N]``). The batch axis is the volume's B-scans; features are extracted as
    ``extract --volumes`` does (no TTA) and pooled by the run's own :class:`~visionfm.volumes.MILHead`."""

    def __init__(self, encoder: nn.Module, head: nn.Module, feature: str, n_last_blocks: int) -> None:
        super().__init__()
        self.encoder, self.head, self.feature = encoder, head, feature
        self.n_last_blocks = min(n_last_blocks, encoder.cfg.depth)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        cls, patch = _encode(self.encoder, image, self.n_last_blocks, "none")
        x = (cls if self.feature == "cls" else patch)[None]  # [1, N, F]
        return self.head(x, torch.ones_like(x[..., 0], dtype=torch.bool))  # a mask that follows N when traced


def load_volume(run: Path, device: torch.device, encoder_only: bool, weights_file: str | None = None) -> LoadedModel:
    """An OCT volume classifier (``visionfm volumes train``): the encoder its features came from + its MIL head
    (``weights_file``: the encoder when no longer where the features recorded it)."""
    from ..checkpoints import load_encoder
    from ..volumes import VolumeClassifier

    clf = VolumeClassifier.load(run)
    sm = clf.source_meta
    weights = Path(weights_file or sm.get("weights", ""))
    if not weights.is_file():
        raise FileNotFoundError(f"{run}: its features came from encoder weights {weights}, not found")
    enc = load_encoder(weights, sm.get("modality") or None, device=device).eval()
    head_file = run / "head.safetensors"
    files = {str(weights.resolve()): file_sha256(weights), str(head_file.resolve()): file_sha256(head_file)}
    n_blocks = int(sm.get("n_last_blocks") or 1)
    card = ModelCard(
        run.name,
        "encoder" if encoder_only else "volume",
        str(run.resolve()),
        files,
        files[str(weights.resolve())],
        enc.info.arch,
        sm.get("modality", ""),
        int(sm["input_size"]),
        json.loads(sm["mean"]),
        json.loads(sm["std"]),
        ["cls", "patch_mean"] if encoder_only else list(clf.classes),
        feature=clf.feature,
        n_last_blocks=n_blocks,
        resize=sm.get("interpolation") or "bilinear",
        precision=sm.get("precision") or "fp32",
    )
    if encoder_only:
        return LoadedModel(card, EncoderPipeline(enc, n_blocks).eval(), enc)
    return LoadedModel(card, VolumePipeline(enc, clf.head, clf.feature, n_blocks).eval(), enc, clf)
