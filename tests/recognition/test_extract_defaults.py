"""`visionfm extract`'s default is the fast path (precision auto + JPEG draft), recorded in the file; `--precision
fp32` is the exact path; `predict` re-extracts new images the way the run's training features were extracted."""

import csv

import numpy as np
import pytest
import torch

from tests.helpers import cli
from visionfm.features import load_features, resolve_precision

from .test_api_cli import FAST


def _extract(weights, root, out, split, *flags):
    argv = ["extract", "--weights", weights, "--data", root, "--split", split, "--output", out]
    assert cli(*argv, "--input-size", 32, "--n-last-blocks", 2, "--num-workers", 0, "--device", "cpu", *flags) == 0
    return out


def test_default_is_recorded_fast_path_and_fp32_is_exact(toy, rec_weights, caches, tmp_path):
    root = toy["fundus-dr"].root
    fast = load_features(_extract(rec_weights, root, tmp_path / "fast.safetensors", "test"))
    auto = resolve_precision("auto", torch.device("cpu"))
    assert fast.meta["precision"] == auto  # bf16 on CPUs with AMX / AVX512-BF16, else fp32
    assert fast.meta["jpeg_draft"] == str(auto != "fp32").lower()
    exact = load_features(_extract(rec_weights, root, tmp_path / "exact.safetensors", "test", "--precision", "fp32"))
    assert exact.meta["precision"] == "fp32" and exact.meta["jpeg_draft"] == "false"
    lib = load_features(caches["fundus-dr"]["test"])  # the library's fp32 extraction of the same images
    assert np.abs(exact.cls - lib.cls).max() <= 1e-6 * np.abs(lib.cls).max()


def test_predict_follows_the_training_features_precision(toy, rec_weights, tmp_path):
    root = toy["fundus-dr"].root
    train = _extract(rec_weights, root, tmp_path / "train.safetensors", "training")
    test = _extract(rec_weights, root, tmp_path / "test.safetensors", "test")
    run = tmp_path / "run"
    assert cli("classify", "train", "--train", train, "--test", test, "--output", run, *FAST) == 0
    pred = tmp_path / "pred.csv"
    assert cli("predict", "--run", run, "--images", root / "test", "--output", pred, "--device", "cpu") == 0
    new = {r["path"]: float(r["prob_1"]) for r in csv.DictReader(open(pred))}
    old = {r["path"].split("/", 1)[1]: float(r["prob_1"]) for r in csv.DictReader(open(run / "predictions.csv"))}
    assert new.keys() == old.keys()
    assert max(abs(new[k] - old[k]) for k in new) == pytest.approx(0, abs=1e-4)
    # the service follows the run too (`serve --precision run`, its default): bf16 features -> a bf16 forward
    from visionfm.serve.models import load_served

    served = next(iter(load_served([str(run)]).values()))
    assert served.precision == load_features(train).meta["precision"]
