"""Every knob of iBOT pretraining with the official VisionFM defaults (``main_pretrain.py`` and its run script).

The defaults reproduce the official ViT-B/16 fundus run: 224-px global crops (scale 0.32-1, ratio 0.8-1.2), no
local crops, shared iBOT head with a weight-normalised last layer of 8192 prototypes, block masking with a ratio
of 0 or U(0.1, 0.5) per image, AdamW at 7.5e-5 per 256 images, cosine weight decay 0.04 -> 0.4, teacher EMA
0.996 -> 1, clipping 3.0 per parameter, drop-path 0.1. Everything is overridable from YAML or the command line.

Data sources:
    ``data`` lists real image folders (recursive, mixed extensions) or CSV manifests (``path`` column). An entry
    may be prefixed with its modality, ``"OCT=/data/oct"``, to pretrain one encoder on several modalities; entries
    without a prefix have ``modality``. Each image is normalised with its own modality's statistics.
    ``synthetic`` lists folders of synthetic images mixed in at ``synthetic_ratio`` synthetic images per real
    image in every epoch (5.0 means 1:5). Synthetic only (0:1): leave ``data`` empty and give ``synthetic``;
    each epoch is then every synthetic image once. Real only (1:0): no ``synthetic``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..modalities import canonical_modality

__all__ = ["PretrainConfig", "PRECISIONS", "CLIP_MODES", "BAD_IMAGE_POLICIES", "RUN_CONFIG"]

RUN_CONFIG = "pretrain.yaml"  # the resolved PretrainConfig, written into every run folder

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLIP_MODES = ("per_param", "global")
BAD_IMAGE_POLICIES = ("skip", "fail")


@dataclass
class PretrainConfig:
    """iBOT pretraining configuration; saved as ``pretrain.yaml`` in the run folder.

    Attributes:
        data: real image folders / CSV manifests, optionally ``"Modality=path"``.
        modality: modality of unprefixed ``data`` entries and of synthetic images; recorded in the export.
        synthetic: folders of synthetic images (or None).
        synthetic_ratio: synthetic images per real image in every epoch (e.g. 5.0 for 1:5); None with both
            sources uses every image of each once per epoch.
        on_bad_image: ``"skip"`` a corrupt image (counted, logged by path in ``bad_images.txt``) or ``"fail"``.
        load_size: decode images so their shorter side is about this many pixels (JPEG draft mode, then a
            bicubic downscale) before cropping; None keeps full resolution (official).
        arch: registered encoder architecture (``visionfm.list_archs()``).
        patch_size: override the architecture's patch size (None: the architecture's).
        init_from: continue pretraining from these encoder weights (official VisionFM, RETFound, DINOv2, safetensors).
        drop_path: student stochastic-depth rate.
        grad_checkpointing: recompute block activations in backward (memory for ViT-L).
        out_dim: prototypes of the CLS head.
        patch_out_dim: prototypes of the patch head (equal to ``out_dim`` when a head is shared).
        head_hidden_dim: hidden width of the head MLP.
        head_bottleneck_dim: bottleneck width before the weight-normalised last layer.
        head_layers: MLP layers of the head.
        shared_head: student uses one last layer for CLS and patch tokens (official run script: True).
        shared_head_teacher: teacher shares its last layer (official default: True).
        norm_last_layer: freeze the weight-norm magnitude of the last layer at 1.
        freeze_last_layer: epochs during which the last layer gets no update.
        mim: masked-image modelling on (iBOT); False gives DINO (CLS self-distillation only).
        pred_ratio: mask ratio(s); with several, one is chosen per image.
        pred_ratio_var: half-width of the uniform jitter around each ratio (0: fixed).
        pred_aspect_min: block aspect ratios are drawn log-uniformly in [min, 1/min].
        pred_shape: ``"block"`` (BEiT) or ``"rand"`` masking.
        pred_start_epoch: first epoch with masking.
        lambda1: weight of the CLS loss.
        lambda2: weight of the masked-patch loss.
        koleo_weight: weight of DINOv2's KoLeo regulariser on the student CLS tokens, summed over the global views
            (0: off, as iBOT; DINOv2 uses 0.1). It keeps the features of a batch from crowding together.
        student_temp: student softmax temperature.
        warmup_teacher_temp: CLS teacher temperature at epoch 0.
        teacher_temp: CLS teacher temperature after warm-up.
        warmup_teacher_patch_temp: patch teacher temperature at epoch 0.
        teacher_patch_temp: patch teacher temperature after warm-up.
        warmup_teacher_temp_epochs: epochs of the linear teacher-temperature warm-up.
        center_momentum: momentum of the CLS and patch centres.
        momentum_teacher: teacher EMA momentum at step 0 (cosine to 1 over the run).
        global_size: global crop side in pixels.
        global_scale: RandomResizedCrop area range of global crops.
        global_ratio: RandomResizedCrop aspect range of global crops.
        local_crops: number of local crops (0: none, as the official run).
        local_size: local crop side.
        local_scale: RandomResizedCrop area range of local crops.
        color_jitter: colour-jitter strengths (brightness, contrast, saturation, hue); all 0: none.
        color_jitter_p: probability of colour jitter per view.
        grayscale_p: probability of grayscale conversion per view.
        blur_p: Gaussian-blur probability of global view 1, the other global views and the local views.
        solarize_p: solarisation probability of the same three kinds of view.
        epochs: training epochs.
        max_steps: stop after this many optimizer steps (overrides ``epochs``).
        batch_size: images per process per micro-batch.
        lr: peak learning rate per 256 images (scaled by the effective batch).
        min_lr: final learning rate.
        warmup_epochs: linear lr warm-up (capped at half the run, with a warning).
        weight_decay: initial weight decay (cosine to ``weight_decay_end``).
        weight_decay_end: final weight decay.
        clip_grad: gradient clipping threshold (0 or None: off).
        clip_mode: ``"per_param"`` (official: each parameter's gradient norm) or ``"global"``.
        accum_steps: micro-batches per optimizer step.
        precision: ``"auto"`` (bf16 on CUDA, else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        compile: ``torch.compile`` the training step.
        output: run folder (checkpoints, logs, ``encoder.safetensors``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        seed: seed of everything (same seed, same weights on CPU).
        num_workers: image-decoding processes per training process.
        checkpoint_every: also checkpoint every N optimizer steps (0: epoch ends only).
        keep_last: step checkpoints kept.
        log_every: optimizer steps between log lines.
        progress: show a progress bar.
    """

    data: list[str] = field(default_factory=list)
    modality: str = "Fundus"
    synthetic: list[str] | None = None
    synthetic_ratio: float | None = None
    on_bad_image: str = "skip"
    load_size: int | None = None
    arch: str = "vit_base_patch16"
    patch_size: int | None = None
    init_from: str | None = None
    drop_path: float = 0.1
    grad_checkpointing: bool = False
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
    pred_shape: str = "block"
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
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 7.5e-5
    min_lr: float = 2e-6
    warmup_epochs: float = 50.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float | None = 3.0
    clip_mode: str = "per_param"
    accum_steps: int = 1
    precision: str = "auto"
    compile: bool = False
    output: str = "runs/pretrain"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 4
    checkpoint_every: int = 0
    keep_last: int = 2
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        self.data = [str(d) for d in (self.data or [])]
        if self.synthetic is not None:
            self.synthetic = [str(d) for d in self.synthetic] or None
        self.pred_ratio = _as_list(self.pred_ratio)
        self.pred_ratio_var = _as_list(self.pred_ratio_var)
        for name in ("global_scale", "global_ratio", "local_scale", "color_jitter", "blur_p", "solarize_p"):
            setattr(self, name, [float(v) for v in getattr(self, name)])
        self._validate()

    def _validate(self) -> None:  # noqa: C901 - a flat list of independent checks
        _choice("precision", self.precision, PRECISIONS)
        _choice("clip_mode", self.clip_mode, CLIP_MODES)
        _choice("on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)
        _choice("pred_shape", self.pred_shape, ("block", "rand"))
        canonical_modality(self.modality)  # raises on an unknown modality, listing the valid ones
        if not self.data and not self.synthetic:
            raise ValueError("no training data: give data (real image folders) and/or synthetic folders")
        if self.synthetic_ratio is not None:
            if not self.synthetic:
                raise ValueError(f"synthetic_ratio={self.synthetic_ratio} needs synthetic folders")
            if not self.data:
                raise ValueError("synthetic only (0:1): leave synthetic_ratio unset when data is empty")
            if not (self.synthetic_ratio > 0 and math.isfinite(self.synthetic_ratio)):
                raise ValueError(f"synthetic_ratio must be a positive number (synthetic per real image), "
                                 f"got {self.synthetic_ratio}")
        for name in ("epochs", "batch_size", "accum_steps", "global_size", "out_dim", "patch_out_dim",
                     "head_hidden_dim", "head_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.local_crops < 0 or (self.local_crops and self.local_size < 1):
            raise ValueError(f"local_crops must be >= 0 with local_size >= 1, got {self.local_crops}, "
                             f"{self.local_size}")
        if len(self.pred_ratio_var) not in (1, len(self.pred_ratio)):
            raise ValueError(f"pred_ratio_var {self.pred_ratio_var} must have one value or one per pred_ratio "
                             f"{self.pred_ratio}")
        for r, v in zip(self.pred_ratio, self.pred_ratios_var()):
            if not (0 <= r - v and r + v < 1):
                raise ValueError(f"pred_ratio {r} +- {v} must stay within [0, 1)")
        if not 0 < self.pred_aspect_min <= 1:
            raise ValueError(f"pred_aspect_min must be in (0, 1], got {self.pred_aspect_min}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must be 0 < min <= max <= 1, got {getattr(self, name)}")
        if not 0 < self.global_ratio[0] <= self.global_ratio[1]:
            raise ValueError(f"global_ratio must be 0 < min <= max, got {self.global_ratio}")
        if self.koleo_weight < 0 or (self.koleo_weight and self.batch_size < 2):
            raise ValueError(f"koleo_weight must be >= 0 (and needs batch_size >= 2), got {self.koleo_weight}")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        self._validate_photometry()
        if self.load_size is not None and self.load_size < self.global_size:
            raise ValueError(f"load_size {self.load_size} is smaller than global_size {self.global_size}")

    def _validate_photometry(self) -> None:
        if len(self.color_jitter) != 4 or not all(0 <= v < 1 for v in self.color_jitter[:3]) \
                or not 0 <= self.color_jitter[3] <= 0.5:
            raise ValueError(f"color_jitter must be 4 strengths (brightness, contrast, saturation in [0, 1), hue in "
                             f"[0, 0.5]), got {self.color_jitter}")
        for name in ("blur_p", "solarize_p"):
            v = getattr(self, name)
            if len(v) != 3 or not all(0 <= x <= 1 for x in v):
                raise ValueError(f"{name} must be 3 probabilities (global view 1, other global views, local "
                                 f"views), got {v}")
        for name in ("color_jitter_p", "grayscale_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")

    def pred_ratios_var(self) -> list[float]:
        """``pred_ratio_var`` with one value per ``pred_ratio``."""
        v = self.pred_ratio_var
        return v * len(self.pred_ratio) if len(v) == 1 else list(v)

    @property
    def effective_patch_out_dim(self) -> int:
        """Patch prototypes: ``out_dim`` whenever a head is shared (official rule)."""
        return self.out_dim if (self.shared_head or self.shared_head_teacher) else self.patch_out_dim


def _as_list(v: float | list[float]) -> list[float]:
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
