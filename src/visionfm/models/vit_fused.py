"""Inference-only ViT forwards built from fused oneDNN kernels, and the bf16 one of them.

:class:`FusedViT` is the shared skeleton (tokens in, the blocks' fused kernels, the last n layers out as
:class:`EncoderOutput`); :class:`PackedBf16ViT` runs every block ``Linear`` as a oneDNN bf16 matmul on weights
packed once into its blocked (AMX) layout, with GELU fused into ``fc1`` and the residual adds fused into ``proj``
and ``fc2`` (post-ops), so none of them is a separate pass over the activations. The int8 forward
(:mod:`visionfm.models.vit_int8`) shares the skeleton.

Why: eager bf16 spends about a third of a ViT-B forward outside its matmuls (GELU, residual adds, weight layout
conversions per call); with those fused and the weights prepacked the same forward runs ~1.3x faster on this
project's AMX CPU (``benchmarks/extract.py``). The numbers are bf16's: the same roundings as the cast bf16 model
up to the order of a few operations (the GELU and the adds are applied to the matmul's float32 accumulator before
the one rounding to bf16), measured against fp32 beside every speed number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vit import EncoderOutput, VisionTransformer

__all__ = ["FusedViT", "PackedBf16ViT", "packed_bf16_available"]


def packed_bf16_available() -> bool:
    """Whether this torch has oneDNN's packed linear (whether the CPU runs bf16 natively is the caller's test:
    :func:`visionfm.engine.precision.cpu_has_native_bf16`)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class FusedViT(nn.Module):
    """The forward skeleton of a fused inference copy of a :class:`VisionTransformer` (kept as ``self.enc``).

    ``forward(x [B, 3, H, W], n_last_blocks)`` -> :class:`EncoderOutput` (``tokens`` and ``layers``, no attention
    maps, registers dropped as in the float model). Of ``layers`` only the last holds every token; the earlier
    ones hold the CLS token only (``[B, 1, D]``), all that ``cls_concat`` reads. Subclasses give the residual
    stream's dtype and one block's fused forward.
    """

    stream_dtype: torch.dtype = torch.float32

    def __init__(self, encoder: VisionTransformer) -> None:
        super().__init__()
        self.enc, self.cfg, self.info = encoder.eval(), encoder.cfg, encoder.info

    def block(self, i: int, x: Tensor) -> Tensor:
        """Block ``i`` on the residual stream ``x [B, T, D]`` -> ``[B, T, D]`` (may update ``x`` in place)."""
        raise NotImplementedError

    @torch.inference_mode()
    @torch.autocast("cpu", enabled=False)  # the kernels choose their dtypes; a caller's autocast must not recast
    def forward(self, x: Tensor, n_last_blocks: int = 1) -> EncoderOutput:
        enc, depth = self.enc, self.cfg.depth
        n_last_blocks = min(n_last_blocks, depth)
        t, grid = enc.prepare_tokens(x.to(self.stream_dtype))
        t = t.contiguous()  # the embeddings follow the input's dtype: already the stream's
        layers = []
        r = self.cfg.num_register_tokens
        for i in range(depth):
            t = self.block(i, t)
            if i >= depth - n_last_blocks:  # earlier layers: only their CLS is read (the norm is per token)
                u = t if i == depth - 1 else t[:, : 1 + r]
                # no final norm (final_norm=False): copy, as a later block may add into t in place
                layers.append(u.clone() if isinstance(enc.norm, nn.Identity) else enc.norm(u))
        drop = (lambda u: torch.cat([u[:, :1], u[:, 1 + r :]], dim=1)) if r else (lambda u: u)
        return EncoderOutput(tokens=drop(layers[-1]), layers=[drop(u) for u in layers], grid=grid)


def _packed(
    weight: Tensor, bias: Tensor | None, rows: int, gamma: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """A linear's ``weight [N, K]`` (scaled per output channel by a layer-scale ``gamma``) in bf16, packed by
    oneDNN for about ``rows`` input rows, and its ``bias [N]`` (scaled alike) in bf16."""
    w, b = weight.detach().float(), None if bias is None else bias.detach().float()
    if gamma is not None:  # ls(W x + b) = (diag(g) W) x + g b: the layer scale costs nothing at inference
        g = gamma.detach().float()
        w, b = w * g[:, None], None if b is None else b * g
    packed = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16), rows)
    return packed, None if b is None else b.to(torch.bfloat16)


# token rows per fused-attention call: the kernel runs faster on a few images at a time than on a whole batch
# (ViT-B/16 at 224, batch 64: 31 ms per layer in chunks of 8 images vs 37 ms at once; cache-resident q, k, v)
ATTENTION_ROWS = 1600


def _attention(qkv: Tensor) -> Tensor:
    """Softmax attention of ``qkv [B, T, 3, heads, Dh]`` -> ``[B, T, heads, Dh]`` (contiguous), through the fused
    SDPA kernel in chunks of about :data:`ATTENTION_ROWS` token rows."""
    b, t = qkv.shape[:2]
    out = qkv.new_empty(b, t, qkv.shape[3], qkv.shape[4])
    step = max(1, ATTENTION_ROWS // t)
    for a in range(0, b, step):
        q, k, v = qkv[a : a + step].permute(2, 0, 3, 1, 4)
        out[a : a + step] = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    return out


class _PatchLinear(nn.Module):
    """The patch embedding (a stride-p convolution) as one packed bf16 matmul over the unfolded patches.

    ``forward(x [B, C, H, W])`` -> ``[B, D, H/p, W/p]`` (a view whose flatten + transpose is the token matrix), the
    convolution's numbers up to summation order (a bf16 convolution here ran ~4x slower than the matmul)."""

    def __init__(self, conv: nn.Conv2d, rows: int) -> None:
        super().__init__()
        self.p, self.d = conv.kernel_size[0], conv.out_channels
        # the kernel [D, C, p, p] flattened is a Linear over (channel, row, column)-ordered patches
        self.packed = _packed(conv.weight.reshape(self.d, -1), conv.bias, rows)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p, rows, cols = self.p, h // self.p, w // self.p
        patches = x.reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(b * rows * cols, c * p * p)
        out = torch.ops.mkldnn._linear_pointwise(patches, *self.packed, "none", [], "")
        return out.view(b, rows, cols, self.d).permute(0, 3, 1, 2)


class PackedBf16ViT(FusedViT):
    """bf16 inference copy of a :class:`VisionTransformer` on prepacked oneDNN linears (module docstring).

    ``rows`` is the number of token rows (batch x tokens) the weights' layout is chosen for; any batch runs.
    The source encoder is left unchanged; ``self.enc`` is a bf16 copy of its embeddings and norms (its block
    linears are identities: the packed weights replace them, so its attention and MLP cannot run on their own).
    """

    stream_dtype = torch.bfloat16

    def __init__(self, encoder: VisionTransformer, rows: int = 16 * 197) -> None:
        with torch.device("meta"):
            copy = type(encoder)(encoder.cfg)
        for blk in copy.blocks:  # the copy keeps what the fused forward reads: its linears are packed below
            blk.attn.qkv = blk.attn.proj = blk.mlp.fc1 = blk.mlp.fc2 = nn.Identity()
        keep = copy.state_dict().keys()
        state = {k: v.detach().to(torch.bfloat16) for k, v in encoder.state_dict().items() if k in keep}
        copy.load_state_dict(state, assign=True)
        super().__init__(copy.set_info(encoder.info))
        conv = encoder.patch_embed.proj
        if conv.kernel_size == conv.stride and conv.kernel_size[0] == conv.kernel_size[1] and conv.padding == (0, 0):
            self.enc.patch_embed.proj = _PatchLinear(conv, rows)  # prepare_tokens calls it as the convolution
        self.packed = []
        for blk in encoder.blocks:
            ls1, ls2 = (getattr(ls, "gamma", None) for ls in (blk.ls1, blk.ls2))
            self.packed.append(
                {
                    "qkv": _packed(blk.attn.qkv.weight, blk.attn.qkv.bias, rows),
                    "proj": _packed(blk.attn.proj.weight, blk.attn.proj.bias, rows, ls1),
                    "fc1": _packed(blk.mlp.fc1.weight, blk.mlp.fc1.bias, rows),
                    "fc2": _packed(blk.mlp.fc2.weight, blk.mlp.fc2.bias, rows, ls2),
                }
            )

    def block(self, i: int, x: Tensor) -> Tensor:
        blk, p, ops = self.enc.blocks[i], self.packed[i], torch.ops.mkldnn
        b, t, d = x.shape
        flat = x.view(b * t, d)
        y = F.layer_norm(flat, (d,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        qkv = ops._linear_pointwise(y, *p["qkv"], "none", [], "")
        o = _attention(qkv.view(b, t, 3, blk.attn.num_heads, d // blk.attn.num_heads)).view(b * t, d)
        flat = ops._linear_pointwise.binary(o, flat, *p["proj"], "add")  # x + proj(o): one pass
        y = F.layer_norm(flat, (d,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        y = ops._linear_pointwise(y, *p["fc1"], "gelu", [], "none")  # exact (erf) GELU, as nn.GELU()
        return ops._linear_pointwise.binary(y, flat, *p["fc2"], "add").view(b, t, d)
