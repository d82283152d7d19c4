"""Explain what an encoder looks at: attention grids for images, and the evolution over pretraining checkpoints.

``explain`` writes, for a file or folder of images, PNG grids with one row per image (the image as the encoder saw it,
then one overlay per head of the last block, the merged map and the rollout) and ``attention.npz`` with the raw maps.
``attention_evolution`` draws the paper's Figure 6b: one row per checkpoint, one column per image, from checkpoint
files or straight from a ``visionfm pretrain`` run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checkpoints import atomic_write
from ..data import Preprocess, list_images, read_image, resize_image
from ..distributed import resolve_device
from ..modalities import get_modality
from .attention import attention_maps
from .render import overlay, save_grid
from .runs import expand_weights, load_weights

__all__ = ["MAP_KINDS", "Explanation", "attention_evolution", "collect_images", "explain", "explain_images"]

log = logging.getLogger(__name__)
MAP_KINDS = ("mean", "rollout")


@dataclass
class Explanation:
    """Attention of one image.

    Attributes:
        source: the image's path (or ``array<i>``).
        image: ``[S, S, 3]`` float in [0, 1], the resized image the encoder saw.
        heads: ``[heads, rows, cols]`` last-block CLS attention per head (each sums to 1).
        mean: ``[rows, cols]`` merged map; rollout: ``[rows, cols]`` attention rollout.
    """

    source: str
    image: np.ndarray
    heads: Tensor
    mean: Tensor
    rollout: Tensor


def collect_images(images: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files and/or folders (searched recursively) -> image paths, in the order given.

    Raises:
        FileNotFoundError: a missing file, or a folder or list with no images.
    """
    items = [images] if isinstance(images, (str, Path)) else list(images)
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise FileNotFoundError(f"no images in {item}")
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"image not found: {item}")
    if not out:
        raise FileNotFoundError("no images given")
    return out


def _encoder(
    weights: str | Path | nn.Module, modality: str | None, arch: str | None, device: torch.device
) -> tuple[nn.Module, tuple, tuple]:
    enc = load_weights(weights, modality, arch)
    info = getattr(enc, "info", None)
    if info is not None:
        mean, std = info.mean, info.std
    elif modality is not None:
        mean, std = get_modality(modality).mean, get_modality(modality).std
    else:
        raise ValueError("the encoder carries no normalisation (no .info): pass modality=...")
    return enc.to(device).eval(), tuple(mean), tuple(std)


def explain_images(
    weights: str | Path | nn.Module,
    images: str | Path | Sequence,
    modality: str | None = None,
    arch: str | None = None,
    input_size: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
) -> list[Explanation]:
    """Attention maps of every image, in batches.

    Args:
        weights: weights file (any supported format, or a checkpoint of a pretraining run) or a loaded encoder.
        images: image file, folder, list of files, or list of ``[H, W, 3]`` arrays.
        input_size: square side the images are resized to (default: the encoder's training size); a multiple of
            the patch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    enc, mean, std = _encoder(weights, modality, arch, dev)
    p = enc.cfg.patch_size
    size = int(input_size or enc.cfg.img_size)
    if size <= 0 or size % p:
        raise ValueError(f"input_size {size} must be a positive multiple of the patch size {p}")
    arrays = (
        list(images) if isinstance(images, (list, tuple)) and images and isinstance(images[0], np.ndarray) else None
    )
    sources = (
        [f"array{i}" for i in range(len(arrays))] if arrays is not None else [str(x) for x in collect_images(images)]
    )
    prep = Preprocess(size, mean, std)
    dtype = next(enc.parameters()).dtype  # e.g. an encoder loaded with dtype=torch.bfloat16
    out: list[Explanation] = []
    for start in tqdm(
        range(0, len(sources), batch_size), desc="attention", unit="batch", disable=not progress, leave=False
    ):
        chunk = sources[start : start + batch_size]
        imgs = arrays[start : start + batch_size] if arrays is not None else [read_image(s) for s in chunk]
        x = torch.stack([prep(im) for im in imgs]).to(dev, dtype=dtype)
        maps = attention_maps(enc, x)
        for j, src in enumerate(chunk):
            out.append(
                Explanation(
                    src,
                    resize_image(imgs[j], (size, size)),
                    maps.heads[j].cpu(),
                    maps.mean[j].cpu(),
                    maps.rollout[j].cpu(),
                )
            )
    return out


def _short(source: str) -> str:
    """Title of an image: its folder and name (``images/0.png``), enough to tell images of several folders apart."""
    return "/".join(Path(source).parts[-2:])


def _grid_rows(expl: Sequence[Explanation], heads: bool) -> tuple[list[list[np.ndarray]], list[str]]:
    rows = []
    for e in expl:
        row = [np.round(e.image * 255).astype(np.uint8)]
        if heads:
            row += [overlay(e.image, m) for m in e.heads]
        row += [overlay(e.image, e.mean), overlay(e.image, e.rollout)]
        rows.append(row)
    n_heads = expl[0].heads.shape[0] if heads else 0
    return rows, ["image"] + [f"head {i}" for i in range(n_heads)] + ["merged (mean)", "rollout"]


def explain(
    weights: str | Path | nn.Module,
    images: str | Path | Sequence,
    output_dir: str | Path,
    modality: str | None = None,
    arch: str | None = None,
    input_size: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    heads: bool = True,
    rows_per_grid: int = 16,
) -> dict[str, Path]:
    """Attention maps of images as PNG grids plus the raw maps.

    Writes ``attention_grid.png`` (or ``attention_grid_001.png``, ... with ``rows_per_grid`` images each) and
    ``attention.npz`` (``heads [N, h, rows, cols]``, ``mean``, ``rollout`` ``[N, rows, cols]``, ``paths``).

    Returns:
        name -> written path.
    """
    expl = explain_images(weights, images, modality, arch, input_size, batch_size, device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    chunks = [expl[i : i + rows_per_grid] for i in range(0, len(expl), rows_per_grid)]
    for k, chunk in enumerate(chunks, start=1):
        rows, cols = _grid_rows(chunk, heads)
        name = "attention_grid.png" if len(chunks) == 1 else f"attention_grid_{k:03d}.png"
        written[name] = save_grid(
            rows,
            out / name,
            cols,
            [_short(e.source) for e in chunk],
            title="CLS attention, last block" if k == 1 else "",
        )
    npz = out / "attention.npz"
    with atomic_write(npz) as tmp, open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a name
        np.savez_compressed(
            f,
            heads=torch.stack([e.heads for e in expl]).numpy(),
            mean=torch.stack([e.mean for e in expl]).numpy(),
            rollout=torch.stack([e.rollout for e in expl]).numpy(),
            paths=np.array([e.source for e in expl]),
        )
    written["attention.npz"] = npz
    log.info("attention maps of %d images written to %s", len(expl), out)
    return written


def attention_evolution(
    weights: Sequence[str | Path | nn.Module] | str | Path,
    images: str | Path | Sequence,
    output: str | Path,
    labels: Sequence[str] | None = None,
    modality: str | None = None,
    arch: str | None = None,
    input_size: int | None = None,
    device: str = "cpu",
    which: str = "mean",
) -> Path:
    """The evolution of attention over pretraining (paper Figure 6b): one row per checkpoint, one column per image.

    Args:
        weights: checkpoints in training order (files of any supported format, encoders) and/or pretraining run
            folders, each expanded to its ``checkpoint_<step>.pth`` files (see :mod:`visionfm.explain.runs`).
        labels: row titles (default: ``step N`` for run checkpoints, else the file names).
        which: ``mean`` (merged last-block map) or ``rollout``.
    """
    if which not in MAP_KINDS:
        raise ValueError(f"which={which!r} not one of {MAP_KINDS}")
    items, labels = expand_weights(weights, labels)
    rows, names = [], []
    for w in tqdm(items, desc="checkpoints", unit="ckpt", leave=False):
        expl = explain_images(w, images, modality, arch, input_size, device=device, progress=False)
        if not rows:
            rows.append([np.round(e.image * 255).astype(np.uint8) for e in expl])
            names = [_short(e.source) for e in expl]
        rows.append([overlay(e.image, getattr(e, which)) for e in expl])
    out = save_grid(rows, output, names, ["image"] + labels, title=f"attention ({which}) during pretraining")
    log.info("attention of %d checkpoints over %d images drawn in %s", len(items), len(names), out)
    return out
