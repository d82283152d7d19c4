"""Issue 14, "Silent wrong result": each case now gives the right result (and says which input it used) or one
error line with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers import save_tiny_encoder

from .conftest import EXTRACT, FAST_CLASSIFY, TINY_SEGMENT, cli, one_line_error


@pytest.mark.parametrize("split", ["training", "test"])
def test_classify_without_labels_uses_the_features_split_and_records_it(tmp_path, capsys, world, split):
    """A decoy `*_labels.txt` sorting first (same first line, every label 0) is not taken; the file used is recorded."""
    root = tmp_path / "toy"
    shutil.copytree(world["toy"], root)
    lines = (root / f"{split}_labels.txt").read_text().splitlines()
    (root / "a_decoy_labels.txt").write_text("".join(f"{ln.split(';')[0]};0\n" for ln in lines))
    feats = tmp_path / f"{split}.safetensors"
    rc, err = cli(
        capsys, "extract", "--weights", world["weights"], "--data", root, "--output", feats, "--split", split, *EXTRACT
    )
    assert rc == 0, err
    run = tmp_path / "run"
    rc, err = cli(
        capsys, "classify", "train", "--train", feats, "--output", run, "--val-fraction", "0.5", *FAST_CLASSIFY
    )
    assert rc == 0, err
    used = str(root / f"{split}_labels.txt")
    assert json.loads((run / "metrics.json").read_text())["labels"] == {str(feats): used}
    assert used in err  # and the log says which file it took


def _nan_weights(tmp_path):
    path = save_tiny_encoder(tmp_path / "w.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = sorted(k for k in tensors if k.endswith("norm.weight"))[0]
    tensors[name][0] = float("nan")
    save_file(tensors, str(path), metadata=meta)
    return path, name


def test_nan_weights_are_refused_naming_the_tensor(tmp_path, capsys, world):
    weights, name = _nan_weights(tmp_path)
    out = tmp_path / "f.safetensors"
    rc, err = cli(capsys, "extract", "--weights", weights, "--data", world["toy"], "--output", out, *EXTRACT)
    one_line_error(rc, err, str(weights), name)
    assert not out.exists()
    rc, err = cli(capsys, "info", "--weights", weights, "--allow-nonfinite")  # asked for: loaded
    assert rc == 0, err


@pytest.mark.parametrize("arch, needle", [("vit_large", "does not match"), ("vit_nonsense", "vit_nonsense")])
def test_arch_is_checked_for_a_safetensors_file(tmp_path, capsys, world, arch, needle):
    out = tmp_path / "f.safetensors"
    rc, err = cli(
        capsys,
        "extract",
        "--weights",
        world["weights"],
        "--arch",
        arch,
        "--data",
        world["toy"],
        "--output",
        out,
        *EXTRACT,
    )
    one_line_error(rc, err, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["extract", "--input-size", "0"], "--input-size"),
        (["extract", "--input-size", "-32"], "--input-size"),
        (["extract", "--batch-size", "0"], "--batch-size"),
        (["toy-data", "--size", "0"], "size"),
        (["toy-data", "--n", "-3"], "n"),
        (["segment", "train", "--input-size", "0"], "input_size"),
        (["finetune", "--input-size", "0"], "input_size"),
    ],
)
def test_sizes_must_be_positive(tmp_path, capsys, world, args, needle):
    """`--input-size 0` used to become 224; every size is checked before work."""
    out = tmp_path / "out"
    common = {
        "extract": [
            "--weights",
            world["weights"],
            "--data",
            world["toy"],
            "--output",
            out / "f.safetensors",
            "--n-last-blocks",
            "2",
            "--num-workers",
            "0",
            "--device",
            "cpu",
        ],
        "toy-data": ["--kind", "fundus-dr", "--output", out],
        "segment": ["--data", world["toy"], "--output", out, "--unet", "--device", "cpu"],
        "finetune": ["--weights", world["weights"], "--data", world["toy"], "--output", out, "--device", "cpu"],
    }
    rc, err = cli(capsys, *args, *common[args[0]])
    one_line_error(rc, err, needle)
    assert not out.exists()


def test_a_label_outside_the_classes_is_an_error_not_a_bigger_head(tmp_path, capsys, world):
    """A grade 7 in a 0-4 task: refused naming the file and line (it used to make an 8-class head)."""
    rows = (world["toy"] / "training_labels.txt").read_text().splitlines()
    rows[1] = rows[1].split(";")[0] + ";7"
    labels = tmp_path / "training_labels.txt"
    labels.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    base = [
        "classify",
        "train",
        "--train",
        world["features"]["training"],
        "--labels",
        labels,
        "--output",
        run,
        *FAST_CLASSIFY,
    ]
    rc, err = cli(capsys, *base, "--classes", "0", "1", "2", "3", "4")
    one_line_error(rc, err, "training_labels.txt, line 2")
    rc, err = cli(capsys, *base)  # without declared classes: the gap 5, 6 gives it away
    one_line_error(rc, err, "never occur")
    assert not run.exists()


def test_every_training_command_refuses_an_existing_run_folder(tmp_path, capsys, world, seg_run):
    """`classify train` / `segment train` used to append to an existing run; all refuse without --resume/--overwrite."""
    run = tmp_path / "run"
    args = ["classify", "train", "--train", world["features"]["training"], "--output", run, *FAST_CLASSIFY]
    assert cli(capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    one_line_error(*cli(capsys, *args), str(run), "--resume", "--overwrite")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    seg_log = (seg_run / "log.jsonl").read_bytes()
    data = seg_run.parent / "drive"
    one_line_error(
        *cli(capsys, "segment", "train", "--data", data, "--output", seg_run, *TINY_SEGMENT), str(seg_run), "--resume"
    )
    assert (seg_run / "log.jsonl").read_bytes() == seg_log
    one_line_error(
        *cli(
            capsys,
            "pretrain",
            "--data",
            world["toy"] / "training",
            "--output-dir",
            run,
            "--arch",
            "vit_test",
            "--max-steps",
            "1",
            "--device",
            "cpu",
        ),
        str(run),
    )
    one_line_error(
        *cli(
            capsys,
            "finetune",
            "--weights",
            world["weights"],
            "--data",
            world["toy"],
            "--output",
            run,
            "--device",
            "cpu",
        ),
        str(run),
        "already holds a recognition run",
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
