"""Segmentation prediction and evaluation on any layout: masks, overlays, probabilities, metrics per image and pooled.

Output names keep the image's path relative to the image folder (``a/x.png`` -> ``<output>/a/x.png``); when
several images share a name up to the extension (``x.png``, ``x.jpg``) each gets its extension in the name
(``x_png.png``, ``x_jpg.png``), so no prediction overwrites another.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data import read_image
from ..distributed import resolve_device
from ..fileio import atomic_write
from .cdr import cdr_rows, read_expert_cdr
from .config import save_config
from .data import item_fov, load_target, resolve_spec
from .datasets import as_rgb8, select
from .metrics import SegmentationMeter
from .models_io import is_fundus, load_run
from .postprocess import drop_elongated as _drop_elongated
from .postprocess import parse_elongation_limits
from .tasks import padded_logits
from .transforms import prepare_image

__all__ = ["PALETTE", "output_names", "overlay", "predict_probs", "predict_segmentation"]

log = logging.getLogger(__name__)
PALETTE = np.array(
    [
        [0, 255, 0],
        [255, 0, 0],
        [255, 255, 0],
        [0, 128, 255],
        [255, 0, 255],
        [0, 255, 255],
        [255, 128, 0],
        [128, 0, 255],
    ],
    dtype=np.float32,
)


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


def output_names(images: Sequence[Path], root: Path) -> list[str]:
    """Unique output base names (posix, no extension) keeping each image's path relative to ``root``."""
    rel = []
    for p in images:
        try:
            rel.append(p.relative_to(root))
        except ValueError:
            rel.append(Path(p.name))
    base = [r.with_suffix("").as_posix() for r in rel]
    taken = Counter(base)
    return [b if taken[b] == 1 else f"{b}_{r.suffix.lstrip('.').lower()}" for b, r in zip(base, rel)]


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    img: np.ndarray,
    size: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    max_side: int | None = None,
    nested: bool = False,
    tta: bool = False,
    *,
    fov: np.ndarray | None = None,
    fov_diameter: int | None = None,
    contrast: str = "none",
) -> np.ndarray:
    """One ``[H, W, 3]`` image -> probabilities ``[K, H, W]`` at its original resolution.

    ``size`` S runs the image resized to SxS; None runs it whole at its native resolution (or scaled down to
    ``max_side``), zero-padded to a multiple of 32. Logits, not thresholded masks, are upsampled to (H, W), so
    boundaries land at sub-pixel precision. ``nested`` keeps every class inside the one before it (cup <= disc).
    ``tta`` averages the logits of the image and its horizontal and vertical mirrors (test-time augmentation).
    ``fov`` ``[H, W]`` bool, ``fov_diameter`` and ``contrast`` prepare the image as training did
    (:func:`~visionfm.dense.transforms.prepare_image`).
    """
    h, w = img.shape[:2]
    x = prepare_image(img, fov, size, max_side, fov_diameter, contrast)[0]
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)  # C channels
    x = x[None].to(device)
    logits = padded_logits(model, x)
    if tta:  # mirrors are exact pixel permutations: flip, predict, flip back
        for dims in ((-1,), (-2,)):
            logits = logits + padded_logits(model, x.flip(dims)).flip(dims)
        logits = logits / 3
    logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    prob = torch.sigmoid(logits)[0]
    if nested:
        prob = torch.cummin(prob, dim=0).values
    return prob.cpu().numpy()


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)


def _write_maps(out: Path, name: str, classes: Sequence[str], maps: np.ndarray, suffix: str = "") -> None:
    """One PNG per class: ``<name><suffix>.png`` for one class, else ``<name>_<class><suffix>.png``."""
    for c, cls in enumerate(classes):
        _save_png(maps[c], out / (f"{name}{suffix}.png" if len(classes) == 1 else f"{name}_{cls}{suffix}.png"))


def _image_rows(name: str, source: str, m: dict, outside: np.ndarray, classes: Sequence[str]) -> list[dict]:
    keys = ("dice", "iou", "sensitivity", "specificity", "auc", "aupr", "hd95")
    return [
        {
            "image": name,
            "fov": source,
            "class": c,
            **{k: m[c][k] for k in keys},
            "outside_fov_positive": float(outside[i]),
        }
        for i, c in enumerate(classes)
    ]


def predict_segmentation(
    run: str | Path,
    data: str | Path,
    output: str | Path,
    split: str = "test",
    subset: str | None = None,
    device: str = "auto",
    threshold: float | None = None,
    evaluate: bool = True,
    hd95_max_side: int = 1024,
    *,
    masks: str | None = None,
    fov: str | None = None,
    kind: str | None = None,
    classes: Sequence[str] | None = None,
    resize_masks: bool | None = None,
    save_probabilities: bool = False,
    cdr: bool = False,
    expert_cdr: str | None = None,
    tta: bool = False,
    drop_elongated: Sequence[str] | None = None,
) -> dict:
    """Predict every image under ``data`` with a trained run; write masks, overlays and (with labels) metrics.

    Args:
        threshold: one probability threshold for every class; None: the run's per-class thresholds chosen on
            validation (``tune_thresholds``), else 0.5.
        masks / fov / kind / classes / resize_masks: the label layout, as for training (default: detected; the
            run's classes). ``fov``: a folder, "auto" (given masks, else estimated for fundus runs), "estimate",
            "none". Pixels outside the FOV are predicted background and not scored.
        tta: average the predictions of the image and its two mirrors.
        save_probabilities: also write ``<name>[_<class>]_prob.png`` (probability x 255).
        cdr / expert_cdr: write ``cdr.csv`` (vertical and area CDR from the first two classes, disc and cup) and,
            with an expert CSV, their MAE.
        drop_elongated: ``["HE=6"]``: remove that class's predicted components more elongated than the limit
            (:mod:`visionfm.dense.postprocess`; vessel-like false positives of blob-like lesions), before scoring.

    Returns:
        the pooled metrics dict (empty when the data has no masks or ``evaluate`` is False).
    """
    dev = resolve_device(device)
    model, cfg = load_run(run, dev)
    names = cfg.state.names
    fov = fov if fov is not None else (cfg.fov if cfg.fov in ("estimate", "none") else None)
    spec = resolve_spec(
        data,
        split,
        masks,
        fov,
        kind or cfg.kind,
        classes or names,
        cfg.resize_masks if resize_masks is None else resize_masks,
        is_fundus(cfg.modality),
    )
    if len(spec.classes) != len(names):
        raise ValueError(f"--classes gives {len(spec.classes)} classes; the run predicts {len(names)} ({names})")
    has_masks = evaluate and spec.masks is not None
    items = select(spec.items(require_masks=has_masks), subset)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    outs = output_names([it.image for it in items], spec.images)
    thr = np.asarray(
        [threshold] * len(names) if threshold is not None else (cfg.state.thresholds or [0.5] * len(names)), float
    )
    pooled = SegmentationMeter(names, threshold=thr)
    limits = parse_elongation_limits(drop_elongated, names)
    per_image, sources, discs, cups = [], Counter(), [], []
    nested = (kind or cfg.kind) == "nested"
    for it, name in zip(tqdm(items, desc="predicting"), outs):
        raw = read_image(it.image)
        img = as_rgb8(raw)
        fov_map, source = item_fov(it, spec, img)
        prob = predict_probs(
            model,
            raw,
            None if cfg.crop else cfg.input_size,
            cfg.state.mean,
            cfg.state.std,
            dev,
            cfg.max_side,
            nested,
            tta,
            fov=fov_map,
            fov_diameter=cfg.fov_diameter,
            contrast=cfg.contrast,
        )
        sources[source] += 1
        for c, limit in limits.items():
            prob[c] = _drop_elongated(prob[c], float(thr[c]), limit)
        raw = prob > thr[:, None, None]
        pred = raw & fov_map[None] if fov_map is not None else raw
        outside = (
            (raw & ~fov_map[None]).mean(axis=(1, 2)) / max(1e-9, (~fov_map).mean())
            if fov_map is not None and not fov_map.all()
            else np.zeros(len(names))
        )
        if has_masks:
            target, _ = load_target(it, spec, img.shape[:2])
            meter = SegmentationMeter(names, threshold=thr)
            stride = max(1, math.ceil(max(prob.shape[1:]) / hd95_max_side)) if hd95_max_side else 1
            meter.update(prob, target > 0.5, fov_map, hd95_stride=stride)
            pooled.merge(meter)
            per_image += _image_rows(name, source, meter.compute(), outside, names)
        if cdr:
            discs.append(pred[0])
            cups.append(pred[1] if len(names) > 1 else np.zeros_like(pred[0]))
        _write_maps(out, name, names, pred.astype(np.uint8) * 255)
        _save_png(overlay(img, pred), out / f"{name}_overlay.png")
        if save_probabilities:
            _write_maps(out, name, names, np.round(prob * 255).astype(np.uint8), "_prob")
    metrics = pooled.compute() if has_masks else {}
    result = {
        "run": str(run),
        "data": str(data),
        "split": split,
        "subset": subset,
        "images": len(items),
        "threshold": thr.tolist(),
        "input_size": cfg.input_size,
        "crop": cfg.crop,
        "max_side": cfg.max_side,
        "model": cfg.model,
        "tta": tta,
        "drop_elongated": {names[c]: v for c, v in limits.items()},
        "selected_step": cfg.state.selected_step,
        "fov": dict(sources),
        "metrics": metrics,
        "per_image": per_image,
    }
    if cdr:
        result["cdr"] = _write_cdr(out, outs, discs, cups, expert_cdr)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    if per_image:
        _write_csv(out / "per_image.csv", per_image)
    save_config(cfg, out / "dense.yaml")
    return metrics


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def _write_cdr(out: Path, names: list[str], discs: list, cups: list, expert: str | None) -> dict:
    """``cdr.csv`` (per image) and the summary (MAE against the expert CDR when given)."""
    rows, summary = cdr_rows(names, discs, cups, read_expert_cdr(expert) if expert else None)
    if rows:
        _write_csv(out / "cdr.csv", rows)
    log.info(
        "CDR of %d images%s",
        len(rows),
        f"; vertical CDR MAE {summary['vertical_cdr_mae']:.4f}" if "vertical_cdr_mae" in summary else "",
    )
    return summary
