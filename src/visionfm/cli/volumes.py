"""``visionfm volumes train|predict``: volume-level classifiers on cached B-scan features (``extract --volumes``)."""

from __future__ import annotations

import argparse
import json

from ..config import add_config_args, config_from_args
from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..volumes.train import VolumeTrainConfig

    p.add_argument("action", choices=("train", "predict"), help="train a classifier, or predict per volume")
    p.add_argument("--config", help="YAML file of training settings (command-line values override it)")
    add_config_args(p, VolumeTrainConfig)
    p.add_argument("--run", help="predict: the run folder of a trained volume classifier")
    p.add_argument("--data", help="predict: volumes (folder or CSV) to extract with --weights")
    p.add_argument("--weights", help="predict: the encoder the classifier's features came from")
    p.add_argument("--layout", default="auto", help="predict: layout of --data (auto, tree, imagenet, csv)")
    p.add_argument("--csv", help="predict: output CSV (one row per volume)")
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="predict: onnxruntime runs --data through the classifier's ONNX export (--onnx; default exported now)",
    )
    p.add_argument("--onnx", help="predict with --backend onnxruntime: the run's file from 'visionfm export'")


@command(
    "volumes",
    "OCT volumes: train a mean/max/attention-MIL classifier on B-scan features; predict per volume "
    "with the B-scan that drove each decision.",
    _configure,
)
def run_volumes(a: argparse.Namespace) -> int:
    from ..volumes.train import VolumeTrainConfig, train_volume_classifier

    if a.action == "train":
        cfg = config_from_args(VolumeTrainConfig, a, a.config)
        if not cfg.features:
            raise ValueError("volumes train: give --features (from 'visionfm extract --volumes')")
        out = train_volume_classifier(cfg)
        print(f"wrote {out}: {json.loads((out / 'metrics.json').read_text())}")
        return 0
    if not a.run or not a.csv:
        raise ValueError("volumes predict: give --run and --csv (and --features, or --data with --weights)")
    from ..export.predict import predict_volume_run

    out = predict_volume_run(
        a.run,
        a.csv,
        features=a.features or None,
        data=a.data,
        weights=a.weights,
        layout=a.layout,
        device=getattr(a, "train.device", None) or "auto",
        backend=a.backend,
        onnx=a.onnx,
    )
    print(f"wrote {out}")
    return 0
