"""Typed configuration of the image generator, with named presets and YAML / command-line overrides.

Precedence (lowest first): dataclass defaults < ``--preset`` < ``--config FILE.yaml`` < explicit command-line flags.
The loop's settings (steps, batch, lr, warm-up, checkpoints, precision, device, seed, run folder) are the nested
``train`` section, a :class:`visionfm.engine.TrainConfig` with the generator's defaults; old flat files
(``steps: 2000``, ``output: runs/x``, ``save_every: 500``) still load. The resolved configuration is written as
``generator.yaml`` in the run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import load_config
from ..engine.config import TrainConfig
from ..errors import ConfigError
from ..registry import Registry

__all__ = ["PRESETS", "GeneratorConfig", "generator_train_defaults", "resolve_config"]


def generator_train_defaults() -> TrainConfig:
    """The loop's defaults for a generator: DDPM practice (constant lr after a warm-up, clip 1, EMA elsewhere)."""
    return TrainConfig(
        output_dir="outputs/synth",
        epochs=1,
        max_steps=20000,
        batch_size=32,
        lr=2e-4,
        min_lr=None,
        warmup_steps=500,
        clip_grad=1.0,
        checkpoint_every=1000,
        keep_last=2,
        num_workers=2,
    )


@dataclass
class GeneratorConfig:
    """Everything that defines a generator training run.

    Attributes:
        data: image folder or ``.csv`` manifest (any layout :func:`visionfm.data.scan` reads), or a list of them.
        layout: data layout (``auto``, ``tree``, ``imagenet``, ``vfm``, ``csv``).
        split: split of the official ``vfm`` layout.
        label_column: manifest column holding the class (``csv`` layout); none = ``label`` when present.
        conditional: learn p(image | class) from the collection's labels (class index 0..K-1).
        num_classes: number of classes; 0 = inferred from the labels.
        p_uncond: probability of replacing the class by the "no class" token during training (enables
            classifier-free guidance at sampling time).
        image_size: square side of the generated images in pixels.
        crop: center (centre crop to a square, then resize: keeps the fundus round) or none (squash).
        block_out_channels: channels of each U-Net resolution level (one down/up block per level).
        attention_levels: which levels use self-attention blocks (indices into block_out_channels).
        layers_per_block: ResNet layers per block.
        norm_num_groups: GroupNorm groups (must divide every channel count).
        num_train_timesteps: diffusion steps T of the DDPM forward process.
        beta_schedule: linear or squaredcos_cap_v2 (cosine).
        prediction_type: epsilon or v_prediction.
        ema_decay: decay of the exponential moving average of the weights (the EMA weights are sampled from).
        hflip: random horizontal flips (left/right eyes are mirror images).
        cache: decode every image once into memory (fast on small sets; turn off for very large ones).
        train: the loop's settings: ``max_steps`` (the whole run; resuming continues up to it), ``batch_size`` per
            process, ``lr`` (constant after ``warmup_steps`` unless ``min_lr`` is set: then a half-cosine to it),
            ``checkpoint_every`` steps, ``keep_last`` numbered checkpoints, ``precision``, ``device``, ``seed``,
            ``num_workers`` (decoding workers when ``cache`` is off), ``output_dir`` (the run folder).
    """

    # Old flat spellings of the loop's settings (generator.yaml files written before the nesting).
    config_aliases: ClassVar[dict[str, str]] = {
        "output": "train.output_dir",
        "steps": "train.max_steps",
        "grad_clip": "train.clip_grad",
        "save_every": "train.checkpoint_every",
        "keep_checkpoints": "train.keep_last",
    }

    data: list[str] = field(default_factory=list)
    layout: str = field(default="auto", metadata={"choices": ("auto", "tree", "imagenet", "vfm", "csv")})
    split: str = "training"
    label_column: str | None = None
    conditional: bool = False
    num_classes: int = 0
    p_uncond: float = 0.1
    image_size: int = 64
    crop: str = field(default="center", metadata={"choices": ("center", "none")})
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={"flag": ("--channels",)})
    attention_levels: list[int] = field(default_factory=lambda: [2])
    layers_per_block: int = 2
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = field(default="squaredcos_cap_v2", metadata={"choices": ("linear", "squaredcos_cap_v2")})
    prediction_type: str = field(default="epsilon", metadata={"choices": ("epsilon", "v_prediction")})
    ema_decay: float = 0.999
    hflip: bool = True
    cache: bool = True
    train: TrainConfig = field(default_factory=generator_train_defaults)

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, Path)):  # one folder given as a string
            self.data = [str(self.data)] if str(self.data) else []
        self.validate()

    @property
    def output(self) -> str:
        """The run folder (``train.output_dir``)."""
        return self.train.output_dir

    @property
    def steps(self) -> int:
        """Optimizer steps of the whole run (``train.max_steps``)."""
        return int(self.train.max_steps or 0)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value cannot work."""
        levels = len(self.block_out_channels)
        if not levels or self.image_size < 1 or self.image_size % (2 ** (levels - 1)):
            raise ConfigError(
                f"image_size {self.image_size} must be positive and divisible by 2^(levels-1) = "
                f"{2 ** max(levels - 1, 0)} (levels: block_out_channels {self.block_out_channels})"
            )
        bad = [c for c in self.block_out_channels if c < 1 or c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"block_out_channels {bad} not divisible by norm_num_groups {self.norm_num_groups}")
        if any(not 0 <= i < levels for i in self.attention_levels):
            raise ConfigError(f"attention_levels {self.attention_levels} outside 0..{levels - 1}")
        for name, val, valid in (
            ("crop", self.crop, ("center", "none")),
            ("prediction_type", self.prediction_type, ("epsilon", "v_prediction")),
            ("beta_schedule", self.beta_schedule, ("linear", "squaredcos_cap_v2")),
        ):
            if val not in valid:
                raise ConfigError(f"{name} {val!r} not one of {', '.join(valid)}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ConfigError(f"p_uncond {self.p_uncond} must be in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay {self.ema_decay} must be in [0, 1)")
        small = [n for n in ("layers_per_block", "norm_num_groups", "num_train_timesteps") if getattr(self, n) < 1]
        if self.train.max_steps is None:
            small.append("train.max_steps (steps)")
        if self.num_classes < 0:
            small.append("num_classes")
        if small:
            raise ConfigError(
                f"{', '.join(small)} must be >= 1" if "num_classes" not in small else "num_classes must be >= 0"
            )


PRESETS: Registry[dict[str, Any]] = Registry("synth preset")
# CPU smoke run: 32 px, two levels, trains a few hundred steps in minutes on one core.
PRESETS.add(
    "tiny",
    dict(
        image_size=32,
        block_out_channels=[32, 64],
        attention_levels=[],
        layers_per_block=1,
        norm_num_groups=8,
        batch_size=16,
        steps=500,
        warmup_steps=50,
        save_every=100,
        ema_decay=0.99,
    ),
)
# A small GPU model (minutes to an hour on one GPU).
PRESETS.add(
    "small",
    dict(
        image_size=64,
        block_out_channels=[64, 128, 256],
        attention_levels=[2],
        layers_per_block=2,
        batch_size=64,
        steps=30000,
        precision="bf16",
    ),
)
# The paper's generator stage: 128 px base model (the official Imagen goes 64 -> 256 px with a super-resolution
# stage; one 128-px U-Net is the single-stage equivalent here).
PRESETS.add(
    "base",
    dict(
        image_size=128,
        block_out_channels=[128, 128, 256, 256, 512],
        attention_levels=[3, 4],
        layers_per_block=2,
        batch_size=64,
        steps=100000,
        precision="bf16",
        ema_decay=0.9999,
    ),
)
PRESETS.add(
    "large",
    dict(
        image_size=256,
        block_out_channels=[128, 128, 256, 256, 512, 512],
        attention_levels=[4, 5],
        layers_per_block=2,
        batch_size=32,
        steps=200000,
        precision="bf16",
        ema_decay=0.9999,
    ),
)


def resolve_config(
    preset: str | None = None, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> GeneratorConfig:
    """Defaults < preset < YAML file < overrides (``None`` values in ``overrides`` are ignored).

    Keys may be flat (``steps``, ``lr``, ``output``: the old names reach the ``train`` section), dotted
    (``train.lr``) or nested; unknown keys are named with the valid ones.
    """
    base = dict(PRESETS.get(preset)) if preset else None
    return load_config(GeneratorConfig, config_file, base=base, **dict(overrides or {}))
