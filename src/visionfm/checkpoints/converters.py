"""One pure converter per released checkpoint format, each mapping a loaded object to visionfm's ViT naming.

visionfm naming (as the official VisionFM / DINO / timm ViT): ``patch_embed.proj.*``, ``cls_token``, ``pos_embed``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``, optional ``blocks.{i}.ls{1,2}.gamma``,
``register_tokens`` and ``mask_token`` ``[1, D]``.

Formats are registered by name; :func:`detect_format` asks each converter's ``matches`` in registration order
(most specific first), and a caller can always name the format instead.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from ..modalities import IMAGENET_MEAN, IMAGENET_STD
from ..registry import Registry
from .io import CheckpointError

__all__ = ["Converted", "Converter", "CONVERTERS", "detect_format", "list_formats"]


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
    """

    state_dict: dict[str, Tensor]
    format: str
    dropped: list[str] = field(default_factory=list)
    modality: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


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
                    k, changed = k[len(p):], True
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
    return Converted(_rename_official(kept), "visionfm", dropped, modality=_args_modality(obj))


def _matches_visionfm(obj: Any) -> bool:
    if not isinstance(obj, dict) or not _is_state_dict(obj.get("teacher")):
        return False
    return not any(k.startswith(("dino_head.", "ibot_head.")) or ".ls1." in k for k in obj["teacher"])


def _convert_mae(obj: Any) -> Converted:
    sd = _strip(obj["model"])
    if any(k.startswith("fc_norm.") for k in sd) and "norm.weight" not in sd:
        raise CheckpointError(
            "this is a fine-tuned MAE/RETFound classifier with global pooling (fc_norm, no final norm); "
            "load the pretrained RETFound encoder checkpoint instead"
        )
    # MAE's mask token lives in the decoder's width and has nothing to do with the encoder.
    kept, dropped = _split(sd, lambda k: k.startswith(("decoder", "mask_token", "fc_norm.")) or _is_head(k))
    return Converted(kept, "mae", dropped, mean=IMAGENET_MEAN, std=IMAGENET_STD)


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
    return Converted(kept, "dinov2", dropped, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _matches_dinov2(obj: Any) -> bool:
    sd = _dinov2_state(obj)
    if not _is_state_dict(sd):
        return False
    return any(".ls1.gamma" in k or "register_tokens" in k or k.startswith(("dino_head.", "ibot_head."))
               or re.match(r"^(module\.)?(backbone\.)?blocks\.\d+\.\d+\.", k) for k in sd)


_RUN_PREFIX = "teacher.backbone."


def _convert_visionfm_run(obj: Any) -> Converted:
    """A checkpoint of ``visionfm pretrain`` (the engine's ``checkpoint_*.pth``): the EMA teacher's backbone."""
    state = obj["task"]
    kept = {k[len(_RUN_PREFIX):]: v for k, v in state.items() if k.startswith(_RUN_PREFIX)}
    dropped = [k for k in state if not k.startswith(_RUN_PREFIX)]
    return Converted(kept, "visionfm-run", dropped)


def _matches_visionfm_run(obj: Any) -> bool:
    return isinstance(obj, dict) and _is_state_dict(obj.get("task")) and any(
        k.startswith(_RUN_PREFIX) for k in obj["task"])


def _convert_state_dict(obj: Any) -> Converted:
    sd = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    kept, dropped = _split(_strip(sd), _is_head)
    return Converted(_rename_official(kept), "state_dict", dropped)


def _matches_state_dict(obj: Any) -> bool:
    return _is_state_dict(obj) or (isinstance(obj, dict) and _is_state_dict(obj.get("state_dict")))


CONVERTERS.add("visionfm", Converter(
    "visionfm", "official VisionFM/iBOT pretraining checkpoint ('teacher' backbone is the encoder)",
    _matches_visionfm, _convert_visionfm))
CONVERTERS.add("visionfm-run", Converter(
    "visionfm-run", "a checkpoint written by `visionfm pretrain` (checkpoint_*.pth; the EMA teacher's backbone is the "
    "encoder; student, heads and centres dropped)", _matches_visionfm_run, _convert_visionfm_run))
CONVERTERS.add("dinov2", Converter(
    "dinov2", "DINOv2/timm naming: layer scale (ls1/ls2), register tokens, block chunks; ImageNet statistics",
    _matches_dinov2, _convert_dinov2))
CONVERTERS.add("mae", Converter(
    "mae", "RETFound / MAE checkpoint ('model' key; decoder and mask token dropped; ImageNet statistics)",
    _matches_mae, _convert_mae))
CONVERTERS.add("state_dict", Converter(
    "state_dict", "plain encoder state dict, with or without module./backbone. prefixes",
    _matches_state_dict, _convert_state_dict))


def detect_format(obj: Any, source: str = "checkpoint") -> str:
    """Name of the first registered format whose ``matches`` accepts ``obj``.

    Raises:
        CheckpointError: no format matches (the message lists the top-level keys found).
    """
    for name in CONVERTERS:
        if CONVERTERS.get(name).matches(obj):
            return name
    keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{source}: not a recognised encoder checkpoint (top level: {keys}); "
                          f"known formats: {', '.join(CONVERTERS.names())}")


def list_formats() -> list[str]:
    """Registered checkpoint format names (plus ``safetensors``, read without any pickle)."""
    return [*CONVERTERS.names(), "safetensors"]
