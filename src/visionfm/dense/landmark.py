"""Landmark detection end to end: train heatmap regression on the shared engine, predict in original pixels."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..data import list_images, read_image
from ..distributed import resolve_device
from .config import DenseConfig, save_config
from .data import pair_files, read_mask
from .datasets import LandmarkDataset, as_rgb8, select, to_rgb01
from .landmarks import (argmax_subpixel, centre_of_mask, heatmap_from_logits, read_landmarks, scale_points,
                        soft_argmax, write_landmarks)
from .metrics import radial_errors
from .models_io import build_from_config, engine_config, load_run, save_run
from .transforms import JointAugment

__all__ = ["train_landmark", "predict_landmark", "landmarks_from_masks", "draw_landmarks", "DECODE"]

log = logging.getLogger(__name__)
DECODE = ("argmax", "soft")


def _images(data: str | Path) -> list[Path]:
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    imgs = list_images(root)
    if not imgs:
        raise FileNotFoundError(f"no images in {root}")
    return imgs


def train_landmark(cfg: DenseConfig) -> Path:
    """Train a landmark detector (ViT + decoder or U-Net) on ``cfg.data`` images with ``cfg.labels``.

    Returns:
        the run folder (``model.safetensors``, ``dense.yaml``, engine logs/checkpoints).
    """
    from ..engine import Trainer
    from .tasks import LandmarkTask

    if not cfg.output_dir or not cfg.labels:
        raise ValueError("landmark training needs --output and --labels")
    if cfg.crop:
        raise ValueError("--crop is for segmentation; landmark images are resized to --input-size")
    torch.manual_seed(cfg.seed)
    images = select(_images(cfg.data), cfg.subset)
    points, names = read_landmarks(cfg.labels, images)
    if cfg.classes:  # names for label files without them (official .npy heatmaps)
        if len(cfg.classes) != len(names):
            raise ValueError(f"--names gives {len(cfg.classes)} names for the {len(names)} landmarks in {cfg.labels}")
        names = list(cfg.classes)
    model, mean, std = build_from_config(cfg, len(names))
    cfg.task = "landmark"
    cfg.extra.update(out_channels=len(names), names=list(names), train_images=[str(p) for p in images])
    run = Path(cfg.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "dense.yaml")
    aug = JointAugment(hflip=0.0) if cfg.augment else None  # a mirror would swap left/right landmark identities
    data = LandmarkDataset(images, points, cfg.input_size, cfg.sigma, mean, std, aug, min_length=cfg.batch_size)
    task = LandmarkTask(model)
    Trainer(task, engine_config(cfg, len(data)), data).fit()
    save_run(task.model, cfg, run)
    return run


def draw_landmarks(img: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, min_side: int = 256,
                   max_side: int = 1024) -> Image.Image:
    """Plot predicted (green circles) and true (red crosses) landmarks ``[K, 2]`` on an RGB uint8 image.

    Images smaller than ``min_side`` are enlarged by a whole factor (phantoms stay readable), larger than
    ``max_side`` reduced (a 4288x2848 fundus plot stays light); points are mapped exactly either way.
    """
    h, w = img.shape[:2]
    if max(h, w) < min_side:
        z = -(-min_side // max(h, w))
        size, resample = (h * z, w * z), Image.NEAREST
    else:
        z = min(1.0, max_side / max(h, w))
        size, resample = (max(1, round(h * z)), max(1, round(w * z))), Image.BILINEAR
    im = Image.fromarray(img)
    im = im.resize((size[1], size[0]), resample) if size != (h, w) else im
    pred = scale_points(pred, (h, w), size)
    truth = None if truth is None else scale_points(truth, (h, w), size)
    d = ImageDraw.Draw(im)
    r = max(3, int(max(im.size) / 150))
    for k, (x, y) in enumerate(pred):
        d.ellipse([x - r, y - r, x + r, y + r], outline=(0, 255, 0), width=max(1, r // 2))
        if truth is not None:
            tx, ty = truth[k]
            d.line([tx - r, ty, tx + r, ty], fill=(255, 0, 0), width=max(1, r // 3))
            d.line([tx, ty - r, tx, ty + r], fill=(255, 0, 0), width=max(1, r // 3))
    return im


@torch.no_grad()
def predict_landmark(run: str | Path, data: str | Path, output: str | Path, labels: str | None = None,
                     subset: str | None = None, decode: str = "argmax", device: str = "auto") -> dict:
    """Predict landmarks in original-image pixels; write ``landmarks.csv``, overlays and (with labels) MRE.

    Args:
        decode: "argmax" (argmax + log-parabola sub-pixel refinement) or "soft" (soft-argmax in a 3-sigma window).

    Returns:
        ``{'mre': overall, 'mre_per_landmark': {name: px}, ...}`` (empty without labels).
    """
    if decode not in DECODE:
        raise ValueError(f"decode must be one of {DECODE}, got {decode!r}")
    dev = resolve_device(device)
    model, cfg = load_run(run, dev)
    names = cfg.extra["names"]
    images = select(_images(data), subset)
    truth = read_landmarks(labels, images)[0] if labels else None
    mean = torch.tensor(cfg.extra["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg.extra["std"]).view(3, 1, 1)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    preds = []
    for i, path in enumerate(tqdm(images, desc="predicting")):
        img = read_image(path)
        hw = img.shape[:2]
        hm = heatmap_from_logits(model(((to_rgb01(img, cfg.input_size) - mean) / std)[None].to(dev)).cpu())
        pts = argmax_subpixel(hm) if decode == "argmax" else soft_argmax(hm, int(3 * cfg.sigma + 1))
        # Heatmap pixels -> original pixels with the exact pixel-centre mapping of the resize.
        orig = scale_points(pts[0].double().numpy(), (cfg.input_size, cfg.input_size), hw)
        preds.append(orig)
        plot = draw_landmarks(as_rgb8(img), orig, None if truth is None else truth[i])
        plot.save(out / f"{path.stem}_landmarks.png")
    preds = np.stack(preds)
    write_landmarks(out / "landmarks.csv", names, [p.name for p in images], preds)
    metrics: dict = {}
    if truth is not None:
        err = radial_errors(preds, truth)
        metrics = {"mre": float(err.mean()), "mre_per_landmark": dict(zip(names, err.mean(0).tolist())),
                   "median_re": float(np.median(err)), "images": len(images)}
    (out / "metrics.json").write_text(json.dumps({"run": str(run), "data": str(data), "labels": labels,
                                                  "subset": subset, "decode": decode, "images": len(images),
                                                  "input_size": cfg.input_size, "metrics": metrics}, indent=2))
    save_config(cfg, out / "dense.yaml")
    return metrics


def landmarks_from_masks(images: str | Path, masks: str | Path, output: str | Path, name: str = "centre",
                         subset: str | None = None) -> int:
    """Write the centroid of each image's mask (e.g. the optic disc) as a landmark CSV; returns the image count.

    ``subset`` ("n" or "start:end") restricts it to some of the images in sorted order.
    """
    imgs = select(_images(images), subset)
    pts = []
    for img, m in zip(imgs, pair_files(imgs, Path(masks), "mask")):
        mask = read_mask(m) > 0
        with Image.open(img) as im:  # header only: sizes must agree for the centre to mean anything
            if im.size != (mask.shape[1], mask.shape[0]):
                raise ValueError(f"{m}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                                 f"{im.size[0]}x{im.size[1]}")
        pts.append(centre_of_mask(mask, str(m))[None])
    write_landmarks(output, [name], [p.name for p in imgs], np.stack(pts))
    return len(imgs)
