"""The diffusion generator: training, class conditioning, resuming, sampling, config and CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from visionfm.checkpoints import safe_torch_load
from visionfm.cli import main
from visionfm.synth import load_generator, resolve_config, sample_images, train_generator
from visionfm.synth.config import GeneratorConfig
from visionfm.synth.sample import ddim_sample, plan_labels


def test_train_and_sample_shapes(tiny_overrides, tmp_path):
    cfg = resolve_config(overrides=tiny_overrides)
    exported = train_generator(cfg, progress=False)
    run = exported.parent
    assert exported.name == "generator" and (exported / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((exported / "generator.json").read_text())["step"] == 4
    assert sorted(p.name for p in run.glob("checkpoint_*.pth")) == [
        "checkpoint_00000002.pth",
        "checkpoint_00000004.pth",
        "checkpoint_last.pth",
    ]
    assert "image_size: 16" in (run / "generator.yaml").read_text()  # the generator's config beside the run
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 4 and np.isfinite(logged[-1]["loss"])
    manifest = sample_images(
        run, tmp_path / "samples", num=3, batch_size=2, steps=3, seed=7, device="cpu", progress=False
    )
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
    manifest = sample_images(
        cfg.output, tmp_path / "s", num=4, batch_size=4, steps=2, labels=[1], device="cpu", progress=False
    )
    assert [r["label"] for r in csv.DictReader(open(manifest))] == ["1"] * 4
    with pytest.raises(ValueError, match="outside"):
        sample_images(cfg.output, tmp_path / "s2", num=1, labels=[5], device="cpu", progress=False)


def test_training_without_cache_streams_from_disk(tiny_overrides):
    cfg = resolve_config(overrides={**tiny_overrides, "cache": False, "num_workers": 0, "steps": 2})
    exported = train_generator(cfg, progress=False)
    assert load_generator(exported).meta.step == 2


def test_conditional_without_labels_is_an_error(tiny_overrides):
    cfg = resolve_config(overrides={**tiny_overrides, "conditional": True, "layout": "tree"})
    with pytest.raises(ValueError, match="needs class labels"):
        train_generator(cfg, progress=False)


def test_resume_continues_exactly(tiny_overrides, caplog):
    cfg = resolve_config(overrides=tiny_overrides)
    run = train_generator(cfg, progress=False).parent
    whole = safe_torch_load(run / "checkpoint_last.pth")["task"]
    # a crash after step 2: the last complete checkpoint is step 2's, the export is gone
    shutil.copy(run / "checkpoint_00000002.pth", run / "checkpoint_last.pth")
    shutil.rmtree(run / "generator")
    assert load_generator(run).meta.step == 2  # an interrupted run still samples (from checkpoint_last.pth)
    with caplog.at_level("INFO", logger="visionfm.engine.trainer"):
        train_generator(cfg, resume=True, progress=False)
    assert "at step 2" in caplog.text  # continued from the checkpoint, not retrained from scratch
    resumed = safe_torch_load(run / "checkpoint_last.pth")["task"]
    assert whole.keys() == resumed.keys() and any(k.startswith("ema.") for k in whole)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # interrupted + resumed == uninterrupted
    assert load_generator(run).meta.step == 4
    with pytest.raises(ValueError, match="already holds a generator run; pass --resume"):
        train_generator(cfg, progress=False)
    cfg.image_size = 32
    with pytest.raises(ValueError, match="cannot resume.*image_size"):
        train_generator(cfg, resume=True, progress=False)


def test_sample_an_intermediate_checkpoint_and_ignore_a_half_written_export(tiny_overrides, tmp_path):
    run = train_generator(resolve_config(overrides=tiny_overrides), progress=False).parent
    (run / ".generator.tmp").mkdir()  # an export that crashed half-way is ignored
    assert load_generator(run).meta.step == 4
    early = load_generator(run / "checkpoint_00000002.pth")
    assert early.meta.step == 2 and early.meta.image_size == 16
    manifest = sample_images(
        run / "checkpoint_00000002.pth", tmp_path / "s", num=1, steps=2, device="cpu", progress=False
    )
    assert json.loads((manifest.parent / "sampling.json").read_text())["generator_step"] == 2
    with pytest.raises(FileNotFoundError, match="no generator"):
        load_generator(tmp_path)


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
    rc = main(
        [
            "synth",
            "train",
            "--data",
            o["data"],
            "--output",
            str(tmp_path / "cli"),
            "--preset",
            "tiny",
            "--image-size",
            "16",
            "--channels",
            "16",
            "32",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--save-every",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and str(tmp_path / "cli" / "generator") in capsys.readouterr().out
    saved = (tmp_path / "cli" / "generator.yaml").read_text()
    assert "image_size: 16" in saved and "max_steps: 2" in saved and "checkpoint_every: 1" in saved
    assert not (tmp_path / "cli" / "config.yaml").exists()  # one resolved config per run
    rc = main(
        [
            "synth",
            "sample",
            "--checkpoint",
            str(tmp_path / "cli"),
            "--output",
            str(tmp_path / "out"),
            "--num",
            "2",
            "--steps",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and len(list((tmp_path / "out").glob("*.png"))) == 2
    assert (
        main(
            [
                "synth",
                "sample",
                "--checkpoint",
                str(tmp_path / "nothing"),
                "--output",
                str(tmp_path / "x"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert main(["synth"]) == 2 and "choose a step" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes(tiny_overrides, tmp_path):
    """The generator trains under DDP (2 gloo processes) on the shared engine; rank 0 exports it."""
    import os
    import subprocess
    import sys

    o = tiny_overrides
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29547",
        "-m",
        "visionfm.cli",
        "synth",
        "train",
        "--preset",
        "tiny",
        "--data",
        o["data"],
        "--layout",
        "imagenet",
        "--conditional",
        "--output",
        str(tmp_path / "ddp"),
        "--image-size",
        "16",
        "--channels",
        "16",
        "32",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--device",
        "cpu",
    ]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    gen = load_generator(tmp_path / "ddp")
    assert gen.meta.step == 2 and gen.meta.num_classes == 2
    assert ddim_sample(gen, [0], labels=[1], steps=2).shape == (1, 3, 16, 16)


def test_old_flat_run_config_loads_and_nests(tmp_path):
    """A generator.yaml written before the loop settings were nested (flat keys, old names) still loads."""
    from visionfm.config import load_config

    old = tmp_path / "generator.yaml"
    old.write_text(
        "data: imgs\noutput: runs/g\nimage_size: 16\nblock_out_channels: [16, 32]\nattention_levels: []\n"
        "norm_num_groups: 8\nsteps: 40\nbatch_size: 4\nlr: 0.001\nmin_lr: null\nwarmup_steps: 5\n"
        "grad_clip: 0.5\nsave_every: 10\nkeep_checkpoints: 3\nprecision: fp32\nseed: 3\ncache: true\n"
        "num_workers: 2\n"
    )
    cfg = load_config(GeneratorConfig, old)
    t = cfg.train
    assert cfg.data == ["imgs"] and (t.output_dir, t.max_steps, t.batch_size, t.lr, t.min_lr) == (
        "runs/g",
        40,
        4,
        0.001,
        None,
    )
    assert (t.warmup_steps, t.clip_grad, t.checkpoint_every, t.keep_last, t.seed) == (5, 0.5, 10, 3, 3)


def test_warmup_is_exact_in_steps_whatever_the_world_size(tiny_overrides):
    """The loop gets warmup_steps itself (no epochs conversion, no WORLD_SIZE read in the generator code)."""
    from visionfm.engine import Trainer

    cfg = resolve_config(overrides={**tiny_overrides, "steps": 8, "warmup_steps": 3, "lr": 1e-3})
    seen = {}
    real_init = Trainer.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        seen["lr"] = [float(x) for x in self.lr_sched]

    import unittest.mock as mock

    with mock.patch.object(Trainer, "__init__", spy):
        train_generator(cfg, progress=False)
    assert seen["lr"][:4] == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3])
    assert seen["lr"][4:] == pytest.approx([1e-3] * 4)  # constant after the warm-up (min_lr none)


def test_cli_refuses_an_existing_run_and_overwrites_or_resumes_on_request(tiny_overrides, tmp_path, capsys):
    o = tiny_overrides
    argv = [
        "synth",
        "train",
        "--data",
        o["data"],
        "--output",
        str(tmp_path / "r"),
        "--preset",
        "tiny",
        "--image-size",
        "16",
        "--channels",
        "16",
        "32",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--save-every",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds a generator run; pass --resume" in capsys.readouterr().err
    assert main([*argv[:-1], "--steps", "3", "--resume", "--no-progress"]) == 0  # extends the finished run
    assert load_generator(tmp_path / "r").meta.step == 3
    assert main([*argv, "--overwrite"]) == 0
    assert load_generator(tmp_path / "r").meta.step == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main([*argv[:5], str(tmp_path / "other"), *argv[6:], "--overwrite"]) == 2
    assert "not empty and not a generator run" in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").is_file()  # never deleted
