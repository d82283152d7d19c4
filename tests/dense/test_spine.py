"""Dense configs on the spine (nested train, typed run state, old files, registry checks), run folders that are
never silently reused, prediction names that never collide, and the CLI flags derived from the dataclasses."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from visionfm.cli import main
from visionfm.config import config_to_dict
from visionfm.dense import DenseConfig, load_config
from visionfm.errors import ConfigError

TINY = ["--input-size", "32", "--max-steps", "2", "--batch-size", "2", "--device", "cpu"]


def test_nested_train_and_typed_state():
    cfg = load_config(None, lr=0.01, **{"train.batch_size": 3}, model="unet")
    assert cfg.train.lr == 0.01 and cfg.train.batch_size == 3 and cfg.train.weight_decay == 1e-4  # dense defaults
    assert "lr" not in config_to_dict(cfg) and config_to_dict(cfg)["state"]["names"] == []
    with pytest.raises(ConfigError, match=r"model: 'unetrr' is not one of \['unetr', 'linear', 'unet'\]"):
        DenseConfig(model="unetrr")
    with pytest.raises(ConfigError, match="fg_crop"):
        load_config(None, fg_crop=2.0)


def test_old_flat_run_file_still_loads(tmp_path):
    old = {
        "task": "segment",
        "data": "d",
        "model": "unet",
        "output_dir": "runs/x",
        "epochs": 3,
        "max_steps": 7,
        "batch_size": 2,
        "lr": 0.002,
        "warmup_epochs": 2.0,
        "precision": "fp32",
        "device": "cpu",
        "extra": {
            "mean": [0.1, 0.2, 0.3],
            "std": [0.2, 0.2, 0.2],
            "encoder": None,
            "out_channels": 1,
            "names": ["vessel"],
            "train_images": ["a.png"],
        },
    }
    (tmp_path / "dense.yaml").write_text(yaml.safe_dump(old))
    cfg = load_config(tmp_path / "dense.yaml")
    assert cfg.train.output_dir == "runs/x" and cfg.train.max_steps == 7 and cfg.train.lr == 0.002
    assert cfg.state.out_channels == 1 and cfg.state.names == ["vessel"] and cfg.state.mean == [0.1, 0.2, 0.3]


def test_existing_run_folder_needs_resume_or_overwrite(drive_like, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["segment", "train", "--data", str(drive_like), "--unet", "--output", str(run), "--crop", "32", *TINY]
    assert main(args) == 0
    log_lines = (run / "log.jsonl").read_text().count("\n")
    assert main(args) == 2
    assert "already holds a dense run; pass --resume" in capsys.readouterr().err
    assert (run / "log.jsonl").read_text().count("\n") == log_lines  # nothing appended
    assert main([*args, "--overwrite"]) == 0
    assert yaml.safe_load((run / "dense.yaml").read_text())["train"]["max_steps"] == 2
    assert main([*args, "--resume"]) == 0  # a finished run resumes to its end at once
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    assert main([*args[: -len(TINY) - 4], "--output", str(other), "--crop", "32", *TINY, "--overwrite"]) == 2
    assert (other / "precious.txt").is_file() and "nothing was deleted" in capsys.readouterr().err


def test_predict_names_never_collide(tmp_path):
    from tests.dense.conftest import make_drive_like

    data = make_drive_like(tmp_path / "d", n=3)
    run = tmp_path / "run"
    assert main(["segment", "train", "--data", str(data), "--unet", "--output", str(run), "--crop", "32", *TINY]) == 0
    flat = sorted((data / "training" / "images").iterdir())
    folder = tmp_path / "mixed"
    for src, rel in zip(flat, ["a/x.png", "a/x.jpg", "b/x.png"]):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").save(folder / rel)
    out = tmp_path / "pred"
    assert (
        main(["segment", "predict", "--run", str(run), "--data", str(folder), "--output", str(out), "--device", "cpu"])
        == 0
    )
    masks = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if "overlay" not in p.name)
    assert masks == ["a/x_jpg.png", "a/x_png.png", "b/x.png"]


def test_from_masks_creates_the_output_folder(drive_like, tmp_path):
    csv = tmp_path / "new" / "sub" / "od.csv"
    assert (
        main(
            [
                "landmark",
                "from-masks",
                "--images",
                str(drive_like / "training" / "images"),
                "--masks",
                str(drive_like / "training" / "1st_manual"),
                "--output",
                str(csv),
            ]
        )
        == 0
    )
    assert csv.read_text().startswith("image,centre_x,centre_y")


def test_legacy_flags_and_validation_selection(drive_like, tmp_path):
    from tests.dense.conftest import make_drive_like

    data = make_drive_like(tmp_path / "d6", n=6)
    run = tmp_path / "v"
    assert (
        main(
            [
                "segment",
                "train",
                "--data",
                str(data),
                "--decoder",
                "unet",
                "--no-augment",
                "--names",
                "vessel",
                "--val-fraction",
                "0.34",
                "--val-every",
                "2",
                "--output",
                str(run),
                "--crop",
                "32",
                "--input-size",
                "32",
                "--max-steps",
                "4",
                "--batch-size",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    cfg = load_config(run / "dense.yaml")
    assert cfg.model == "unet" and cfg.augment is False and cfg.classes == ["vessel"]
    assert len(cfg.state.val_images) == 2 and len(cfg.state.train_images) == 4
    summary = json.loads((run / "train_metrics.json").read_text())
    assert summary["validation"] and summary["select_metric"] == "dice"
    assert summary["selected_step"] in (2, 4) and cfg.state.selected_step == summary["selected_step"]
    assert [h["step"] for h in summary["history"]] == [2, 4]
    assert (run / "model_last.safetensors").is_file()
    out = tmp_path / "p"
    assert (
        main(
            [
                "segment",
                "predict",
                "--run",
                str(run),
                "--data",
                str(data),
                "--split",
                "training",
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["selected_step"] == summary["selected_step"]
    assert np.array(Image.open(out / "21_training.png")).shape == (40, 36)
