"""``train_vl``: FLAIR-style image-text training on the one engine, writing a loadable run folder.

Run folder: ``vl.yaml`` (resolved config), ``config.yaml`` / ``checkpoint_last.pth`` / ``log.jsonl`` (the loop's),
``projection.safetensors`` (both projections and the logit scale), ``run.json`` (image encoder path and SHA-256, text
encoder identity, knowledge version, shared width, input size), plus ``image_encoder.safetensors`` when the image
encoder trained and ``text_encoder/`` when the text encoder did.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoints import load_encoder, save_encoder, save_safetensors
from ..config import save_config
from ..distributed import is_main
from ..engine import Trainer
from ..errors import UserError
from ..fileio import atomic_write, file_sha256, prepare_run_folder
from ..models import VisionTransformer
from .config import VL_CONFIG, VLConfig
from .data import TextTable, VLTrainData, decode_pixels, norm_stats, read_sources
from .knowledge import load_knowledge
from .model import VLModel, set_image_training
from .task import VLTask
from .text import TextEncoder

__all__ = ["IMAGE_ENCODER_FILE", "PROJECTION_FILE", "RUN_INFO", "TEXT_ENCODER_DIR", "encode_pixels", "train_vl"]

log = logging.getLogger(__name__)
RUN_INFO, PROJECTION_FILE = "run.json", "projection.safetensors"
IMAGE_ENCODER_FILE, TEXT_ENCODER_DIR = "image_encoder.safetensors", "text_encoder"


@torch.no_grad()
def encode_pixels(
    encoder: VisionTransformer, pixels: Tensor, mean: Tensor, std: Tensor, batch_size: int = 64
) -> Tensor:
    """Final CLS features ``[N, D]`` of uint8 images ``[N, 3, S, S]``, normalised per row by ``mean`` / ``std``
    ``[N, 3]``."""
    encoder.eval()
    out = []
    for i in range(0, len(pixels), batch_size):
        x = pixels[i : i + batch_size].float() / 255
        x = (x - mean[i : i + batch_size, :, None, None]) / std[i : i + batch_size, :, None, None]
        out.append(encoder(x).cls.float())
    return torch.cat(out)


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(fraction * n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _build(cfg: VLConfig) -> tuple[VLTask, VLTrainData, VisionTransformer, TextEncoder, TextTable]:
    knowledge = load_knowledge(cfg.knowledge)
    items = read_sources(cfg.data, knowledge, cfg.modality, cfg.domain_knowledge)
    encoder = load_encoder(cfg.weights, cfg.modality)
    size = cfg.input_size or encoder.cfg.img_size
    if size % encoder.cfg.patch_size:
        raise UserError(f"--input-size {size} is not a multiple of the patch size {encoder.cfg.patch_size}")
    text = TextEncoder(cfg.text_encoder)
    table = TextTable(items)
    log.info(
        "%d pairs, %d distinct texts, %d keys from %d sources",
        len(items),
        len(table.texts),
        len(table.keys),
        len(cfg.data),
    )
    pixels = decode_pixels(items, size)
    mean, std = norm_stats(items, encoder.info)
    frozen = cfg.image_training == "frozen"
    set_image_training(encoder, cfg.image_training, cfg.unfreeze_blocks)
    feats = encode_pixels(encoder, pixels, mean, std) if frozen else None
    text.requires_grad_(cfg.train_text)
    cache = None if cfg.train_text else text.encode(table.texts)
    with torch.random.fork_rng():  # seeded projection init without touching the caller's RNG
        torch.manual_seed(cfg.train.seed)
        model = VLModel(
            None if frozen else encoder,
            text if cfg.train_text else None,
            encoder.cfg.embed_dim,
            text.width,
            cfg.embed_dim,
            cfg.logit_scale_init,
        )
    data = VLTrainData(
        table, cfg.train.seed, feats=feats, pixels=None if frozen else pixels, mean=mean, std=std, flip=cfg.flip
    )
    return VLTask(model, table.texts, cache), data, encoder, text, table


def train_vl(cfg: VLConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or with ``resume`` continue exactly; with ``overwrite`` replace the run in the folder) and export the
    run; returns the run folder."""
    if not cfg.weights:
        raise UserError("--weights is required (the image encoder)")
    if not cfg.data:
        raise UserError("--data is required (manifests or class folders)")
    out = Path(cfg.train.output_dir)
    prepare_run_folder(out, "vision-language", (VL_CONFIG,), resume, overwrite)
    task, data, encoder, text, table = _build(cfg)
    train_idx, val_idx = _split(len(data), cfg.val_fraction, cfg.train.seed)
    if len(train_idx) < cfg.train.batch_size:
        raise UserError(f"{len(train_idx)} training pairs are fewer than --batch-size {cfg.train.batch_size}")
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / VL_CONFIG)
    result = Trainer(task, cfg.train, data.subset(train_idx), data.subset(val_idx) if val_idx else None).fit(resume)
    if is_main():
        _export(out, cfg, task.model, encoder, text, table, result.history)
    return out


def _export(
    out: Path,
    cfg: VLConfig,
    model: VLModel,
    encoder: VisionTransformer,
    text: TextEncoder,
    table: TextTable,
    history: list,
) -> None:
    if cfg.image_training == "frozen":
        weights = Path(cfg.weights).resolve()
    else:
        weights = out / IMAGE_ENCODER_FILE
        save_encoder(encoder, weights, source=str(cfg.weights))
    text_name, text_sha = text.identity.name, text.identity.weights_sha256
    if cfg.train_text:
        text.model.save_pretrained(out / TEXT_ENCODER_DIR, safe_serialization=True)
        text.tokenizer.save_pretrained(out / TEXT_ENCODER_DIR)
        text_name, text_sha = TEXT_ENCODER_DIR, file_sha256(out / TEXT_ENCODER_DIR / "model.safetensors")
    save_safetensors(model.projection_state(), out / PROJECTION_FILE, {"visionfm_vl": "1"})
    info = {
        "kind": "vision-language",
        "image_encoder": {
            "weights": weights.name if weights.parent == out else str(weights),
            "sha256": file_sha256(weights),
            "arch": encoder.info.arch,
            "modality": encoder.info.modality or "",
            "trained": cfg.image_training,
        },
        "text_encoder": {"name": text_name, "sha256": text_sha, "width": text.width, "trained": cfg.train_text},
        "knowledge_version": load_knowledge(cfg.knowledge).version,
        "embed_dim": cfg.embed_dim,
        "input_size": cfg.input_size or encoder.cfg.img_size,
        "logit_scale": model.logit_scale,
        "pairs": len(table.item_texts),
        "keys": len(table.keys),
        "validation": history[-1] if history else None,
    }
    with atomic_write(out / RUN_INFO) as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    log.info("vision-language run written to %s", out)
