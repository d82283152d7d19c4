"""Fixtures of the vision-language tests: a tiny image encoder and small real image-text sources."""

import csv
from pathlib import Path

import pytest

from tests.helpers import DATA, require, save_tiny_encoder

CSDI = DATA / "CSDI-cataract-reports"
KERATITIS = DATA / "slit-lamp-keratitis-samples"


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    return save_tiny_encoder(tmp_path / "tiny.safetensors")


@pytest.fixture
def csdi_subset(tmp_path) -> Path:
    """The first 40 real CSDI fundus images with their expert reports (absolute paths)."""
    require(CSDI / "manifest.csv")
    with open(CSDI / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:40]
    out = tmp_path / "csdi.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "report", "label"])
        w.writerows([[str(CSDI / r["path"]), r["caption_en"], f"{r['label']} cataract"] for r in rows])
    return out


@pytest.fixture
def keratitis() -> Path:
    return require(KERATITIS)


@pytest.fixture(scope="module")
def keratitis_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, encoder weights) of a tiny run trained on the real slit-lamp folders, shared by a module."""
    from visionfm.cli import main

    require(KERATITIS)
    tmp = tmp_path_factory.mktemp("kera")
    weights = save_tiny_encoder(tmp / "tiny.safetensors")
    run = tmp / "run"
    assert main(train_args(weights, [f"SlitLamp={KERATITIS}"], run, steps=2, extra=["--val-fraction", "0"])) == 0
    return run, weights


def train_args(weights, data, out, steps=4, extra=()):
    return [
        "vl",
        "train",
        "--weights",
        str(weights),
        "--data",
        *map(str, data),
        "--output",
        str(out),
        "--max-steps",
        str(steps),
        "--batch-size",
        "8",
        "--no-progress",
        "--device",
        "cpu",
        "--log-every",
        "1",
        *extra,
    ]
