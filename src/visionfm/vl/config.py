"""``VLConfig``: every setting of vision-language training, with the loop's settings nested as ``train:``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_choices
from ..engine.config import TrainConfig
from ..errors import ConfigError

__all__ = ["IMAGE_TRAINING", "VL_CONFIG", "VLConfig"]

IMAGE_TRAINING = ("frozen", "partial", "full")
VL_CONFIG = "vl.yaml"  # the resolved config in every run folder


def _h(text: str, **meta) -> dict:
    return {"help": text, **meta}


def _train_defaults() -> TrainConfig:
    # Projections on cached features: short and fast; FLAIR's full recipe (lr 1e-4, 15 epochs) trains the encoders.
    return TrainConfig(
        output_dir="runs/vl", epochs=30, batch_size=32, lr=1e-3, weight_decay=1e-5, warmup_epochs=1.0, clip_grad=1.0
    )


@dataclass
class VLConfig:
    """Vision-language (FLAIR-style) training of an image encoder against text.

    The image encoder is frozen by default: its features are computed once and only the projections and the logit
    scale train (cheap, exact on CPU). ``partial`` trains the last ``unfreeze_blocks`` blocks, ``full`` all of it.
    """

    weights: str = field(default="", metadata=_h("image encoder weights (any supported format)"))
    data: list[str] = field(
        default_factory=list,
        metadata=_h(
            "manifests (CSV: path + label of category names, or path + report text) or class folders; "
            "'Modality=PATH' sets their modality"
        ),
    )
    modality: str | None = field(
        default=None, metadata=_h("modality of sources that do not name one (prompt templates and normalisation)")
    )
    text_encoder: str = field(
        default="minilm", metadata=_h("registered text encoder or a local Hugging Face model folder")
    )
    train_text: bool = field(default=False, metadata=_h("fine-tune the text encoder (default: frozen)"))
    image_training: str = field(
        default="frozen",
        metadata=_h("image encoder: frozen, partial (last --unfreeze-blocks) or full", choices=IMAGE_TRAINING),
    )
    unfreeze_blocks: int = field(default=2, metadata=_h("blocks trained with --image-training partial"))
    embed_dim: int = field(default=512, metadata=_h("width of the shared image-text space"))
    logit_scale_init: float = field(
        default=0.07, metadata=_h("initial temperature (logit scale = 1/this, capped at 100)")
    )
    domain_knowledge: bool = field(
        default=True, metadata=_h("draw category prompts from the expert descriptions as well as the class name")
    )
    knowledge: str | None = field(default=None, metadata=_h("YAML extending the category dictionary and templates"))
    input_size: int | None = field(default=None, metadata=_h("image side in pixels (default: the encoder's)"))
    val_fraction: float = field(default=0.1, metadata=_h("fraction of pairs held out for validation metrics"))
    flip: bool = field(default=True, metadata=_h("random horizontal flips when the image encoder trains"))
    train: TrainConfig = field(default_factory=_train_defaults)

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.embed_dim < 1 or self.unfreeze_blocks < 1:
            raise ConfigError("embed_dim and unfreeze_blocks must be >= 1")
        if not 0 < self.logit_scale_init <= 1:
            raise ConfigError(f"logit_scale_init must be in (0, 1], got {self.logit_scale_init}")
