"""Inference-only speed paths of a frozen encoder: weights cast once, the features graph, compilation, allocator.

Nothing here changes a model's training code or the fp32 numbers: each helper returns a copy or a wrapper (or
restores what it changed), and :func:`visionfm.features.extract_features` picks among them by its ``precision``
and ``compile`` options. What each buys on this project's CPU is measured by ``benchmarks/extract.py``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from ..errors import UserError
from .vit import VisionTransformer
from .vit_fused import PackedBf16ViT, packed_bf16_available

__all__ = [
    "COMPILE_MODES",
    "FeatureModule",
    "cast_encoder",
    "compile_mode",
    "compiled_blocks",
    "feature_pair",
    "frozen_features",
    "param_dtype",
    "reuse_large_allocations",
]


def param_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the module's first parameter (None without parameters)."""
    p = next(iter(module.parameters()), None)
    return None if p is None else p.dtype


class FeatureModule(torch.nn.Module):
    """The encoder with the feature selection inside, so one compiled graph yields the features.

    ``forward``: ``[B, 3, H, W]`` -> (CLS of the last n blocks ``[B, n*D]``, patch-token mean ``[B, D]``), float32.
    """

    def __init__(self, encoder: VisionTransformer, n_last_blocks: int) -> None:
        super().__init__()
        self.encoder, self.n_last_blocks = encoder, n_last_blocks

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return feature_pair(self.encoder(x, n_last_blocks=self.n_last_blocks))


def feature_pair(out) -> tuple[Tensor, Tensor]:
    """An encoder output -> (CLS of its last n blocks ``[B, n*D]``, patch-token mean ``[B, D]``), float32."""
    return out.cls_concat().float(), out.patch_tokens.float().mean(1)


def cast_encoder(encoder: VisionTransformer, precision: str, packed: bool = False) -> torch.nn.Module:
    """A copy of ``encoder`` with its weights cast once to ``bf16`` (the caller's encoder is left as it was), so no
    forward pays autocast's per-call weight casts; other precisions and other modules are returned as given.

    bf16 weights make the residual stream bf16 too; layer norms and softmax still accumulate in float32 inside
    their kernels. Measured feature change against fp32: the same order as autocast (``benchmarks/extract.py``).

    ``packed`` (for a CPU that runs bf16 natively: the caller's test): the fused oneDNN copy instead
    (:class:`~visionfm.models.vit_fused.PackedBf16ViT`: prepacked weights, GELU and residual adds fused; the
    same bf16 precision, ~1.2x faster here); eager only (``torch.compile`` needs the plain copy).
    """
    if precision != "bf16" or not isinstance(encoder, VisionTransformer) or param_dtype(encoder) != torch.float32:
        return encoder
    if packed and next(encoder.parameters()).device.type == "cpu" and packed_bf16_available():
        return PackedBf16ViT(encoder)
    with torch.device("meta"):
        copy = type(encoder)(encoder.cfg)
    state = {k: v.detach().to(torch.bfloat16) for k, v in encoder.state_dict().items()}
    copy.load_state_dict(state, assign=True)
    return copy.set_info(encoder.info).eval().to(next(encoder.parameters()).device)


def reuse_large_allocations() -> bool:
    """Keep large freed blocks in this process's heap (glibc ``mallopt``: no ``mmap`` for big blocks, no trimming).

    A ViT-B batch of 32 allocates activations of 20-40 MB per op; glibc serves every block above 32 MB with a fresh
    ``mmap`` and returns it on free, so each op pays page faults on its whole output again: measured 2x on a bf16
    ``Linear`` and ~15% on a whole bf16 forward on this project's CPU. Process-wide and harmless for the numbers
    (only where memory comes from); the cost is that the process keeps its peak memory until it exits. Returns
    whether the setting was applied (False off glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


COMPILE_MODES = ("none", "blocks", "frozen")


def compile_mode(compile: bool | str) -> str:
    """``False``/``"none"``, ``True``/``"blocks"`` (regional) or ``"frozen"`` (whole encoder, weights frozen)."""
    mode = ("blocks" if compile else "none") if isinstance(compile, bool) else compile
    if mode not in COMPILE_MODES:
        raise UserError(f"unknown compile mode {compile!r}; valid: {', '.join(COMPILE_MODES)}")
    return mode


def frozen_features(encoder: VisionTransformer, n_last_blocks: int) -> torch.nn.Module:
    """The whole encoder (and the feature selection) compiled by inductor with **weight freezing**: the weights
    become constants, so linears run oneDNN's prepacked (AMX) kernels and bias, GELU, residual adds and layer
    norms fuse around them. Compiles on the first batch (inductor's on-disk cache makes later processes faster);
    only for inference: the compiled module must not be trained."""
    mod = FeatureModule(encoder, n_last_blocks).eval()
    return torch.compile(mod, dynamic=False, options={"freezing": True})


@contextmanager
def compiled_blocks(encoder: VisionTransformer, enabled: bool = True):
    """``torch.compile`` each transformer block for the duration (regional compilation), then restore them.

    All blocks share their code and shapes, so one compiled graph serves the 12 (or 24) blocks: compiling takes a
    fraction of a whole-model compile. What inductor gains on CPU is fusion of the non-matmul work (bias + GELU,
    residual adds, layer norms, the attention reshapes) that eager bf16 spends about half its time on.
    """
    if not enabled:
        yield encoder
        return
    blocks = list(getattr(encoder, "blocks", []))
    if not blocks:
        raise UserError("compile: the encoder has no transformer blocks to compile")
    for blk in blocks:
        blk.compile(dynamic=False)
    try:
        yield encoder
    finally:
        for blk in blocks:  # the caller's encoder is left as it was given
            blk._compiled_call_impl = None
