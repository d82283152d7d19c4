"""Training on real image-text pairs: run folder, loading, CLI errors, exact resume after SIGKILL, torchrun."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from visionfm import vl
from visionfm.cli import main
from visionfm.vl.data import TextTable, read_sources
from visionfm.vl.knowledge import default_knowledge

from ..helpers import kill_and_resume, visionfm_process
from .conftest import train_args


def test_sources_pair_reports_and_category_prompts(csdi_subset, keratitis):
    items = read_sources([str(csdi_subset), f"SlitLamp={keratitis}"], default_knowledge())
    reports, cats = items[:40], items[40:]
    assert all(it.key.startswith("report:") and len(it.texts) == 1 for it in reports)
    assert {it.key for it in cats} == {
        "category:keratitis",
        "category:normal cornea",
        "category:other corneal abnormality",
    }
    assert cats[0].modality == "SlitLamp" and cats[0].texts[0].startswith("A slit-lamp photograph")
    assert len(cats[0].texts) > 1  # name + expert descriptions
    table = TextTable(items)
    assert len(table.keys) == len({it.key for it in items}) and len(table.item_keys) == 52


def test_train_on_real_pairs_writes_a_loadable_run(tiny_weights, csdi_subset, keratitis, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(tiny_weights, [csdi_subset, f"SlitLamp={keratitis}"], out, steps=6)) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["knowledge_version"] == "1" and info["text_encoder"]["name"] == "minilm"
    assert info["image_encoder"]["sha256"] and info["embed_dim"] == 512 and info["input_size"] == 32
    assert (out / "vl.yaml").is_file() and (out / "projection.safetensors").is_file()
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(rows) == 6 and all(np.isfinite(r["loss"]) for r in rows)
    run = vl.load(out)
    images = sorted(keratitis.glob("*/*.jpg"))[:3]
    probs = run.zeroshot(images, ["keratitis", "normal cornea"], domain_knowledge=True)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert torch.allclose(run.encode_text(["glaucoma"]).norm(dim=-1), torch.ones(1))
    assert run.encode_image(images).shape == (3, 512)


def test_partial_training_and_text_fine_tuning_export_their_weights(tiny_weights, keratitis, tmp_path):
    out = tmp_path / "run"
    args = train_args(
        tiny_weights,
        [keratitis],
        out,
        steps=2,
        extra=["--image-training", "partial", "--unfreeze-blocks", "1", "--train-text", "--val-fraction", "0"],
    )
    assert main(args) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["image_encoder"]["weights"] == "image_encoder.safetensors"
    assert info["text_encoder"]["name"] == "text_encoder" and (out / "text_encoder" / "model.safetensors").is_file()
    run = vl.load(out)
    assert run.model.image_encoder.cfg.depth == 2


def test_user_errors_are_one_line(tiny_weights, keratitis, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,label\n{next(keratitis.glob('*/*.jpg'))},3\n")
    assert main(train_args(tiny_weights, [bad], tmp_path / "r")) == 2
    assert "bad.csv, line 2: label '3' is a number" in capsys.readouterr().err
    assert main(train_args(tiny_weights, [tmp_path / "absent.csv"], tmp_path / "r")) == 2
    with pytest.raises(SystemExit) as e:  # argparse rejects a value outside the config's choices
        main(train_args(tiny_weights, [keratitis], tmp_path / "r", extra=["--image-training", "some"]))
    assert e.value.code == 2
    assert (
        main(
            [
                "zeroshot",
                "--run",
                str(tmp_path),
                "--images",
                str(keratitis),
                "--classes",
                "a",
                "b",
                "--output",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    assert "not a vision-language run" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tiny_weights, csdi_subset, keratitis, tmp_path):
    steps = 50  # ~5 steps per epoch: the kill lands mid-run, the run crosses many epochs and prompt draws
    extra = ["--checkpoint-every", "1", "--image-training", "partial", "--unfreeze-blocks", "1"]
    data = [csdi_subset, f"SlitLamp={keratitis}"]

    def killed(run):
        killed_at = torch.load(run / "checkpoint_last.pth", weights_only=True)["step"]
        assert 10 <= killed_at < steps and not (run / "run.json").exists()

    args = lambda out: train_args(tiny_weights, data, out, steps, extra)
    kill_and_resume(args, tmp_path, "checkpoint_000000[1-4]*.pth", killed=killed)
    for name in ("projection.safetensors", "image_encoder.safetensors"):
        a, b = load_file(tmp_path / "full" / name), load_file(tmp_path / "killed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name  # bitwise


@pytest.mark.slow
def test_torchrun_two_processes(tiny_weights, csdi_subset, tmp_path):
    proc = visionfm_process(
        train_args(tiny_weights, [csdi_subset], tmp_path / "run", 3, ["--val-fraction", "0"]), 2, 29581
    )
    stdout = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, stdout[-3000:]
    assert stdout.count("vision-language run:") == 1  # rank 0 reports
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert vl.load(tmp_path / "run").info["pairs"] == 40
