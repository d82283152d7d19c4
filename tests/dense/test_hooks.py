"""The demo stage on the phantoms and the real-data benchmark in quick mode, plus the recipe files behind it."""

import math
from pathlib import Path

import pytest
import yaml

from tests.helpers import DATA, require

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dense"


def test_demo_stage_trains_vessels_and_ubm_landmarks(tmp_path, tiny_weights):
    from visionfm.demo import DemoConfig, DemoContext
    from visionfm.dense.demo_stage import demo_stage
    from visionfm.toydata import make_dataset

    cfg = DemoConfig(output=str(tmp_path), fast=True, device="cpu")
    ctx = DemoContext(cfg, tmp_path, encoder_path=tiny_weights)
    ctx.datasets = {
        k: make_dataset(k, tmp_path / k, n=16, size=cfg.size, progress=False)
        for k in ("fundus-vessels", "ubm-landmarks")
    }
    section = demo_stage(ctx)
    (_, seg), (_, lm) = section.tables
    assert [r["model"] for r in seg] == ["frozen ViT + UNETR", "U-Net (MONAI)"]
    unetr = seg[0]
    # The tiny frozen ViT + decoder must find the drawn vessels well above chance in 30 steps.
    assert unetr["auc"] > 0.85 and unetr["dice"] > 0.4 and unetr["hd95"] < 20
    row = lm[0]
    assert {"scleral_spur (px)", "angle_recess (px)", "auxiliary_point (px)"} <= set(row)  # names from the toy set
    assert row["MRE (px)"] < 8  # 64-px phantoms: a random guess is ~25 px off
    assert all(Path(p).is_file() for p in section.images) and len(section.images) == 2


def test_demo_stage_needs_its_phantoms(tmp_path, tiny_weights):
    from visionfm.demo import DemoConfig, DemoContext
    from visionfm.dense.demo_stage import demo_stage

    with pytest.raises(ValueError, match="fundus-vessels"):
        demo_stage(DemoContext(DemoConfig(output=str(tmp_path), fast=True), tmp_path, encoder_path=tiny_weights))


def test_benchmark_quick_covers_every_experiment(tmp_path):
    from visionfm.dense.benchmark import benchmark

    rows = benchmark(require(DATA), tmp_path, None, quick=True)
    keys = {"task", "dataset", "method", "encoder", "metric", "value", "published", "notes"}
    assert all(set(r) == keys for r in rows)
    seen = {(r["task"].split(" (")[0].split(" ")[0], r["dataset"]) for r in rows}
    assert seen >= {
        ("segmentation", "DRIVE"),
        ("segmentation", "CHASEDB1"),
        ("segmentation", "OCTA-synthetic"),
        ("segmentation", "IDRiD-A-segmentation"),
        ("landmark:", "IDRiD-A-segmentation"),
        ("few-shot", "DRIVE"),
    }
    assert {r["task"] for r in rows} >= {f"segmentation {c}" for c in ("MA", "HE", "EX", "SE", "OD", "mean")}
    assert {r["method"] for r in rows} == {"frozen ViT + UNETR decoder", "U-Net (MONAI), from scratch"}
    dice = [r for r in rows if r["metric"] == "Dice"]
    assert all(0 <= r["value"] <= 1 for r in dice)
    assert all(r["value"] > 0 for r in rows if r["metric"].startswith("MRE"))
    assert any(".816" in r["published"] for r in dice if r["dataset"] == "DRIVE")
    auc = [r["value"] for r in rows if r["metric"] == "AUC" and not math.isnan(r["value"])]
    assert auc and all(0 <= v <= 1 for v in auc)
    assert (tmp_path / "rows.json").is_file()


def test_benchmark_names_the_missing_folder(tmp_path):
    from visionfm.dense.benchmark import benchmark

    with pytest.raises(FileNotFoundError, match="nowhere"):
        benchmark(tmp_path / "nowhere", tmp_path / "out", None, quick=True)
    with pytest.raises(ValueError, match="unknown dense experiments"):
        benchmark(tmp_path, tmp_path / "out", None, quick=True, experiments=["mnist"])


@pytest.mark.parametrize("name", ["drive", "idrid", "od_landmark", "octa"])
def test_config_files_are_the_benchmark_recipes(name):
    from visionfm.config import config_to_dict
    from visionfm.dense import load_config
    from visionfm.dense.benchmark import RECIPES

    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(raw["train"]) <= {"max_steps", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs"}
    recipe = dict(RECIPES[name])
    cfg = config_to_dict(load_config(CONFIGS / f"{name}.yaml"))
    assert cfg.pop("data") == f"../shared/data/{recipe.pop('data')}"
    assert cfg.pop("model") == "unetr"
    cfg["labels"] = None  # od_landmark: made by `landmark from-masks` (the benchmark writes its own)
    want = config_to_dict(load_config(None, **recipe))
    want.pop("data"), want.pop("model")
    assert cfg == want
