"""Typed configuration of dense runs: defaults in one place, overridable from YAML and the command line.

The resolved configuration is saved as ``dense.yaml`` in the run folder; prediction rebuilds the model from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import trainer as _engine

__all__ = ["TASKS", "DenseConfig", "load_config", "save_config"]

TASKS = ("segment", "landmark")


@dataclass
class DenseConfig:
    """One segmentation or landmark training run.

    Attributes:
        task: "segment" or "landmark".
        data: dataset root (see :func:`visionfm.dense.data.resolve_spec`) or image folder.
        split: split folder name ("training", "train", ...).
        masks / fov / kind / classes / resize_masks: segmentation label overrides (``classes`` of a landmark run:
            the landmark names, e.g. for official .npy heatmaps, which carry none).
        labels: landmark labels (CSV, JSON or folder of .npy heatmaps).
        subset: "n" (first n images: few-shot) or "start:end".
        weights: encoder weights; None with model "unet".
        modality: imaging modality (normalisation of the U-Net and of weights without one).
        model: "unetr", "linear" or "unet".
        finetune: train the encoder too (default frozen).
        input_size: square training/prediction side in pixels (images are resized to it).
        crop: instead of resizing, keep images at their native resolution, train on random ``crop``-px windows
            and predict whole images (padded to a multiple of 32): thin vessels survive.
        max_side: with ``crop``, first scale images down (aspect kept) so the longer side is at most this many
            pixels (IDRiD's 4288x2848 on a CPU); predictions are still written at the original resolution.
        fg_crop: with ``crop``, the probability that a training window is placed around a pixel of one of the
            image's classes (drawn uniformly) rather than anywhere: rare small lesions are seen in short runs.
        sigma: landmark Gaussian sigma in input pixels.
        augment: joint flips/rotation/zoom/intensity augmentation.
        output_dir ... num_workers: the shared engine's loop settings.
    """

    task: str = "segment"
    data: str = ""
    split: str = "training"
    masks: str | None = None
    fov: str | None = None
    kind: str | None = None
    classes: list[str] | None = None
    resize_masks: bool = False
    labels: str | None = None
    subset: str | None = None
    weights: str | None = None
    modality: str | None = None
    model: str = "unetr"
    finetune: bool = False
    input_size: int = 512
    crop: int | None = None
    max_side: int | None = None
    fg_crop: float = 0.0
    sigma: float = 4.0
    augment: bool = True
    output_dir: str = ""
    epochs: int = 50
    max_steps: int | None = None
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # facts filled in by training (classes, encoder config)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("input_size", "crop", "max_side", "epochs", "batch_size", "max_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive whole number, got {v!r}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if not 0.0 <= self.fg_crop <= 1.0:
            raise ValueError(f"fg_crop is a probability, got {self.fg_crop}")
        if self.max_side and not self.crop:
            raise ValueError("max_side goes with crop (resized inputs already have a fixed size: input_size)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, **overrides: Any) -> DenseConfig:
    """Defaults <- YAML file <- non-None keyword overrides (command-line values), via the engine's loader."""
    return _engine.load_config(DenseConfig, path, **overrides)


def save_config(cfg: DenseConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    _engine.save_config(cfg, path)
