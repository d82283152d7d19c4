"""End-to-end fine-tuning: layer-wise lr decay, augmentation, run folder and predict with the fine-tuned encoder."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.helpers import cli
from visionfm.models import create_encoder
from visionfm.recognition.finetune import augment_batch, layer_decay_groups
from visionfm.recognition.runs import load_run


def test_layer_decay_groups_scales():
    enc = create_encoder("vit_test")  # depth 2
    groups = layer_decay_groups(enc, 0.1, 0.5)
    scale = {}
    for g in groups:
        for p in g["params"]:
            scale[id(p)] = (g["lr_scale"], g["apply_wd"])
    named = dict(enc.named_parameters())
    assert scale[id(named["pos_embed"])] == (pytest.approx(0.1 * 0.5**3), False)
    assert scale[id(named["patch_embed.proj.weight"])] == (pytest.approx(0.1 * 0.5**3), True)
    assert scale[id(named["blocks.0.attn.qkv.weight"])] == (pytest.approx(0.1 * 0.5**2), True)
    assert scale[id(named["blocks.1.attn.qkv.weight"])] == (pytest.approx(0.1 * 0.5), True)
    assert scale[id(named["blocks.1.norm1.bias"])][1] is False
    assert scale[id(named["norm.weight"])] == (pytest.approx(0.1), False)
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_augment_batch_is_random_and_shape_preserving():
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    a = augment_batch(x)
    torch.manual_seed(0)
    assert torch.equal(a, augment_batch(x)) and a.shape == x.shape
    assert not torch.allclose(a, x)
    same = augment_batch(x, scale=(1.0, 1.0), max_rotate=0.0, jitter=0.0)
    # no crop, rotation or jitter: only flips remain, so every image is a flip of the input
    flips = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    assert all(any(torch.allclose(same[i], f[i], atol=1e-4) for f in flips) for i in range(4))


def test_finetune_cli_run_and_predict(toy, rec_weights, rec_root, capsys):
    run = rec_root / "runs" / "ft"
    assert (
        cli(
            "finetune",
            "--weights",
            rec_weights,
            "--data",
            toy["fundus-dr"].root,
            "--test-split",
            "test",
            "--input-size",
            "32",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--n-boot",
            "10",
            "--lr",
            "0.001",
            "--output",
            run,
            "--device",
            "cpu",
        )
        == 0
    )
    assert "test (n=15)" in capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    assert m["finetuned"] and m["selection"]["metric"] == "auroc" and m["n"] == {"train": 36, "val": 9, "test": 15}
    task, info = load_run(run)
    ref = info["encoders"]["Fundus"]
    assert ref["weights"].endswith("encoder.safetensors") and ref["sha256"] != m["finetuned_from"]["sha256"]
    out = rec_root / "runs" / "ft_pred.csv"
    assert (
        cli("predict", "--run", run, "--images", toy["fundus-dr"].root / "test", "--output", out, "--device", "cpu")
        == 0
    )
    with open(out) as f:
        new = {r["path"]: float(r["prob_1"]) for r in csv.DictReader(f)}
    with open(run / "predictions.csv") as f:
        old = {r["path"].split("/", 1)[1]: float(r["prob_1"]) for r in csv.DictReader(f)}
    assert new.keys() == old.keys() and all(abs(new[k] - old[k]) < 1e-4 for k in new)
    # the original (not fine-tuned) weights are refused for this run
    assert (
        cli(
            "predict",
            "--run",
            run,
            "--images",
            toy["fundus-dr"].root / "test",
            "--output",
            out,
            "--weights",
            rec_weights,
        )
        == 2
    )
