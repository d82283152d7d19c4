"""The one Vision Transformer behind every VisionFM encoder, on plain torch.

Numerically it is the official VisionFM / iBOT / DINO ViT (pre-norm blocks, LayerNorm eps 1e-6, CLS token,
learned position embeddings interpolated bicubically for other input sizes), so official checkpoints reproduce
their reference outputs. Optional extras cover the other released families: layer scale and register tokens
(DINOv2), and a learned mask token for masked-image modelling (iBOT).

Attention runs through ``scaled_dot_product_attention`` (fused kernels) unless the caller asks for attention
probabilities of a block; only the requested blocks take the explicit softmax path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from .info import EncoderInfo

__all__ = ["POS_INTERP", "EncoderOutput", "ViTConfig", "VisionTransformer", "interpolate_pos_embed"]

# Position-embedding resizing of each released code base; each reproduces its own family's numbers.
POS_INTERP = {
    "offset": "bicubic with scale factor (n + 0.1) / N (DINO, iBOT, VisionFM, DINOv2's own forward)",
    "size": "bicubic to the target size (MAE / RETFound fine-tuning's interpolate_pos_embed)",
    "size-antialias": "bicubic to the target size with antialiasing (timm's resample_abs_pos_embed)",
}


@dataclass
class ViTConfig:
    """Architecture of a ViT encoder; saved with every checkpoint so weights never meet the wrong shape.

    Attributes:
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (head width D / heads).
        patch_size: square patch side in pixels (14 or 16 in released weights).
        img_size: side of the square input the position embeddings were trained for.
        mlp_ratio: MLP hidden width / D.
        qkv_bias: whether the qkv projection has a bias.
        layer_scale: whether blocks scale their residual branches (DINOv2 ``ls1``/``ls2``).
        num_register_tokens: DINOv2 register tokens inserted after the CLS token.
        in_chans: input channels.
        ln_eps: LayerNorm epsilon.
        final_norm: whether the last block is followed by a LayerNorm (``norm``); False for classifiers saved with
            global-average pooling, whose ``fc_norm`` belongs to the head (RETFound / MAE fine-tuning).
        pos_interp: how position embeddings are resized for another input grid (see :data:`POS_INTERP`).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 16
    img_size: int = 224
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_scale: bool = False
    num_register_tokens: int = 0
    in_chans: int = 3
    ln_eps: float = 1e-6
    final_norm: bool = True
    pos_interp: str = "offset"

    def __post_init__(self) -> None:
        if self.pos_interp not in POS_INTERP:
            raise ValueError(f"pos_interp {self.pos_interp!r} is not one of {sorted(POS_INTERP)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncoderOutput:
    """Named outputs of one forward pass.

    Attributes:
        tokens: last block's tokens after the final norm (when the encoder has one: ``cfg.final_norm``),
            ``[B, 1+N, D]`` (CLS first; registers excluded).
        layers: the last n blocks' tokens, each after the final norm, oldest first; each ``[B, 1+N, D]``.
        attention: last block's attention probabilities ``[B, heads, T, T]`` (T = 1+R+N) when asked, else None.
        attentions: every requested block's attention probabilities, keyed by block index.
        registers: register tokens after the final norm ``[B, R, D]`` (R may be 0).
        grid: patch grid (rows, cols) so that N = rows * cols.
    """

    tokens: Tensor
    layers: list[Tensor]
    attention: Tensor | None = None
    attentions: dict[int, Tensor] = field(default_factory=dict)
    registers: Tensor | None = None
    grid: tuple[int, int] = (0, 0)

    @property
    def cls(self) -> Tensor:
        """CLS token of the last block ``[B, D]``."""
        return self.tokens[:, 0]

    @property
    def patch_tokens(self) -> Tensor:
        """Patch tokens of the last block ``[B, N, D]``."""
        return self.tokens[:, 1:]

    def cls_concat(self) -> Tensor:
        """CLS tokens of the last n blocks concatenated ``[B, n*D]`` (the official linear-probe feature)."""
        return torch.cat([t[:, 0] for t in self.layers], dim=-1)


def interpolate_pos_embed(pos_embed: Tensor, rows: int, cols: int, prefix: int = 1, mode: str = "offset") -> Tensor:
    """Resize learned position embeddings to a ``rows x cols`` patch grid, exactly as the official code does.

    The official DINO/iBOT/VisionFM code interpolates bicubically with a *scale factor* of
    ``(n + 0.1) / sqrt(N)`` (the 0.1 avoids floating-point truncation of the output size), not with a target
    size; the two differ numerically, so this mirrors it to reproduce released features.

    Args:
        pos_embed: ``[1, prefix + N, D]`` with N a square number.
        rows: target patch rows.
        cols: target patch columns.
        prefix: number of leading non-patch tokens (the CLS token).
        mode: one of :data:`POS_INTERP`; ``"offset"`` (default) is the official VisionFM / DINO resizing.

    Returns:
        ``[1, prefix + rows*cols, D]``.
    """
    n = pos_embed.shape[1] - prefix
    side = int(math.sqrt(n))
    if side * side != n:
        raise ValueError(f"position embeddings hold {n} patch positions, not a square grid")
    if rows == side and cols == side:
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, prefix:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    # Interpolate in float32 whatever the autocast dtype: bicubic in bf16 drifts visibly.
    if mode == "offset":
        grid = F.interpolate(grid.float(), scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    else:
        grid = F.interpolate(
            grid.float(), size=(rows, cols), mode="bicubic", align_corners=False, antialias=mode == "size-antialias"
        )
    if grid.shape[-2:] != (rows, cols):
        raise RuntimeError(f"position-embedding interpolation gave {tuple(grid.shape[-2:])}, wanted {(rows, cols)}")
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat([pos_embed[:, :prefix], grid], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention; fused SDPA unless probabilities are requested."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """x ``[B, T, D]`` -> (``[B, T, D]``, probabilities ``[B, heads, T, T]`` or None)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if return_attention:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d)), attn


class LayerScale(nn.Module):
    """Per-channel residual scaling (DINOv2 ``ls1``/``ls2``)."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ViTConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias)
        self.ls1 = LayerScale(d) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        self.ls2 = LayerScale(d) if cfg.layer_scale else nn.Identity()
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + drop_path(self.ls1(y), self.drop_path_rate, self.training)
        x = x + drop_path(self.ls2(self.mlp(self.norm2(x))), self.drop_path_rate, self.training)
        return x, attn


class VisionTransformer(nn.Module):
    """ViT encoder with named outputs.

    Args:
        cfg: architecture.
        drop_path_rate: maximum stochastic-depth rate (linearly increasing over blocks).
        grad_checkpointing: recompute block activations in the backward pass to save memory.
    """

    def __init__(self, cfg: ViTConfig, drop_path_rate: float = 0.0, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.embed_dim, cfg.patch_size
        self.embed_dim = d
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(cfg.in_chans, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (cfg.img_size // p) ** 2, d))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d)) if cfg.num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        rates = torch.linspace(0, drop_path_rate, cfg.depth, device="cpu").tolist()  # also under a meta device
        self.blocks = nn.ModuleList([Block(cfg, r) for r in rates])
        self.norm = nn.LayerNorm(d, eps=cfg.ln_eps) if cfg.final_norm else nn.Identity()
        self.grad_checkpointing = grad_checkpointing
        self.info: EncoderInfo | None = None  # modality, normalisation, provenance: set by the loader (set_info)
        if not self.pos_embed.is_meta:  # built on "meta" only to be loaded: nothing to initialise
            self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_info(self, info: EncoderInfo | None) -> VisionTransformer:
        """Declare what is known about this encoder (normalisation, modality, source); returns ``self``."""
        self.info = info
        return self

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus register tokens."""
        return 1 + self.cfg.num_register_tokens

    def prepare_tokens(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, tuple[int, int]]:
        """Embed patches, replace masked ones, add CLS, position embeddings and registers.

        Args:
            x: ``[B, C, H, W]`` normalised images, H and W multiples of the patch size.
            mask: optional ``[B, H/p, W/p]`` bool; True patches are replaced by the learned mask token (iBOT).

        Returns:
            tokens ``[B, 1+R+N, D]`` and the patch grid (rows, cols).
        """
        b, _, h, w = x.shape
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {p}")
        x = self.patch_embed.proj(x)  # [B, D, rows, cols]
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        if mask is not None:
            if mask.shape != (b, rows, cols):
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match patch grid {(b, rows, cols)}")
            x = torch.where(mask.flatten(1).unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        x = x + interpolate_pos_embed(self.pos_embed, rows, cols, mode=self.cfg.pos_interp).to(x.dtype)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1).to(x.dtype), x[:, 1:]], dim=1)
        return x, (rows, cols)

    def _attention_blocks(self, return_attention: bool | str | Iterable[int]) -> set[int]:
        depth = self.cfg.depth
        if return_attention is True:
            return {depth - 1}
        if return_attention is False or return_attention is None:
            return set()
        if return_attention == "all":
            return set(range(depth))
        return {int(i) % depth for i in return_attention}  # negative indices count from the end

    def forward(
        self,
        x: Tensor,
        n_last_blocks: int = 1,
        return_attention: bool | str | Sequence[int] = False,
        mask: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode a batch.

        Args:
            x: ``[B, C, H, W]`` normalised float images.
            n_last_blocks: how many of the last blocks' normalised tokens to return in ``layers`` (at most depth).
            return_attention: True for the last block's attention probabilities, ``"all"`` for every block,
                or block indices (negative counts from the end).
            mask: optional ``[B, H/p, W/p]`` bool patch mask for masked-image modelling.

        Returns:
            :class:`EncoderOutput`.
        """
        if n_last_blocks < 1:
            raise ValueError(f"n_last_blocks must be >= 1, got {n_last_blocks}")
        n_last_blocks = min(n_last_blocks, self.cfg.depth)  # as officially: 'last 4' of 3 blocks is all 3
        want_attn = self._attention_blocks(return_attention)
        x, grid = self.prepare_tokens(x, mask)
        layers, attentions = [], {}
        r = self.cfg.num_register_tokens
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and self.training and i not in want_attn:
                x, attn = checkpoint(blk, x, use_reentrant=False)
            else:
                x, attn = blk(x, i in want_attn)
            if attn is not None:
                attentions[i] = attn
            if i >= self.cfg.depth - n_last_blocks:
                layers.append(self.norm(x))
        out = layers[-1]
        drop_reg = (lambda t: torch.cat([t[:, :1], t[:, 1 + r :]], dim=1)) if r else (lambda t: t)
        return EncoderOutput(
            tokens=drop_reg(out),
            layers=[drop_reg(t) for t in layers],
            attention=attentions[max(attentions)] if attentions else None,
            attentions=attentions,
            registers=out[:, 1 : 1 + r],
            grid=grid,
        )

    def run_blocks(self, x: Tensor) -> Tensor:
        """Every block and the final norm on a token sequence of any length, e.g. the prefix tokens and only the
        visible patches of :meth:`prepare_tokens`'s output (MAE): ``[B, T, D]`` -> ``[B, T, D]``."""
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)[0]
            else:
                x = blk(x)[0]
        return self.norm(x)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (besides biases and norms)."""
        return {"pos_embed", "cls_token", "mask_token", "register_tokens"}
