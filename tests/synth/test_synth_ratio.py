"""The ratio study: ratio parsing, equal budgets across ratios, the linear probe, and the study end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import DATA, require
from visionfm.cli import main
from visionfm.synth.probe import linear_probe
from visionfm.synth.ratio_study import RatioStudyConfig, epoch_length, parse_ratio, ratio_pretrain_config, summarise


def test_parse_ratio_and_epoch_length():
    assert parse_ratio("1:5") == (1.0, 5.0) and parse_ratio("0:1") == (0.0, 1.0)
    for bad in ("1-5", "0:0", "a:b", "-1:2"):
        with pytest.raises(ValueError, match="ratio"):
            parse_ratio(bad)
    assert [epoch_length(r, 100, 37) for r in ("1:0", "1:1", "1:5", "2:1", "0:1")] == [100, 200, 600, 150, 37]
    with pytest.raises(ValueError, match="1x5"):
        RatioStudyConfig(ratios=["1x5"])


def test_every_ratio_gets_the_same_budget(tmp_path):
    cfg = RatioStudyConfig(real=["r"], synthetic=["s"], steps=300, warmup_steps=30, batch_size=32)
    n_real, n_syn = 1080, 2000
    for label in ("1:0", "1:1", "1:5", "1:10", "0:1"):
        p = ratio_pretrain_config(cfg, label, 3, n_real, n_syn, tmp_path / label)
        t = p.train
        assert t.max_steps == 300 and t.seed == 3 and t.batch_size == 32
        assert t.warmup_steps == 30 and t.warmup_in_steps(epoch_length(label, n_real, n_syn) // 32) == 30
        assert p.freeze_last_layer == 0 and p.warmup_teacher_temp_epochs == 0
    one_five = ratio_pretrain_config(cfg, "1:5", 0, n_real, n_syn, tmp_path)
    assert (one_five.data, one_five.synthetic, one_five.synthetic_ratio) == (["r"], ["s"], 5.0)
    real_only = ratio_pretrain_config(cfg, "1:0", 0, n_real, n_syn, tmp_path)
    assert (real_only.data, real_only.synthetic, real_only.synthetic_ratio) == (["r"], None, None)
    syn_only = ratio_pretrain_config(cfg, "0:1", 0, n_real, n_syn, tmp_path)
    assert (syn_only.data, syn_only.synthetic, syn_only.synthetic_ratio) == ([], ["s"], None)


def _blobs(rng, n, shift, labels=3, dim=5):
    y = np.arange(n) % labels
    return rng.normal(size=(n, dim)) + shift * np.eye(labels, dim)[y], y


def test_linear_probe_known_answers():
    rng = np.random.default_rng(0)
    sep = {s: _blobs(rng, 60, 10.0) for s in ("train", "val", "test")}
    r = linear_probe(sep)
    assert r["test_auc"] == 1.0 and r["test_acc"] == 1.0 and r["val_auc"] == 1.0
    noise = {s: (rng.normal(size=(300, 5)), np.arange(300) % 3) for s in ("train", "val", "test")}
    assert abs(linear_probe(noise)["test_auc"] - 0.5) < 0.1
    # C is chosen on val only: scrambling the test labels changes the test score, not the choice
    scrambled = {**noise, "test": (noise["test"][0], rng.permutation(noise["test"][1]))}
    assert linear_probe(scrambled)["C"] == linear_probe(noise)["C"]
    binary = {s: _blobs(rng, 40, 4.0, labels=2) for s in ("train", "val", "test")}
    assert linear_probe(binary)["test_auc"] > 0.95
    with pytest.raises(ValueError, match="classes"):
        linear_probe({**sep, "test": (sep["test"][0], sep["test"][1] + 5)})
    with pytest.raises(ValueError, match="missing"):
        linear_probe({"train": sep["train"]})


def test_summarise_mean_and_sd():
    rows = [
        {"ratio": "1:0", "test_auc": 0.6, "test_acc": 0.5},
        {"ratio": "1:0", "test_auc": 0.8, "test_acc": 0.7},
        {"ratio": "1:5", "test_auc": 0.7, "test_acc": 0.6},
    ]
    a, b = summarise(rows)
    assert (a["ratio"], a["n_seeds"]) == ("1:0", 2) and a["test_auc_mean"] == pytest.approx(0.7)
    assert a["test_auc_sd"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert (b["test_auc_sd"], b["test_acc_mean"]) == (0.0, 0.6)


@pytest.fixture
def retina(tmp_path):
    """A small RetinaMNIST (real fundus photographs): 64 train / 30 val / 30 test in the vfm layout."""
    from visionfm.data import medmnist_to_folder

    d = np.load(require(DATA / "retinamnist" / "retinamnist.npz"))
    sub = {}
    for split, n in (("train", 64), ("val", 30), ("test", 30)):
        y = d[f"{split}_labels"][:, 0]
        idx = np.concatenate([np.flatnonzero(y == c)[: n // 3] for c in (0, 2, 3)])  # three grades present
        sub[f"{split}_images"], sub[f"{split}_labels"] = d[f"{split}_images"][idx], d[f"{split}_labels"][idx]
    np.savez(tmp_path / "small.npz", **sub)
    return medmnist_to_folder(tmp_path / "small.npz", tmp_path / "retina")


@pytest.mark.slow
def test_ratio_study_end_to_end_on_retinamnist(retina, disc_folder, tmp_path, capsys):
    """Three ratios, two steps each, on real fundus photographs; the stand-in synthetic set is the disc images."""
    out = tmp_path / "study"
    rc = main(
        [
            "synth",
            "ratio-study",
            "--real",
            str(retina / "train"),
            "--synthetic",
            str(disc_folder),
            "--probe-data",
            str(retina),
            "--output",
            str(out),
            "--ratios",
            "1:0",
            "1:1",
            "0:1",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and "| 1:1 | 1 |" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert [r["ratio"] for r in res["runs"]] == ["1:0", "1:1", "0:1"]
    assert (res["n_real"], res["n_synthetic"]) == (63, 8)
    assert [r["epoch_images"] for r in res["runs"]] == [63, 126, 8]
    for r in res["runs"] + res["random_baseline"]:
        assert 0.0 <= r["test_auc"] <= 1.0 and r["C"] > 0
    for label in ("1-0", "1-1", "0-1"):
        log = [json.loads(line) for line in (out / "runs" / f"{label}_seed0" / "log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == 2  # the same budget for every ratio
    assert Image.open(out / "ratio_curve.png").size[0] > 300
    assert "ratios" in (out / "ratio_study.yaml").read_text()
    before = (out / "runs" / "1-1_seed0" / "encoder.safetensors").stat().st_mtime_ns
    assert main(["synth", "ratio-study", "--config", str(out / "ratio_study.yaml")]) == 0  # reuses finished runs
    assert (out / "runs" / "1-1_seed0" / "encoder.safetensors").stat().st_mtime_ns == before
    assert (
        main(
            [
                "synth",
                "ratio-study",
                "--real",
                str(retina / "train"),
                "--synthetic",
                str(disc_folder),
                "--probe-data",
                str(tmp_path / "missing"),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_fewshot_probe_draws_are_shared_and_fewer_labels_cost():
    from visionfm.synth.probe import fewshot_probe

    rng = np.random.default_rng(0)
    splits = {s: _blobs(rng, 300, 1.0) for s in ("train", "val", "test")}
    one, ten = fewshot_probe(splits, 1, n_draws=8), fewshot_probe(splits, 10, n_draws=8)
    assert len(one["draws"]) == 8 and one["test_auc"] == pytest.approx(np.mean(one["draws"]))
    assert one["test_auc_sd"] > 0 and ten["test_auc"] > one["test_auc"]  # more labels, better probe
    assert fewshot_probe(splits, 10, n_draws=8) == ten  # seeded: the same draws on every call
    # the draws depend on labels, k and seed only: other features see the same training images
    shifted = {s: (x + 3.0, y) for s, (x, y) in splits.items()}  # standardisation undoes a shift exactly
    np.testing.assert_allclose(fewshot_probe(shifted, 10, n_draws=8)["draws"], ten["draws"], atol=1e-6)
    full = linear_probe(splits)["test_auc"]
    assert ten["test_auc"] < full + 0.02
