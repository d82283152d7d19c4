"""Every dense command through ``visionfm.cli.main([...])`` on tiny synthetic data (a few engine steps)."""

import json

import numpy as np
import pytest

from tests.helpers import cli
from visionfm.cli import main

pytest.importorskip("visionfm.engine", reason="the shared training engine is not in this tree yet")

TINY = ["--input-size", "32", "--max-steps", "2", "--batch-size", "2", "--device", "cpu", "--epochs", "1"]


def _predict(run, data, out, *extra) -> int:
    """``segment predict`` of ``run`` on ``data``'s training split into ``out``, on the CPU."""
    return cli(
        "segment",
        "predict",
        "--run",
        run,
        "--data",
        data,
        "--split",
        "training",
        "--output",
        out,
        *extra,
        "--device",
        "cpu",
    )


def test_segment_train_predict_vit_and_unet(drive_like, tiny_weights, tmp_path):
    run = tmp_path / "run"
    assert cli("segment", "train", "--data", drive_like, "--weights", tiny_weights, "--output", run, *TINY) == 0
    assert (run / "model.safetensors").is_file() and (run / "dense.yaml").is_file()
    out = tmp_path / "pred"
    assert _predict(run, drive_like, out) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["images"] == 3 and set(res["metrics"]["vessel"]) >= {
        "dice",
        "iou",
        "sensitivity",
        "specificity",
        "auc",
        "hd95",
    }
    from PIL import Image

    mask = np.array(Image.open(out / "21_training.png"))
    assert mask.shape == (40, 36) and set(np.unique(mask)) <= {0, 255}  # original resolution
    assert np.array(Image.open(out / "21_training_overlay.png")).shape == (40, 36, 3)
    unet = tmp_path / "unet"  # few-shot (1 image), native resolution with random crops
    assert (
        cli(
            "segment", "train", "--data", drive_like, "--unet", "--subset", "1", "--crop", "32", "--output", unet, *TINY
        )
        == 0
    )
    assert _predict(unet, drive_like, tmp_path / "p2", "--no-eval") == 0
    mask = np.array(Image.open(tmp_path / "p2" / "22_training.png"))
    assert mask.shape == (40, 36) and not mask[0].any()  # outside the field of view: background
    assert not (tmp_path / "p2" / "metrics.json").read_text().count('"dice"')


def test_landmark_from_masks_train_predict(drive_like, tiny_weights, tmp_path):
    images = drive_like / "training" / "images"
    csv = tmp_path / "c.csv"
    assert (
        cli(
            "landmark",
            "from-masks",
            "--images",
            images,
            "--masks",
            drive_like / "training" / "1st_manual",
            "--output",
            csv,
            "--name",
            "line",
        )
        == 0
    )
    assert csv.read_text().splitlines()[1].startswith("21_training.png,11.000,19.500")  # centre of columns 10-12
    run = tmp_path / "lrun"
    assert (
        cli(
            "landmark",
            "train",
            "--data",
            images,
            "--labels",
            csv,
            "--weights",
            tiny_weights,
            "--output",
            run,
            "--sigma",
            "2",
            *TINY,
        )
        == 0
    )
    out = tmp_path / "lp"
    assert (
        cli("landmark", "predict", "--run", run, "--data", images, "--labels", csv, "--output", out, "--device", "cpu")
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(m["mre_per_landmark"]) == {"line"} and m["mre"] >= 0
    assert (out / "landmarks.csv").is_file() and (out / "21_training_landmarks.png").is_file()


def test_bad_input_is_a_clean_error(drive_like, tmp_path, capsys):
    (drive_like / "training" / "1st_manual" / "22_manual1.gif").unlink()
    assert cli("segment", "train", "--data", drive_like, "--unet", "--output", tmp_path / "r", *TINY) == 2
    assert "22_training.png: no mask file" in capsys.readouterr().err


def test_schedule_steps_and_crop_max_side_predicts_original_size(drive_like, tmp_path):
    from PIL import Image

    run = tmp_path / "r"
    assert (
        cli(
            "segment",
            "train",
            "--data",
            drive_like,
            "--unet",
            "--crop",
            "32",
            "--max-side",
            "34",
            "--max-steps",
            "6",
            "--batch-size",
            "2",
            "--lr",
            "0.01",
            "--device",
            "cpu",
            "--output",
            run,
        )
        == 0
    )
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    # The cosine schedule was stepped every iteration: the last of 6 steps runs at ~7% of the base rate
    # (a loop that never steps its scheduler would still be at 0.01).
    assert last["step"] == 6 and 0 < last["lr"] < 0.002
    out = tmp_path / "p"
    assert _predict(run, drive_like, out) == 0
    assert np.array(Image.open(out / "21_training.png")).shape == (40, 36)  # original size, not 34 x 31


def test_fewshot_table_and_reuse(drive_like, tmp_path, capsys):
    out = tmp_path / "fs"
    args = [
        "segment",
        "fewshot",
        "--data",
        str(drive_like),
        "--models",
        "unet",
        "--shots",
        "1",
        "2",
        "--test-data",
        str(drive_like),
        "--test-split",
        "training",
        "--output",
        str(out),
        "--crop",
        "32",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| model | shots | encoder | dice |" in table and table.count("| unet |") == 2
    rows = json.loads((out / "fewshot.json").read_text())["rows"]
    assert [r["shots"] for r in rows] == [1, 2] and all(0 <= r["dice"] <= 1 for r in rows)
    first = (out / "unet_1shot" / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # finished cells are reused, not retrained
    assert (out / "unet_1shot" / "model.safetensors").stat().st_mtime_ns == first
    other = list(args)
    other[other.index("--max-steps") + 1] = "3"
    assert main(other) == 2
    assert "other settings" in capsys.readouterr().err
