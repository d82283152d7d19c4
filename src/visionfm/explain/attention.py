"""Attention maps of a ViT encoder: the CLS token's per-head maps, their mean, and attention rollout.

The maps are taken from the encoder's normal forward pass, whatever attention backend runs it (fused SDPA with the
flash, memory-efficient, cuDNN or math kernel, a patched-in implementation, autocast): forward hooks on every
block's ``attn.qkv`` projection capture the queries and keys that pass actually used, and the softmax probabilities
``softmax(q k^T / sqrt(d))`` are recomputed from them in float32 (fused kernels never materialise them). The
encoder's explicit-probability path (``encoder(x, return_attention="all")``) gives the same maps and serves as the
reference (``source="explicit"``).

Token layout ``[CLS, registers (R), patches (N)]``: registers are skipped in every map. Each returned map is a
distribution over the N patches (sums to 1): the CLS row restricted to the patches and renormalised, so maps of
encoders with and without registers, or with much or little self-attention, are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTENTION_SOURCES",
    "AttentionMaps",
    "attention_maps",
    "attention_rollout",
    "capture_attention",
    "cls_patch_attention",
    "num_prefix_tokens",
    "upsample_maps",
]

ATTENTION_SOURCES = ("forward", "explicit")


@dataclass
class AttentionMaps:
    """Attention of a batch, on the patch grid.

    Attributes:
        heads: last block's per-head CLS attention ``[B, heads, rows, cols]``, each map summing to 1.
        mean: the merged map, mean over heads ``[B, rows, cols]`` (sums to 1).
        rollout: attention rollout across all blocks ``[B, rows, cols]`` (sums to 1), or None when not asked.
        grid: (rows, cols).
    """

    heads: Tensor
    mean: Tensor
    rollout: Tensor | None
    grid: tuple[int, int]


def num_prefix_tokens(encoder: nn.Module) -> int:
    """CLS plus register tokens of an encoder (1 when it has no registers)."""
    n = getattr(encoder, "num_prefix_tokens", None)
    if n is not None:
        return int(n)
    cfg = getattr(encoder, "cfg", None)
    return 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)


def cls_patch_attention(attn: Tensor, prefix: int = 1) -> Tensor:
    """CLS-to-patch attention, renormalised over the patches.

    Args:
        attn: ``[B, heads, T, T]`` probabilities (or ``[B, T, T]``), T = prefix + N.
        prefix: leading non-patch tokens (CLS + registers).

    Returns:
        ``[B, heads, N]`` (or ``[B, N]``), each row summing to 1.
    """
    row = attn[..., 0, prefix:].float()
    return row / row.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def attention_rollout(attentions: Sequence[Tensor], residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each output token draws on each input token.

    Per block the heads are averaged, the residual connection is modelled as ``0.5 * A + 0.5 * I`` and rows are
    renormalised; the blocks' matrices are multiplied from the first to the last: ``R = A_L ... A_2 A_1``.

    Args:
        attentions: per-block probabilities ``[B, heads, T, T]``, first block first.
        residual: add the identity for the skip connections (as in the paper).

    Returns:
        ``[B, T, T]``; row ``i`` of the result is the input-token mixture of output token ``i``.
    """
    if not attentions:
        raise ValueError("attention rollout needs the attention of at least one block")
    rollout = None
    for attn in attentions:
        a = attn.float().mean(dim=1)
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def _attention_modules(encoder: nn.Module) -> list[nn.Module]:
    """Every block's attention module; each must have ``qkv`` (Linear D -> 3D), ``num_heads`` and ``scale``."""
    blocks = getattr(encoder, "blocks", None)
    mods = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    if not mods or not all(hasattr(m, "qkv") and hasattr(m, "num_heads") and hasattr(m, "scale") for m in mods):
        raise ValueError(
            f"{type(encoder).__name__}: attention capture needs blocks[i].attn with qkv, num_heads "
            f"and scale (a ViT in the timm/DINO/VisionFM layout)"
        )
    return mods


@torch.no_grad()
def capture_attention(encoder: nn.Module, x: Tensor) -> tuple[dict[int, Tensor], Any]:
    """Run the encoder's normal forward and recover every block's attention probabilities from it.

    A forward hook on each block's ``attn.qkv`` sees the ``[B, T, 3D]`` projections of that very pass (whatever
    kernel then combines them) and computes ``softmax(q * scale @ k^T)`` in float32.

    Args:
        encoder: a ViT whose blocks hold ``attn.qkv``, ``attn.num_heads`` and ``attn.scale``.
        x: ``[B, 3, H, W]`` normalised images.

    Returns:
        (block index -> probabilities ``[B, heads, T, T]`` float32, the encoder's output).
    """
    probs: dict[int, Tensor] = {}

    def hook(i: int, heads: int, scale: float) -> Callable:
        def fn(_module: nn.Module, _inputs: Any, qkv: Tensor) -> None:
            b, t, three_d = qkv.shape
            q, k, _ = qkv.float().reshape(b, t, 3, heads, three_d // (3 * heads)).permute(2, 0, 3, 1, 4)
            probs[i] = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)

        return fn

    handles = [
        m.qkv.register_forward_hook(hook(i, int(m.num_heads), float(m.scale)))
        for i, m in enumerate(_attention_modules(encoder))
    ]
    try:
        out = encoder(x)
    finally:
        for h in handles:
            h.remove()
    return probs, out


@torch.no_grad()
def attention_maps(encoder: nn.Module, x: Tensor, rollout: bool = True, source: str = "forward") -> AttentionMaps:
    """Per-head, merged and rollout CLS attention maps of a batch.

    Args:
        encoder: a VisionFM ViT (any size, with or without register tokens).
        x: ``[B, 3, H, W]`` normalised images, H and W multiples of the patch size (any size: position embeddings
            are interpolated).
        rollout: also compute attention rollout (from every block's probabilities).
        source: ``forward`` (the normal forward pass, any attention backend; see :func:`capture_attention`) or
            ``explicit`` (the encoder's own probability path, ``return_attention``).

    Returns:
        :class:`AttentionMaps` on the ``(H / p, W / p)`` patch grid.
    """
    if source == "forward":
        attentions, out = capture_attention(encoder, x)
    elif source == "explicit":
        out = encoder(x, return_attention="all" if rollout else True)
        attentions = dict(out.attentions)
    else:
        raise ValueError(f"source={source!r} not one of {ATTENTION_SOURCES}")
    if not attentions:
        raise ValueError(f"{type(encoder).__name__} returned no attention probabilities")
    last = attentions[max(attentions)].float()
    prefix = num_prefix_tokens(encoder)
    rows, cols = out.grid
    b, h, t, _ = last.shape
    if t != prefix + rows * cols:
        raise ValueError(f"attention over {t} tokens does not match {prefix} prefix tokens + {rows}x{cols} patches")
    heads = cls_patch_attention(last, prefix).reshape(b, h, rows, cols)
    mean = cls_patch_attention(last.mean(dim=1), prefix).reshape(b, rows, cols)
    roll = None
    if rollout:
        r = attention_rollout([attentions[i] for i in sorted(attentions)])
        roll = cls_patch_attention(r, prefix).reshape(b, rows, cols)
    return AttentionMaps(heads=heads, mean=mean, rollout=roll, grid=(rows, cols))


def upsample_maps(maps: Tensor, size: tuple[int, int], normalise: bool = True) -> Tensor:
    """Patch-grid maps ``[..., rows, cols]`` -> ``[..., H, W]`` by bilinear interpolation.

    Args:
        normalise: rescale each map to [0, 1] (min-max) for display.
    """
    lead = maps.shape[:-2]
    m = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    up = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0]
    if normalise:
        lo = up.amin(dim=(-2, -1), keepdim=True)
        hi = up.amax(dim=(-2, -1), keepdim=True)
        up = (up - lo) / (hi - lo).clamp_min(1e-12)
    return up.reshape(*lead, *size)
