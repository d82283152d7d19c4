"""``visionfm segment ...``, ``visionfm landmark ...`` and ``visionfm cdr``: dense decoders and the U-Net baseline.

Every option of ``train`` / ``fewshot`` / ``predict`` is derived from the config dataclasses
(:class:`~visionfm.dense.DenseConfig` with its nested ``train: TrainConfig``, :class:`SegmentPredictConfig`,
:class:`LandmarkPredictConfig`); only the shorthands ``--unet`` (= ``--model unet``), ``--no-fov`` (= ``--fov none``),
``--config``, ``--resume`` and ``--overwrite`` are written here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING

from ..config import add_config_args, config_from_args
from ..errors import UserError
from . import command

_LANDMARK_ONLY = ("labels", "sigma")
_SEGMENT_ONLY = (
    "masks",
    "fov",
    "kind",
    "resize_masks",
    "crop",
    "max_side",
    "fg_crop",
    "border_crop",
    "loss",
    "val_data",
    "val_split",
)

if TYPE_CHECKING:
    from ..dense.config import DenseConfig


def _train_args(p: argparse.ArgumentParser, exclude: tuple[str, ...], run_options: bool = True) -> None:
    from ..dense.config import DenseConfig

    p.add_argument("--config", help="YAML file of settings (command-line values override it)")
    p.add_argument("--unet", action="store_true", help="train the MONAI U-Net baseline (= --model unet)")
    if "fov" not in exclude:
        p.add_argument(
            "--no-fov",
            dest="fov",
            action="store_const",
            const="none",
            help="no field of view: neither given nor estimated (= --fov none)",
        )
    if run_options:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--resume", action="store_true", help="continue the unfinished run in --output exactly")
        g.add_argument("--overwrite", action="store_true", help="replace the run already in --output")
    add_config_args(p, DenseConfig, exclude=exclude)


def _config(a: argparse.Namespace, task: str) -> DenseConfig:
    from ..dense.config import DenseConfig

    if a.unet and a.weights:
        raise UserError("--unet trains a U-Net from scratch; do not pass --weights with it")
    return config_from_args(DenseConfig, a, a.config, model="unet" if a.unet else None, task=task)


def _predict_args(p: argparse.ArgumentParser, cls: type) -> None:
    add_config_args(p, cls)
    for act in p._actions:  # what to predict with, on, and where to: asked for by argparse itself
        if act.dest in ("run", "data", "output"):
            act.required = True


def _options(cls: type, a: argparse.Namespace):
    return config_from_args(cls, a)


def _configure_segment(p: argparse.ArgumentParser) -> None:
    from ..dense.config import SegmentPredictConfig

    sub = p.add_subparsers(dest="action", required=True, metavar="<action>")
    t = sub.add_parser("train", help="train a segmenter (ViT decoder or --unet)")
    _train_args(t, _LANDMARK_ONLY)
    f = sub.add_parser("fewshot", help="train each --models on the first n images for each --shots; test table")
    _train_args(f, _LANDMARK_ONLY, run_options=False)
    f.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="training set sizes (default 1 5 10)")
    f.add_argument("--models", nargs="+", default=["unetr", "unet"], help="dense models (default unetr unet)")
    f.add_argument("--test-data", required=True, help="dataset root of the test images")
    f.add_argument("--test-split", default="test")
    f.add_argument("--test-subset")
    q = sub.add_parser(
        "predict",
        help="predict masks + overlays at original resolution; metrics per image and "
        "pooled when labelled (any layout: --masks --fov --kind --classes)",
    )
    _predict_args(q, SegmentPredictConfig)
    q.add_argument("--no-fov", dest="fov", action="store_const", const="none", help="= --fov none")


def rows_to_markdown(rows: list[dict]) -> str:
    """A markdown table of dict rows (floats to 4 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = [" | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) for r in rows]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [f"| {f} |" for f in fmt]) + "\n"


@command(
    "segment",
    "Segmentation: train (ViT decoder or U-Net baseline), few-shot tables, predict/evaluate.",
    _configure_segment,
)
def run_segment(a: argparse.Namespace) -> int:
    from ..dense import predict_segmentation, run_fewshot, train_segmentation
    from ..dense.config import SegmentPredictConfig

    if a.action == "train":
        print(train_segmentation(_config(a, "segment"), resume=a.resume, overwrite=a.overwrite))
        return 0
    if a.action == "fewshot":
        cfg = _config(a, "segment")
        rows = run_fewshot(cfg, a.shots, a.models, a.test_data, a.test_split, cfg.output_dir, a.test_subset)
        print(rows_to_markdown(rows), end="")
        return 0
    o = _options(SegmentPredictConfig, a)
    kw = dataclasses.asdict(o)
    evaluate, cdr = kw.pop("eval"), kw.pop("cdr") or bool(o.expert_cdr)
    m = predict_segmentation(kw.pop("run"), kw.pop("data"), kw.pop("output"), evaluate=evaluate, cdr=cdr, **kw)
    if m:
        print(json.dumps({k: {n: round(v, 4) for n, v in s.items()} for k, s in m.items()}, indent=1))
    return 0


def _configure_landmark(p: argparse.ArgumentParser) -> None:
    from ..dense.config import LandmarkPredictConfig

    sub = p.add_subparsers(dest="action", required=True, metavar="<action>")
    t = sub.add_parser("train", help="train a landmark detector (heatmap regression)")
    _train_args(t, _SEGMENT_ONLY)
    q = sub.add_parser("predict", help="predict landmarks in original pixels; errors per image and MRE with --labels")
    _predict_args(q, LandmarkPredictConfig)
    f = sub.add_parser("from-masks", help="write each mask's centroid (e.g. optic disc centre) as landmark CSV")
    f.add_argument("--images", required=True)
    f.add_argument("--masks", required=True)
    f.add_argument("--output", required=True, help="CSV file (its folder is created)")
    f.add_argument("--name", default="centre")


@command(
    "landmark", "Landmark detection: train, predict (original pixels, MRE) and labels from masks.", _configure_landmark
)
def run_landmark(a: argparse.Namespace) -> int:
    from ..dense import landmarks_from_masks, predict_landmark, train_landmark
    from ..dense.config import LandmarkPredictConfig

    if a.action == "train":
        print(train_landmark(_config(a, "landmark"), resume=a.resume, overwrite=a.overwrite))
        return 0
    if a.action == "from-masks":
        print(f"{landmarks_from_masks(a.images, a.masks, a.output, a.name)} landmarks -> {a.output}")
        return 0
    o = _options(LandmarkPredictConfig, a)
    m = predict_landmark(o.run, o.data, o.output, o.labels, o.subset, o.decode, o.device, o.names)
    if m:
        print(json.dumps(m, indent=1))
    return 0


def _configure_cdr(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", required=True, help="folder of disc/cup label maps (0 background, 1 disc, 2 cup)")
    p.add_argument("--output", required=True, help="CSV file of per-image vertical and area CDR")
    p.add_argument("--expert-cdr", help="CSV with an image column and exp_cdr/cdr: MAE of the vertical CDR")


@command(
    "cdr",
    "Cup-to-disc ratios from disc/cup label maps (and their MAE against expert CDR). "
    "For predictions: segment predict --cdr.",
    _configure_cdr,
)
def run_cdr(a: argparse.Namespace) -> int:
    from ..dense.cdr import cdr_from_label_maps

    summary = cdr_from_label_maps(a.masks, a.output, a.expert_cdr)
    print(json.dumps(summary, indent=1))
    return 0
