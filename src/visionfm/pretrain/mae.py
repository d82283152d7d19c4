"""MAE pretraining (He et al. 2022; the RETFound recipe): the encoder sees a random subset of patches, a light
decoder reconstructs the pixels of the hidden ones.

Names follow facebookresearch/mae ``models_mae.py`` (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks``, ``decoder_norm``, ``decoder_pred``), so a RETFound/MAE checkpoint's decoder loads by name. The
masking, the targets and the loss are pure functions with known-answer tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.task import StepState, Task
from ..models import VisionTransformer, ViTConfig
from ..models.vit import Block
from .augment import normalize
from .health import HealthWatch, collapse_indicators

__all__ = [
    "MAEDecoder",
    "MAETask",
    "init_mae_weights",
    "mae_loss",
    "patchify",
    "random_masking",
    "sincos_pos_embed",
    "unpatchify",
]


def random_masking(x: Tensor, noise: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking by sorting noise: the ``N * (1 - mask_ratio)`` patches of lowest noise stay.

    Args:
        x: patch tokens ``[B, N, D]``.
        noise: ``[B, N]`` uniform noise (one draw per sample decides its mask).
        mask_ratio: fraction of patches hidden.

    Returns:
        visible tokens ``[B, L, D]`` (in noise order), ``mask`` ``[B, N]`` (1 hidden, 0 visible, in patch order),
        ``ids_restore`` ``[B, N]`` (the permutation that puts the shuffled sequence back in patch order).
    """
    b, n, d = x.shape
    keep = int(n * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :keep] = 0
    return visible, torch.gather(mask, 1, ids_restore), ids_restore


def patchify(imgs: Tensor, p: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, N, p*p*C]`` (row-major patches, each as (row, col, channel) pixels, as MAE)."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: Tensor, p: int, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, N, p*p*C]`` -> ``[B, C, rows*p, cols*p]``."""
    b, _, k = x.shape
    c = k // (p * p)
    x = x.reshape(b, rows, cols, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, rows * p, cols * p)


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """Mean squared error over the hidden patches only.

    Args:
        pred: ``[B, N, K]`` predicted patch pixels.
        target: ``[B, N, K]`` true patch pixels (:func:`patchify` of the input).
        mask: ``[B, N]`` 1 for hidden patches.
        norm_pix: normalise each target patch by its own mean and variance (MAE's ``norm_pix_loss``).
    """
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)  # [B, N]
    return (per_patch * mask).sum() / mask.sum()


def sincos_pos_embed(dim: int, rows: int, cols: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE): half the channels encode the row, half the column.

    Returns:
        ``[1 + rows*cols, dim]`` (a zero row first for the CLS token when ``cls_token``), float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float32) / np.float32(dim / 4.0))  # float32 as MAE

    def one_axis(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
    emb = np.concatenate([one_axis(gw), one_axis(gh)], axis=1)  # MAE: the width coordinate first
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float()


def init_mae_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears (and patch projection as a linear), zero biases, unit norms,
    CLS / mask tokens N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if isinstance(module, VisionTransformer):
        w = module.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(module.cls_token, std=0.02)
        grid = module.cfg.img_size // module.cfg.patch_size
        with torch.no_grad():  # fixed sin-cos, as MAE's encoder (frozen by the task)
            module.pos_embed.copy_(sincos_pos_embed(module.embed_dim, grid, grid)[None])
    if isinstance(module, MAEDecoder):
        nn.init.normal_(module.mask_token, std=0.02)


class MAEDecoder(nn.Module):
    """The MAE decoder: embed the visible latent, append mask tokens, unshuffle, add fixed sin-cos positions, run
    transformer blocks, predict each patch's pixels.

    Args:
        embed_dim: encoder width D.
        grid: patch grid side (N = grid * grid).
        patch_size: p; the prediction has p*p*in_chans values per patch.
        dim: decoder width (MAE: 512).
        depth: decoder blocks (MAE: 8).
        num_heads: decoder heads (MAE: 16).
        in_chans: image channels.
    """

    def __init__(
        self,
        embed_dim: int,
        grid: int,
        patch_size: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        block_cfg = ViTConfig(
            embed_dim=dim, depth=depth, num_heads=num_heads, patch_size=patch_size, img_size=grid * patch_size
        )
        self.grid, self.patch_size = grid, patch_size
        self.decoder_embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(dim, grid, grid)[None])  # fixed, [1, 1+N, d]
        self.decoder_blocks = nn.ModuleList([Block(block_cfg) for _ in range(depth)])
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, patch_size * patch_size * in_chans)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Latent ``[B, 1+L, D]`` (CLS + visible) and ``ids_restore`` ``[B, N]`` -> pixels ``[B, N, p*p*C]``."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        fill = self.mask_token.to(x.dtype).expand(b, n + 1 - x.shape[1], -1)
        seq = torch.cat([x[:, 1:], fill], dim=1)  # [B, N, d] in shuffled order
        seq = torch.gather(seq, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], seq], dim=1) + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)[0]
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class MAETask(Task):
    """Masked-autoencoder pretraining of ``encoder`` with ``decoder`` for the one training loop.

    Args:
        encoder: the ViT (its position embeddings are frozen sin-cos, as MAE; its iBOT mask token is unused).
        decoder: the :class:`MAEDecoder`.
        mask_ratio: fraction of patches hidden from the encoder.
        norm_pix: normalised-pixel targets.
        log_every: the loop's ``log_every`` (collapse indicators are judged on logged steps).
        main: whether this process reports collapse warnings.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        decoder: MAEDecoder,
        mask_ratio: float,
        norm_pix: bool = True,
        log_every: int = 10,
        main: bool = True,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.mask_ratio, self.norm_pix = mask_ratio, norm_pix
        self.health, self._health_scalars = HealthWatch(log_every, main), {}
        encoder.pos_embed.requires_grad_(False)
        encoder.mask_token.requires_grad_(False)  # DDP requires every trainable tensor to be used

    def param_groups(self) -> list[dict[str, Any]]:
        """MAE's groups (timm ``add_weight_decay`` without a skip list): no weight decay on biases and 1-D tensors;
        the CLS and mask tokens are decayed, the fixed position embeddings are not trained."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [
            g for g in ({"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}) if g["params"]
        ]

    def exported_encoder(self) -> VisionTransformer:
        """The encoder a run exports (the decoder is for pretraining only)."""
        return self.encoder

    def encode(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches of ``x`` ``[B, 3, S, S]``: latent ``[B, 1+L, D]``, mask and ids_restore
        ``[B, N]``."""
        enc = self.encoder
        tokens, _ = enc.prepare_tokens(x)  # [B, prefix+N, D], positions added
        k = enc.num_prefix_tokens
        visible, mask, ids_restore = random_masking(tokens[:, k:], noise, self.mask_ratio)
        latent = enc.run_blocks(torch.cat([tokens[:, :k], visible], dim=1))
        return torch.cat([latent[:, :1], latent[:, k:]], dim=1), mask, ids_restore  # registers dropped

    def reconstruct(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted patches ``[B, N, p*p*3]`` (normalised per patch when ``norm_pix``) and the mask ``[B, N]``."""
        latent, mask, ids_restore = self.encode(x, noise)
        return self.decoder(latent, ids_restore), mask

    def forward(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        """One MAE step: loss on the hidden patches; logs the collapse indicators of the visible CLS tokens."""
        with torch.autocast(batch["mean"].device.type, enabled=False):
            x = normalize(batch["global"][:, 0].float().div_(255.0), batch["mean"], batch["std"])
        latent, mask, ids_restore = self.encode(x, batch["noise"])
        pred = self.decoder(latent, ids_restore)
        loss = mae_loss(pred.float(), patchify(x, self.encoder.cfg.patch_size), mask, self.norm_pix)
        out = {"loss": loss, "mask_ratio": mask.mean(), "bad_images": batch["bad"].sum().float()}
        out.update(collapse_indicators(latent[:, 0].detach().float()))
        self._health_scalars = {k: out[k] for k in ("feature_std", "effective_rank")}
        return out

    def on_after_step(self, state: StepState) -> None:
        self.health.after_step(state.step, state.total_steps, self._health_scalars)
