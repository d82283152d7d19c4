"""One pure converter per released checkpoint format, each mapping a loaded object to visionfm's ViT naming.

visionfm naming (as the official VisionFM / DINO / timm ViT): ``patch_embed.proj.*``, ``cls_token``, ``pos_embed``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``, optional ``blocks.{i}.ls{1,2}.gamma``,
``register_tokens`` and ``mask_token`` ``[1, D]``.

Formats are registered by name; :func:`detect_format` asks each converter's ``matches`` in registration order
(most specific first), and a caller can always name the format instead.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..modalities import IMAGENET_MEAN, IMAGENET_STD
from ..registry import Registry
from .io import CheckpointError

__all__ = ["CONVERTERS", "Converted", "Converter", "detect_format", "list_formats"]


@dataclass
class Converted:
    """Encoder tensors in visionfm naming plus what was learned on the way.

    Attributes:
        state_dict: encoder tensors only.
        format: the converter's name.
        dropped: keys deliberately left out (projection heads, MAE decoder, ...).
        modality: modality recorded in the checkpoint, if any.
        mean: input normalisation the weights were trained with, if the format fixes it.
        std: see ``mean``.
        family: the released model family recognised (``RETFound-Green``, ...), or "" when unknown.
        pos_interp: how that family's own code resizes position embeddings (``visionfm.models.POS_INTERP``).
        head: a classification head saved with the encoder (``head.*``, ``fc_norm.*``), kept apart from it.
    """

    state_dict: dict[str, Tensor]
    format: str
    dropped: list[str] = field(default_factory=list)
    modality: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    family: str = ""
    pos_interp: str | None = None
    head: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Converter:
    """A named checkpoint format: ``matches(obj)`` says whether a loaded object is in it, ``convert`` maps it."""

    name: str
    description: str
    matches: Callable[[Any], bool]
    convert: Callable[[Any], Converted]


CONVERTERS: Registry[Converter] = Registry("checkpoint format")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _strip(sd: dict[str, Tensor], prefixes: tuple[str, ...] = ("module.", "backbone.", "encoder.")) -> dict:
    """Remove wrapper prefixes (DDP ``module.``, MultiCropWrapper ``backbone.``) wherever they stack."""
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def _split(sd: dict[str, Tensor], drop: Callable[[str], bool]) -> tuple[dict[str, Tensor], list[str]]:
    kept = {k: v for k, v in sd.items() if not drop(k)}
    return kept, sorted(k for k in sd if drop(k))


_HEAD_PREFIXES = ("head.", "dino_head.", "ibot_head.", "last_layer")


def _is_head(k: str) -> bool:
    return k.startswith(_HEAD_PREFIXES)


def _rename_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official VisionFM/iBOT names -> visionfm names (layer scale and mask embedding)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"\.gamma_1$", ".ls1.gamma", k)
        k = re.sub(r"\.gamma_2$", ".ls2.gamma", k)
        out["mask_token" if k == "masked_embed" else k] = v
    return out


def _args_modality(obj: dict) -> str | None:
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        return getattr(args, "modality", None)
    if isinstance(args, dict):
        return args.get("modality")
    return None


def _convert_visionfm(obj: Any) -> Converted:
    sd = obj["teacher"] if isinstance(obj, dict) and "teacher" in obj else obj
    if not _is_state_dict(sd):
        raise CheckpointError("official VisionFM checkpoint: 'teacher' is not a state dict")
    kept, dropped = _split(_strip(sd), _is_head)
    return Converted(_rename_official(kept), "visionfm", dropped, modality=_args_modality(obj), family="VisionFM")


def _matches_visionfm(obj: Any) -> bool:
    if not isinstance(obj, dict) or not _is_state_dict(obj.get("teacher")):
        return False
    return not any(k.startswith(("dino_head.", "ibot_head.")) or ".ls1." in k for k in obj["teacher"])


def _convert_mae(obj: Any) -> Converted:
    sd = _strip(obj["model"])
    head = {k: v for k, v in sd.items() if k.startswith("fc_norm.")}  # pooled without a classifier (num_classes=0)
    # MAE's mask token lives in the decoder's width and has nothing to do with the encoder.
    kept, dropped = _split(sd, lambda k: k.startswith(("decoder", "mask_token", "fc_norm.")) or _is_head(k))
    # RETFound's fine-tuning code resizes position embeddings by target size (MAE's util/pos_embed.py)
    return Converted(
        kept,
        "mae",
        dropped,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        family="RETFound-MAE / MAE",
        pos_interp="size",
        head=head,
    )


_FT_HEAD = ("head.", "fc_norm.")


def _convert_retfound_finetuned(obj: Any) -> Converted:
    """A classifier saved by RETFound's (MAE's) fine-tuning: ``model`` = encoder + ``head`` (+ ``fc_norm`` when pooled
    by global average, in which case the final ``norm`` was deleted before training)."""
    sd = _strip(obj["model"])
    head = {k: v for k, v in sd.items() if k.startswith(_FT_HEAD)}
    kept = {k: v for k, v in sd.items() if not k.startswith(_FT_HEAD)}
    return Converted(
        kept,
        "retfound-finetuned",
        sorted(head),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        family="RETFound fine-tuned classifier",
        pos_interp="size",
        head=head,
    )


def _matches_retfound_finetuned(obj: Any) -> bool:
    return _matches_mae(obj) and any(k.endswith("head.weight") and not k.startswith("decoder") for k in obj["model"])


def _matches_mae(obj: Any) -> bool:
    return isinstance(obj, dict) and _is_state_dict(obj.get("model"))


def _dinov2_state(obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, dict) and _is_state_dict(obj.get("teacher")):
        return obj["teacher"]
    if isinstance(obj, dict) and _is_state_dict(obj.get("model")):
        return obj["model"]
    return obj


def _convert_dinov2(obj: Any) -> Converted:
    sd = _strip(_dinov2_state(obj))
    if any(".mlp.w12." in k for k in sd):
        raise CheckpointError("DINOv2 SwiGLU MLP (ViT-g) is not supported; use a ViT-S/B/L checkpoint")
    # FSDP "block chunks" name blocks blocks.{chunk}.{index}; the global index is kept, so drop the chunk.
    sd = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}
    kept, dropped = _split(sd, _is_head)
    return Converted(
        kept, "dinov2", dropped, mean=IMAGENET_MEAN, std=IMAGENET_STD, family="DINOv2", pos_interp="offset"
    )


def _convert_retfound_dinov2(obj: Any) -> Converted:
    """RETFound-DINOv2: a DINOv2 teacher; RETFound loads it into timm's ViT-L/14 at the input size, resizing the
    position embeddings by target size (its util/pos_embed.py), with ImageNet statistics."""
    conv = _convert_dinov2(obj)
    conv.format, conv.family, conv.pos_interp = "retfound-dinov2", "RETFound-DINOv2", "size"
    return conv


def _matches_retfound_dinov2(obj: Any) -> bool:
    """The released layout: ``teacher`` with ``backbone.`` names, layer scale, ViT-L (D=1024), patch 14, no
    registers. A DINOv2 ViT-L/14 training teacher looks the same; ``format="dinov2"`` reads it as DINOv2 does."""
    if not (isinstance(obj, dict) and _is_state_dict(obj.get("teacher"))):
        return False
    sd = _strip(obj["teacher"])
    patch, cls = sd.get("patch_embed.proj.weight"), sd.get("cls_token")
    return (
        any(k.startswith("backbone.") for k in obj["teacher"])
        and any(".ls1.gamma" in k for k in sd)
        and "register_tokens" not in sd
        and patch is not None
        and cls is not None
        and patch.shape[-1] == 14
        and cls.shape[-1] == 1024
    )


# RETFound-Green: timm's vit_small_patch14_reg4_dinov2 at 392 px with mean = std = 0.5 (its README)
_GREEN = {"embed_dim": 384, "depth": 12, "patch": 14, "registers": 4, "grid": 28}


def _timm_state(obj: Any) -> dict[str, Tensor] | None:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and _is_state_dict(obj.get(key)):
            return obj[key]
    return obj if _is_state_dict(obj) else None


def _convert_timm(obj: Any) -> Converted:
    """timm ViT naming: ``reg_token`` registers and, with ``no_embed_class``, position embeddings for patches only
    (CLS and registers get none): a zero CLS position is prepended, which adds nothing, as timm does."""
    sd = _strip(_timm_state(obj))
    head = {k: v for k, v in sd.items() if k.startswith(_FT_HEAD)}
    sd = {("register_tokens" if k == "reg_token" else k): v for k, v in sd.items() if not k.startswith(_FT_HEAD)}
    pe = sd["pos_embed"]
    n = pe.shape[1]
    if math.isqrt(n) ** 2 == n:  # no_embed_class: 1 + N positions is never a square, N is
        sd["pos_embed"] = torch.cat([pe.new_zeros(1, 1, pe.shape[-1]), pe], dim=1)
    regs = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    found = {
        "embed_dim": pe.shape[-1],
        "depth": 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
        "patch": sd["patch_embed.proj.weight"].shape[-1],
        "registers": regs,
        "grid": math.isqrt(n),
    }
    if found == _GREEN:
        return Converted(
            sd,
            "timm",
            sorted(head),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            family="RETFound-Green",
            pos_interp="size-antialias",
            head=head,
        )
    return Converted(sd, "timm", sorted(head), family="timm ViT", pos_interp="size-antialias", head=head)


def _matches_timm(obj: Any) -> bool:
    sd = _timm_state(obj)
    if sd is None:
        return False
    sd = _strip(sd)
    pe = sd.get("pos_embed")
    no_embed_class = pe is not None and pe.ndim == 3 and math.isqrt(pe.shape[1]) ** 2 == pe.shape[1]
    return "cls_token" in sd and "patch_embed.proj.weight" in sd and ("reg_token" in sd or no_embed_class)


def _matches_dinov2(obj: Any) -> bool:
    sd = _dinov2_state(obj)
    if not _is_state_dict(sd):
        return False
    return any(
        ".ls1.gamma" in k
        or "register_tokens" in k
        or k.startswith(("dino_head.", "ibot_head."))
        or re.match(r"^(module\.)?(backbone\.)?blocks\.\d+\.\d+\.", k)
        for k in sd
    )


def _convert_visionfm_run(obj: Any) -> Converted:
    """A checkpoint of ``visionfm pretrain`` (the engine's ``checkpoint_*.pth``): the encoder the run exports (iBOT's
    EMA teacher, MAE's encoder), found by the pretraining task's own reader."""
    from ..pretrain.checkpoint import encoder_prefix  # the task owns its naming (a late import: pretrain uses us)

    state = obj["task"]
    prefix = encoder_prefix(state)[0]
    kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    dropped = [k for k in state if not k.startswith(prefix)]
    return Converted(kept, "visionfm-run", dropped, family="visionfm pretraining run")


def _matches_visionfm_run(obj: Any) -> bool:
    from ..pretrain.checkpoint import is_run_state

    return isinstance(obj, dict) and _is_state_dict(obj.get("task")) and is_run_state(obj["task"])


def _convert_state_dict(obj: Any) -> Converted:
    sd = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    kept, dropped = _split(_strip(sd), _is_head)
    return Converted(_rename_official(kept), "state_dict", dropped)


def _matches_state_dict(obj: Any) -> bool:
    return _is_state_dict(obj) or (isinstance(obj, dict) and _is_state_dict(obj.get("state_dict")))


CONVERTERS.add(
    "retfound-finetuned",
    Converter(
        "retfound-finetuned",
        "classifier saved by RETFound / MAE fine-tuning ('model' with 'head', and 'fc_norm' when "
        "pooled by global average): the encoder loads, the head is reported and kept (load_head)",
        _matches_retfound_finetuned,
        _convert_retfound_finetuned,
    ),
)
CONVERTERS.add(
    "visionfm",
    Converter(
        "visionfm",
        "official VisionFM/iBOT pretraining checkpoint ('teacher' backbone is the encoder)",
        _matches_visionfm,
        _convert_visionfm,
    ),
)
CONVERTERS.add(
    "visionfm-run",
    Converter(
        "visionfm-run",
        "a checkpoint written by `visionfm pretrain` (checkpoint_*.pth; the encoder the run exports: the "
        "iBOT EMA teacher or the MAE encoder; student, heads, decoder and centres dropped)",
        _matches_visionfm_run,
        _convert_visionfm_run,
    ),
)
CONVERTERS.add(
    "retfound-dinov2",
    Converter(
        "retfound-dinov2",
        "RETFound-DINOv2 ('teacher', 'backbone.' names, ViT-L/14 DINOv2 naming); position embeddings "
        "resized as RETFound's fine-tuning does; ImageNet statistics",
        _matches_retfound_dinov2,
        _convert_retfound_dinov2,
    ),
)
CONVERTERS.add(
    "timm",
    Converter(
        "timm",
        "timm ViT state dict with 'reg_token' and/or patch-only position embeddings (RETFound-Green: "
        "vit_small_patch14_reg4_dinov2 at 392 px, mean = std = 0.5)",
        _matches_timm,
        _convert_timm,
    ),
)
CONVERTERS.add(
    "dinov2",
    Converter(
        "dinov2",
        "DINOv2/timm naming: layer scale (ls1/ls2), register tokens, block chunks; ImageNet statistics",
        _matches_dinov2,
        _convert_dinov2,
    ),
)
CONVERTERS.add(
    "mae",
    Converter(
        "mae",
        "RETFound / MAE checkpoint ('model' key; decoder and mask token dropped; ImageNet statistics)",
        _matches_mae,
        _convert_mae,
    ),
)
CONVERTERS.add(
    "state_dict",
    Converter(
        "state_dict",
        "plain encoder state dict, with or without module./backbone. prefixes",
        _matches_state_dict,
        _convert_state_dict,
    ),
)


def detect_format(obj: Any, source: str = "checkpoint") -> str:
    """Name of the first registered format whose ``matches`` accepts ``obj``.

    Raises:
        CheckpointError: no format matches (the message lists the top-level keys found).
    """
    for name in CONVERTERS:
        if CONVERTERS.get(name).matches(obj):
            return name
    keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{source}: not a recognised encoder checkpoint (top level: {keys}); "
        f"known formats: {', '.join(CONVERTERS.names())}"
    )


def list_formats() -> list[str]:
    """Registered checkpoint format names (plus ``safetensors``, read without any pickle)."""
    return [*CONVERTERS.names(), "safetensors"]
