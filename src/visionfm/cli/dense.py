"""``visionfm segment ...`` and ``visionfm landmark ...``: dense decoders and the U-Net baseline."""
from __future__ import annotations

import argparse
import json

from ..dense import (MASK_KINDS, landmarks_from_masks, load_config, predict_landmark, predict_segmentation,
                     run_fewshot, train_landmark, train_segmentation)
from . import command


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (command-line values override it)")
    p.add_argument("--data", help="dataset root or image folder")
    p.add_argument("--split", help="split folder (DRIVE 'training', IDRiD 'train'; default training)")
    p.add_argument("--output", help="run folder to create")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="encoder weights (frozen unless --finetune)")
    g.add_argument("--unet", action="store_true", help="train the MONAI U-Net baseline instead of a ViT decoder")
    p.add_argument("--decoder", choices=("unetr", "linear"), help="decoder on the ViT (default unetr)")
    p.add_argument("--finetune", action="store_true", default=None, help="train the encoder too")
    p.add_argument("--modality", help="imaging modality (normalisation)")
    p.add_argument("--subset", help="'n' = first n images (few-shot) or 'start:end'")
    p.add_argument("--input-size", type=int, help="square input side (default 512)")
    p.add_argument("--crop", type=int, help="train on random crops of this side at native resolution "
                                             "(and predict whole native-size images) instead of resizing")
    p.add_argument("--max-side", type=int, help="with --crop: first scale images down so the longer side is at "
                                                 "most this (e.g. 1024 for IDRiD's 4288x2848)")
    p.add_argument("--fg-crop", type=float, help="with --crop: probability of a window around a labelled pixel "
                                                  "(foreground oversampling for rare lesions; default 0)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--no-augment", action="store_true", help="switch joint augmentation off")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--seed", type=int)


def _config(a: argparse.Namespace, **extra):
    model = "unet" if a.unet else a.decoder
    return load_config(a.config, data=a.data, split=a.split, output_dir=a.output, weights=a.weights, model=model,
                       finetune=a.finetune, modality=a.modality, subset=a.subset, input_size=a.input_size,
                       crop=a.crop, max_side=a.max_side, fg_crop=a.fg_crop,
                       epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size, lr=a.lr,
                       augment=False if a.no_augment else None, device=a.device, precision=a.precision,
                       seed=a.seed, **extra)


def _segment_label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", help="mask folder (default: found under --data)")
    p.add_argument("--fov", help="field-of-view mask folder (default: DRIVE-style 'mask' folder)")
    p.add_argument("--kind", choices=MASK_KINDS, help="mask style (default: detected)")
    p.add_argument("--classes", nargs="+", help="class names (per-class: sub-folder names)")
    p.add_argument("--resize-masks", action="store_true", default=None,
                   help="allow masks at another resolution than the image (resampled by area)")


def _configure_segment(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="<action>")
    t = sub.add_parser("train", help="train a segmenter (ViT decoder or --unet)")
    _train_args(t)
    _segment_label_args(t)
    f = sub.add_parser("fewshot", help="train each --models on the first n images for each --shots; test table")
    _train_args(f)
    _segment_label_args(f)
    f.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="training set sizes (default 1 5 10)")
    f.add_argument("--models", nargs="+", default=["unetr", "unet"], help="dense models (default unetr unet)")
    f.add_argument("--test-data", required=True, help="dataset root of the test images")
    f.add_argument("--test-split", default="test")
    f.add_argument("--test-subset")
    q = sub.add_parser("predict", help="predict masks + overlays at original resolution; metrics when labelled")
    q.add_argument("--run", required=True, help="a run folder from 'segment train'")
    q.add_argument("--data", required=True, help="dataset root or image folder")
    q.add_argument("--split", default="test")
    q.add_argument("--output", required=True, help="folder for masks, overlays and metrics.json")
    q.add_argument("--subset")
    q.add_argument("--threshold", type=float, default=0.5)
    q.add_argument("--no-eval", action="store_true", help="only write masks, even if labels are present")
    q.add_argument("--device", default="auto")


def rows_to_markdown(rows: list[dict]) -> str:
    """A markdown table of dict rows (floats to 4 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = [" | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) for r in rows]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [f"| {f} |" for f in fmt]) + "\n"


@command("segment", "Segmentation: train (ViT decoder or U-Net baseline), few-shot tables, predict/evaluate.",
         _configure_segment)
def run_segment(a: argparse.Namespace) -> int:
    if a.action in ("train", "fewshot"):
        cfg = _config(a, masks=a.masks, fov=a.fov, kind=a.kind, classes=a.classes, resize_masks=a.resize_masks,
                      task="segment")
        if a.action == "train":
            print(train_segmentation(cfg))
            return 0
        rows = run_fewshot(cfg, a.shots, a.models, a.test_data, a.test_split, cfg.output_dir, a.test_subset)
        print(rows_to_markdown(rows), end="")
        return 0
    m = predict_segmentation(a.run, a.data, a.output, a.split, a.subset, a.device, a.threshold, not a.no_eval)
    if m:
        print(json.dumps({k: {n: round(v, 4) for n, v in s.items()} for k, s in m.items()}, indent=1))
    return 0


def _configure_landmark(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="<action>")
    t = sub.add_parser("train", help="train a landmark detector (heatmap regression)")
    _train_args(t)
    t.add_argument("--labels", help="CSV (image,<name>_x,<name>_y,...), JSON or folder of <stem>.npy heatmaps")
    t.add_argument("--sigma", type=float, help="Gaussian sigma in input pixels (default 4)")
    t.add_argument("--names", nargs="+", help="landmark names (for .npy heatmaps, which carry none)")
    q = sub.add_parser("predict", help="predict landmarks in original pixels; MRE when --labels given")
    q.add_argument("--run", required=True)
    q.add_argument("--data", required=True, help="image folder")
    q.add_argument("--output", required=True)
    q.add_argument("--labels", help="true landmarks for the mean radial error")
    q.add_argument("--subset")
    q.add_argument("--decode", choices=("argmax", "soft"), default="argmax")
    q.add_argument("--device", default="auto")
    f = sub.add_parser("from-masks", help="write each mask's centroid (e.g. optic disc centre) as landmark CSV")
    f.add_argument("--images", required=True)
    f.add_argument("--masks", required=True)
    f.add_argument("--output", required=True, help="CSV file")
    f.add_argument("--name", default="centre")


@command("landmark", "Landmark detection: train, predict (original pixels, MRE) and labels from masks.",
         _configure_landmark)
def run_landmark(a: argparse.Namespace) -> int:
    if a.action == "train":
        print(train_landmark(_config(a, labels=a.labels, sigma=a.sigma, classes=a.names, task="landmark")))
        return 0
    if a.action == "from-masks":
        print(f"{landmarks_from_masks(a.images, a.masks, a.output, a.name)} landmarks -> {a.output}")
        return 0
    m = predict_landmark(a.run, a.data, a.output, a.labels, a.subset, a.decode, a.device)
    if m:
        print(json.dumps(m, indent=1))
    return 0
