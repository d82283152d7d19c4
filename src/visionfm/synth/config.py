"""Typed configuration of the image generator, with named presets and YAML / command-line overrides.

Precedence (lowest first): dataclass defaults < ``--preset`` < ``--config FILE.yaml`` < explicit command-line flags.
The resolved configuration is written as ``config.yaml`` beside every checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..registry import Registry

__all__ = ["GeneratorConfig", "PRESETS", "resolve_config", "load_yaml"]


@dataclass
class GeneratorConfig:
    """Everything that defines a generator training run.

    Attributes:
        data: image folder or ``.csv`` manifest (any layout :func:`visionfm.data.scan` reads), or a list of them.
        output: run folder (checkpoints, ``config.yaml``, ``log.jsonl``).
        layout: data layout (``auto``, ``tree``, ``imagenet``, ``vfm``, ``csv``).
        split: split of the official ``vfm`` layout.
        label_column: manifest column holding the class (``csv`` layout); ``None`` = ``label`` when present.
        conditional: learn p(image | class) from the collection's labels (class index 0..K-1).
        num_classes: number of classes; ``0`` = inferred from the labels.
        p_uncond: probability of replacing the class by the "no class" token during training, which enables
            classifier-free guidance at sampling time.
        image_size: square side of the generated images (pixels).
        crop: ``center`` (centre crop to a square, then resize: keeps the fundus round) or ``none`` (squash).
        block_out_channels: channels of each U-Net resolution level (one down/up block per level).
        attention_levels: which levels use self-attention blocks (indices into ``block_out_channels``).
        layers_per_block: ResNet layers per block.
        norm_num_groups: GroupNorm groups (must divide every channel count).
        num_train_timesteps: diffusion steps T of the DDPM forward process.
        beta_schedule: ``linear`` or ``squaredcos_cap_v2`` (cosine).
        prediction_type: ``epsilon`` or ``v_prediction``.
        steps: optimizer steps of the whole run (resuming continues up to this number).
        batch_size: images per step and process (a step sees ``batch_size * accum_steps * processes`` images).
        accum_steps: gradient-accumulation micro-batches per optimizer step.
        lr: AdamW peak learning rate (linear warm-up over ``warmup_steps``).
        min_lr: ``None`` keeps ``lr`` constant after the warm-up (DDPM practice; the EMA does the averaging);
            a number decays it along a half-cosine to that value at ``steps``.
        warmup_steps: warm-up length.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip (0 = off).
        ema_decay: decay of the exponential moving average of the weights (the EMA weights are sampled from).
        hflip: random horizontal flips (left/right eyes are mirror images).
        save_every: checkpoint interval in steps (a checkpoint is always written at the end).
        keep_checkpoints: how many numbered engine checkpoints to keep besides ``checkpoint_last.pth``.
        cache: decode every image once into memory (fast on small sets; turn off for very large ones).
        num_workers: image-decoding worker processes when ``cache`` is off.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast (fp16 with the engine's loss scaling).
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``.
        seed: random seed.
    """

    data: str | list[str] = ""
    output: str = "outputs/synth"
    layout: str = "auto"
    split: str = "training"
    label_column: str | None = None
    conditional: bool = False
    num_classes: int = 0
    p_uncond: float = 0.1
    image_size: int = 64
    crop: str = "center"
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    attention_levels: list[int] = field(default_factory=lambda: [2])
    layers_per_block: int = 2
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    steps: int = 20000
    batch_size: int = 32
    accum_steps: int = 1
    lr: float = 2e-4
    min_lr: float | None = None
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    hflip: bool = True
    save_every: int = 1000
    keep_checkpoints: int = 2
    cache: bool = True
    num_workers: int = 2
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot work."""
        if self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels-1) = "
                             f"{2 ** (len(self.block_out_channels) - 1)}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} not divisible by norm_num_groups {self.norm_num_groups}")
        if any(not 0 <= i < len(self.block_out_channels) for i in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels} outside 0..{len(self.block_out_channels) - 1}")
        for name, val, valid in (("crop", self.crop, ("center", "none")),
                                 ("prediction_type", self.prediction_type, ("epsilon", "v_prediction")),
                                 ("beta_schedule", self.beta_schedule, ("linear", "squaredcos_cap_v2")),
                                 ("precision", self.precision, ("fp32", "bf16", "fp16"))):
            if val not in valid:
                raise ValueError(f"{name} {val!r} not one of {', '.join(valid)}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond {self.p_uncond} must be in [0, 1)")
        small = [n for n in ("steps", "batch_size", "accum_steps", "save_every", "keep_checkpoints")
                 if getattr(self, n) < 1]
        if small:
            raise ValueError(f"{', '.join(small)} must be >= 1")


PRESETS: Registry[dict[str, Any]] = Registry("synth preset")
# CPU smoke run: 32 px, two levels, trains a few hundred steps in minutes on one core.
PRESETS.add("tiny", dict(image_size=32, block_out_channels=[32, 64], attention_levels=[], layers_per_block=1,
                         norm_num_groups=8, batch_size=16, steps=500, warmup_steps=50, save_every=100,
                         ema_decay=0.99))
# A small GPU model (minutes to an hour on one GPU).
PRESETS.add("small", dict(image_size=64, block_out_channels=[64, 128, 256], attention_levels=[2],
                          layers_per_block=2, batch_size=64, steps=30000, precision="bf16"))
# The paper's generator stage: 128 px base model (the official Imagen goes 64 -> 256 px with a super-resolution
# stage; one 128-px U-Net is the single-stage equivalent here).
PRESETS.add("base", dict(image_size=128, block_out_channels=[128, 128, 256, 256, 512], attention_levels=[3, 4],
                         layers_per_block=2, batch_size=64, steps=100000, precision="bf16", ema_decay=0.9999))
PRESETS.add("large", dict(image_size=256, block_out_channels=[128, 128, 256, 256, 512, 512],
                          attention_levels=[4, 5], layers_per_block=2, batch_size=32, steps=200000,
                          precision="bf16", ema_decay=0.9999))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config fields; unknown keys raise ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping of config fields, got {type(data).__name__}")
    _check_keys(data, str(path))
    return data


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(GeneratorConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown config field(s) {unknown}; valid: {sorted(known)}")


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: Mapping[str, Any] | None = None) -> GeneratorConfig:
    """Defaults < preset < YAML file < overrides (``None`` values in ``overrides`` are ignored)."""
    values: dict[str, Any] = {}
    if preset:
        values.update(PRESETS.get(preset))
    if config_file:
        values.update(load_yaml(config_file))
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(extra, "overrides")
    values.update(extra)
    cfg = GeneratorConfig(**values)
    cfg.validate()
    return cfg
