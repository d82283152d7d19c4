"""Fixture files in each released family's own layout, written from their public model definitions (no visionfm).

Every tensor is drawn from a seeded generator at a scale that makes it matter (layer-scale gammas of order 0.1-1,
not DINOv2's 1e-5 initial value, so a loader that dropped or misplaced them would be caught).
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor


def vit_state(
    dim: int,
    depth: int,
    patch: int,
    grid: int,
    *,
    generator: torch.Generator,
    layer_scale: bool = False,
    registers: int = 0,
    cls_position: bool = True,
    final_norm: bool = True,
    reg_name: str = "register_tokens",
) -> dict[str, Tensor]:
    """A ViT state dict in DINOv2 / timm / MAE naming (they agree on block names).

    Args:
        cls_position: the position embeddings include the CLS token (DINOv2, MAE) or not (timm ``no_embed_class``).
        reg_name: ``register_tokens`` (DINOv2) or ``reg_token`` (timm).
    """
    g = generator

    def r(*shape: int, scale: float = 0.05) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "cls_token": r(1, 1, dim, scale=0.5),
        "patch_embed.proj.weight": r(dim, 3, patch, patch),
        "patch_embed.proj.bias": r(dim),
        "pos_embed": r(1, grid * grid + int(cls_position), dim, scale=0.5),
    }
    if registers:
        sd[reg_name] = r(1, registers, dim, scale=0.5)
    for i in range(depth):
        p = f"blocks.{i}"
        for n in ("norm1", "norm2"):
            sd[f"{p}.{n}.weight"], sd[f"{p}.{n}.bias"] = 1 + r(dim, scale=0.1), r(dim)
        sd[f"{p}.attn.qkv.weight"], sd[f"{p}.attn.qkv.bias"] = r(3 * dim, dim), r(3 * dim)
        sd[f"{p}.attn.proj.weight"], sd[f"{p}.attn.proj.bias"] = r(dim, dim), r(dim)
        sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"] = r(4 * dim, dim), r(4 * dim)
        sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"] = r(dim, 4 * dim), r(dim)
        if layer_scale:
            sd[f"{p}.ls1.gamma"] = 0.1 + torch.rand(dim, generator=g)
            sd[f"{p}.ls2.gamma"] = 0.1 + torch.rand(dim, generator=g)
    if final_norm:
        sd["norm.weight"], sd["norm.bias"] = 1 + r(dim, scale=0.1), r(dim)
    return sd


def retfound_dinov2_file(sd: dict[str, Tensor], generator: torch.Generator, chunks: int = 0) -> dict:
    """The RETFound-DINOv2 release layout: a DINOv2 teacher (``teacher`` -> ``backbone.*`` with the iBOT/DINOv2
    ``mask_token`` ``[1, D]``, plus the DINO and iBOT projection heads), optionally in FSDP block chunks."""
    dim = sd["cls_token"].shape[-1]
    teacher = {}
    for k, v in sd.items():
        if chunks and k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // chunks}.{k[len('blocks.') :]}"
        teacher[f"backbone.{k}"] = v
    teacher["backbone.mask_token"] = torch.zeros(1, dim)
    teacher["dino_head.mlp.0.weight"] = torch.randn(32, dim, generator=generator)
    teacher["ibot_head.last_layer.weight_g"] = torch.ones(64, 1)
    return {"teacher": teacher}


def retfound_finetuned_file(sd: dict[str, Tensor], classes: int, generator: torch.Generator) -> dict:
    """What RETFound's ``misc.save_model`` writes after fine-tuning: ``model`` (encoder + ``head``; ``fc_norm``
    when pooled by global average, the final ``norm`` deleted) with optimizer state, epoch and args."""
    dim = sd["cls_token"].shape[-1]
    model = dict(sd)
    model["head.weight"] = torch.randn(classes, dim, generator=generator) * 0.1
    model["head.bias"] = torch.randn(classes, generator=generator) * 0.1
    if "norm.weight" not in sd:
        model["fc_norm.weight"] = 1 + torch.randn(dim, generator=generator) * 0.1
        model["fc_norm.bias"] = torch.randn(dim, generator=generator) * 0.1
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
        "epoch": 7,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model="RETFound_mae", nb_classes=classes),
    }
