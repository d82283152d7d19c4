"""End-to-end fine-tuning: encoder + head trained together on images, with the same tasks, losses and metrics.

The encoder learns at a lower rate than the head with layer-wise decay (block i of L gets
``lr * encoder_lr_scale * layer_decay ** (L + 1 - (i + 1))``; embeddings decay most, as in BEiT/MAE fine-tuning),
stochastic depth, and batch augmentation in the task (random resized crop, flips, small rotation, brightness and
contrast; plain torch, on the device). The fine-tuned encoder is saved in the run folder (``encoder.safetensors``)
and the run's encoder reference points at it, so ``predict`` and ``evaluate_run`` work as for heads on features.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..checkpoints import load_encoder, save_encoder
from ..data.images import Preprocess, read_image
from ..evaluation import write_results
from ..models import VisionTransformer
from .api import carve_validation, fit_task, report_scores
from .config import HeadConfig
from .data import EncoderRef, FeatureTable, file_sha256
from .labels import LabelSpec, LabelTable, infer_class_names, read_labels
from .runs import label_spec, new_task, save_run

__all__ = ["FinetuneConfig", "finetune", "augment_batch", "layer_decay_groups", "ImageLabelDataset", "image_table"]

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig(HeadConfig):
    """A fine-tuning run: every :class:`HeadConfig` setting (``train/val/test`` unused) plus the images.

    Attributes:
        weights: encoder weights to start from.
        modality: modality of the images (normalisation unless the weights record it).
        data: dataset root (official ``vfm`` layout, ImageNet folder) or CSV manifest.
        split / val_split / test_split: ``vfm`` splits (``<split>_labels.txt``); without ``val_split`` a
            stratified validation split is carved from training.
        val_data / test_data: other roots or manifests for validation / test (default: ``data``).
        input_size: square input side.
        n_last_blocks: CLS tokens of this many last blocks feed the head (official 4).
        encoder_lr_scale: encoder learning rate relative to the head's.
        layer_decay: layer-wise learning-rate decay factor.
        drop_path: stochastic-depth rate of the encoder.
        augment: batch augmentation of training images.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast.
        clip_grad: gradient-norm clipping.
        num_workers: image-decoding worker processes.
    """

    weights: str = ""
    modality: str | None = None
    data: str = ""
    split: str = "training"
    val_split: str | None = None
    test_split: str | None = None
    val_data: str | None = None
    test_data: str | None = None
    input_size: int = 224
    n_last_blocks: int = 4
    encoder_lr_scale: float = 0.1
    layer_decay: float = 0.75
    drop_path: float = 0.1
    augment: bool = True
    precision: str = "fp32"
    clip_grad: float | None = 3.0
    num_workers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feature != "cls":
            raise ValueError("fine-tuning feeds the head the CLS tokens of the last n blocks: feature must be 'cls'")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")


def augment_batch(x: Tensor, scale: tuple[float, float] = (0.6, 1.0), max_rotate: float = 10.0,
                  jitter: float = 0.2) -> Tensor:
    """Random resized crop, horizontal and vertical flips, rotation, brightness/contrast per image.

    Args:
        x: ``[B, 3, H, W]`` normalised images.

    Returns:
        ``[B, 3, H, W]`` augmented images (same normalisation; border filled with the image mean).
    """
    b, dev = x.shape[0], x.device
    s = torch.empty(b, device=dev).uniform_(*scale).sqrt()  # side scale of the crop
    ang = torch.empty(b, device=dev).uniform_(-max_rotate, max_rotate) * math.pi / 180
    flip = torch.where(torch.rand(b, 2, device=dev) < 0.5, -1.0, 1.0)
    shift = (1 - s)[:, None] * torch.empty(b, 2, device=dev).uniform_(-1, 1)
    cos, sin = ang.cos() * s, ang.sin() * s
    theta = torch.stack([torch.stack([cos * flip[:, 0], -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip[:, 0], cos * flip[:, 1], shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mean = x.mean((2, 3), keepdim=True)
    out = F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean
    bright = torch.empty(b, 1, 1, 1, device=dev).uniform_(-jitter, jitter)
    contrast = torch.empty(b, 1, 1, 1, device=dev).uniform_(1 - jitter, 1 + jitter)
    return (out - mean) * contrast + mean + bright


def layer_decay_groups(encoder: VisionTransformer, lr_scale: float, decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the encoder: block i at ``lr_scale * decay ** (L - i)``, embeddings at ``decay ** (L + 1)``,
    the final norm at ``lr_scale``; no weight decay on biases, norms and position/CLS tokens."""
    depth = len(encoder.blocks)
    skip = encoder.no_weight_decay()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in encoder.named_parameters():
        if not p.requires_grad:
            continue
        layer = (int(name.split(".")[1]) + 1 if name.startswith("blocks.") else
                 depth + 1 if name.startswith("norm.") else 0)
        no_wd = p.ndim <= 1 or name in skip
        g = groups.setdefault((layer, no_wd), {"params": [], "apply_wd": not no_wd,
                                                "lr_scale": lr_scale * decay ** (depth + 1 - layer)})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


class ImageLabelDataset(Dataset):
    """Images with labels: ``{"image": [3, S, S], "y": [W]}`` (forecast: ``y`` = converts, plus ``"t"`` days)."""

    def __init__(self, paths: list[Path], y: np.ndarray, preprocess: Preprocess, kind: str) -> None:
        self.paths, self.preprocess, self.kind = paths, preprocess, kind
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"image": self.preprocess(read_image(self.paths[i])), "y": self.y[i, :1] if self.kind == "forecast"
                else self.y[i]}
        if self.kind == "forecast":
            item["t"] = self.y[i, 1]
        return item


def _label_source(data: str, split: str) -> Path:
    root = Path(data)
    if root.is_dir() and (root / f"{split}_labels.txt").is_file():
        return root / f"{split}_labels.txt"
    if root.is_dir() and (root / split).is_dir():
        return root / split  # ImageNet layout: <root>/<split>/<class>/...
    return root


def image_table(cfg: FinetuneConfig, spec: LabelSpec, data: str, split: str) -> tuple[FeatureTable, Path]:
    """Labels of one split as a table without features, and the folder its paths are relative to."""
    src = _label_source(data, split)
    table: LabelTable = read_labels(src, spec, cfg.label_columns, cfg.patient_column)
    rows = list(table.rows.values())
    y = np.array([r.values for r in rows], dtype=np.float64)
    if spec.kind == "classify" and spec.names is None:
        spec.names = infer_class_names(y[:, 0])
    pats = np.array([r.patient for r in rows], dtype=object) if any(r.patient for r in rows) else None
    n = len(rows)
    t = FeatureTable(np.zeros((n, 0), np.float32), y, [r.rel for r in rows], np.array([""] * n, dtype=object), pats,
                     np.array([str(src)] * n, dtype=object))
    return t, (src if src.is_dir() else src.parent)


def _encoder(cfg: FinetuneConfig) -> tuple[VisionTransformer, EncoderRef]:
    base = load_encoder(cfg.weights, cfg.modality)
    enc = VisionTransformer(base.cfg, drop_path_rate=cfg.drop_path)
    enc.load_state_dict(base.state_dict(), strict=True)
    enc.info = base.info
    enc.mask_token.requires_grad_(False)  # pretraining only
    i = base.info
    ref = EncoderRef("", "", i.arch, base.cfg.to_dict(), i.modality or "", list(i.mean), list(i.std),
                     cfg.input_size, min(cfg.n_last_blocks, base.cfg.depth))
    return enc, ref


def finetune(cfg: FinetuneConfig) -> Path:
    """Fine-tune encoder + head on images; select on validation, score on test; returns the run folder."""
    if not cfg.output_dir or not cfg.weights or not cfg.data:
        raise ValueError("fine-tuning needs --weights, --data and --output")
    run, t0 = Path(cfg.output_dir), time.perf_counter()
    spec = label_spec(cfg)
    train, root = image_table(cfg, spec, cfg.data, cfg.split)
    if cfg.val_split or cfg.val_data:
        val, val_root = image_table(cfg, spec, cfg.val_data or cfg.data, cfg.val_split or cfg.split)
        how = f"given ({cfg.val_data or cfg.data}: {cfg.val_split or cfg.split})"
    else:
        (train, val, how), val_root = carve_validation(train, cfg.task, cfg.val_fraction, cfg.seed), root
    enc, ref = _encoder(cfg)
    train.encoders = {ref.modality or "unknown": ref}
    task, info = new_task(cfg, train, spec, in_dim=ref.n_last_blocks * enc.cfg.embed_dim, encoder=enc,
                          n_last_blocks=ref.n_last_blocks, augment=augment_batch if cfg.augment else None,
                          param_groups_fn=lambda e: layer_decay_groups(e, cfg.encoder_lr_scale, cfg.layer_decay))
    pre = Preprocess(cfg.input_size, ref.mean, ref.std)

    def dataset(t: FeatureTable, r: Path) -> ImageLabelDataset:
        return ImageLabelDataset([r / p for p in t.paths], t.y, pre, cfg.task)

    sel = fit_task(task, dataset(train, root), dataset(val, val_root), run, epochs=cfg.epochs,
                   batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, min_lr=cfg.min_lr,
                   warmup_epochs=cfg.warmup_epochs, max_steps=cfg.max_steps, seed=cfg.seed, device=cfg.device,
                   select_metric=cfg.select_metric, progress=cfg.progress, precision=cfg.precision,
                   clip_grad=cfg.clip_grad, val_every=cfg.val_every or 1)
    enc_path = run / "encoder.safetensors"
    save_encoder(task.encoder.cpu(), enc_path, source=str(cfg.weights))
    ref.weights, ref.sha256 = str(enc_path.resolve()), file_sha256(enc_path)
    info["encoders"] = {ref.modality or "unknown": ref.to_dict()}
    info["selection"] = {**sel, "validation_split": how}
    info["finetuned_from"] = {"weights": str(Path(cfg.weights).resolve()), "sha256": file_sha256(cfg.weights)}
    save_run(run, task, info)
    metrics = {"task": cfg.task, "names": info["names"], "selection": info["selection"], "finetuned": True,
               "n": {"train": len(train), "val": len(val), "test": 0}, "encoders": {ref.modality: {
                   "weights": ref.weights, "sha256": ref.sha256, "arch": ref.arch}},
               "finetuned_from": info["finetuned_from"]}
    if cfg.test_split or cfg.test_data:
        test, test_root = image_table(cfg, spec, cfg.test_data or cfg.data, cfg.test_split or cfg.split)
        dev = next(task.parameters()).device
        loader = DataLoader(dataset(test, test_root), batch_size=cfg.batch_size, num_workers=cfg.num_workers)
        task.to(dev)
        scores, y = task.predict(loader, dev)
        metrics["n"]["test"] = len(test)
        metrics["test"] = report_scores(task, y, scores, test.paths, run, cfg.n_boot, cfg.seed)
    metrics["train_seconds"] = time.perf_counter() - t0
    write_results(run, metrics)
    return run
