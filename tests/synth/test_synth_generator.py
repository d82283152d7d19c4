"""The diffusion generator: training, class conditioning, resuming, sampling, config and CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from visionfm.cli import main
from visionfm.synth import load_generator, resolve_config, sample_images, train_generator
from visionfm.synth.config import GeneratorConfig
from visionfm.synth.model import latest_checkpoint
from visionfm.synth.sample import ddim_sample, plan_labels


def test_train_and_sample_shapes(tiny_overrides, tmp_path):
    cfg = resolve_config(overrides=tiny_overrides)
    last = train_generator(cfg, progress=False)
    assert last.name == "step-0000004"
    assert sorted(p.name for p in last.parent.glob("step-*")) == ["step-0000002", "step-0000004"]
    assert (last / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    logged = [json.loads(l) for l in (last.parent / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 4 and np.isfinite(logged[-1]["loss"])
    manifest = sample_images(last.parent, tmp_path / "samples", num=3, batch_size=2, steps=3, seed=7,
                             device="cpu", progress=False)
    rows = list(csv.DictReader(open(manifest)))
    assert [r["seed"] for r in rows] == ["7", "8", "9"] and all(r["label"] == "" for r in rows)
    for r in rows:
        img = np.asarray(Image.open(manifest.parent / r["path"]))
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8


def test_sampling_is_reproducible_per_seed_whatever_the_batch(tiny_overrides):
    train_generator(resolve_config(overrides=tiny_overrides), progress=False)
    gen = load_generator(tiny_overrides["output"])
    for eta in (1.0, 0.0):  # stochastic steps draw from the image's own generator too
        both = ddim_sample(gen, [3, 4], steps=3, eta=eta)
        alone = ddim_sample(gen, [4], steps=3, eta=eta)
        assert torch.equal(both[1], alone[0])
        assert not torch.equal(both[0], both[1])
    assert not torch.equal(ddim_sample(gen, [4], steps=3, eta=1.0), ddim_sample(gen, [4], steps=3, eta=0.0))


def test_class_conditioning(tiny_overrides, tmp_path):
    cfg = resolve_config(overrides={**tiny_overrides, "conditional": True, "layout": "imagenet"})
    train_generator(cfg, progress=False)
    gen = load_generator(cfg.output)
    assert gen.meta.num_classes == 2 and gen.meta.label_names == ["a", "b"]
    assert gen.unet.class_embedding.weight.shape[0] == 3  # two classes + the "no class" token
    a, b = ddim_sample(gen, [0, 0], labels=[0, 1], steps=3)
    assert not torch.equal(a, b)  # same noise, different class -> different image
    guided = ddim_sample(gen, [0], labels=[0], steps=3, guidance=3.0)
    assert guided.shape == (1, 3, 16, 16) and not torch.equal(guided[0], a)
    manifest = sample_images(cfg.output, tmp_path / "s", num=4, batch_size=4, steps=2, labels=[1], device="cpu",
                             progress=False)
    assert [r["label"] for r in csv.DictReader(open(manifest))] == ["1"] * 4
    with pytest.raises(ValueError, match="outside"):
        sample_images(cfg.output, tmp_path / "s2", num=1, labels=[5], device="cpu", progress=False)


def test_training_without_cache_streams_from_disk(tiny_overrides):
    cfg = resolve_config(overrides={**tiny_overrides, "cache": False, "num_workers": 0, "steps": 2})
    last = train_generator(cfg, progress=False)
    assert load_generator(last).meta.step == 2


def test_conditional_without_labels_is_an_error(tiny_overrides):
    cfg = resolve_config(overrides={**tiny_overrides, "conditional": True, "layout": "tree"})
    with pytest.raises(ValueError, match="needs class labels"):
        train_generator(cfg, progress=False)


def test_resume_continues_exactly(tiny_overrides, tmp_path):
    whole = resolve_config(overrides={**tiny_overrides, "output": str(tmp_path / "whole"), "steps": 4})
    train_generator(whole, progress=False)
    part = resolve_config(overrides={**tiny_overrides, "output": str(tmp_path / "part"), "steps": 2})
    train_generator(part, progress=False)
    part.steps = 4
    last = train_generator(part, progress=False)
    assert json.loads((last / "generator.json").read_text())["step"] == 4
    a = load_file(str(tmp_path / "whole" / "step-0000004" / "train_model.safetensors"))
    b = load_file(str(last / "train_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # interrupted + resumed == uninterrupted
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train_generator(part, resume=False, progress=False)
    part.image_size = 32
    with pytest.raises(ValueError, match="cannot resume.*image_size"):
        train_generator(part, progress=False)


def test_interrupted_checkpoint_write_leaves_latest_loadable(tiny_overrides):
    cfg = resolve_config(overrides=tiny_overrides)
    last = train_generator(cfg, progress=False)
    run = last.parent
    (run / ".step-0000006.tmp").mkdir()  # a save that crashed half-way is ignored
    assert latest_checkpoint(run) == last
    assert load_generator(run).meta.step == 4


def test_config_yaml_and_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("image_size: 48\nsteps: 7\n")
    cfg = resolve_config("tiny", f, {"steps": 9, "lr": None})
    assert (cfg.image_size, cfg.steps, cfg.block_out_channels) == (48, 9, [32, 64])
    f.write_text("imge_size: 48\n")
    with pytest.raises(ValueError, match="imge_size"):
        resolve_config(None, f)
    with pytest.raises(ValueError, match="divisible"):
        GeneratorConfig(image_size=30, block_out_channels=[32, 64, 128]).validate()
    with pytest.raises(KeyError, match="tiny"):
        resolve_config("huge")


def test_plan_labels():
    assert plan_labels(5, 2, None) == [0, 1, 0, 1, 0]
    assert plan_labels(3, 4, [2, 3]) == [2, 3, 2]
    assert plan_labels(2, 0, None) == [None, None]
    with pytest.raises(ValueError):
        plan_labels(2, 0, [1])


def test_cli_train_and_sample(tiny_overrides, tmp_path, capsys):
    o = tiny_overrides
    rc = main(["synth", "train", "--data", o["data"], "--output", str(tmp_path / "cli"), "--preset", "tiny",
               "--image-size", "16", "--channels", "16", "32", "--steps", "2", "--batch-size", "2",
               "--save-every", "1", "--device", "cpu"])
    assert rc == 0 and "step-0000002" in capsys.readouterr().out
    saved = (tmp_path / "cli" / "config.yaml").read_text()
    assert "image_size: 16" in saved and "steps: 2" in saved
    rc = main(["synth", "sample", "--checkpoint", str(tmp_path / "cli"), "--output", str(tmp_path / "out"),
               "--num", "2", "--steps", "2", "--device", "cpu"])
    assert rc == 0 and len(list((tmp_path / "out").glob("*.png"))) == 2
    assert main(["synth", "sample", "--checkpoint", str(tmp_path / "nothing"), "--output", str(tmp_path / "x"),
                 "--device", "cpu"]) == 2
    assert main(["synth"]) == 2 and "choose a step" in capsys.readouterr().err
