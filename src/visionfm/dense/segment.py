"""Segmentation end to end: train on the shared engine, predict at the original resolution, evaluate, overlay."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..distributed import resolve_device
from .config import DenseConfig, save_config
from .data import DenseSpec, load_target, read_fov, resolve_spec
from .datasets import SegmentationDataset, load_rgb01, select
from .metrics import SegmentationMeter
from .models_io import build_from_config, load_run, save_run
from .transforms import JointAugment

__all__ = ["spec_from_config", "train_segmentation", "predict_segmentation", "overlay", "PALETTE"]

log = logging.getLogger(__name__)
PALETTE = np.array([[0, 255, 0], [255, 0, 0], [255, 255, 0], [0, 128, 255], [255, 0, 255], [0, 255, 255],
                    [255, 128, 0], [128, 0, 255]], dtype=np.float32)


def spec_from_config(cfg: DenseConfig, data: str | None = None, split: str | None = None) -> DenseSpec:
    """The label layout of ``cfg`` applied to ``data``/``split`` (defaults: the training data)."""
    return resolve_spec(data or cfg.data, split or cfg.split, cfg.masks if data is None else None,
                        cfg.fov if data is None else None, cfg.kind, cfg.classes, cfg.resize_masks)


def _engine_config(cfg: DenseConfig):
    from ..engine import TrainConfig

    return TrainConfig(output_dir=cfg.output_dir, epochs=cfg.epochs, max_steps=cfg.max_steps,
                       batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup_epochs=cfg.warmup_epochs, precision=cfg.precision, device=cfg.device, seed=cfg.seed,
                       num_workers=cfg.num_workers)


def train_segmentation(cfg: DenseConfig) -> Path:
    """Train a segmenter (ViT + decoder, or the U-Net baseline) with the shared engine.

    Returns:
        the run folder holding ``model.safetensors``, ``dense.yaml`` and the engine's logs/checkpoints.
    """
    from ..engine import Trainer
    from .tasks import SegmentationTask

    if not cfg.output_dir:
        raise ValueError("an output run folder is required (--output)")
    torch.manual_seed(cfg.seed)
    spec = spec_from_config(cfg)
    items = select(spec.items(), cfg.subset)
    cfg.kind, cfg.classes = spec.kind, list(spec.classes)
    model, mean, std = build_from_config(cfg, len(spec.classes))
    cfg.extra.update(out_channels=len(spec.classes), names=list(spec.classes),
                     train_images=[str(i.image) for i in items])
    run = Path(cfg.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "dense.yaml")
    data = SegmentationDataset(items, spec, cfg.input_size, mean, std, JointAugment() if cfg.augment else None,
                               min_length=cfg.batch_size, crop=cfg.crop)
    task = SegmentationTask(model, list(spec.classes))
    result = Trainer(task, _engine_config(cfg), data).fit()
    log.info("training finished: %s", getattr(result, "last_path", run))
    save_run(task.model, cfg, run)
    return run


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend boolean masks ``[K, H, W]`` onto an RGB uint8 image ``[H, W, 3]`` in palette colours."""
    out = image.astype(np.float32)
    for c, m in enumerate(masks):
        out[m] = (1 - alpha) * out[m] + alpha * PALETTE[c % len(PALETTE)]
    return out.clip(0, 255).astype(np.uint8)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, path: Path, size: int | None, mean: Sequence[float],
                  std: Sequence[float], device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """One image -> (probabilities ``[K, H, W]`` at the original resolution, RGB uint8 image ``[H, W, 3]``).

    ``size`` None runs the whole image at its native resolution, zero-padded to a multiple of 32.
    """
    x, (h, w) = load_rgb01(path, size)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    x = (x - m) / s
    if size is None:  # pad after normalising so the border reads as zero input, as in crop padding
        x = F.pad(x, (0, -w % 32, 0, -h % 32))
    logits = model(x[None].to(device)).float()
    if size is None:
        logits = logits[..., :h, :w]
    # Upsample logits (not thresholded masks) so the boundary is placed at sub-pixel precision.
    prob = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))[0]
    from ..data import read_image

    img = read_image(path)
    img8 = img if img.dtype == np.uint8 else (img * 255).round().astype(np.uint8)
    return prob.cpu().numpy(), img8


def predict_segmentation(run: str | Path, data: str | Path, output: str | Path, split: str = "test",
                         subset: str | None = None, device: str = "auto", threshold: float = 0.5,
                         evaluate: bool = True, hd95_max_side: int = 1024) -> dict:
    """Predict every image under ``data`` with a trained run; write masks, overlays and (with labels) metrics.

    Writes ``<stem>.png`` (binary: 0/255) or ``<stem>_<class>.png`` per class, ``<stem>_overlay.png``, and
    ``metrics.json`` (per-class Dice, IoU, sensitivity, specificity, AUC inside the FOV, HD95 in original pixels).

    Returns:
        the metrics dict (empty when the data has no masks or ``evaluate`` is False).
    """
    dev = resolve_device(device)
    model, cfg = load_run(run, dev)
    names = cfg.extra["names"]
    spec = resolve_spec(data, split, None, None, cfg.kind, names, cfg.resize_masks)
    has_masks = evaluate and spec.masks is not None
    items = select(spec.items(require_masks=has_masks), subset)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    meter = SegmentationMeter(names, threshold=threshold)
    for it in tqdm(items, desc="predicting"):
        prob, img = predict_probs(model, it.image, None if cfg.crop else cfg.input_size, cfg.extra["mean"],
                                  cfg.extra["std"], dev)
        fov = None
        if has_masks:
            target, fov = load_target(it, spec, img.shape[:2])
            _update(meter, prob, target > 0.5, fov, hd95_max_side)
        elif it.fov is not None:
            fov = read_fov(it, img.shape[:2])
        pred = prob > threshold
        if fov is not None:  # the loss never saw outside the field of view: report background there
            pred &= fov[None]
        _write_masks(out, it.image.stem, names, pred)
        Image.fromarray(overlay(img, pred)).save(out / f"{it.image.stem}_overlay.png")
    metrics = meter.compute() if has_masks else {}
    result = {"run": str(run), "data": str(data), "split": split, "images": len(items), "threshold": threshold,
              "input_size": cfg.input_size, "model": cfg.model, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    save_config(cfg, out / "dense.yaml")
    return metrics


def _write_masks(out: Path, stem: str, names: Sequence[str], pred: np.ndarray) -> None:
    if len(names) == 1:
        Image.fromarray((pred[0] * 255).astype(np.uint8)).save(out / f"{stem}.png")
        return
    for c, name in enumerate(names):
        Image.fromarray((pred[c] * 255).astype(np.uint8)).save(out / f"{stem}_{name}.png")


def _update(meter: SegmentationMeter, prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None,
            hd95_max_side: int) -> None:
    """Pixel metrics at full resolution; HD95 on a strided copy of very large images, rescaled to original px."""
    stride = max(1, int(np.ceil(max(prob.shape[1:]) / hd95_max_side))) if hd95_max_side else 1
    meter.update(prob, gt, fov, hd95_stride=stride)
