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

from ..data import read_image
from ..distributed import resolve_device
from .config import DenseConfig, save_config
from .data import DenseSpec, load_target, read_fov, resolve_spec
from .datasets import SegmentationDataset, as_rgb8, select, to_rgb01
from .metrics import SegmentationMeter
from .models_io import build_from_config, engine_config, load_run, save_run
from .transforms import JointAugment

__all__ = ["spec_from_config", "train_segmentation", "predict_segmentation", "overlay", "PALETTE"]

log = logging.getLogger(__name__)
PALETTE = np.array([[0, 255, 0], [255, 0, 0], [255, 255, 0], [0, 128, 255], [255, 0, 255], [0, 255, 255],
                    [255, 128, 0], [128, 0, 255]], dtype=np.float32)


def spec_from_config(cfg: DenseConfig, data: str | None = None, split: str | None = None) -> DenseSpec:
    """The label layout of ``cfg`` applied to ``data``/``split`` (defaults: the training data)."""
    return resolve_spec(data or cfg.data, split or cfg.split, cfg.masks if data is None else None,
                        cfg.fov if data is None else None, cfg.kind, cfg.classes, cfg.resize_masks)


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
                               min_length=cfg.batch_size, crop=cfg.crop, max_side=cfg.max_side,
                               fg_crop=cfg.fg_crop)
    task = SegmentationTask(model)
    result = Trainer(task, engine_config(cfg, len(data)), data).fit()
    log.info("training finished: %s", getattr(result, "last_path", run))
    save_run(task.model, cfg, run)
    return run


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend boolean masks ``[K, H, W]`` onto an RGB uint8 image ``[H, W, 3]`` in palette colours."""
    out = image.copy()
    for c, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))  # blend only the rows a mask touches (lesions are small)
        if rows.size == 0:
            continue
        a, b = rows[0], rows[-1] + 1
        blend = ((1 - alpha) * out[a:b] + alpha * PALETTE[c % len(PALETTE)]).round().astype(np.uint8)
        out[a:b] = np.where(m[a:b, :, None], blend, out[a:b])
    return out


@torch.no_grad()
def predict_probs(model: torch.nn.Module, img: np.ndarray, size: int | None, mean: Sequence[float],
                  std: Sequence[float], device: torch.device, max_side: int | None = None) -> np.ndarray:
    """One ``[H, W, 3]`` image -> probabilities ``[K, H, W]`` at its original resolution.

    ``size`` S runs the image resized to SxS; None runs it whole at its native resolution (or scaled down to
    ``max_side``), zero-padded to a multiple of 32. Logits, not thresholded masks, are upsampled to (H, W), so
    boundaries land at sub-pixel precision.
    """
    h, w = img.shape[:2]
    x = to_rgb01(img, size, max_side)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    rows, cols = x.shape[-2:]
    if size is None:  # pad after normalising so the border reads as zero input, as in crop padding
        x = F.pad(x, (0, -cols % 32, 0, -rows % 32))
    logits = model(x[None].to(device)).float()[..., :rows, :cols]
    prob = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))[0]
    return prob.cpu().numpy()


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
        img = read_image(it.image)
        prob = predict_probs(model, img, None if cfg.crop else cfg.input_size, cfg.extra["mean"],
                             cfg.extra["std"], dev, cfg.max_side)
        img = as_rgb8(img)
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
        Image.fromarray(overlay(img, pred)).save(out / f"{it.image.stem}_overlay.png", compress_level=1)
    metrics = meter.compute() if has_masks else {}
    result = {"run": str(run), "data": str(data), "split": split, "subset": subset, "images": len(items),
              "threshold": threshold, "input_size": cfg.input_size, "crop": cfg.crop, "max_side": cfg.max_side,
              "model": cfg.model, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    save_config(cfg, out / "dense.yaml")
    return metrics


def _write_masks(out: Path, stem: str, names: Sequence[str], pred: np.ndarray) -> None:
    """0/255 PNGs: ``<stem>.png`` for one class, else ``<stem>_<class>.png`` (fast zlib level: fundus-sized)."""
    for c, name in enumerate(names):
        path = out / (f"{stem}.png" if len(names) == 1 else f"{stem}_{name}.png")
        Image.fromarray(pred[c].astype(np.uint8) * 255).save(path, compress_level=1)


def _update(meter: SegmentationMeter, prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None,
            hd95_max_side: int) -> None:
    """Pixel metrics at full resolution; HD95 on a strided copy of very large images, rescaled to original px."""
    stride = max(1, int(np.ceil(max(prob.shape[1:]) / hd95_max_side))) if hd95_max_side else 1
    meter.update(prob, gt, fov, hd95_stride=stride)
