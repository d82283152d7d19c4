"""Real-data benchmark of the dense decoders: DRIVE, DRIVE -> CHASE_DB1, IDRiD lesions + optic disc, the optic-disc
centre as a landmark, synthetic OCTA, and few-shot DRIVE; a frozen ViT + UNETR decoder beside the MONAI U-Net.

Every experiment is an ordinary ``visionfm segment|landmark train`` run (the recipes below are the ones in
``configs/dense/``) followed by prediction on a fixed test split; finished runs and predictions are reused, so the
table can be rebuilt or extended experiment by experiment. The recipes are sized for a 2-core CPU (random 192-px
crops, 200 optimizer steps of 4 crops); ``quick=True`` shrinks everything to a smoke test of under a minute.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import DenseConfig, load_config
from .fewshot import cached_metrics, predict_once, run_fewshot, train_once
from .landmark import landmarks_from_masks, predict_landmark, train_landmark
from .segment import train_segmentation

__all__ = ["DATASETS", "EXPERIMENTS", "PUBLISHED", "benchmark", "recipe"]

log = logging.getLogger(__name__)
EXPERIMENTS = ("drive", "idrid", "od_landmark", "octa", "fewshot")
DATASETS = {"drive": "DRIVE", "chase": "CHASEDB1", "idrid": "IDRiD-A-segmentation", "octa": "OCTA-synthetic"}
PUBLISHED = {  # from ../shared/data/README.md
    ("DRIVE", "dice"): "U-Net (orobix) Dice .816; 2nd human observer .788; VisionFM paper 81.75% vs U-Net 81.50%",
    ("DRIVE", "auc"): "U-Net (orobix) AUC .979",
    ("CHASEDB1", "dice"): "2nd observer Dice .777 (in-domain)",
    ("IDRiD-A-segmentation", "dice"): "VisionFM paper: lesion Dice 42.07% vs U-Net 26.87% (its own benchmark)",
}
METHODS = {"unetr": "frozen ViT + UNETR decoder", "unet": "U-Net (MONAI), from scratch"}
STANDIN = "random-init ViT-S/16 stand-in (seed 0)"

# The recipes of configs/dense/*.yaml (a test checks they agree); paths are relative to the data root.
_COMMON = dict(crop=192, max_steps=200, epochs=1000, batch_size=4, lr=1e-3, weight_decay=1e-4, warmup_epochs=2.0)
RECIPES: dict[str, dict[str, Any]] = {
    "drive": dict(task="segment", data="DRIVE", split="training", modality="Fundus", **_COMMON),
    "idrid": dict(
        task="segment",
        data="IDRiD-A-segmentation",
        split="train",
        kind="per-class",
        classes=["MA", "HE", "EX", "SE", "OD"],
        modality="Fundus",
        max_side=1024,
        fg_crop=0.5,
        **_COMMON,
    ),
    "od_landmark": dict(
        task="landmark",
        data="IDRiD-A-segmentation/train_images",
        modality="Fundus",
        input_size=224,
        sigma=4.0,
        **{k: v for k, v in _COMMON.items() if k != "crop"},
    ),
    "octa": dict(task="segment", data="OCTA-synthetic", modality="OCT", resize_masks=True, subset="0:30", **_COMMON),
}
NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "auc": "AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "hd95": "HD95 (px)",
}


def recipe(name: str, data_root: Path, out: Path, model: str, weights: Path | None, quick: bool) -> DenseConfig:
    """The :class:`DenseConfig` of experiment ``name`` for ``model`` ("unetr" or "unet")."""
    r = dict(RECIPES[name])
    r["data"] = str(data_root / r["data"])
    if quick:  # a smoke test: 2 images, 2 steps, 64-px inputs, IDRiD scaled to 256 px
        r.update(max_steps=2, batch_size=2, warmup_epochs=0.0, subset="0:2")
        r.update({"crop": 64} if "crop" in r else {"input_size": 64})
        r.update({"max_side": 256} if r.get("max_side") else {})
    return load_config(
        None, **r, model=model, weights=None if model == "unet" else str(weights), output_dir=str(out / name / model)
    )


def _standin_encoder(out: Path, quick: bool) -> Path:
    """The documented random-init stand-in (ViT-S/16, seed 0; quick: the tiny test ViT), saved in ``out``."""
    from ..recognition.benchmark import standin_encoder

    if quick:
        return standin_encoder(out / "standin_vit_test_seed0.safetensors", "vit_test")
    return standin_encoder(out / "standin_vit_small_seed0.safetensors")


def _timed_train(cfg: DenseConfig, train_fn: Callable[[DenseConfig], Path]) -> tuple[Path, float]:
    """Train (or reuse) a run; returns (run folder, training seconds as first measured)."""
    t0 = time.perf_counter()
    run = train_once(cfg, train_fn)
    timing = run / "train_seconds.json"
    if not timing.is_file():
        timing.write_text(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}))
    return run, json.loads(timing.read_text())["seconds"]


def _budget(cfg: DenseConfig, seconds: float) -> str:
    size = f"{cfg.crop}-px crops" if cfg.crop else f"{cfg.input_size}-px input"
    scale = f" of images scaled to {cfg.max_side} px" if cfg.max_side else ""
    n = f", {cfg.subset} train images" if cfg.subset else ""
    t = cfg.train
    return f"{t.max_steps} steps x {t.batch_size} {size}{scale}{n}; trained {seconds / 60:.1f} min on CPU"


def _row(task: str, dataset: str, model: str, encoder: str, metric: str, value: float, notes: str) -> dict:
    return {
        "task": task,
        "dataset": dataset,
        "method": METHODS[model],
        "encoder": encoder if model != "unet" else "none",
        "metric": metric,
        "value": float(value),
        "published": PUBLISHED.get((dataset, metric.split(" ")[0].lower()), ""),
        "notes": notes,
    }


def _segmentation(name: str, tests: Sequence[tuple[str, str, str | None]], ctx: dict) -> list[dict]:
    """Train both models on recipe ``name``; rows per test set (dataset folder, split, subset) and class."""
    rows = []
    for model in ("unetr", "unet"):
        cfg = recipe(name, ctx["root"], ctx["out"], model, ctx["weights"], ctx["quick"])
        run, secs = _timed_train(cfg, train_segmentation)
        for folder, split, subset in tests:
            subset = "0:1" if ctx["quick"] else subset
            m = predict_once(run, ctx["root"] / folder, run / f"pred_{folder}_{split}", split, subset)
            note = f"{_budget(cfg, secs)}; test: {folder} {split} {subset or 'all'}"
            classes = [c for c in m if c != "mean"]
            if len(classes) == 1:  # binary: the full set of metrics
                rows += [
                    _row("segmentation", folder, model, ctx["encoder"], NAMES[k], m[classes[0]][k], note)
                    for k in ("dice", "auc", "sensitivity", "specificity", "hd95")
                ]
                continue
            rows += [
                _row(f"segmentation {c}", folder, model, ctx["encoder"], NAMES[k], m[c][k], note)
                for c in [*classes, "mean"]
                for k in ("dice", "auc")
            ]
    return rows


def _od_landmark(ctx: dict) -> list[dict]:
    root, out, quick = ctx["root"] / DATASETS["idrid"], ctx["out"] / "od_landmark", ctx["quick"]
    out.mkdir(parents=True, exist_ok=True)
    csv = {}
    for split in ("train", "test"):
        csv[split] = out / f"od_{split}{'_quick' if quick else ''}.csv"
        if not csv[split].is_file():
            landmarks_from_masks(
                root / f"{split}_images",
                root / f"{split}_masks" / "OD",
                csv[split],
                "od_centre",
                ("2" if split == "train" else "0:1") if quick else None,
            )
    rows = []
    for model in ("unetr", "unet"):
        cfg = dataclasses.replace(
            recipe("od_landmark", ctx["root"], ctx["out"], model, ctx["weights"], quick), labels=str(csv["train"])
        )
        run, secs = _timed_train(cfg, train_landmark)
        pred, test = run / "pred_test", root / "test_images"
        subset = "0:1" if quick else None
        m = cached_metrics(run, pred, data=str(test), labels=str(csv["test"]), subset=subset)
        if m is None:
            m = predict_landmark(run, test, pred, str(csv["test"]), subset, "argmax")
        note = f"{_budget(cfg, secs)}; test: IDRiD test_images ({m['images']}), original 4288x2848 px"
        rows += [
            _row("landmark: optic-disc centre", DATASETS["idrid"], model, ctx["encoder"], k, m[v], note)
            for k, v in (("MRE (px)", "mre"), ("median RE (px)", "median_re"))
        ]
    return rows


def _fewshot(ctx: dict) -> list[dict]:
    shots = (1,) if ctx["quick"] else (1, 5, 10)
    base = dataclasses.replace(
        recipe("drive", ctx["root"], ctx["out"], "unetr", ctx["weights"], ctx["quick"]), subset=None
    )
    test = ctx["root"] / DATASETS["drive"]
    cells = run_fewshot(
        base, shots, ("unetr", "unet"), test, "test", ctx["out"] / "fewshot", "0:1" if ctx["quick"] else None
    )
    rows = []
    for c in cells:
        note = f"{c['shots']} training image(s); {_budget(base, 0).split(';')[0]}; test: DRIVE test"
        rows += [
            _row(
                f"few-shot segmentation ({c['shots']}-shot)",
                DATASETS["drive"],
                c["model"],
                ctx["encoder"],
                NAMES[k],
                c[k],
                note,
            )
            for k in ("dice", "auc")
        ]
    for r in rows:  # the published numbers are full-data results
        r["published"] = ""
    return rows


def benchmark(
    data_root: Path, out: Path, weights: Path | None, quick: bool, experiments: Sequence[str] | None = None
) -> list[dict]:
    """Run the dense experiments on ``data_root`` (= ``../shared/data``); rows as the benchmark suite expects.

    Args:
        data_root: folder holding DRIVE, CHASEDB1, IDRiD-A-segmentation and OCTA-synthetic.
        out: results folder (runs, predictions, overlays, ``rows.json``).
        weights: encoder for the ViT rows; None uses the documented random-init ViT-S/16 stand-in.
        quick: tiny versions (tiny ViT, 2 steps, 1-2 images) for a test; not the reported numbers.
        experiments: a subset of :data:`EXPERIMENTS` (default all).

    Raises:
        FileNotFoundError: a data set folder is missing (named).
    """
    data_root, out = Path(data_root), Path(out)
    chosen = list(experiments or EXPERIMENTS)
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown dense experiments {unknown}; valid: {list(EXPERIMENTS)}")
    for key in ("drive", "chase", "idrid", "octa"):
        if not (data_root / DATASETS[key]).is_dir():
            raise FileNotFoundError(f"dense benchmark data not found: {data_root / DATASETS[key]}")
    w = Path(weights) if weights else _standin_encoder(out, quick)
    ctx = {
        "root": data_root,
        "out": out,
        "weights": w,
        "quick": quick,
        "encoder": (STANDIN if not quick else "random-init tiny test ViT") if not weights else str(weights),
    }
    runners = {
        "drive": lambda: _segmentation(
            "drive", [(DATASETS["drive"], "test", None), (DATASETS["chase"], "test", None)], ctx
        ),
        "idrid": lambda: _segmentation("idrid", [(DATASETS["idrid"], "test", None)], ctx),
        "od_landmark": lambda: _od_landmark(ctx),
        "octa": lambda: _segmentation("octa", [(DATASETS["octa"], "test", "30:40")], ctx),
        "fewshot": lambda: _fewshot(ctx),
    }
    rows = []
    for name in chosen:
        log.info("dense benchmark: %s", name)
        rows += runners[name]()
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    return rows
