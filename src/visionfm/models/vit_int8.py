"""Static int8 inference of the ViT on oneDNN: AMX-INT8 matrix multiplies on the CPUs that have them.

Every ``Linear`` of the transformer blocks runs ``onednn::qlinear_pointwise`` on prepacked int8 weights (symmetric,
per output channel) and uint8 activations (one scale and zero point per linear input, calibrated on real images by
:meth:`Int8VisionTransformer.calibrate`, after SmoothQuant smoothing of the qkv and fc1 inputs:
:func:`quantize_encoder`); GELU is fused into ``fc1``, whose output is written already quantised for
``fc2``, and the residual adds are fused into ``proj`` and ``fc2``. The residual stream and layer norms stay
float32, attention runs in bf16 through the fused SDPA kernel. Inference only: no trainable parameters.

On this project's AMX CPU an int8 ``Linear`` of a ViT-B batch runs ~1.4x a bf16 one (benchmarks/extract.py); the
price is the features' fidelity: per-tensor activation quantisation moves them by a few percent of their range, so
the change (and a probe AUROC change) is measured beside every speed number, never assumed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vit import VisionTransformer
from .vit_fused import FusedViT, _attention

__all__ = [
    "SMOOTH_ALPHA",
    "Int8Linear",
    "Int8VisionTransformer",
    "cpu_has_amx_int8",
    "layer_norm_absmax",
    "quantize_encoder",
    "smoothing_scales",
]

# SmoothQuant's migration strength for the qkv and fc1 inputs (0.5: the paper's default for most models)
SMOOTH_ALPHA = 0.5

# quantize_per_tensor / _per_channel are used only as fast one-pass rounding kernels whose bytes are then viewed as
# plain uint8 / int8 (no quantised tensor leaves this module); their deprecation notice concerns quantised tensor
# types, so it is silenced here, by its exact text.
warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel and other")


def cpu_has_amx_int8() -> bool:
    """Whether this CPU multiplies int8 matrices with AMX (``amx_int8`` in /proc/cpuinfo)."""
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric uint8 scale and zero point covering [lo, hi] (and 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    return scale, int(min(255, max(0, round(-lo / scale))))


def _plain(q: Tensor, dtype: torch.dtype) -> Tensor:
    """A plain ``dtype`` view of a quantised tensor's bytes (``int_repr()`` would copy them, single-threaded)."""
    return torch.empty(0, dtype=dtype).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())


class Int8Linear(nn.Module):
    """One ``Linear`` as a oneDNN int8 matmul: uint8 input (static scale), int8 weights per output channel.

    ``forward(xq [M, K] uint8)`` -> ``[M, N]`` in ``out_dtype`` (float32, bfloat16, or uint8 quantised with
    ``out_q``), optionally GELU fused, optionally adding ``residual`` (float32, ``[M, N]``) in place.
    """

    def __init__(
        self, lin: nn.Linear, out_dtype: torch.dtype, gelu: bool = False, in_scale: Tensor | None = None
    ) -> None:
        super().__init__()
        w = lin.weight.detach().float()
        if in_scale is not None:  # smoothing: x @ W^T = (x / s) @ (W diag(s))^T, the input divided upstream
            w = w * in_scale[None, :]
        lo, hi = torch.aminmax(w, dim=1)  # one pass (abs().amax() takes three)
        self.w_scale = (torch.maximum(-lo, hi) / 127.0).clamp_min(1e-12)
        self.w_zp = torch.zeros(w.shape[0], dtype=torch.long)
        qw = torch.quantize_per_channel(w, self.w_scale, self.w_zp, 0, torch.qint8)
        self.packed = torch.ops.onednn.qlinear_prepack(_plain(qw, torch.int8), None)
        bias = lin.bias.detach().float() if lin.bias is not None else None
        self.bias = bias.to(out_dtype) if bias is not None and out_dtype == torch.bfloat16 else bias
        self.out_dtype, self.gelu = out_dtype, gelu
        self.out_q: tuple[float, int] = (1.0, 0)  # scale, zero point of a uint8 output (fc1 -> fc2)
        self.in_range: tuple[float, float] | None = None  # calibrated input range; None until calibrated
        self.calibrating = False
        self.x_scale, self.x_zp = 1.0, 0

    def quant(self, x: Tensor) -> Tensor:
        """float ``[..., K]`` -> uint8 ``[M, K]`` with this linear's input scale and zero point."""
        x = x.reshape(-1, x.shape[-1]).float()
        if self.calibrating:  # widen the input range with this batch, then quantise with it
            lo, hi = (float(v) for v in torch.aminmax(x))
            old = self.in_range or (lo, hi)
            self.in_range = (min(lo, old[0]), max(hi, old[1]))
            self.x_scale, self.x_zp = _qparams(*self.in_range)
        elif self.in_range is None:
            raise RuntimeError("Int8Linear used before calibration (Int8VisionTransformer.calibrate)")
        return _plain(torch.quantize_per_tensor(x, self.x_scale, self.x_zp, torch.quint8), torch.uint8)

    def _operands(self, xq: Tensor) -> tuple:
        """The leading arguments of both oneDNN int8 linears: input, its scale and zero point, the packed weight,
        its per-channel scales and zero points."""
        return xq, self.x_scale, self.x_zp, self.packed, self.w_scale, self.w_zp

    def forward(self, xq: Tensor, residual: Tensor | None = None) -> Tensor:
        if residual is not None:  # residual + x @ W^T + b, written into residual (oneDNN "sum" post-op)
            return torch.ops.onednn.qlinear_pointwise.binary(
                *self._operands(xq),
                residual,
                self.bias,
                1.0,
                0,
                torch.float32,
                1.0,
                0,
                "sum",
                1.0,
                "none",
                [],
                "",
            )
        out_dtype = torch.float32 if self.calibrating and self.out_dtype == torch.uint8 else self.out_dtype
        return torch.ops.onednn.qlinear_pointwise(
            *self._operands(xq),
            self.bias,
            self.out_q[0],
            self.out_q[1],
            out_dtype,
            "gelu" if self.gelu else "none",
            [],
            "none" if self.gelu else "",
        )


class Int8VisionTransformer(FusedViT):
    """An int8 inference copy of a :class:`VisionTransformer` (see the module docstring); the source is unchanged.

    ``forward(x [B, 3, H, W], n_last_blocks)`` -> :class:`EncoderOutput` as :class:`~visionfm.models.vit_fused.FusedViT`
    gives it (float32 residual stream).

    ``ln_absmax``: per block, the per-channel max |value| of the ``norm1`` and ``norm2`` outputs on calibration
    images (:func:`layer_norm_absmax`); given, the qkv and fc1 inputs are **smoothed** (SmoothQuant, Xiao et al.
    2023): each channel j is divided by ``s_j = absmax_x_j^alpha / absmax_w_j^(1-alpha)`` (folded into a copy of the
    layer norm's affine) and the weights' column j multiplied by it, an identity in exact arithmetic that moves
    outlier channels' range from the per-tensor activation scale into the per-channel weight scales.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        ln_absmax: list[tuple[Tensor, Tensor]] | None = None,
        alpha: float = SMOOTH_ALPHA,
    ) -> None:
        if encoder.cfg.layer_scale:
            raise ValueError("int8: layer-scale encoders (DINOv2) are not supported; use bf16")
        super().__init__(encoder)
        self.norms, self.qblocks = [], []
        for i, blk in enumerate(encoder.blocks):
            s1, s2 = (None, None) if ln_absmax is None else ln_absmax[i]
            s1 = None if s1 is None else smoothing_scales(s1, blk.attn.qkv.weight, alpha)
            s2 = None if s2 is None else smoothing_scales(s2, blk.mlp.fc1.weight, alpha)
            self.norms.append((_affine(blk.norm1, s1), _affine(blk.norm2, s2)))
            self.qblocks.append(
                {
                    "qkv": Int8Linear(blk.attn.qkv, torch.bfloat16, in_scale=s1),
                    "proj": Int8Linear(blk.attn.proj, torch.float32),
                    "fc1": Int8Linear(blk.mlp.fc1, torch.uint8, gelu=True, in_scale=s2),
                    "fc2": Int8Linear(blk.mlp.fc2, torch.float32),
                }
            )

    @torch.inference_mode()
    def calibrate(self, batches: Iterable[Tensor]) -> Int8VisionTransformer:
        """Set every linear's input scale from the min/max it sees over ``batches`` (normalised
        ``[B, 3, H, W]``), running this int8 model itself (each range measured after the quantisation upstream of
        it, as inference will see it); returns ``self``."""
        linears = [lin for q in self.qblocks for lin in q.values()]
        for lin in linears:
            lin.calibrating, lin.in_range = True, None
        try:
            for x in batches:
                self(x, 1)
        finally:
            for lin in linears:
                lin.calibrating = False
        for q in self.qblocks:  # fc1 writes its GELU output already quantised for fc2
            q["fc1"].out_q = (q["fc2"].x_scale, q["fc2"].x_zp)
        return self

    def block(self, i: int, x: Tensor) -> Tensor:
        """One pre-norm block on ``x [B, T, D]`` float32 (updated in place by the fused residual adds)."""
        blk, q, (n1, n2) = self.enc.blocks[i], self.qblocks[i], self.norms[i]
        b, t, d = x.shape
        h = blk.attn.num_heads
        flat = x.view(b * t, d)
        qkv = q["qkv"](q["qkv"].quant(F.layer_norm(x, (d,), *n1)))
        o = _attention(qkv.view(b, t, 3, h, d // h)).view(b * t, d).float()  # bf16 SDPA in chunks
        q["proj"](q["proj"].quant(o), residual=flat)
        # GELU(fc1) written as uint8 for fc2 (float while calibrating)
        hid = q["fc1"](q["fc1"].quant(F.layer_norm(x, (d,), *n2)))
        q["fc2"](hid if hid.dtype == torch.uint8 else q["fc2"].quant(hid), residual=flat)
        return x


def smoothing_scales(absmax_x: Tensor, weight: Tensor, alpha: float = 0.5) -> Tensor:
    """SmoothQuant's per-input-channel scales ``[K]`` from the activations' per-channel max |x| ``[K]`` and the
    weight ``[N, K]``: ``absmax_x^alpha / absmax_w^(1-alpha)`` (alpha 0: none of the range moves to the weights)."""
    w = weight.detach().float().abs().amax(0).clamp_min(1e-5)
    return (absmax_x.float().clamp_min(1e-5) ** alpha / w ** (1 - alpha)).clamp_min(1e-5)


def _affine(norm: nn.LayerNorm, scale: Tensor | None) -> tuple[Tensor | None, Tensor | None, float]:
    """(weight, bias, eps) of ``norm`` divided per channel by ``scale`` (None: as they are); copies."""
    w = None if norm.weight is None else norm.weight.detach().float()
    b = None if norm.bias is None else norm.bias.detach().float()
    if scale is not None:
        w = 1.0 / scale if w is None else w / scale
        b = None if b is None else b / scale
    return w, b, norm.eps


@torch.inference_mode()
def layer_norm_absmax(encoder: VisionTransformer, batches: Iterable[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Per block, the per-channel max |value| ``[D]`` of the ``norm1`` and ``norm2`` outputs over ``batches``
    (normalised ``[B, 3, H, W]``), from one float forward (bf16 autocast: only the ranges are needed)."""
    stats = [[torch.zeros(encoder.embed_dim), torch.zeros(encoder.embed_dim)] for _ in encoder.blocks]

    def hook(i: int, j: int):
        def record(_mod, _inp, out: Tensor) -> None:
            stats[i][j] = torch.maximum(stats[i][j], out.detach().float().abs().flatten(0, -2).amax(0))

        return record

    handles = [
        n.register_forward_hook(hook(i, j))
        for i, b in enumerate(encoder.blocks)
        for j, n in enumerate((b.norm1, b.norm2))
    ]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for x in batches:
                encoder(x)
    finally:
        for h in handles:
            h.remove()
    return [(a, b) for a, b in stats]


def quantize_encoder(
    encoder: VisionTransformer, batches: Iterable[Tensor], smooth: float | None = SMOOTH_ALPHA
) -> Int8VisionTransformer:
    """The int8 inference copy of ``encoder`` (float32 weights), calibrated on ``batches`` (normalised
    ``[B, 3, H, W]``, e.g. 8 images of the data to encode); ``smooth``: SmoothQuant's alpha for the qkv and fc1
    inputs (None: no smoothing)."""
    batches = list(batches)
    absmax = None if smooth is None else layer_norm_absmax(encoder, batches)
    return Int8VisionTransformer(encoder, absmax, smooth or 0.0).calibrate(batches)
