"""Fine-tuning recipes: registered presets of ``visionfm finetune`` (:data:`RECIPES`), and their augmentations.

A recipe is a set of defaults for :class:`~visionfm.recognition.finetune.FinetuneConfig` (applied beneath the YAML
file and the command line, so every value stays overridable) plus the selection metric per task kind. The
augmentation a recipe names is itself registered (:data:`AUGMENTATIONS`): a builder ``(cfg, mean, std) ->
batch -> batch`` run on the device inside the task.

* ``visionfm`` (default): the project's recipe: head lr x 0.1 for the encoder with layer decay 0.75, drop-path 0.1,
  CLS tokens of the last 4 blocks, random resized crop / flips / rotation / brightness-contrast, gradient clip 3.
* ``retfound``: RETFound's fine-tuning recipe (``main_finetune.py`` of rmaphoh/RETFound_MAE): layer-wise lr decay
  0.65, drop-path 0.2, base lr 5e-3 per 256 images (``train.lr_base_batch``), AdamW weight decay 0.05 (none on
  biases, norms, position embedding, CLS), 10 warm-up epochs then cosine to 1e-6 per iteration, global average
  pooling of the patch tokens + ``fc_norm`` (``--feature last`` for the CLS token), head init trunc-normal std 2e-5,
  RandAugment (2 ops, magnitude 9, magnitude noise sd 0.5), random erasing 0.25, label smoothing 0.1, optional
  mixup / cutmix (``--mix``), selection on validation by (macro-F1 + macro-AUROC + kappa) / 3 (regression: MAE),
  evaluation images resized to input / 0.875 and centre-cropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.images import resize_image
from ..models import VisionTransformer
from ..registry import Registry

__all__ = [
    "AUGMENTATIONS",
    "MIXES",
    "RECIPES",
    "CropPreprocess",
    "Recipe",
    "RetfoundAugment",
    "VisionfmAugment",
    "augment_batch",
    "layer_decay_groups",
]

MIXES = ("none", "mixup", "cutmix", "both")


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning preset.

    Attributes:
        name: registry name.
        description: one line for ``--help`` and the docs.
        defaults: FinetuneConfig values (dotted keys for the loop, e.g. ``train.lr``), beneath YAML and flags.
        select: task kind -> validation metric selecting the model (kinds not named use the task's default).
    """

    name: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    select: dict[str, str] = field(default_factory=dict)


RECIPES: Registry[Recipe] = Registry("fine-tuning recipe")
AUGMENTATIONS: Registry[Callable[..., Callable[[dict], dict]]] = Registry("augmentation")

RECIPES.add(
    "visionfm",
    Recipe(
        "visionfm",
        "VisionFM: encoder lr x0.1, layer decay 0.75, CLS of the last 4 blocks, "
        "geometric + photometric batch augmentation",
        {"augmentation": "visionfm"},
    ),
)
RECIPES.add(
    "retfound",
    Recipe(
        "retfound",
        "RETFound: layer decay 0.65, drop-path 0.2, blr 5e-3 x batch/256, GAP + fc_norm, RandAugment, "
        "random erasing, label smoothing 0.1, selection by (F1 + AUROC + kappa) / 3",
        {
            "augmentation": "retfound",
            "layer_decay": 0.65,
            "drop_path": 0.2,
            "encoder_lr_scale": 1.0,
            "feature": "patch",
            "head": "retfound",
            "label_smoothing": 0.1,
            "random_erasing": 0.25,
            "eval_crop": 0.875,
            "train.lr": 5e-3,
            "train.lr_base_batch": 256,
            "train.weight_decay": 0.05,
            "train.warmup_epochs": 10,
            "train.min_lr": 1e-6,
            "train.epochs": 50,
            "train.batch_size": 16,
            "train.clip_grad": 0.0,
        },
        {"classify": "f1_auroc_kappa", "regress": "mae"},
    ),
)


def layer_decay_groups(encoder: VisionTransformer, lr_scale: float, decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the encoder: block i of L at ``lr_scale * decay ** (L - i)``, embeddings (patch, position,
    CLS) at ``lr_scale * decay ** (L + 1)``, the final norm at ``lr_scale`` (a head beside it at scale 1, as
    RETFound's ``param_groups_lrd`` gives the head layer id L + 1); no weight decay on biases, norms and position /
    CLS tokens."""
    depth = len(encoder.blocks)
    skip = encoder.no_weight_decay()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in encoder.named_parameters():
        if not p.requires_grad:
            continue
        layer = (
            int(name.split(".")[1]) + 1 if name.startswith("blocks.") else depth + 1 if name.startswith("norm.") else 0
        )
        no_wd = p.ndim <= 1 or name in skip
        g = groups.setdefault(
            (layer, no_wd), {"params": [], "apply_wd": not no_wd, "lr_scale": lr_scale * decay ** (depth + 1 - layer)}
        )
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def augment_batch(
    x: Tensor, scale: tuple[float, float] = (0.6, 1.0), max_rotate: float = 10.0, jitter: float = 0.2
) -> Tensor:
    """Random resized crop, horizontal and vertical flips, rotation, brightness/contrast per image.

    Args:
        x: ``[B, 3, H, W]`` normalised images.

    Returns:
        ``[B, 3, H, W]`` augmented images (same normalisation; border filled with the image mean).
    """
    b, dev = x.shape[0], x.device
    s = torch.empty(b, device=dev).uniform_(*scale).sqrt()  # side scale of the crop
    ang = torch.empty(b, device=dev).uniform_(-max_rotate, max_rotate) * math.pi / 180
    flip = torch.where(torch.rand(b, 2, device=dev) < 0.5, -1.0, 1.0)
    shift = (1 - s)[:, None] * torch.empty(b, 2, device=dev).uniform_(-1, 1)
    cos, sin = ang.cos() * s, ang.sin() * s
    theta = torch.stack(
        [
            torch.stack([cos * flip[:, 0], -sin, shift[:, 0]], 1),
            torch.stack([sin * flip[:, 0], cos * flip[:, 1], shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mean = x.mean((2, 3), keepdim=True)
    out = F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean
    bright = torch.empty(b, 1, 1, 1, device=dev).uniform_(-jitter, jitter)
    contrast = torch.empty(b, 1, 1, 1, device=dev).uniform_(1 - jitter, 1 + jitter)
    return (out - mean) * contrast + mean + bright


@AUGMENTATIONS.register("visionfm")
class VisionfmAugment:
    """The project's batch augmentation (:func:`augment_batch`) on ``batch["image"]``."""

    def __init__(self, cfg: Any = None, mean: Sequence[float] = (), std: Sequence[float] = ()) -> None:
        pass

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**batch, "image": augment_batch(batch["image"])}


@AUGMENTATIONS.register("retfound")
class RetfoundAugment:
    """RETFound's training augmentation with kornia, on normalised batches ``[B, 3, S, S]``.

    Random resized crop (scale 0.08-1, bicubic) and horizontal flip, RandAugment (2 operations, magnitude 9 with a
    per-batch magnitude noise of sd 0.5, as timm's ``rand-m9-mstd0.5``), then random erasing (probability from
    ``cfg.random_erasing``; erased pixels are set to the dataset mean, where timm draws per-pixel noise), then
    optionally mixup / cutmix (``cfg.mix``; the task's loss reads ``y_b`` and ``mix``, the other image's class
    and its share). RandAugment works on [0, 1] images, so batches are un-normalised around it.
    """

    def __init__(self, cfg: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        import kornia.augmentation as K
        from kornia.augmentation.auto import RandAugment

        size = int(cfg.input_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        self.geometry = K.AugmentationSequential(
            K.RandomResizedCrop((size, size), scale=(0.08, 1.0), resample="BICUBIC"), K.RandomHorizontalFlip()
        )
        self.rand_augment = RandAugment(n=2, m=9)
        self.erase = K.RandomErasing(p=cfg.random_erasing, value=0.0) if cfg.random_erasing > 0 else None
        self.mix = cfg.mix
        self.mixup = K.RandomMixUpV2(p=1.0, data_keys=["input", "class"])
        self.cutmix = K.RandomCutMixV2(p=1.0, beta=1.0, data_keys=["input", "class"], use_correct_lambda=True)

    def _magnitude(self) -> int:
        """RandAugment magnitude of this batch: 9 + N(0, 0.5), kept inside kornia's open range (0, 30)."""
        return int(min(29, max(1, round(9 + 0.5 * float(torch.randn(()))))))

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["image"]
        mean, std = self.mean.to(x), self.std.to(x)
        x = self.geometry((x * std + mean).clamp(0, 1))
        self.rand_augment.m = self._magnitude()
        x = (self.rand_augment(x).clamp(0, 1) - mean) / std
        if self.erase is not None:
            x = self.erase(x)
        out = {**batch, "image": x}
        if self.mix != "none":
            out.update(self._mix(x, batch["y"][:, 0].long()))
        return out

    def _mix(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Mix images; returns the mixed images, the other image's class ``y_b`` and its share ``mix`` ``[B]``."""
        use_cutmix = self.mix == "cutmix" or (self.mix == "both" and bool(torch.rand(()) < 0.5))
        if use_cutmix:
            x, lab = self.cutmix(x, y)
            lab = lab[0]
            share_b = 1 - lab[:, 2]  # kornia's corrected cutmix lambda is the share of the original image
        else:
            x, lab = self.mixup(x, y)
            share_b = lab[:, 2]  # kornia's mixup lambda is the share of the paired image
        return {"image": x, "y_b": lab[:, 1].long(), "mix": share_b.float()}


class CropPreprocess:
    """Evaluation crop as RETFound does it: resize the short side to ``int(size / crop_pct)`` (bicubic), then
    centre-crop ``size x size``; scale to [0, 1] and normalise. ``crop_pct`` 1 with a square image is a plain resize.

    Args:
        size: output side S.
        mean, std: per-channel normalisation.
        crop_pct: the fraction of the resized short side kept (RETFound: 0.875 up to 224 px, else 1).
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875) -> None:
        if size <= 0 or not 0 < crop_pct <= 1:
            raise ValueError(f"CropPreprocess: size must be positive and crop_pct in (0, 1], got {size}, {crop_pct}")
        self.size, self.crop_pct = size, crop_pct
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: np.ndarray) -> Tensor:
        """``[H, W, 3]`` image -> ``[3, S, S]`` normalised tensor."""
        h, w = img.shape[:2]
        short = int(self.size / self.crop_pct)
        # torchvision's Resize(int): the short side becomes `short`, the long side int(short * long / short_side)
        nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        x = resize_image(img, (nh, nw))
        top, left = int(round((nh - self.size) / 2.0)), int(round((nw - self.size) / 2.0))
        x = torch.from_numpy(np.ascontiguousarray(x[top : top + self.size, left : left + self.size])).permute(2, 0, 1)
        return (x - self.mean) / self.std
