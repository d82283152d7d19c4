"""Every knob of self-supervised pretraining: iBOT with the official VisionFM defaults, or MAE with RETFound's.

The iBOT defaults reproduce the official ViT-B/16 fundus run (``main_pretrain.py`` and its run script): 224-px
global crops (scale 0.32-1, ratio 0.8-1.2), no local crops, shared iBOT head with a weight-normalised last layer of
8192 prototypes, block masking with a ratio of 0 or U(0.1, 0.5) per image, AdamW at 7.5e-5 per 256 images, cosine
weight decay 0.04 -> 0.4, teacher EMA 0.996 -> 1, clipping 3.0 per parameter, drop-path 0.1.

``method: mae`` switches to the MAE / RETFound recipe (``METHODS["mae"].preset``, applied between the class
defaults and the user's file and flags by :func:`pretrain_config`): one 224-px crop (scale 0.2-1, flip), random
masking of 75 % of the patches (85 % for OCT), decoder 512 wide x 8 blocks x 16 heads, normalised-pixel MSE loss,
AdamW (0.9, 0.95) at 1.5e-3 per 256 images, weight decay 0.05, 40 warm-up epochs then cosine, ImageNet statistics.

The loop's settings (epochs, batch, lr, schedules, precision, device, seed, run folder ...) are the nested ``train``
section, a :class:`visionfm.engine.TrainConfig`; old flat run files (``epochs: 100``, ``output: runs/x``) still load.

Data sources:
    ``data`` lists real image folders (recursive, mixed extensions) or CSV manifests (``path`` column). An entry
    may be prefixed with its modality, ``"OCT=/data/oct"``, to pretrain one encoder on several modalities; entries
    without a prefix have ``modality``. Each image is normalised with its own modality's statistics (iBOT).
    ``synthetic`` lists folders of synthetic images mixed in at ``synthetic_ratio`` synthetic images per real
    image in every epoch (5.0 means 1:5). Synthetic only (0:1): leave ``data`` empty and give ``synthetic``;
    each epoch is then every synthetic image once. Real only (1:0): no ``synthetic``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import check_choices, load_config
from ..engine.config import TrainConfig
from ..modalities import canonical_modality
from ..registry import Registry

__all__ = [
    "BAD_IMAGE_POLICIES",
    "CLIP_MODES",
    "MAE_MASK_RATIOS",
    "METHODS",
    "NORM_STATS",
    "RUN_CONFIG",
    "Method",
    "PretrainConfig",
    "ibot_train_defaults",
    "pretrain_config",
]

RUN_CONFIG = "pretrain.yaml"  # the resolved PretrainConfig, written into every run folder (the run's only config)

CLIP_MODES = ("per_param", "global")
BAD_IMAGE_POLICIES = ("skip", "fail")
NORM_STATS = ("auto", "modality", "imagenet")
# RETFound: 0.75 for colour fundus photographs, 0.85 for OCT B-scans; every other modality takes MAE's 0.75.
MAE_MASK_RATIOS = {"OCT": 0.85}
MAE_DEFAULT_MASK_RATIO = 0.75


@dataclass(frozen=True)
class Method:
    """A pretraining objective: its description, its preset (dotted config keys over the class defaults) and how
    many global crops an image gives per step.

    Attributes:
        name: registry name (``--method``).
        description: one line for the docs and ``--help``.
        preset: settings that differ from :class:`PretrainConfig`'s (iBOT) defaults, as dotted keys.
        global_views: global crops per image and step.
        encoders: which encoder of the task's state dict -> its key prefix; the first is the one exported.
    """

    name: str
    description: str
    preset: Mapping[str, Any]
    global_views: int
    encoders: Mapping[str, str]


METHODS: Registry[Method] = Registry("pretraining method")
METHODS.add(
    "ibot",
    Method(
        "ibot",
        "iBOT self-distillation with masked image modelling (VisionFM; DINO with --no-mim)",
        {},
        2,
        {"teacher": "teacher.backbone.", "student": "student.backbone."},
    ),
)
METHODS.add(
    "mae",
    Method(
        "mae",
        "masked autoencoder, normalised-pixel reconstruction of masked patches (RETFound)",
        {
            "train.lr": 1.5e-3,
            "train.min_lr": 0.0,
            "train.warmup_epochs": 40.0,
            "train.weight_decay": 0.05,
            "train.weight_decay_end": None,
            "train.betas": [0.9, 0.95],
            "train.clip_grad": None,
            "train.epochs": 800,
            "train.batch_size": 64,
            "global_scale": [0.2, 1.0],
            "global_ratio": [0.75, 4 / 3],
            "drop_path": 0.0,
            "norm_stats": "imagenet",
        },
        1,
        {"encoder": "encoder."},
    ),
)


def ibot_train_defaults() -> TrainConfig:
    """The loop settings of the official iBOT run: 100 epochs, 128 images per process, 7.5e-5 per 256 images,
    cosine to 2e-6 after 50 warm-up epochs, weight decay 0.04 -> 0.4, clipping 3.0, precision auto."""
    return TrainConfig(
        output_dir="runs/pretrain",
        epochs=100,
        batch_size=128,
        lr=7.5e-5,
        lr_base_batch=256,
        min_lr=2e-6,
        warmup_epochs=50.0,
        weight_decay=0.04,
        weight_decay_end=0.4,
        clip_grad=3.0,
        precision="auto",
        num_workers=4,
    )


def pretrain_config(path: str | Path | None = None, **overrides: Any) -> PretrainConfig:
    """Defaults < the chosen method's preset < YAML ``path`` < ``overrides`` (flat, dotted or nested keys).

    The way to build a config for another method than iBOT from Python::

        cfg = pretrain_config(method="mae", data=["fundus/"], output="runs/mae", epochs=10)
    """
    method = load_config(PretrainConfig, path, **overrides).method
    return load_config(PretrainConfig, path, base=METHODS.get(method).preset, **overrides)


@dataclass
class PretrainConfig:
    """Pretraining configuration; saved as ``pretrain.yaml`` in the run folder (the run's one resolved config).

    Attributes:
        method: pretraining objective, ``ibot`` or ``mae``; mae brings RETFound's defaults (lr 1.5e-3 per 256
            images, weight decay 0.05, 40 warm-up epochs, betas 0.9 0.95, no clipping, crops 0.2-1, 800
            epochs of 64 images, ImageNet statistics) under your settings.
        data: real image folders / CSV manifests, optionally ``"Modality=path"``.
        modality: modality of unprefixed ``data`` entries and of synthetic images; recorded in the export.
        synthetic: folders of synthetic images (or None).
        synthetic_ratio: synthetic images per real image in every epoch (e.g. 5.0 for 1:5); None with both
            sources uses every image of each once per epoch.
        on_bad_image: ``"skip"`` a corrupt image (counted, logged by path in ``bad_images.txt``) or ``"fail"``.
        load_size: decode images so their shorter side is about this many pixels (JPEG draft mode, then a
            bicubic downscale) before cropping; None keeps full resolution (official).
        norm_stats: input statistics: ``modality`` (each image's modality's), ``imagenet`` (RETFound), or ``auto``
            (imagenet for mae, modality for ibot); the export records them.
        arch: registered encoder architecture (``visionfm.list_archs()``).
        patch_size: override the architecture's patch size (None: the architecture's).
        init_from: continue pretraining from these encoder weights (official VisionFM, RETFound, DINOv2,
            safetensors); with mae, a RETFound/MAE file's decoder is continued too.
        drop_path: student stochastic-depth rate.
        grad_checkpointing: recompute block activations in backward (memory for ViT-L).
        mask_ratio: mae: fraction of patches hidden from the encoder (default by modality: 0.75, OCT 0.85).
        decoder_embed_dim: mae: decoder width.
        decoder_depth: mae: decoder blocks.
        decoder_num_heads: mae: decoder attention heads.
        norm_pix_loss: mae: regress each patch's pixels normalised by the patch's own mean and variance.
        out_dim: ibot: prototypes of the CLS head.
        patch_out_dim: ibot: prototypes of the patch head (equal to ``out_dim`` when a head is shared).
        head_hidden_dim: ibot: hidden width of the head MLP.
        head_bottleneck_dim: ibot: bottleneck width before the weight-normalised last layer.
        head_layers: ibot: MLP layers of the head.
        shared_head: ibot: student uses one last layer for CLS and patch tokens (official run script: True).
        shared_head_teacher: ibot: teacher shares its last layer (official default: True).
        norm_last_layer: ibot: freeze the weight-norm magnitude of the last layer at 1.
        freeze_last_layer: ibot: epochs during which the last layer gets no update.
        mim: ibot: masked-image modelling on; False gives DINO (CLS self-distillation only).
        pred_ratio: ibot: mask ratio(s); with several, one is chosen per image.
        pred_ratio_var: ibot: half-width of the uniform jitter around each ratio (0: fixed).
        pred_aspect_min: ibot: block aspect ratios are drawn log-uniformly in [min, 1/min].
        pred_shape: ibot: ``"block"`` (BEiT) or ``"rand"`` masking.
        pred_start_epoch: ibot: first epoch with masking.
        lambda1: ibot: weight of the CLS loss.
        lambda2: ibot: weight of the masked-patch loss.
        koleo_weight: ibot: weight of DINOv2's KoLeo regulariser on the student CLS tokens, summed over the global
            views (0: off, as iBOT; DINOv2 uses 0.1). It keeps the features of a batch from crowding together.
        student_temp: ibot: student softmax temperature.
        warmup_teacher_temp: ibot: CLS teacher temperature at epoch 0.
        teacher_temp: ibot: CLS teacher temperature after warm-up.
        warmup_teacher_patch_temp: ibot: patch teacher temperature at epoch 0.
        teacher_patch_temp: ibot: patch teacher temperature after warm-up.
        warmup_teacher_temp_epochs: ibot: epochs of the linear teacher-temperature warm-up.
        center_momentum: ibot: momentum of the CLS and patch centres.
        momentum_teacher: ibot: teacher EMA momentum at step 0 (cosine to 1 over the run).
        clip_mode: ibot: ``per_param`` (official: each parameter's gradient norm clipped at ``train.clip_grad``)
            or ``global`` (the loop's global-norm clipping).
        global_size: global crop side in pixels (mae: the one crop).
        global_scale: RandomResizedCrop area range of global crops.
        global_ratio: RandomResizedCrop aspect range of global crops.
        local_crops: ibot: number of local crops (0: none, as the official run).
        local_size: ibot: local crop side.
        local_scale: ibot: RandomResizedCrop area range of local crops.
        color_jitter: ibot: colour-jitter strengths (brightness, contrast, saturation, hue); all 0: none.
        color_jitter_p: ibot: probability of colour jitter per view.
        grayscale_p: ibot: probability of grayscale conversion per view.
        blur_p: ibot: Gaussian-blur probability of global view 1, the other global views and the local views.
        solarize_p: ibot: solarisation probability of the same three kinds of view.
        train: the training loop's settings (epochs, batch_size, lr per ``lr_base_batch`` images, schedules,
            precision, device, seed, output_dir ...); the warm-up is capped at half the run (with a warning).
    """

    config_aliases: ClassVar[dict[str, str]] = {"output": "train.output_dir", "steps": "train.max_steps"}

    method: str = field(default="ibot", metadata={"choices": METHODS.names})
    data: list[str] = field(default_factory=list)
    modality: str = "Fundus"
    synthetic: list[str] | None = None
    synthetic_ratio: float | None = None
    on_bad_image: str = field(default="skip", metadata={"choices": BAD_IMAGE_POLICIES})
    load_size: int | None = None
    norm_stats: str = field(default="auto", metadata={"choices": NORM_STATS})
    arch: str = "vit_base_patch16"
    patch_size: int | None = None
    init_from: str | None = None
    drop_path: float = 0.1
    grad_checkpointing: bool = False
    mask_ratio: float | None = None
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    norm_pix_loss: bool = True
    out_dim: int = 8192
    patch_out_dim: int = 8192
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    shared_head: bool = True
    shared_head_teacher: bool = True
    norm_last_layer: bool = True
    freeze_last_layer: int = 3
    mim: bool = True
    pred_ratio: list[float] = field(default_factory=lambda: [0.0, 0.3])
    pred_ratio_var: list[float] = field(default_factory=lambda: [0.0, 0.2])
    pred_aspect_min: float = 0.3
    pred_shape: str = field(default="block", metadata={"choices": ("block", "rand")})
    pred_start_epoch: int = 0
    lambda1: float = 1.0
    lambda2: float = 1.0
    koleo_weight: float = 0.0
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.07
    teacher_temp: float = 0.04
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    clip_mode: str = field(default="per_param", metadata={"choices": CLIP_MODES})
    global_size: int = 224
    global_scale: list[float] = field(default_factory=lambda: [0.32, 1.0])
    global_ratio: list[float] = field(default_factory=lambda: [0.8, 1.2])
    local_crops: int = 0
    local_size: int = 96
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    color_jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])
    solarize_p: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.0])
    train: TrainConfig = field(default_factory=ibot_train_defaults)

    def __post_init__(self) -> None:
        self.data = [str(d) for d in (self.data or [])]
        if self.synthetic is not None:
            self.synthetic = [str(d) for d in self.synthetic] or None
        self.pred_ratio = _as_list(self.pred_ratio)
        self.pred_ratio_var = _as_list(self.pred_ratio_var)
        for name in ("global_scale", "global_ratio", "local_scale", "color_jitter", "blur_p", "solarize_p"):
            setattr(self, name, [float(v) for v in getattr(self, name)])
        self._validate()

    def _validate(self) -> None:
        check_choices(self)
        canonical_modality(self.modality)  # raises on an unknown modality, listing the valid ones
        if not self.data and not self.synthetic:
            raise ValueError("no training data: give data (real image folders) and/or synthetic folders")
        if self.synthetic_ratio is not None:
            if not self.synthetic:
                raise ValueError(f"synthetic_ratio={self.synthetic_ratio} needs synthetic folders")
            if not self.data:
                raise ValueError("synthetic only (0:1): leave synthetic_ratio unset when data is empty")
            if not (self.synthetic_ratio > 0 and math.isfinite(self.synthetic_ratio)):
                raise ValueError(
                    f"synthetic_ratio must be a positive number (synthetic per real image), got {self.synthetic_ratio}"
                )
        for name in (
            "global_size",
            "out_dim",
            "patch_out_dim",
            "head_hidden_dim",
            "head_layers",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"decoder_embed_dim {self.decoder_embed_dim} is not divisible by decoder_num_heads "
                f"{self.decoder_num_heads}"
            )
        if self.mask_ratio is not None and not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.method == "mae" and self.local_crops:
            raise ValueError(
                f"local_crops={self.local_crops}: local crops are an iBOT setting; MAE trains on one "
                f"crop per image (leave local_crops at 0)"
            )
        if self.local_crops < 0 or (self.local_crops and self.local_size < 1):
            raise ValueError(
                f"local_crops must be >= 0 with local_size >= 1, got {self.local_crops}, {self.local_size}"
            )
        if len(self.pred_ratio_var) not in (1, len(self.pred_ratio)):
            raise ValueError(
                f"pred_ratio_var {self.pred_ratio_var} must have one value or one per pred_ratio {self.pred_ratio}"
            )
        for r, v in zip(self.pred_ratio, self.pred_ratios_var()):
            if not (r - v >= 0 and r + v < 1):
                raise ValueError(f"pred_ratio {r} +- {v} must stay within [0, 1)")
        if not 0 < self.pred_aspect_min <= 1:
            raise ValueError(f"pred_aspect_min must be in (0, 1], got {self.pred_aspect_min}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must be 0 < min <= max <= 1, got {getattr(self, name)}")
        if not 0 < self.global_ratio[0] <= self.global_ratio[1]:
            raise ValueError(f"global_ratio must be 0 < min <= max, got {self.global_ratio}")
        if self.koleo_weight < 0 or (self.koleo_weight and self.train.batch_size < 2):
            raise ValueError(f"koleo_weight must be >= 0 (and needs batch_size >= 2), got {self.koleo_weight}")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        self._validate_photometry()
        if self.load_size is not None and self.load_size < self.global_size:
            raise ValueError(f"load_size {self.load_size} is smaller than global_size {self.global_size}")

    def _validate_photometry(self) -> None:
        if (
            len(self.color_jitter) != 4
            or not all(0 <= v < 1 for v in self.color_jitter[:3])
            or not 0 <= self.color_jitter[3] <= 0.5
        ):
            raise ValueError(
                f"color_jitter must be 4 strengths (brightness, contrast, saturation in [0, 1), hue in "
                f"[0, 0.5]), got {self.color_jitter}"
            )
        for name in ("blur_p", "solarize_p"):
            v = getattr(self, name)
            if len(v) != 3 or not all(0 <= x <= 1 for x in v):
                raise ValueError(
                    f"{name} must be 3 probabilities (global view 1, other global views, local views), got {v}"
                )
        for name in ("color_jitter_p", "grayscale_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")

    def pred_ratios_var(self) -> list[float]:
        """``pred_ratio_var`` with one value per ``pred_ratio``."""
        v = self.pred_ratio_var
        return v * len(self.pred_ratio) if len(v) == 1 else list(v)

    @property
    def global_views(self) -> int:
        """Global crops per image and step: 2 for iBOT, 1 for MAE."""
        return METHODS.get(self.method).global_views

    @property
    def imagenet_stats(self) -> bool:
        """Whether inputs are normalised with ImageNet statistics instead of each image's modality's."""
        return self.norm_stats == "imagenet" or (self.norm_stats == "auto" and self.method == "mae")

    def mae_mask_ratio(self, modalities: list[str]) -> float:
        """``mask_ratio``, else RETFound's ratio of the run's modality (0.75; OCT 0.85).

        Raises:
            ValueError: a run over modalities with different defaults and no ``mask_ratio``.
        """
        if self.mask_ratio is not None:
            return self.mask_ratio
        ratios = {MAE_MASK_RATIOS.get(canonical_modality(m), MAE_DEFAULT_MASK_RATIO) for m in modalities}
        if len(ratios) > 1:
            raise ValueError(
                f"the modalities {sorted(modalities)} have different MAE mask ratios {sorted(ratios)}; "
                f"choose one with mask_ratio (--mask-ratio)"
            )
        return ratios.pop()

    @property
    def effective_patch_out_dim(self) -> int:
        """Patch prototypes: ``out_dim`` whenever a head is shared (official rule)."""
        return self.out_dim if (self.shared_head or self.shared_head_teacher) else self.patch_out_dim


def _as_list(v: float | list[float]) -> list[float]:
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]
