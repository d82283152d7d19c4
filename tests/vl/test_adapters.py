"""Few-shot adapters: known answers, text initialisation, and `visionfm vl adapt` on cached real-image features."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from visionfm import extract_features
from visionfm.cli import main
from visionfm.vl.adapters import ClipAdapter, LinearAdapter, TipAdapter, ZeroShot, fit_adapter


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_text_initialised_probe_starts_at_zero_shot_and_random_does_not():
    text, f = _unit([1, 0, 0], [0, 1, 0]), _unit([1, 1, 0], [0.2, 1, 0])
    zs = ZeroShot(text, 10.0)(f)
    torch.testing.assert_close(LinearAdapter(text, 10.0, "text")(f), zs)
    assert not torch.allclose(LinearAdapter(text, 10.0, "random", seed=1)(f), zs)
    torch.testing.assert_close(
        LinearAdapter(text, 10.0, "random", seed=1).weight, LinearAdapter(text, 10.0, "random", seed=1).weight
    )  # seeded


def test_tip_adapter_known_answer():
    text = _unit([1, 0], [0, 1])
    keys, labels = _unit([1, 0], [0, 1]), torch.tensor([0, 1])
    f = _unit([1, 0])
    # zero-shot part: 2 * [1, 0]; cache: exp(-5.5 (1 - [1, 0])) = [1, e^-5.5] voted for classes [0, 1]
    expected = torch.tensor([[2.0 + 1.0, 0.0 + math.exp(-5.5)]])
    torch.testing.assert_close(TipAdapter(text, 2.0, keys, labels)(f), expected)


def test_trainable_adapters_fit_their_shots(tmp_path):
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(3, 16, generator=g), dim=-1)
    y = torch.arange(3).repeat(4)
    f = F.normalize(torch.randn(12, 16, generator=g), dim=-1)  # labels unrelated to the texts
    zero_shot = (ZeroShot(text, 10.0)(f).argmax(1) == y).float().mean()
    for kind, least in (("linear", 1.0), ("clip", 0.75)):  # CLIP-Adapter keeps 80% of the zero-shot embedding
        head = fit_adapter(kind, f, y, text, 10.0, tmp_path / kind, steps=300, lr=3e-2)
        assert (head(f).argmax(1) == y).float().mean() >= max(least, zero_shot + 0.25), kind
        assert not (tmp_path / kind).exists()  # the loop's work folder is cleaned
    assert isinstance(fit_adapter("clip", f, y, text, 10.0, tmp_path / "c", steps=1), ClipAdapter)


def test_vl_adapt_on_cached_features_of_real_images(keratitis_run, keratitis, tmp_path, capsys):
    run, tiny_weights = keratitis_run
    feats = extract_features(
        tiny_weights,
        keratitis,
        tmp_path / "k.safetensors",
        layout="imagenet",
        n_last_blocks=2,
        input_size=32,
        num_workers=0,
        progress=False,
        device="cpu",
    )
    for adapter in ("linear", "clip", "tip"):
        out = tmp_path / adapter
        assert (
            main(
                [
                    "vl",
                    "adapt",
                    "--run",
                    str(run),
                    "--train",
                    str(feats),
                    "--test",
                    str(feats),
                    "--adapter",
                    adapter,
                    "--shots",
                    "1",
                    "2",
                    "--draws",
                    "2",
                    "--steps",
                    "20",
                    "--output",
                    str(out),
                    "--classes",
                    "keratitis",
                    "normal cornea",
                    "other corneal abnormality",
                ]
            )
            == 0
        )
        res = json.loads((out / "metrics.json").read_text())
        assert set(res["shots"]) == {"1", "2"} and len(res["shots"]["2"]["draws"]) == 2
        s = res["shots"]["1"]["summary"]["balanced_accuracy"]
        assert 0 <= s["mean"] <= 1 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert "k=  1" in capsys.readouterr().out
    other = extract_features(
        tiny_weights,
        keratitis,
        tmp_path / "k64.safetensors",
        layout="imagenet",
        n_last_blocks=1,
        input_size=64,
        num_workers=0,
        progress=False,
        device="cpu",
    )
    assert (
        main(
            [
                "vl",
                "adapt",
                "--run",
                str(run),
                "--train",
                str(other),
                "--test",
                str(other),
                "--output",
                str(tmp_path / "x"),
                "--classes",
                "a",
                "b",
                "c",
            ]
        )
        == 2
    )
    assert "extract with --input-size 32" in capsys.readouterr().err


def test_zeroshot_on_cached_features_matches_images(keratitis_run, keratitis, tmp_path):
    run, tiny_weights = keratitis_run
    feats = extract_features(
        tiny_weights,
        keratitis,
        tmp_path / "k.safetensors",
        layout="imagenet",
        n_last_blocks=1,
        input_size=32,
        num_workers=0,
        progress=False,
        device="cpu",
    )
    classes = ["keratitis", "normal cornea", "other corneal abnormality"]
    for src, out in ((keratitis, "img"), (feats, "feat")):
        assert (
            main(
                [
                    "zeroshot",
                    "--run",
                    str(run),
                    "--images",
                    str(src),
                    "--classes",
                    *classes,
                    "--n-boot",
                    "0",
                    "--domain-knowledge",
                    "--output",
                    str(tmp_path / out),
                ]
            )
            == 0
        )
    a, b = (json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("img", "feat"))
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["auroc"]["macro"] == pytest.approx(b["auroc"]["macro"])
