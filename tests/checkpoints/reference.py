"""Independent reference forward passes of the released families, for fixtures that do not go through visionfm.

timm and the DINOv2 code cannot be imported here (they need torchvision, which does not work with this torch build),
so these are minimal re-implementations written from their public model definitions, read for this purpose:

- DINOv2 (facebookresearch/dinov2, ``dinov2/models/vision_transformer.py``, ``layers/``): CLS + patches, position
  embeddings (CLS included) added, resized by scale factor ``(n + 0.1) / N`` bicubic; registers inserted after the
  CLS token *after* the position embeddings; pre-norm blocks ``x + ls1(attn(norm1(x)))``,
  ``x + ls2(mlp(norm2(x)))``; final LayerNorm (eps 1e-6).
- timm ``VisionTransformer`` (huggingface/pytorch-image-models, ``timm/models/vision_transformer.py``,
  ``_pos_embed``): with ``no_embed_class`` the position embeddings cover the patches only and are added *before*
  ``[cls, reg_token, patches]`` are concatenated; ``resample_abs_pos_embed`` resizes by target size, bicubic,
  antialiased; ``global_pool='avg'`` averages the patch tokens (prefix excluded).
- RETFound / MAE fine-tuning (rmaphoh/RETFound_MAE ``models_vit.py``, ``util/pos_embed.py``): position embeddings
  resized once at load time to the input grid (bicubic, ``size=``, ``align_corners=False``); with global pooling the
  final norm is deleted and ``fc_norm(mean(patch tokens))`` feeds ``head``.

Nothing here imports visionfm, so the outputs are computed independently of the loader under test. Attention is
written out (softmax of scaled dot products), not taken from ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def _ln(x: Tensor, sd: dict, name: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], EPS)


def _attn(x: Tensor, sd: dict, p: str, heads: int) -> Tensor:
    b, t, d = x.shape
    qkv = F.linear(x, sd[f"{p}.qkv.weight"], sd.get(f"{p}.qkv.bias"))
    q, k, v = qkv.reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(d // heads), dim=-1)
    return F.linear((a @ v).transpose(1, 2).reshape(b, t, d), sd[f"{p}.proj.weight"], sd[f"{p}.proj.bias"])


def _block(x: Tensor, sd: dict, i: int, heads: int) -> Tensor:
    p = f"blocks.{i}"
    ls1, ls2 = sd.get(f"{p}.ls1.gamma"), sd.get(f"{p}.ls2.gamma")
    y = _attn(_ln(x, sd, f"{p}.norm1"), sd, f"{p}.attn", heads)
    x = x + (y * ls1 if ls1 is not None else y)
    h = F.linear(_ln(x, sd, f"{p}.norm2"), sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"])
    y = F.linear(F.gelu(h), sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
    return x + (y * ls2 if ls2 is not None else y)


def _blocks(x: Tensor, sd: dict, heads: int) -> Tensor:
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        x = _block(x, sd, i, heads)
    return x


def _patches(img: Tensor, sd: dict) -> Tensor:
    w = sd["patch_embed.proj.weight"]
    return F.conv2d(img, w, sd["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)


def resize_grid(pos: Tensor, rows: int, cols: int, how: str) -> Tensor:
    """Patch position embeddings ``[1, N, D]`` -> ``[1, rows*cols, D]``: ``dinov2`` (scale factor with the 0.1
    offset), ``mae`` (target size), ``timm`` (target size, antialiased)."""
    side = math.isqrt(pos.shape[1])
    if (side, side) == (rows, cols):
        return pos
    grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if how == "dinov2":
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    else:
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False, antialias=how == "timm")
    return grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)


def dinov2_forward(sd: dict, img: Tensor, heads: int, resize: str = "dinov2") -> Tensor:
    """DINOv2 ``forward_features`` in DINOv2 naming (``register_tokens``, CLS position included): normalised tokens
    ``[B, 1 + R + N, D]``. ``resize="mae"`` is RETFound's pipeline (embeddings resized by target size at load)."""
    b, _, h, w = img.shape
    p = sd["patch_embed.proj.weight"].shape[-1]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), _patches(img, sd)], dim=1)
    pos = sd["pos_embed"]
    x = x + torch.cat([pos[:, :1], resize_grid(pos[:, 1:], h // p, w // p, resize)], dim=1)
    if "register_tokens" in sd:
        x = torch.cat([x[:, :1], sd["register_tokens"].expand(b, -1, -1), x[:, 1:]], dim=1)
    return _ln(_blocks(x, sd, heads), sd, "norm")


def timm_forward(sd: dict, img: Tensor, heads: int) -> Tensor:
    """timm ``forward_features`` in timm naming with ``no_embed_class`` (and ``dynamic_img_size`` when the input
    grid differs from the embeddings'): normalised tokens ``[B, 1 + R + N, D]``."""
    b, _, h, w = img.shape
    p = sd["patch_embed.proj.weight"].shape[-1]
    x = _patches(img, sd) + resize_grid(sd["pos_embed"], h // p, w // p, "timm")
    prefix = [sd["cls_token"].expand(b, -1, -1)]
    if "reg_token" in sd:
        prefix.append(sd["reg_token"].expand(b, -1, -1))
    x = torch.cat([*prefix, x], dim=1)
    return _ln(_blocks(x, sd, heads), sd, "norm")


def mae_finetuned_logits(sd: dict, img: Tensor, heads: int) -> Tensor:
    """RETFound / MAE ``models_vit.VisionTransformer`` as fine-tuned: ``head(fc_norm(mean(patches)))`` with global
    pooling (no final norm), ``head(norm(x)[:, 0])`` with the CLS token; layer scale when the file has it."""
    b, _, h, w = img.shape
    p = sd["patch_embed.proj.weight"].shape[-1]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), _patches(img, sd)], dim=1)
    pos = sd["pos_embed"]
    x = x + torch.cat([pos[:, :1], resize_grid(pos[:, 1:], h // p, w // p, "mae")], dim=1)
    x = _blocks(x, sd, heads)
    pooled = _ln(x[:, 1:].mean(1), sd, "fc_norm") if "fc_norm.weight" in sd else _ln(x, sd, "norm")[:, 0]
    return F.linear(pooled, sd["head.weight"], sd["head.bias"])
