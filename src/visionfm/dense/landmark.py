"""Landmark detection end to end: train heatmap regression on the shared engine, predict in original pixels."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..data import list_images, read_image
from ..distributed import resolve_device
from ..errors import UserError
from .config import DenseConfig, save_config
from .data import pair_files, read_mask
from .datasets import LandmarkDataset, as_rgb8, select, to_rgb01
from .landmarks import (
    argmax_subpixel,
    centre_of_mask,
    heatmap_from_logits,
    read_landmarks,
    scale_points,
    soft_argmax,
    write_landmarks,
)
from .metrics import radial_errors
from .models_io import build_from_config, load_run, prepare_run
from .predict import output_names
from .transforms import JointAugment

__all__ = ["DECODE", "draw_landmarks", "landmarks_from_masks", "predict_landmark", "train_landmark"]

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


def train_landmark(cfg: DenseConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a landmark detector (ViT + decoder or U-Net) on ``cfg.data`` images with ``cfg.labels``.

    Args:
        resume / overwrite: continue, or replace, the run in ``cfg.train.output_dir`` (refused otherwise).

    Returns:
        the run folder (``model.safetensors`` selected on validation when there is some, ``dense.yaml``, logs).
    """
    from .segment import _round_schedule, fit_dense, split_validation
    from .tasks import LandmarkTask

    cfg.task = "landmark"
    if not cfg.labels:
        raise UserError("landmark training needs --labels")
    if cfg.crop:
        raise UserError("--crop is for segmentation; landmark images are resized to --input-size")
    run = prepare_run(cfg, resume, overwrite)
    images = select(_images(cfg.data), cfg.subset)
    points, names = read_landmarks(cfg.labels, images)
    if cfg.classes:  # names for label files without them (official .npy heatmaps)
        if len(cfg.classes) != len(names):
            raise UserError(f"--names gives {len(cfg.classes)} names for the {len(names)} landmarks in {cfg.labels}")
        names = list(cfg.classes)
    model, mean, std = build_from_config(cfg, len(names))
    idx = list(range(len(images)))
    val_idx: list[int] = []
    if cfg.val_fraction > 0:
        idx, val_idx = split_validation(idx, cfg.val_fraction, cfg.train.seed)
    if cfg.val_data:
        raise UserError("landmark runs carve validation from training (--val-fraction); --val-data is for segmentation")
    st = cfg.state
    st.out_channels, st.names = len(names), list(names)
    st.train_images, st.val_images = [str(images[i]) for i in idx], [str(images[i]) for i in val_idx]
    length = _round_schedule(cfg, len(idx)) if val_idx else cfg.train.batch_size
    aug = JointAugment(hflip=0.0) if cfg.augment else None  # a mirror would swap left/right landmark identities
    data = LandmarkDataset(
        [images[i] for i in idx], points[idx], cfg.input_size, cfg.sigma, mean, std, aug, min_length=length
    )
    val = (
        LandmarkDataset([images[i] for i in val_idx], points[val_idx], cfg.input_size, cfg.sigma, mean, std)
        if val_idx
        else None
    )
    fit_dense(LandmarkTask(model), cfg, run, data, val, resume, "mre", "min")
    return run


def draw_landmarks(
    img: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, min_side: int = 256, max_side: int = 1024
) -> Image.Image:
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
def predict_landmark(
    run: str | Path,
    data: str | Path,
    output: str | Path,
    labels: str | None = None,
    subset: str | None = None,
    decode: str = "argmax",
    device: str = "auto",
    names: list[str] | None = None,
) -> dict:
    """Predict landmarks in original-image pixels; write ``landmarks.csv``, overlays and (with labels) errors.

    Args:
        labels: true landmarks (CSV, JSON or .npy heatmaps, as for training) for the radial errors.
        decode: "argmax" (argmax + log-parabola sub-pixel refinement) or "soft" (soft-argmax in a 3-sigma window).
        names: landmark names of label files without them (.npy heatmaps), in the run's order.

    Returns:
        ``{'mre': overall, 'mre_per_landmark': {name: px}, ...}`` (empty without labels); ``per_image.csv`` holds
        every image's radial error per landmark.
    """
    if decode not in DECODE:
        raise UserError(f"decode must be one of {DECODE}, got {decode!r}")
    dev = resolve_device(device)
    model, cfg = load_run(run, dev)
    run_names = cfg.state.names
    images = select(_images(data), subset)
    truth = read_landmarks(labels, images)[0] if labels else None
    if truth is not None and truth.shape[1] != len(run_names):
        raise UserError(f"{labels}: {truth.shape[1]} landmarks; the run predicts {len(run_names)} ({run_names})")
    if names and len(names) != len(run_names):
        raise UserError(f"--names gives {len(names)} names; the run predicts {len(run_names)} ({run_names})")
    mean = torch.tensor(cfg.state.mean).view(3, 1, 1)
    std = torch.tensor(cfg.state.std).view(3, 1, 1)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    outs = output_names(images, Path(data))
    preds = []
    for i, (path, name) in enumerate(zip(tqdm(images, desc="predicting"), outs)):
        img = read_image(path)
        hw = img.shape[:2]
        hm = heatmap_from_logits(model(((to_rgb01(img, cfg.input_size) - mean) / std)[None].to(dev)).cpu())
        pts = argmax_subpixel(hm) if decode == "argmax" else soft_argmax(hm, int(3 * cfg.sigma + 1))
        # Heatmap pixels -> original pixels with the exact pixel-centre mapping of the resize.
        orig = scale_points(pts[0].double().numpy(), (cfg.input_size, cfg.input_size), hw)
        preds.append(orig)
        plot = draw_landmarks(as_rgb8(img), orig, None if truth is None else truth[i])
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        plot.save(out / f"{name}_landmarks.png")
    preds = np.stack(preds)
    write_landmarks(out / "landmarks.csv", names or run_names, [p.relative_to(data).as_posix() for p in images], preds)
    metrics: dict = {}
    if truth is not None:
        err = radial_errors(preds, truth)
        metrics = {
            "mre": float(err.mean()),
            "mre_per_landmark": dict(zip(names or run_names, err.mean(0).tolist())),
            "median_re": float(np.median(err)),
            "images": len(images),
        }
        _per_image(out / "per_image.csv", outs, names or run_names, err)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "run": str(run),
                "data": str(data),
                "labels": labels,
                "subset": subset,
                "decode": decode,
                "images": len(images),
                "input_size": cfg.input_size,
                "selected_step": cfg.state.selected_step,
                "metrics": metrics,
            },
            indent=2,
        )
    )
    save_config(cfg, out / "dense.yaml")
    return metrics


def _per_image(path: Path, images: list[str], names: list[str], err: np.ndarray) -> None:
    """``image,<name>_error,...,mean_error`` in original pixels."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *[f"{n}_error" for n in names], "mean_error"])
        for img, e in zip(images, err):
            w.writerow([img, *[f"{v:.3f}" for v in e], f"{e.mean():.3f}"])


def landmarks_from_masks(
    images: str | Path, masks: str | Path, output: str | Path, name: str = "centre", subset: str | None = None
) -> int:
    """Write the centroid of each image's mask (e.g. the optic disc) as a landmark CSV; returns the image count.

    ``subset`` ("n" or "start:end") restricts it to some of the images in sorted order.
    """
    imgs = select(_images(images), subset)
    pts = []
    for img, m in zip(imgs, pair_files(imgs, Path(masks), "mask")):
        mask = read_mask(m) > 0
        with Image.open(img) as im:  # header only: sizes must agree for the centre to mean anything
            if im.size != (mask.shape[1], mask.shape[0]):
                raise ValueError(
                    f"{m}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image {im.size[0]}x{im.size[1]}"
                )
        pts.append(centre_of_mask(mask, str(m))[None])
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_landmarks(output, [name], [p.name for p in imgs], np.stack(pts))
    return len(imgs)
