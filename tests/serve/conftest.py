"""Fixtures of the serving tests: tiny trained runs (recognition, forecasting, segmentation, landmarks, OCT volumes,
vision-language), a real uvicorn server on a free loopback port, and headless Chromium (skipped cleanly when
absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dense.conftest import make_drive_like
from tests.helpers import cli, save_tiny_encoder


@pytest.fixture(scope="session")
def serve_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def serve_weights(serve_root) -> Path:
    return save_tiny_encoder(serve_root / "tiny_fundus.safetensors", seed=0, modality="Fundus")


def _cli(*argv) -> None:
    """Run a visionfm command as a user would (the command line is the stable surface across refactors)."""
    rc = cli(*argv)
    assert rc == 0, f"visionfm {' '.join(map(str, argv))} exited {rc}"


def _head_run(root: Path, weights: Path, kind: str, name: str, task: str, *extra, size: int = 32) -> Path:
    from visionfm.toydata import make_dataset

    ds = make_dataset(kind, root / "toy" / kind, n=24, seed=0, size=size, progress=False)
    feats = {}
    for split in ("training", "test"):
        feats[split] = root / "features" / f"{kind}_{split}.safetensors"
        _cli(
            "extract",
            "--weights",
            weights,
            "--data",
            ds.root,
            "--split",
            split,
            "--output",
            feats[split],
            "--precision",
            "fp32",  # exact features: the service's answers are compared with them
            "--input-size",
            32,
            "--n-last-blocks",
            2,
            "--num-workers",
            0,
            "--device",
            "cpu",
        )
    run = root / "runs" / name
    _cli(
        task,
        "train",
        "--train",
        feats["training"],
        "--test",
        feats["test"],
        "--output",
        run,
        "--epochs",
        3,
        "--batch-size",
        16,
        "--n-boot",
        0,
        "--device",
        "cpu",
        *extra,
    )
    return run


@pytest.fixture(scope="session")
def dr_run(serve_root, serve_weights) -> Path:
    """A linear DR-grading head (5 classes) on the tiny encoder's features of 32-px fundus phantoms."""
    return _head_run(serve_root, serve_weights, "fundus-dr", "dr", "classify", "--ordinal")


@pytest.fixture(scope="session")
def forecast_run(serve_root, serve_weights) -> Path:
    """A glaucoma-forecasting head (needs an interval in days per image)."""
    # drawn at 96 px: the forecasting phantoms' vessel density (which sets who converts) needs the resolution; at
    # 32 px none of them converts (extraction still runs at 32 px)
    return _head_run(serve_root, serve_weights, "glaucoma-forecast", "forecast", "forecast", "--lr", 0.01, size=96)


TINY = ["--input-size", 32, "--max-steps", 2, "--batch-size", 2, "--device", "cpu", "--epochs", 1]


@pytest.fixture(scope="session")
def seg_run(serve_root, serve_weights) -> Path:
    """A tiny ViT + UNETR vessel segmenter (2 steps on a DRIVE-like folder, 32 px)."""
    data = make_drive_like(serve_root / "drive")
    run = serve_root / "runs" / "vessels"
    _cli("segment", "train", "--data", data, "--weights", serve_weights, "--output", run, *TINY)
    return run


@pytest.fixture(scope="session")
def landmark_run(serve_root, serve_weights, seg_run) -> Path:
    """A tiny landmark detector (the vessel line's centre as one landmark)."""
    images = serve_root / "drive" / "training" / "images"
    csv = serve_root / "line.csv"
    _cli(
        "landmark",
        "from-masks",
        "--images",
        images,
        "--masks",
        serve_root / "drive" / "training" / "1st_manual",
        "--output",
        csv,
        "--name",
        "line",
    )
    run = serve_root / "runs" / "line"
    _cli(
        "landmark",
        "train",
        "--data",
        images,
        "--labels",
        csv,
        "--weights",
        serve_weights,
        "--output",
        run,
        "--sigma",
        2,
        *TINY,
    )
    return run


@pytest.fixture(scope="session")
def volume_run(serve_root, serve_weights) -> Path:
    """A tiny OCT-volume classifier (mean pooling) on B-scan folders and multi-frame DICOM volumes."""
    import numpy as np
    from PIL import Image

    from tests.data.dicom_factory import OPT, make_dicom

    rng = np.random.default_rng(0)
    root = serve_root / "volumes"
    for c in ("healthy", "lesion"):
        for i in range(4):
            stack = rng.integers(0, 60, (3, 32, 48), dtype=np.uint8)
            if c == "lesion":
                stack[1, 8:24, 16:32] = 250  # a bright "lesion" in one B-scan
            if i == 3:  # one volume per class as a multi-frame DICOM (ophthalmic tomography)
                make_dicom(root / c / f"eye{i}.dcm", stack, sop_class=OPT, laterality="R")
                continue
            for k, b in enumerate(stack):
                (root / c / f"eye{i}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(b).save(root / c / f"eye{i}" / f"{k + 1}.png")
    feats = serve_root / "features" / "volumes.safetensors"
    _cli(
        "extract",
        "--volumes",
        "--weights",
        serve_weights,
        "--data",
        root,
        "--layout",
        "imagenet",
        "--output",
        feats,
        "--precision",
        "fp32",
        "--input-size",
        32,
        "--n-last-blocks",
        1,
        "--num-workers",
        0,
    )
    run = serve_root / "runs" / "oct_volumes"
    _cli(
        "volumes",
        "train",
        "--features",
        feats,
        "--pooling",
        "mean",
        "--output",
        run,
        "--epochs",
        2,
        "--batch-size",
        4,
        "--no-progress",
    )
    return run


@pytest.fixture(scope="session")
def vl_run(serve_root) -> Path:
    """A tiny vision-language run trained for two steps on the real slit-lamp photographs (``kera_vl``)."""
    from tests.helpers import DATA, require
    from tests.vl.conftest import train_args

    kera = require(DATA / "slit-lamp-keratitis-samples")
    weights = save_tiny_encoder(serve_root / "tiny_vl.safetensors")
    run = serve_root / "runs" / "kera_vl"
    _cli(*train_args(weights, [f"SlitLamp={kera}"], run, steps=2, extra=["--val-fraction", "0"]))
    return run
