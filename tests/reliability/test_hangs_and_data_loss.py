"""Issue 14, "Hang / crash" and "Data loss": each bad input is generated here and sent through the real CLI.

A hang fails the test through ``deadline`` (SIGALRM) instead of blocking the suite; disk full is simulated by making
the operating system's write calls fail with ENOSPC inside the process (no tiny file system is needed).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from .conftest import EXTRACT, cli, leftovers, one_line_error


def _rows(path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice("cls").get_shape()[0]


def _png(path, seed=0, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_yaml_data_written_as_a_string_is_one_path_not_a_filesystem_walk(tmp_path, capsys, deadline):
    """`data: /abs/path` in a YAML file is a list of one path (it used to be split into characters, the first `/`)."""
    cfg = tmp_path / "pretrain.yaml"
    missing = tmp_path / "no_such_folder" / "images"
    cfg.write_text(f"data: {missing}\n")
    deadline(60)
    rc, err = cli(
        capsys,
        "pretrain",
        "--config",
        cfg,
        "--output-dir",
        tmp_path / "run",
        "--arch",
        "vit_test",
        "--max-steps",
        "1",
        "--device",
        "cpu",
    )
    one_line_error(rc, err, str(missing))
    assert not (tmp_path / "run").exists()  # nothing made for a run that never started
    from visionfm.config import load_config
    from visionfm.pretrain.config import PretrainConfig

    assert load_config(PretrainConfig, cfg).data == [str(missing)]


@pytest.mark.parametrize("loops", [1, 2])
def test_symlink_loops_neither_hang_nor_multiply_images(tmp_path, capsys, deadline, world, loops):
    """`ln -s . loop` (once or twice) beside one image: extraction finishes and finds the one image once."""
    data = tmp_path / "data"
    _png(data / "only.png")
    for i in range(loops):
        os.symlink(".", data / f"loop{i}")
    out = tmp_path / "f.safetensors"
    deadline(60)
    rc, err = cli(capsys, "extract", "--weights", world["weights"], "--data", data, "--output", out, *EXTRACT)
    assert rc == 0, err
    assert _rows(out) == 1


@pytest.mark.parametrize("call", ["posix_fallocate", "pwrite"])
def test_disk_full_during_extract_is_a_clean_error_without_a_partial_file(tmp_path, capsys, world, monkeypatch, call):
    """ENOSPC when the file is reserved (fallocate) or while rows are written: one line, no SIGBUS, nothing left."""
    real = getattr(os, call)
    calls = {"n": 0}

    def full(*a, **k):
        calls["n"] += 1
        if call == "posix_fallocate" or calls["n"] > 1:  # pwrite: the header goes through, the rows do not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    monkeypatch.setattr(os, call, full)
    out = tmp_path / "out" / "f.safetensors"
    rc, err = cli(capsys, "extract", "--weights", world["weights"], "--data", world["toy"], "--output", out, *EXTRACT)
    monkeypatch.undo()
    one_line_error(rc, err, str(out), "no space left on device")
    assert not out.exists() and leftovers(tmp_path) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == [] if (tmp_path / "out").exists() else True


def test_a_second_extract_to_the_same_output_is_refused_while_the_first_runs(tmp_path, capsys, world):
    """Two writers, one output: the second is refused (a lock held by a live process), never a mixed file."""
    out = tmp_path / "f.safetensors"
    out.write_bytes(b"the first run's finished file")
    lock = tmp_path / f".{out.name}.lock"
    holder = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, str(os.getpid()).encode(), 0); print('held', flush=True); "
        "time.sleep(60)"
    )
    first = subprocess.Popen([sys.executable, "-c", holder, str(lock)], stdout=subprocess.PIPE, text=True)
    try:  # the first writer: holds the output's lock the way a running extraction does
        assert first.stdout.readline().strip() == "held"
        rc, err = cli(
            capsys, "extract", "--weights", world["weights"], "--data", world["toy"], "--output", out, *EXTRACT
        )
        one_line_error(rc, err, out.name, "another extraction", str(first.pid))
        assert out.read_bytes() == b"the first run's finished file"
    finally:
        first.kill()
        first.wait()
    # the writer died without cleaning up: its lock is stale and taken over, the extraction goes ahead
    rc, err = cli(capsys, "extract", "--weights", world["weights"], "--data", world["toy"], "--output", out, *EXTRACT)
    assert rc == 0, err
    assert _rows(out) == 30 and leftovers(tmp_path) == []


def test_segment_predict_gives_one_mask_per_image_when_names_repeat(tmp_path, capsys, seg_run):
    """`a/x.png`, `a/x.jpg` and `b/x.png` are three images: three masks, none overwritten."""
    folder = tmp_path / "mixed"
    for i, rel in enumerate(["a/x.png", "a/x.jpg", "b/x.png"]):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(folder / rel)
    out = tmp_path / "pred"
    rc, err = cli(capsys, "segment", "predict", "--run", seg_run, "--data", folder, "--output", out, "--device", "cpu")
    assert rc == 0, err
    masks = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*.png") if "overlay" not in p.name and "_prob" not in p.name
    )
    assert len(masks) == 3 and len(set(masks)) == 3, masks
