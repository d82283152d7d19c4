"""What is known about an encoder: a declared part of every :class:`~visionfm.models.VisionTransformer` (``.info``).

The loader fills it (:func:`visionfm.checkpoints.load_encoder`), :func:`visionfm.checkpoints.save_encoder` writes it
as safetensors metadata, and every consumer (feature extraction, fine-tuning, explanation, fidelity) reads the input
normalisation and provenance from it instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .vit import ViTConfig

__all__ = ["EncoderInfo"]


@dataclass
class EncoderInfo:
    """Facts of one encoder.

    Attributes:
        config: the architecture.
        modality: canonical modality name, or None when unknown.
        mean: input normalisation mean (RGB).
        std: input normalisation std.
        source: the file (or ``hf-hub:`` reference) the weights came from.
        format: the checkpoint format they were read as.
        report: one line saying what was loaded.
        not_loaded: optional tensors the file did not hold (left at initialisation, never exported).
        family: the released model family the file belongs to (``RETFound-Green``, ``VisionFM``, ...), or "".
        head_tensors: a classification head saved with the encoder (e.g. ``head.weight`` ``[C, D]``, ``head.bias``
            ``[C]``, ``fc_norm.*`` for global-average pooling), so fine-tuning can start from it; empty when none.
        normalisation_from: where ``mean``/``std`` come from (the family's default, the modality, the file).
    """

    config: ViTConfig
    modality: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    format: str = ""
    report: str = ""
    not_loaded: tuple[str, ...] = ()
    family: str = ""
    head_tensors: dict[str, Tensor] = field(default_factory=dict)
    normalisation_from: str = ""

    @property
    def arch(self) -> str:
        from . import arch_name  # the registry lives in the package module

        return arch_name(self.config)
