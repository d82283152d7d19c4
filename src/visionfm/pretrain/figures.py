"""MAE's reconstruction figure: original / masked input / reconstruction, one row per image, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..fileio import atomic_write
from .augment import normalize
from .mae import MAETask, patchify, unpatchify

__all__ = ["reconstruct_images", "reconstruction_figure"]


@torch.no_grad()
def reconstruct_images(
    task: MAETask, x: torch.Tensor, noise: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked inputs and reconstructions of ``x`` ``[B, 3, S, S]`` in [0, 1].

    With normalised-pixel targets the prediction of each patch is put back on the true patch's mean and variance
    (as the MAE demo does): the figure shows structure, not the brightness the model was never asked for.

    Returns:
        masked ``[B, 3, S, S]`` (hidden patches grey), reconstruction ``[B, 3, S, S]`` (visible patches pasted
        back) and the pixel mask ``[B, 1, S, S]`` (1 hidden).
    """
    p = task.encoder.cfg.patch_size
    rows = x.shape[-1] // p
    xn = normalize(x, mean, std)
    pred, mask = task.reconstruct(xn, noise)
    if task.norm_pix:
        target = patchify(xn, p)
        pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
    rec = unpatchify(pred.float(), p, rows, rows) * std[:, :, None, None] + mean[:, :, None, None]
    m = unpatchify(mask[..., None].expand(-1, -1, p * p), p, rows, rows)  # [B, 1, S, S]
    masked = x * (1 - m) + 0.5 * m
    return masked, (x * (1 - m) + rec.clamp(0, 1) * m), m


def _to_pil(t: torch.Tensor, side: int) -> Image.Image:
    arr = (t.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr).resize((side, side), Image.NEAREST)


def reconstruction_figure(task: MAETask, dataset: Any, path: str | Path, n: int = 4, side: int = 160) -> Path:
    """Draw ``n`` images of ``dataset`` (a :class:`~visionfm.pretrain.data.PretrainDataset` of method mae): their
    one crop, the encoder's view (hidden patches grey) and the reconstruction; written atomically to ``path``."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    dev = next(task.parameters()).device
    x = torch.stack([it["global"][0] for it in items]).float().div(255.0).to(dev)
    noise = torch.stack([it["noise"] for it in items]).to(dev)
    mean, std = torch.stack([it["mean"] for it in items]).to(dev), torch.stack([it["std"] for it in items]).to(dev)
    was_training = task.training
    task.eval()
    masked, rec, _ = reconstruct_images(task, x, noise, mean, std)
    task.train(was_training)
    head, pad = 18, 4
    canvas = Image.new("RGB", (3 * (side + pad) + pad, head + len(items) * (side + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(("original", f"masked ({task.mask_ratio:.0%} hidden)", "reconstruction")):
        draw.text((pad + c * (side + pad), 3), title, fill="black")
    for r in range(len(items)):
        for c, img in enumerate((x[r], masked[r], rec[r])):
            canvas.paste(_to_pil(img, side), (pad + c * (side + pad), head + r * (side + pad)))
    with atomic_write(Path(path)) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
