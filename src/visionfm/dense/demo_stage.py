"""Demo stage of the dense decoders: vessel segmentation and the three UBM chamber-angle landmarks on the phantoms.

The frozen demo encoder + UNETR decoder and the MONAI U-Net baseline are trained by the shared engine on the
``fundus-vessels`` phantoms and evaluated on their test split (Dice, AUC inside the field of view, HD95 ...); a
landmark detector learns the scleral spur, angle recess and auxiliary point of the ``ubm-landmarks`` phantoms from
the official-style ``.npy`` heatmaps and is scored in original pixels (mean radial error per landmark). Fast mode
(64-px phantoms, 30 steps) takes about 25 s of one CPU core; normal mode (128 px, 150 steps; vessels on random 64-px
crops) about 1.7 CPU-minutes on this project's AMX CPU: the frozen ViT's forward is cheap, the UNETR decoder's
full-resolution convolutions are the cost (0.93 CPU-s per step of 8 at 128 px in fp32, 0.36 in bf16, 0.10 in bf16 on
64-px crops; the U-Net 0.17 / 0.12 / 0.06).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data import list_images, read_image
from ..report import Section
from .config import DenseConfig, load_config
from .data import load_target, resolve_spec
from .datasets import as_rgb8
from .landmark import predict_landmark, train_landmark
from .segment import overlay, predict_segmentation, train_segmentation

__all__ = ["demo_stage"]

_LABELS = {"unetr": "frozen ViT + UNETR", "unet": "U-Net (MONAI)"}


def _steps(ctx: Any) -> int:
    return 30 if ctx.cfg.fast else 150


def _config(ctx: Any, task: str, data: Path, model: str, output: Path, **kw: Any) -> DenseConfig:
    return load_config(
        None,
        task=task,
        data=str(data),
        model=model,
        output_dir=str(output),
        weights=None if model == "unet" else str(ctx.encoder_path),
        input_size=ctx.cfg.size,
        max_steps=_steps(ctx),
        epochs=1000,
        batch_size=8,
        lr=2e-3,
        warmup_epochs=1.0,
        # bf16 autocast where the hardware has it (AMX / AVX512-BF16 CPUs, CUDA), else fp32: the UNETR decoder's
        # full-resolution convolutions are most of this stage, and bf16 ran them 2.6x faster on AMX at equal Dice
        precision="auto",
        device=ctx.cfg.device,
        seed=ctx.cfg.seed,
        **kw,
    )


def _vessels(ctx: Any, root: Path, out: Path) -> tuple[list[dict], Path]:
    """Train + test both segmenters; a contact sheet image | truth | each model's overlay for 3 test images."""
    rows, preds = [], {}
    for model in ("unetr", "unet"):
        # default mode: random half-size crops at native resolution, whole images predicted (vessels are local;
        # 4x fewer pixels per step: Dice 0.876 vs 0.883 on whole images, at 37 instead of 91 CPU-s for both models)
        crop = None if ctx.cfg.fast else ctx.cfg.size // 2
        cfg = _config(ctx, "segment", root, model, out / f"vessels_{model}", modality="Fundus", crop=crop)
        run = train_segmentation(cfg, overwrite=True)
        m = predict_segmentation(run, root, run / "pred", "test", device=ctx.cfg.device)["vessel"]
        rows.append(
            {
                "model": _LABELS[model],
                **{k: round(m[k], 4) for k in ("dice", "iou", "sensitivity", "specificity", "auc", "hd95")},
            }
        )
        preds[model] = run / "pred"
    spec = resolve_spec(root, "test")
    tiles = []
    for item in spec.items()[:3]:
        img = as_rgb8(read_image(item.image))
        truth = load_target(item, spec, img.shape[:2])[0] > 0.5
        masks = [np.array(Image.open(preds[m] / f"{item.image.stem}.png")) > 0 for m in preds]
        tiles.append([img, overlay(img, truth)] + [overlay(img, p[None]) for p in masks])
    return rows, _sheet(tiles, out / "vessels_sheet.png")


def _ubm(ctx: Any, root: Path, names: list[str], out: Path) -> tuple[list[dict], Path]:
    """Train on official-style .npy heatmaps (channels ``names``), test against the CSV coordinates; 4 plots."""
    run = train_landmark(
        _config(
            ctx,
            "landmark",
            root / "training" / "images",
            "unetr",
            out / "ubm_unetr",
            labels=str(root / "training" / "labels"),
            classes=list(names),
            sigma=max(1.5, ctx.cfg.size / 32),
        ),
        overwrite=True,
    )
    test = root / "test" / "images"
    m = predict_landmark(run, test, run / "pred", str(root / "test" / "landmarks.csv"), device=ctx.cfg.device)
    row = {
        "model": _LABELS["unetr"],
        "MRE (px)": round(m["mre"], 2),
        "median (px)": round(m["median_re"], 2),
        **{f"{n} (px)": round(v, 2) for n, v in m["mre_per_landmark"].items()},
        "image side (px)": ctx.cfg.size,
    }
    plots = [
        np.asarray(Image.open(run / "pred" / f"{p.stem}_landmarks.png").convert("RGB")) for p in list_images(test)[:4]
    ]
    return [row], _sheet([plots], out / "ubm_landmarks_sheet.png", zoom=1)


def _sheet(rows: list[list[np.ndarray]], path: Path, zoom: int | None = None) -> Path:
    """Tile equally sized RGB images in a grid (enlarged to ~128 px tiles by an integer factor) as one PNG."""
    h, w = rows[0][0].shape[:2]
    z = zoom or max(1, 128 // max(h, w))
    gap = 4
    sheet = Image.new("RGB", (len(rows[0]) * (w * z + gap), len(rows) * (h * z + gap)), (255, 255, 255))
    for r, tiles in enumerate(rows):
        for c, t in enumerate(tiles):
            tile = Image.fromarray(t).resize((w * z, h * z), Image.NEAREST)
            sheet.paste(tile, (c * (w * z + gap), r * (h * z + gap)))
    sheet.save(path)
    return path


def demo_stage(ctx: Any) -> Section:
    """Dense decoders on the phantoms (``ctx``: :class:`visionfm.demo.DemoContext` after 'phantoms' and 'encoder').

    Returns:
        a report section with the vessel metrics of both models, the UBM landmark errors and two image sheets.
    """
    for kind in ("fundus-vessels", "ubm-landmarks"):
        if kind not in ctx.datasets:
            raise ValueError(f"the dense demo stage needs the {kind!r} phantoms (run the 'phantoms' stage first)")
    if ctx.encoder_path is None:
        raise ValueError("the dense demo stage needs an encoder (run the 'encoder' stage first)")
    out = Path(ctx.out) / "dense"
    out.mkdir(parents=True, exist_ok=True)
    seg_rows, seg_png = _vessels(ctx, Path(ctx.datasets["fundus-vessels"].root), out)
    ubm = ctx.datasets["ubm-landmarks"]
    lm_rows, lm_png = _ubm(ctx, Path(ubm.root), list(ubm.classes), out)
    steps = _steps(ctx)
    text = (
        f"Vessel segmentation on the fundus-vessels phantoms and the three UBM chamber-angle landmarks, "
        f"{steps} optimizer steps each at {ctx.cfg.size} px on the demo encoder (frozen) and a U-Net trained "
        f"from scratch by the same loop"
        + ("" if ctx.cfg.fast else f" (vessels: random {ctx.cfg.size // 2}-px crops, whole images predicted)")
        + "; bf16 autocast where the CPU or GPU computes it natively. "
        f"Sheet 1 per row: image, ground truth, {', '.join(_LABELS.values())}. "
        f"Sheet 2: predicted (green circles) and true (red crosses) landmarks on test phantoms."
    )
    return Section(
        "Dense decoders: vessels and UBM landmarks",
        text,
        [
            ("vessel segmentation, test split (pooled inside the FOV)", seg_rows),
            ("UBM landmarks, test split (original pixels)", lm_rows),
        ],
        [seg_png, lm_png],
    )
