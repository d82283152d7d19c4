"""End-to-end pretraining on real images: learning, export, exact resume after SIGKILL, torchrun, clear errors."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import visionfm
from visionfm.cli import main
from visionfm.pretrain import ENCODER_FILE, export_encoder, pretrain

from ..helpers import kill_and_resume
from .conftest import tiny_config


def _log(run):
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def test_loss_decreases_with_a_fixed_teacher_on_real_images(retina_folder, tmp_path):
    # A frozen teacher (momentum 1) and frozen centres make the objective a fixed target: both losses must fall.
    cfg = tiny_config(
        [retina_folder],
        tmp_path / "run",
        epochs=6,
        momentum_teacher=1.0,
        center_momentum=1.0,
        warmup_teacher_temp=0.04,
        pred_ratio=[0.3],
        pred_ratio_var=[0.0],
        lr=0.02,
        freeze_last_layer=0,
    )
    run = pretrain(cfg)
    rows = _log(run)
    first, last = rows[:6], rows[-6:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
    assert mean(last, "cls_loss") < 0.9 * mean(first, "cls_loss")
    assert mean(last, "patch_loss") < 0.9 * mean(first, "patch_loss")


def test_full_objective_runs_exports_and_loads(retina_folder, tmp_path):
    run = pretrain(tiny_config([retina_folder], tmp_path / "run", epochs=1, local_crops=2, local_size=16))
    rows = _log(run)
    assert len(rows) == 6 and all(r["loss"] == r["loss"] for r in rows)  # 48 images / 8 = 6 steps, finite
    assert {"cls_loss", "patch_loss", "teacher_entropy", "lr", "wd", "img_s"} <= set(rows[0])
    enc = visionfm.load_encoder(run / ENCODER_FILE)
    assert enc.info.modality == "Fundus" and enc.cfg.img_size == 32 and enc.info.arch == "vit_test"
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)["task"]
    teacher = {k[len("teacher.backbone.") :]: v for k, v in state.items() if k.startswith("teacher.backbone.")}
    for k, v in load_file(run / ENCODER_FILE).items():
        torch.testing.assert_close(v, teacher[k])  # the export is the teacher
    assert (run / "pretrain.yaml").is_file() and not (run / "config.yaml").exists()  # one resolved config per run
    saved = yaml.safe_load((run / "pretrain.yaml").read_text())
    assert saved["train"]["lr"] == 5e-3 and saved["train"]["lr_base_batch"] == 256 and "epochs" not in saved
    health = json.loads((run / "health.json").read_text())
    assert set(health["indicators"]) == {"teacher_entropy_ratio", "feature_std", "effective_rank"}
    assert {"feature_std", "effective_rank", "teacher_entropy_ratio"} <= set(rows[-1])
    student = export_encoder(run, tmp_path / "student.safetensors", which="student")
    assert visionfm.load_encoder(student).cfg == enc.cfg


def test_init_from_weights_and_arch_mismatch(retina_folder, tmp_path, tiny_weights):
    cfg = tiny_config([retina_folder], tmp_path / "run", max_steps=1, init_from=str(tiny_weights), drop_path=0.0)
    run = pretrain(cfg)
    start = visionfm.load_encoder(tiny_weights)
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)["task"]
    # after one step the teacher is still within (1 - 0.996) of the initial weights
    diff = (state["teacher.backbone.blocks.0.attn.qkv.weight"] - start.blocks[0].attn.qkv.weight).abs().max()
    assert diff < 1e-3
    with pytest.raises(ValueError, match="init-from"):
        pretrain(
            tiny_config(
                [retina_folder], tmp_path / "run2", max_steps=1, init_from=str(tiny_weights), arch="vit_tiny_patch16"
            )
        )


def test_resume_errors(retina_folder, tmp_path):
    run = pretrain(tiny_config([retina_folder], tmp_path / "run", max_steps=2))
    with pytest.raises(ValueError, match="already holds a pretraining run"):
        pretrain(tiny_config([retina_folder], run, max_steps=2))
    with pytest.raises(ValueError, match=r"other settings \(out_dim: run 128 vs now 256"):
        pretrain(tiny_config([retina_folder], run, max_steps=2, out_dim=256, patch_out_dim=256), resume=True)
    with pytest.raises(FileNotFoundError, match="no pretraining run"):
        pretrain(tiny_config([retina_folder], tmp_path / "empty", max_steps=2), resume=True)


def _args(data, out, steps):
    return [
        "--data",
        str(data),
        "--modality",
        "Fundus",
        "--arch",
        "vit_test",
        "--output",
        str(out),
        "--global-size",
        "32",
        "--out-dim",
        "128",
        "--head-hidden-dim",
        "64",
        "--head-bottleneck-dim",
        "32",
        "--batch-size",
        "8",
        "--max-steps",
        str(steps),
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--warmup-epochs",
        "0.5",
        "--local-crops",
        "1",
        "--local-size",
        "16",
        "--log-every",
        "1",
    ]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(retina_folder, tmp_path):
    steps = 14  # 6 steps per epoch: the kill lands in the first or second epoch, the run crosses epochs

    def killed(run):
        killed_at = torch.load(run / "checkpoint_last.pth", weights_only=True)["step"]
        assert 4 <= killed_at < steps and not (run / ENCODER_FILE).exists()

    args = lambda out: ["pretrain", *_args(retina_folder, out, steps)]
    kill_and_resume(args, tmp_path, "checkpoint_0000000[4-9].pth", killed=killed)
    a, b = load_file(tmp_path / "full" / ENCODER_FILE), load_file(tmp_path / "killed" / ENCODER_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    sa = torch.load(tmp_path / "full" / "checkpoint_last.pth", weights_only=True)["task"]
    sb = torch.load(tmp_path / "killed" / "checkpoint_last.pth", weights_only=True)["task"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # student, head and centres too


def _no_encoder(run):
    assert not (run / ENCODER_FILE).exists()


@pytest.mark.slow
def test_torchrun_two_processes_on_real_images_killed_and_resumed(drive_folder, retina_folder, tmp_path):
    """2 processes (gloo) on real photographs + RetinaMNIST images; SIGKILL of launcher and workers; exact resume."""

    def args(out):
        return [
            "pretrain",
            *_args(retina_folder, out, 8)[2:],
            "--data",
            str(retina_folder),
            f"Fundus={drive_folder}",
            "--load-size",
            "64",
            "--num-workers",
            "1",
            "--lr",
            "0.01",
        ]

    out = kill_and_resume(args, tmp_path, "checkpoint_0000000[3-7].pth", 2, 29561, _no_encoder)
    assert out.count("encoder: ") == 1  # printed by rank 0 only
    rows = _log(tmp_path / "full")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert max(r["lr"] for r in rows) == pytest.approx(0.01 * 16 / 256)  # scaled by the global batch, 2 x 8
    a, b = load_file(tmp_path / "full" / ENCODER_FILE), load_file(tmp_path / "killed" / ENCODER_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, with each rank's RNG restored
    assert visionfm.load_encoder(tmp_path / "full" / ENCODER_FILE).cfg.embed_dim == 64


def test_cli_in_process_and_errors(retina_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["pretrain", *_args(retina_folder, out, 2)]) == 0
    assert f"encoder: {out / ENCODER_FILE}" in capsys.readouterr().out
    assert main(["pretrain", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "x")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(retina_folder), "--modality", "Xray", "--output", str(out)]) == 2
    assert "unknown modality 'Xray'" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochz: 3\n")
    assert main(["pretrain", "--config", str(cfg), "--data", str(retina_folder)]) == 2
    assert "unknown config keys ['epochz']" in capsys.readouterr().err


def test_resume_with_the_run_config_and_another_world_size(retina_folder, tmp_path):
    run = pretrain(tiny_config([retina_folder], tmp_path / "run", max_steps=2))
    assert main(["pretrain", "--config", str(run / "pretrain.yaml"), "--max-steps", "3", "--resume"]) == 2
    assert main(["pretrain", "--config", str(run / "pretrain.yaml"), "--resume"]) == 0  # the run's own settings
    from visionfm.pretrain import api

    api._check_world(run, 1)
    with pytest.raises(ValueError, match="trained by 1 process.*now 2.*same number of processes"):
        api._check_world(run, 2)


def test_old_flat_run_file_still_loads(tmp_path):
    """A pretrain.yaml written before the train section existed: loop keys at the top level, ``output``."""
    from visionfm.pretrain import pretrain_config

    old = tmp_path / "pretrain.yaml"
    old.write_text(
        "data: [a]\nmodality: Fundus\narch: vit_test\nepochs: 7\nmax_steps: null\nbatch_size: 16\n"
        "lr: 0.0005\nmin_lr: 1.0e-06\nwarmup_epochs: 2.0\nweight_decay: 0.04\nweight_decay_end: 0.4\n"
        "clip_grad: 3.0\nclip_mode: per_param\naccum_steps: 1\nprecision: auto\ncompile: false\n"
        "output: runs/old\ndevice: cpu\nseed: 3\nnum_workers: 0\ncheckpoint_every: 0\nkeep_last: 2\n"
        "log_every: 10\nprogress: true\nout_dim: 128\n"
    )
    cfg = pretrain_config(old)
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.lr_base_batch, t.output_dir, t.seed, t.clip_grad) == (
        7,
        16,
        5e-4,
        256,
        "runs/old",
        3,
        3.0,
    )
    assert cfg.out_dim == 128 and cfg.method == "ibot"
