"""Encoder architectures: a registry of named ViT sizes (tiny/small/base/large, patch 14 and 16)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .info import EncoderInfo
from .vit import POS_INTERP, EncoderOutput, VisionTransformer, ViTConfig, interpolate_pos_embed

__all__ = [
    "ARCHS",
    "POS_INTERP",
    "EncoderInfo",
    "EncoderOutput",
    "ViTConfig",
    "VisionTransformer",
    "arch_name",
    "create_encoder",
    "interpolate_pos_embed",
    "list_archs",
]

ARCHS: Registry[Callable[..., ViTConfig]] = Registry("encoder architecture")

# width, depth, heads of the standard sizes; heads = width / 64 as in every released ViT.
_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def _make(size: str, patch: int) -> Callable[..., ViTConfig]:
    dim, depth, heads = _SIZES[size]
    img = 518 if patch == 14 else 224  # DINOv2-style weights are trained at 518 px with patch 14

    def factory(**overrides: Any) -> ViTConfig:
        base = dict(embed_dim=dim, depth=depth, num_heads=heads, patch_size=patch, img_size=img)
        return ViTConfig(**{**base, **overrides})

    factory.__doc__ = f"ViT-{size} with {patch}-pixel patches (D={dim}, depth={depth}, heads={heads})."
    return factory


for _size in _SIZES:
    for _patch in (16, 14):
        # the official VisionFM/iBOT scripts name sizes alone (--arch vit_base, patch 16 by default)
        ARCHS.add(f"vit_{_size}_patch{_patch}", _make(_size, _patch), aliases=(f"vit_{_size}",) * (_patch == 16))
# a test-sized model: depth 2, width 64, 32-pixel images
ARCHS.add(
    "vit_test", lambda **o: ViTConfig(**{**dict(embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32), **o})
)


def list_archs() -> list[str]:
    """Registered architecture names."""
    return ARCHS.names()


def arch_name(cfg: ViTConfig) -> str:
    """The registered name whose defaults match ``cfg`` in width, depth, heads and patch, else ``"custom"``."""
    for name in ARCHS:
        ref = ARCHS.get(name)()
        if (ref.embed_dim, ref.depth, ref.num_heads, ref.patch_size) == (
            cfg.embed_dim,
            cfg.depth,
            cfg.num_heads,
            cfg.patch_size,
        ):
            return name
    return "custom"


def create_encoder(
    arch: str | ViTConfig, drop_path_rate: float = 0.0, grad_checkpointing: bool = False, **overrides: Any
) -> VisionTransformer:
    """Build a randomly initialised encoder from a registered name (with overrides) or a config."""
    cfg = arch if isinstance(arch, ViTConfig) else ARCHS.get(arch)(**overrides)
    return VisionTransformer(cfg, drop_path_rate=drop_path_rate, grad_checkpointing=grad_checkpointing)
