"""Typed configuration of dense runs: the task's settings, the loop's ``train: TrainConfig`` nested, run facts typed.

The resolved configuration is saved as ``dense.yaml`` in the run folder; prediction rebuilds the model from it.
Old flat run files (loop settings at the top level, run facts in an ``extra:`` mapping) still load: the spine maps
flat loop keys into ``train`` and ``extra`` into ``state`` (:attr:`DenseConfig.config_aliases`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import check_choices
from ..config import load_config as _load
from ..config import save_config as _save
from ..engine.config import TrainConfig
from ..errors import ConfigError

__all__ = [
    "CONTRAST_MODES",
    "FOV_MODES",
    "TASKS",
    "DenseConfig",
    "DenseState",
    "LandmarkPredictConfig",
    "SegmentPredictConfig",
    "contrast_channels",
    "contrast_parts",
    "dense_train_defaults",
    "load_config",
    "model_names",
    "save_config",
]

TASKS = ("segment", "landmark")
FOV_MODES = ("auto", "estimate", "none")  # or a folder of FOV masks
CONTRAST_MODES = ("none", "standardize", "clahe", "green_clahe")  # visionfm.dense.transforms.normalise_contrast
GREY_MODES = ("green_clahe",)  # one grey channel when stacked (three equal channels alone, for 3-channel encoders)


def contrast_parts(mode: str) -> list[str]:
    """The modes of a contrast setting: ``"standardize"`` -> one, ``"standardize+green_clahe"`` -> a stack of views.

    Raises:
        ConfigError: an unknown mode, ``none`` inside a stack, or a mode stacked twice.
    """
    parts = str(mode).split("+")
    for p in parts:
        if p not in CONTRAST_MODES:
            raise ConfigError(f"contrast: {p!r} is not one of {list(CONTRAST_MODES)} (stack views with '+')")
    if len(parts) > 1 and ("none" in parts or len(set(parts)) < len(parts)):
        raise ConfigError(f"contrast: {mode!r}: stack distinct modes other than none, e.g. standardize+green_clahe")
    return parts


def contrast_channels(mode: str) -> int:
    """Input channels a contrast setting gives: 3 for one mode; a stack: 3 per colour view, 1 per grey view."""
    parts = contrast_parts(mode)
    return 3 if len(parts) == 1 else sum(1 if p in GREY_MODES else 3 for p in parts)


def model_names() -> list[str]:
    """The registered dense models (lazy: the registry lives with the torch modules)."""
    from .decoders import DENSE_MODELS

    return DENSE_MODELS.names()


def _mask_kinds() -> tuple[str, ...]:
    from .data import MASK_KINDS

    return MASK_KINDS


def dense_train_defaults() -> TrainConfig:
    """The loop settings of a dense run unless configured: short CPU-sized schedules, a checkpoint every 100 steps.

    Random-crop epochs are a few steps long, so ``checkpoint_last.pth`` (the whole model, frozen encoder included)
    is written every ``checkpoint_every`` steps rather than every epoch (``checkpoint_epochs`` is large).
    """
    return TrainConfig(
        output_dir="",
        epochs=50,
        batch_size=4,
        lr=1e-3,
        weight_decay=1e-4,
        warmup_epochs=1.0,
        checkpoint_every=100,
        keep_last=0,
        checkpoint_epochs=100000,
        log_every=10,
    )


@dataclass
class DenseState:
    """Facts a training run fills in and prediction reads back (never set by the user).

    Attributes:
        out_channels: K, the number of output maps (classes or landmarks).
        names: the class / landmark names, one per output map.
        mean: normalisation mean (RGB) the model was trained with.
        std: normalisation std (RGB).
        encoder: the ViT's architecture (``ViTConfig`` as a dict); None for the U-Net.
        encoder_source: the weights file the encoder came from.
        train_images: the images trained on.
        val_images: the images model selection was done on (empty: no validation, last weights kept).
        selected_step: optimizer step of the weights in ``model.safetensors`` (the best on validation, else last).
        selected_metric: the validation value at that step.
        thresholds: per-class probability thresholds chosen on the validation images at the selected step
            (``tune_thresholds``); ``segment predict`` uses them unless given ``--threshold``.
    """

    out_channels: int | None = None
    names: list[str] = field(default_factory=list)
    mean: list[float] | None = None
    std: list[float] | None = None
    encoder: dict[str, Any] | None = None
    encoder_source: str | None = None
    train_images: list[str] = field(default_factory=list)
    val_images: list[str] = field(default_factory=list)
    selected_step: int | None = None
    selected_metric: float | None = None
    thresholds: list[float] | None = None


def _h(text: str, **meta: Any) -> dict:
    return {"help": text, **meta}


@dataclass
class DenseConfig:
    """One segmentation or landmark training run (``task`` is set by the command: segment or landmark).

    ``classes`` of a landmark run are the landmark names (official .npy heatmaps carry none). With ``crop`` images
    keep their native resolution (optionally scaled to ``max_side``), training draws random windows and prediction
    runs whole images padded to a multiple of 32, so thin vessels survive.
    """

    config_aliases: ClassVar[dict[str, str]] = {"extra": "state", "output": "train.output_dir"}

    task: str = field(default="segment", metadata=_h("segment or landmark", choices=TASKS, cli=False))
    data: str = field(default="", metadata=_h("dataset root (DRIVE/CHASE_DB1/IDRiD/ORIGA layouts) or image folder"))
    split: str = field(default="training", metadata=_h("split folder name (DRIVE 'training', IDRiD 'train')"))
    masks: str | None = field(default=None, metadata=_h("mask folder (default: found under --data)"))
    fov: str | None = field(
        default=None,
        metadata=_h(
            "field of view: a folder of FOV masks, 'auto' (the DRIVE-style 'mask' folder when there is one, else "
            "estimated for fundus images), 'estimate' (always estimated) or 'none' (no FOV); default auto"
        ),
    )
    kind: str | None = field(
        default=None,
        metadata=_h(
            "mask style: binary, per-class, labelmap or nested (label map whose classes lie inside each other, e.g. "
            "ORIGA 0/1 disc/2 cup); default detected",
            choices=_mask_kinds,
        ),
    )
    classes: list[str] | None = field(
        default=None,
        metadata=_h(
            "class names (per-class: sub-folder names; label maps: names of values 1..C-1; landmarks: names)",
            flag=("--names",),
        ),
    )
    resize_masks: bool = field(
        default=False, metadata=_h("allow masks at another resolution than the image (resampled by area)")
    )
    labels: str | None = field(
        default=None,
        metadata=_h("landmark labels: CSV (image,<name>_x,<name>_y,...), JSON or folder of <stem>.npy heatmaps"),
    )
    subset: str | None = field(default=None, metadata=_h("'n' = first n images (few-shot) or 'start:end'"))
    weights: str | None = field(default=None, metadata=_h("encoder weights (frozen unless --finetune)"))
    modality: str | None = field(
        default=None, metadata=_h("imaging modality (normalisation; Fundus enables the estimated field of view)")
    )
    model: str = field(
        default="unetr",
        metadata=_h("dense model (unet: the U-Net baseline, no encoder)", choices=model_names, flag=("--decoder",)),
    )
    finetune: bool = field(default=False, metadata=_h("train the encoder too (at 0.1x the decoder's rate)"))
    encoder_precision: str = field(
        default="fp32",
        metadata=_h(
            "precision of the frozen encoder's forward pass (bf16 uses AMX/tensor cores; the decoder keeps "
            "--precision)",
            choices=("fp32", "bf16"),
        ),
    )
    input_size: int = field(default=512, metadata=_h("square training/prediction side in pixels"))
    crop: int | None = field(
        default=None,
        metadata=_h(
            "train on random crops of this side at native resolution and predict whole images, instead of resizing"
        ),
    )
    max_side: int | None = field(
        default=None,
        metadata=_h("with --crop: first scale images down so the longer side is at most this (IDRiD's 4288x2848)"),
    )
    fov_diameter: int | None = field(
        default=None,
        metadata=_h(
            "with --crop: rescale every image (training and prediction) so its field of view is this many pixels "
            "across (DRIVE's is ~540), so vessel widths match across cameras; the FOV is given or estimated"
        ),
    )
    contrast: str = field(
        default="none",
        metadata=_h(
            "contrast normalisation of every image inside the FOV: none, standardize (each channel to mean 0.5, sd "
            "0.2), clahe (CLAHE on Lab lightness, then standardised) or green_clahe (CLAHE on the green channel as "
            "a grey image, then standardised); '+' stacks views as input channels (U-Net only), e.g. "
            "standardize+green_clahe: colour for bright lesions + a CLAHE'd green channel for dark ones (4 channels)"
        ),
    )
    unet_width: int = field(
        default=16,
        metadata=_h("U-Net channels at full resolution, doubled at each of its 5 levels (16: 16..256; cost ~width^2)"),
    )
    fg_crop: float = field(
        default=0.0,
        metadata=_h(
            "with --crop: probability of a window around a labelled pixel (foreground oversampling for rare lesions)"
        ),
    )
    border_crop: float = field(
        default=0.1,
        metadata=_h(
            "with --crop: probability of a window around the edge of "
            "the field of view (the outside is learned as background)"
        ),
    )
    hard_crop: float = field(
        default=0.0,
        metadata=_h(
            "with --crop: probability of a window around a hard negative, an unlabelled dark thin structure (black "
            "top-hat of the green channel inside the FOV: vessels), so dark lesions are not learned as 'dark'"
        ),
    )
    loss: str = field(
        default="dice_focal",
        metadata=_h(
            "segmentation loss: dice_focal (soft Dice + focal, gamma 2), dice_bce (soft Dice + BCE: calibrated "
            "probabilities, vessels) or tversky_focal (Tversky 0.3/0.7 weighing misses over "
            "false alarms + positive-weighted focal: rare lesions)",
            choices=("dice_focal", "dice_bce", "tversky_focal"),
        ),
    )
    sigma: float = field(default=4.0, metadata=_h("landmark Gaussian sigma in input pixels"))
    augment: bool = field(default=True, metadata=_h("joint flips/rotation/zoom/intensity augmentation"))
    val_fraction: float = field(
        default=0.0,
        metadata=_h(
            "carve this fraction of the training images (at least 1) for model selection; 0 and no --val-data: keep "
            "the last weights"
        ),
    )
    val_data: str | None = field(default=None, metadata=_h("a separate validation set (same layout options)"))
    val_split: str | None = field(default=None, metadata=_h("split of --val-data (default: --split)"))
    val_every: int = field(default=50, metadata=_h("optimizer steps between validations (with validation)"))
    tune_thresholds: bool = field(
        default=False,
        metadata=_h(
            "choose each class's probability threshold on the validation images (the one maximising pooled Dice), "
            "select the step by that Dice and keep the thresholds for prediction (rare lesions: 0.5 rarely fits)"
        ),
    )
    train: TrainConfig = field(default_factory=dense_train_defaults)
    state: DenseState = field(default_factory=DenseState, metadata={"cli": False})

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("input_size", "crop", "max_side", "val_every", "fov_diameter"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive whole number, got {v!r}")
        if self.sigma <= 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma}")
        for name in ("fg_crop", "border_crop", "hard_crop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a probability, got {getattr(self, name)}")
        if self.fg_crop + self.border_crop + self.hard_crop > 1.0 + 1e-9:
            raise ConfigError("fg_crop + border_crop + hard_crop must not exceed 1 (they share the windows)")
        if len(contrast_parts(self.contrast)) > 1 and self.model != "unet":
            raise ConfigError(f"contrast {self.contrast!r} stacks views as extra input channels: only --unet uses it")
        if self.unet_width < 1:
            raise ConfigError(f"unet_width must be a positive whole number, got {self.unet_width}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.tune_thresholds and not self.validates:
            raise ConfigError("tune_thresholds needs validation images: set val_fraction or val_data")
        for name in ("max_side", "fov_diameter"):
            if getattr(self, name) and not self.crop:
                raise ConfigError(f"{name} goes with crop (resized inputs already have a fixed size: input_size)")

    @property
    def output_dir(self) -> str:
        """The run folder (``train.output_dir``)."""
        return self.train.output_dir

    @property
    def validates(self) -> bool:
        return self.val_fraction > 0 or bool(self.val_data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, **overrides: Any) -> DenseConfig:
    """Defaults <- YAML file <- non-None keyword overrides (flat loop names such as ``lr`` reach ``train``)."""
    return _load(DenseConfig, path, **overrides)


def save_config(cfg: DenseConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    _save(cfg, path)


@dataclass
class SegmentPredictConfig:
    """Options of ``segment predict`` (the label options are those of training; default: detected / the run's)."""

    run: str = field(default="", metadata=_h("a run folder from 'segment train'"))
    data: str = field(default="", metadata=_h("dataset root or image folder (any layout with --masks etc.)"))
    output: str = field(default="", metadata=_h("folder for masks, overlays, metrics.json and per_image.csv"))
    split: str = field(default="test", metadata=_h("split folder name"))
    subset: str | None = field(default=None, metadata=_h("'n' = first n images or 'start:end'"))
    device: str = field(default="auto", metadata=_h("cpu, cuda or auto"))
    threshold: float | None = field(
        default=None,
        metadata=_h(
            "probability above which a pixel is positive, for every class (default: the run's per-class thresholds "
            "chosen on validation, else 0.5)"
        ),
    )
    eval: bool = field(
        default=True, metadata=_h("score against labels when there are some (--no-eval: only write masks)")
    )
    masks: str | None = field(default=None, metadata=_h("mask folder (default: found under --data)"))
    fov: str | None = field(
        default=None, metadata=_h("FOV mask folder, auto, estimate or none (default: auto, or the run's estimate/none)")
    )
    kind: str | None = field(default=None, metadata=_h("mask style (default: the run's)", choices=_mask_kinds))
    classes: list[str] | None = field(
        default=None, metadata=_h("class names / per-class sub-folders (default: the run's)", flag=("--names",))
    )
    resize_masks: bool | None = field(
        default=None, metadata=_h("allow masks at another resolution (default: the run's setting)")
    )
    save_probabilities: bool = field(default=False, metadata=_h("also write <name>_prob.png (probability x 255)"))
    tta: bool = field(default=False, metadata=_h("test-time augmentation: average the image and its two mirrors"))
    drop_elongated: list[str] | None = field(
        default=None,
        metadata=_h(
            "CLASS=LIMIT ...: remove that class's predicted components whose area exceeds LIMIT times their largest "
            "inscribed disc (vessel-like false positives of blob-like lesions, e.g. HE=6; choose LIMIT on validation)"
        ),
    )
    cdr: bool = field(
        default=False,
        metadata=_h("write cdr.csv: vertical and area cup-to-disc ratio from the first two classes (disc, cup)"),
    )
    expert_cdr: str | None = field(
        default=None, metadata=_h("CSV with an image column and exp_cdr/cdr: MAE of the vertical CDR (implies --cdr)")
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")


@dataclass
class LandmarkPredictConfig:
    """Options of ``landmark predict``."""

    run: str = field(default="", metadata=_h("a run folder from 'landmark train'"))
    data: str = field(default="", metadata=_h("image folder"))
    output: str = field(default="", metadata=_h("folder for landmarks.csv, plots, metrics.json, per_image.csv"))
    labels: str | None = field(
        default=None, metadata=_h("true landmarks (CSV, JSON or .npy heatmaps) for the radial errors")
    )
    names: list[str] | None = field(default=None, metadata=_h("landmark names (for .npy heatmaps, which carry none)"))
    subset: str | None = field(default=None, metadata=_h("'n' = first n images or 'start:end'"))
    decode: str = field(default="argmax", metadata=_h("heatmap decoding", choices=("argmax", "soft")))
    device: str = field(default="auto", metadata=_h("cpu, cuda or auto"))

    def __post_init__(self) -> None:
        check_choices(self)
