"""Fine-tuning recipes (registered presets): RETFound's layer-decay groups, learning-rate rule and schedule, its
augmentation (kornia), evaluation crop, mixed-label loss, selection metric; tiny runs of both recipes, regression,
another modality, and starting from a classifier saved by RETFound's own fine-tuning."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import cohen_kappa_score

from tests.helpers import cli
from visionfm.cli import main
from visionfm.data.images import resize_image
from visionfm.errors import ConfigError
from visionfm.models import create_encoder
from visionfm.recognition import RECIPES, load_finetune_config
from visionfm.recognition.losses import mixed_targets, soft_cross_entropy
from visionfm.recognition.recipes import CropPreprocess, RetfoundAugment, layer_decay_groups
from visionfm.recognition.runs import run_config
from visionfm.recognition.task_kinds import cohen_kappa

TINY = [
    "--input-size",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--warmup-epochs",
    "1",
    "--n-boot",
    "10",
    "--device",
    "cpu",
    "--log-every",
    "1",
]


def test_retfound_layer_decay_groups_known_answer():
    enc = create_encoder("vit_test")  # depth 2: layer ids 0 (embeddings), 1, 2 (blocks), 3 (norm / head)
    groups = layer_decay_groups(enc, 1.0, 0.65)
    scale = {id(p): (g["lr_scale"], g["apply_wd"]) for g in groups for p in g["params"]}
    named = dict(enc.named_parameters())
    expect = {
        "cls_token": (0.65**3, False),
        "pos_embed": (0.65**3, False),
        "patch_embed.proj.weight": (0.65**3, True),
        "patch_embed.proj.bias": (0.65**3, False),
        "blocks.0.attn.qkv.weight": (0.65**2, True),
        "blocks.0.norm1.weight": (0.65**2, False),
        "blocks.1.mlp.fc1.weight": (0.65, True),
        "blocks.1.attn.proj.bias": (0.65, False),
        "norm.weight": (1.0, False),
    }
    for name, (s, wd) in expect.items():
        assert scale[id(named[name])] == (pytest.approx(s), wd), name
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in enc.parameters())


def test_recipe_preset_sits_beneath_yaml_and_flags(tmp_path):
    cfg = load_finetune_config(recipe="retfound", batch_size=16)
    assert (cfg.layer_decay, cfg.drop_path, cfg.feature, cfg.head, cfg.label_smoothing) == (
        0.65,
        0.2,
        "patch",
        "retfound",
        0.1,
    )
    assert (
        cfg.train.lr,
        cfg.train.lr_base_batch,
        cfg.train.weight_decay,
        cfg.train.warmup_epochs,
        cfg.train.min_lr,
    ) == (5e-3, 256, 0.05, 10, 1e-6)
    assert cfg.train.effective_lr() == pytest.approx(5e-3 * 16 / 256)  # blr x batch / 256
    f = tmp_path / "ft.yaml"
    f.write_text(yaml.safe_dump({"recipe": "retfound", "layer_decay": 0.5, "train": {"epochs": 3}}))
    cfg = load_finetune_config(f, drop_path=0.0)
    assert (cfg.layer_decay, cfg.train.epochs, cfg.drop_path, cfg.train.lr) == (0.5, 3, 0.0, 5e-3)
    assert load_finetune_config().layer_decay == 0.75 and set(RECIPES.names()) >= {"visionfm", "retfound"}
    with pytest.raises(ConfigError, match="recipe: 'retfund' is not one of"):
        load_finetune_config(recipe="retfund")
    with pytest.raises(ConfigError, match="mix 'mixup'.*'regress'"):
        load_finetune_config(recipe="retfound", task="regress", mix="mixup")


def test_eval_crop_as_retfound_does_it():
    rng = np.random.default_rng(0)
    img = (rng.random((10, 20, 3)) * 255).astype(np.uint8)
    pre = CropPreprocess(8, (0, 0, 0), (1, 1, 1), crop_pct=0.5)  # short side 10 -> 16, long 20 -> 32, crop 8
    ref = resize_image(img, (16, 32))[4:12, 12:20]
    assert torch.allclose(pre(img), torch.from_numpy(ref).permute(2, 0, 1))


def test_mixed_label_loss_and_kappa_known_answers():
    t = mixed_targets(torch.tensor([0, 1]), torch.tensor([2, 1]), torch.tensor([0.25, 0.5]), 3, smoothing=0.3)
    assert torch.allclose(t, torch.tensor([[0.625, 0.1, 0.275], [0.1, 0.8, 0.1]]))  # on 0.8, off 0.1
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    logp = torch.log_softmax(logits, -1)[0]
    assert soft_cross_entropy(logits, torch.tensor([[0.5, 0.0, 0.5]])) == pytest.approx(
        float(-(0.5 * logp[0] + 0.5 * logp[2]))
    )
    y, p = np.array([0, 0, 1, 1, 2, 2, 2]), np.array([0, 1, 1, 1, 2, 0, 2])
    cm = np.zeros((3, 3))
    np.add.at(cm, (y, p), 1)
    assert cohen_kappa(cm) == pytest.approx(cohen_kappa_score(y, p))


def test_retfound_augmentation_and_mixing_shares():
    cfg = load_finetune_config(recipe="retfound", input_size=32, mix="mixup")
    aug = RetfoundAugment(cfg, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    out = aug({"image": x, "y": torch.tensor([[0.0], [1.0], [2.0], [3.0]])})
    assert out["image"].shape == x.shape and out["y_b"].shape == (4,) and ((out["mix"] >= 0) & (out["mix"] <= 1)).all()
    # the share of the paired image, checked on constant images for both kornia mixers
    flat = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16) / 4
    for mix in ("mixup", "cutmix"):
        aug.mix = mix
        torch.manual_seed(1)
        m = aug._mix(flat.clone(), torch.arange(4))
        expect = (1 - m["mix"]) * torch.arange(4.0) / 4 + m["mix"] * m["y_b"].float() / 4
        assert torch.allclose(m["image"].mean((1, 2, 3)), expect, atol=0.02), mix


@pytest.mark.slow
def test_retfound_recipe_runs_selects_and_predicts(toy, rec_weights, rec_root, capsys):
    run = rec_root / "runs" / "ft_retfound"
    assert (
        cli(
            "finetune",
            "--recipe",
            "retfound",
            "--weights",
            rec_weights,
            "--data",
            toy["fundus-dr"].root,
            "--test-split",
            "test",
            "--mix",
            "both",
            "--output",
            run,
            *TINY,
        )
        == 0
    )
    m = json.loads((run / "metrics.json").read_text())
    assert m["recipe"] == "retfound" and m["selection"]["metric"] == "f1_auroc_kappa"
    v = m["selection"]["validation"]
    assert v["f1_auroc_kappa"] == pytest.approx((v["f1"] + v["auroc"] + v["kappa"]) / 3)
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["head"] == "retfound" and info["feature"] == "patch" and info["head_options"] == {"fc_norm": True}
    assert info["encoders"]["Fundus"]["config"]["final_norm"] is False  # fc_norm replaces the encoder's norm
    cfg = run_config(info)  # the resolved config, preset included, as saved
    assert (cfg.recipe, cfg.layer_decay, cfg.train.lr_base_batch, cfg.mix) == ("retfound", 0.65, 256, "both")
    lrs = [json.loads(ln)["lr"] for ln in (run / "log.jsonl").read_text().splitlines() if '"lr"' in ln]
    peak = 5e-3 * 8 / 256
    top = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(peak, rel=1e-6) and lrs[:top] == sorted(lrs[:top])  # linear warm-up ...
    assert lrs[top:] == sorted(lrs[top:], reverse=True) and lrs[-1] < 0.2 * peak  # ... then cosine down
    out = rec_root / "runs" / "ft_retfound.csv"
    assert (
        cli("predict", "--run", run, "--images", toy["fundus-dr"].root / "test", "--output", out, "--device", "cpu")
        == 0
    )
    with open(out) as f:  # predict applies the run's evaluation crop, so it reproduces the test predictions
        new = {r["path"]: float(r["prob_1"]) for r in csv.DictReader(f)}
    with open(run / "predictions.csv") as f:
        old = {r["path"].split("/", 1)[1]: float(r["prob_1"]) for r in csv.DictReader(f)}
    assert new.keys() == old.keys() and all(abs(new[k] - old[k]) < 1e-5 for k in new)


@pytest.mark.slow
def test_retfound_recipe_regression_and_another_modality(toy, rec_weights, rec_weights_oct, rec_root):
    run = rec_root / "runs" / "ft_retfound_bio"
    assert (
        cli(
            "finetune",
            "--recipe",
            "retfound",
            "--task",
            "regress",
            "--targets",
            "cup_disc_ratio",
            "vessel_density",
            "lesion_count",
            "--loss",
            "l1",
            "--weights",
            rec_weights,
            "--data",
            toy["fundus-biomarkers"].root,
            "--test-split",
            "test",
            "--output",
            run,
            *TINY,
        )
        == 0
    )
    m = json.loads((run / "metrics.json").read_text())
    assert m["selection"]["metric"] == "mae" and m["selection"]["mode"] == "min"
    assert set(m["test"]["mae"]) == {"cup_disc_ratio", "vessel_density", "lesion_count", "macro"}
    run = rec_root / "runs" / "ft_retfound_oct"
    assert (
        cli(
            "finetune",
            "--recipe",
            "retfound",
            "--weights",
            rec_weights_oct,
            "--data",
            toy["oct-dme"].root,
            "--feature",
            "last",
            "--output",
            run,
            *TINY,
        )
        == 0
    )
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["encoders"]["OCT"]["modality"] == "OCT" and info["head_options"] == {"fc_norm": False}
    assert info["encoders"]["OCT"]["config"]["final_norm"] is True  # RETFound's CLS variant keeps the norm


def test_finetune_starts_from_a_retfound_finetuned_classifier(toy, rec_root, tmp_path):
    from tests.checkpoints.fixtures import retfound_finetuned_file, vit_state

    g = torch.Generator().manual_seed(3)
    sd = vit_state(64, 2, 8, 4, generator=g, final_norm=False)  # global pool: fc_norm, no final norm
    torch.save(retfound_finetuned_file(sd, 5, g), tmp_path / "checkpoint-best.pth")
    run = tmp_path / "run"
    args = [
        "finetune",
        "--recipe",
        "retfound",
        "--weights",
        str(tmp_path / "checkpoint-best.pth"),
        "--data",
        str(toy["fundus-dr"].root),
        "--init-head",
        "--max-steps",
        "1",
        "--output",
        str(run),
        *TINY,
        "--lr",
        "0",
    ]
    assert main(args) == 0
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert "head initialised from" in info["head_init"] and info["out_dim"] == 5
    from safetensors.torch import load_file

    head, saved = (
        load_file(str(run / "head.safetensors")),
        torch.load(tmp_path / "checkpoint-best.pth", weights_only=False)["model"],
    )
    assert torch.equal(head["head.fc.weight"], saved["head.weight"])  # lr 0: exactly the file's classifier
    assert torch.equal(head["head.fc_norm.bias"], saved["fc_norm.bias"])
    assert cli(*args[: -len(TINY) - 4], "--output", tmp_path / "r2", "--classes", "a", "b", *TINY) == 2
