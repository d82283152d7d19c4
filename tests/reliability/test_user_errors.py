"""Issue 14, "Tracebacks for user errors" and "Unclear messages": every bad input here is a user's mistake, so the
CLI answers with one line naming the file, line, argument or setting and exit code 2, never a traceback.

Where the operating system's answer cannot be produced for real (a full disk), it is simulated inside the process;
permissions use a folder the test user cannot write in (``/sys`` for root, which ignores mode bits).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers import save_tiny_encoder

from .conftest import EXTRACT, FAST_CLASSIFY, cli, leftovers, one_line_error


def _extract(world, data, out, *extra):
    return ["extract", "--weights", world["weights"], "--data", data, "--output", out, *EXTRACT, *extra]


def _unwritable(tmp_path):
    """A folder this process really cannot create files in."""
    if os.geteuid() == 0:  # root passes mode bits; sysfs refuses new files to everyone
        return __import__("pathlib").Path("/sys")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


# -- operating-system errors ---------------------------------------------------------------------------------------
def test_permission_denied_is_one_line(tmp_path, capsys, world):
    folder = _unwritable(tmp_path)
    out = folder / "visionfm_test.safetensors"
    one_line_error(*cli(capsys, *_extract(world, world["toy"], out)), "visionfm_test.safetensors", "ermission")
    assert not out.exists()
    run = folder / "visionfm_test_run"
    one_line_error(
        *cli(capsys, "classify", "train", "--train", world["features"]["training"], "--output", run, *FAST_CLASSIFY),
        "visionfm_test_run",
    )


def test_output_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys, world, monkeypatch):
    """`--output x.safetensors` naming an existing folder: refused up front (it used to fail after the extraction)."""
    import visionfm.features as features

    out = tmp_path / "x.safetensors"
    out.mkdir()
    monkeypatch.setattr(features, "_encode_into", lambda *a, **k: pytest.fail("images were encoded first"))
    one_line_error(*cli(capsys, *_extract(world, world["toy"], out)), str(out), "folder")


def test_existing_output_folder_is_named(tmp_path, capsys):
    out = tmp_path / "toy"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    one_line_error(
        *cli(capsys, "toy-data", "--kind", "fundus-dr", "--output", out, "--n", "10", "--size", "32"), str(out)
    )
    assert (out / "mine.txt").read_text() == "keep me"


# -- YAML ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, needles",
    [
        ("train:\n  epochs: [1, 2\n  lr: 0.1\n", ["bad.yaml", "line", "invalid YAML"]),
        ("train:\n  lr: fast\n", ["lr", "fast"]),
        ("!!python/object/apply:os.system ['echo pwned']\n", ["bad.yaml"]),
        ("- 1\n- 2\n", ["bad.yaml", "mapping"]),  # used to say "unknown config keys [1, 2]"
    ],
)
def test_bad_yaml_config_is_one_line(tmp_path, capsys, world, text, needles):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    run = tmp_path / "run"
    line = one_line_error(
        *cli(
            capsys,
            "classify",
            "train",
            "--config",
            cfg,
            "--train",
            world["features"]["training"],
            "--output",
            run,
            *FAST_CLASSIFY,
        ),
        *needles,
    )
    assert "pwned" not in line or "python" in line
    assert not run.exists()


# -- CSV and label files -------------------------------------------------------------------------------------------
def _manifest(world, tmp_path, name="m.csv"):
    rows = (world["toy"] / "manifest.csv").read_text().splitlines()[:7]
    header = rows[0].split(",")
    keep = [header.index("path"), header.index("label")]
    lines = [
        ",".join(r.split(",")[i] if j else str(world["toy"] / r.split(",")[i]) for j, i in enumerate(keep))
        for r in rows[1:]
    ]
    return tmp_path / name, ["path,label", *lines]


def test_ragged_csv_manifest_names_file_and_line(tmp_path, capsys, world):
    path, lines = _manifest(world, tmp_path)
    lines[3] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "f.safetensors"
    one_line_error(*cli(capsys, *_extract(world, path, out, "--label-columns", "label")), "m.csv", "line 4")
    assert not out.exists() and leftovers(tmp_path) == []


def test_inf_label_names_file_and_line(tmp_path, capsys, world):
    rows = (world["toy"] / "training_labels.txt").read_text().splitlines()
    rows[2] = rows[2].split(";")[0] + ";inf"
    labels = tmp_path / "training_labels.txt"
    labels.write_text("\n".join(rows) + "\n")
    one_line_error(
        *cli(
            capsys,
            "classify",
            "train",
            "--train",
            world["features"]["training"],
            "--labels",
            labels,
            "--output",
            tmp_path / "run",
            *FAST_CLASSIFY,
        ),
        "training_labels.txt",
        "line 3",
    )
    assert not (tmp_path / "run").exists()


def test_csv_with_a_byte_order_mark_is_read(tmp_path, capsys, world):
    path, lines = _manifest(world, tmp_path)
    path.write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode())  # Excel's "CSV UTF-8"
    out = tmp_path / "f.safetensors"
    rc, err = cli(capsys, *_extract(world, path, out, "--label-columns", "label"))
    assert rc == 0, err
    with safe_open(str(out), framework="pt") as f:
        assert f.get_slice("cls").get_shape()[0] == 6


def test_latin1_csv_names_the_file(tmp_path, capsys, world):
    path, lines = _manifest(world, tmp_path, "café.csv")
    lines[0] = "path,label,Bemerkung"
    lines[1:] = [ln + ",caf\xe9" for ln in lines[1:]]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    one_line_error(*cli(capsys, *_extract(world, path, tmp_path / "f.safetensors")), "café.csv", "line 2", "UTF-8")


# -- weights -------------------------------------------------------------------------------------------------------
def _bad_weights(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "unrelated":
        torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, path)
    elif kind == "wrong-shape":
        src = save_tiny_encoder(tmp_path / "ok.safetensors")
        with safe_open(str(src), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        name = sorted(k for k in tensors if "attn.qkv.weight" in k)[0]
        tensors[name] = tensors[name][:, :32].contiguous()
        path = tmp_path / "wrong-shape.safetensors"
        save_file(tensors, str(path), metadata=meta)
        return path, name
    elif kind == "unknown-config-key":
        src = save_tiny_encoder(tmp_path / "ok.safetensors")
        with safe_open(str(src), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        meta["config"] = meta["config"][:-1] + ', "flux_capacitor": 3}'
        path = tmp_path / "unknown-config-key.safetensors"
        save_file(tensors, str(path), metadata=meta)
        return path, "flux_capacitor"
    elif kind == "folder":
        path = tmp_path / "weights_dir"
        path.mkdir()
        return path, "folder"
    return path, {"random-bytes": "not a torch checkpoint", "unrelated": "not a ViT encoder"}[kind]


@pytest.mark.parametrize("kind", ["random-bytes", "unrelated", "wrong-shape", "unknown-config-key", "folder"])
def test_bad_weights_file_names_the_file_and_the_problem(tmp_path, capsys, kind):
    weights, needle = _bad_weights(tmp_path, kind)
    line = one_line_error(*cli(capsys, "info", "--weights", weights), str(weights), needle)
    assert "not found" not in line  # a folder is a folder, not a missing file


def test_pickled_npz_is_refused_naming_the_file(tmp_path, capsys):
    npz = tmp_path / "evil.npz"
    np.savez(npz, train_images=np.array([{"a": 1}], dtype=object), train_labels=np.zeros((1, 1)))
    one_line_error(*cli(capsys, "medmnist", "--npz", npz, "--output", tmp_path / "out"), str(npz))
    assert not (tmp_path / "out").exists()


# -- images --------------------------------------------------------------------------------------------------------
def test_decompression_bomb_names_the_file_and_the_limit(tmp_path, capsys, world, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (32, 32)).save(data / "small.png")
    Image.new("RGB", (400, 300)).save(data / "huge.png")
    monkeypatch.setenv("VISIONFM_MAX_PIXELS", "100000")
    out = tmp_path / "f.safetensors"
    one_line_error(*cli(capsys, *_extract(world, data, out)), "huge.png", "100,000")
    assert not out.exists() and leftovers(tmp_path) == []


def test_pretraining_skips_a_decompression_bomb_like_a_corrupt_image(tmp_path, capsys, world, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for i, p in enumerate(sorted((world["toy"] / "training").glob("*.png"))[:4]):
        Image.open(p).save(data / f"{i}.png")
    Image.new("RGB", (400, 300)).save(data / "huge.png")
    monkeypatch.setenv("VISIONFM_MAX_PIXELS", "100000")
    run = tmp_path / "run"
    rc, err = cli(
        capsys,
        "pretrain",
        "--data",
        data,
        "--output-dir",
        run,
        "--arch",
        "vit_test",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--global-size",
        "32",
        "--local-crops",
        "0",
        "--out-dim",
        "64",
        "--patch-out-dim",
        "64",
        "--head-hidden-dim",
        "64",
        "--head-bottleneck-dim",
        "32",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--no-progress",
        "--precision",
        "fp32",
    )
    assert rc == 0, err
    assert "huge.png" in err and (run / "encoder.safetensors").is_file()


# -- arguments -----------------------------------------------------------------------------------------------------
def test_split_test_fraction_out_of_range_names_the_option(tmp_path, capsys, world):
    path, lines = _manifest(world, tmp_path)
    path.write_text("\n".join(lines) + "\n")
    line = one_line_error(
        *cli(capsys, "split", "--manifest", path, "--output", tmp_path / "s", "--test-fraction", "1.5"), "test"
    )
    assert "val_fraction" not in line


def test_finetune_unknown_split_names_the_split_not_another_file(tmp_path, capsys, world):
    line = one_line_error(
        *cli(
            capsys,
            "finetune",
            "--weights",
            world["weights"],
            "--data",
            world["toy"],
            "--split",
            "validation",
            "--output",
            tmp_path / "run",
            "--device",
            "cpu",
            "--max-steps",
            "1",
        ),
        "validation",
    )
    assert "test_labels.txt" not in line
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback_above_the_same_line(tmp_path, capsys, world, monkeypatch):
    monkeypatch.delenv("VISIONFM_DEBUG", raising=False)
    args = _extract(world, world["toy"], tmp_path / "f.safetensors", "--input-size", "0")
    rc, err = cli(capsys, "--debug", *args)
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("visionfm extract: error: ")
    monkeypatch.setenv("VISIONFM_DEBUG", "1")
    rc, err = cli(capsys, *args)
    assert rc == 2 and "Traceback" in err
