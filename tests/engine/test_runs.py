"""Runs that go wrong and go on: resume trims the log, survives a corrupt last checkpoint, extends a finished run;
output files get the umask's mode and one writer at a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from visionfm.checkpoints.io import CheckpointError
from visionfm.engine import Trainer
from visionfm.engine.trainer import trim_log
from visionfm.errors import UserError
from visionfm.fileio import OutputLockedError, atomic_write, exclusive_output, lock_path, prepare_run_folder

from .test_engine import Regression, _cfg, _data


def _steps(run):
    return [
        json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines() if "loss" in json.loads(line)
    ]


def _weights(path):
    return torch.load(path, weights_only=True)["task"]


def test_resume_trims_the_log_to_the_resumed_step(tmp_path):
    run = tmp_path / "run"
    torch.manual_seed(0)
    Trainer(Regression(), _cfg(run, max_steps=12, checkpoint_every=4, keep_last=5), _data()).fit()
    shutil.copy(run / "checkpoint_00000008.pth", run / "checkpoint_last.pth")  # as if killed after step 8..12
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 13, "lo')  # a line torn by the kill
    Trainer(Regression(), _cfg(run, max_steps=12, checkpoint_every=4, keep_last=5), _data()).fit(resume=True)
    assert _steps(run) == list(range(1, 13))  # every step exactly once


def test_trim_log_known_answer(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 2, "val/x": 1}\n{"ste')
    assert trim_log(log, 2) == 2
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 2, "val/x": 1}\n'
    assert trim_log(tmp_path / "absent.jsonl", 5) == 0


def test_corrupt_last_checkpoint_falls_back_to_the_newest_intact(tmp_path, caplog):
    run = tmp_path / "run"
    torch.manual_seed(0)
    Trainer(Regression(), _cfg(run, max_steps=16, checkpoint_every=4, keep_last=2), _data()).fit()
    full = _weights(run / "checkpoint_last.pth")
    (run / "checkpoint_last.pth").write_bytes(b"\x00garbage" * 50)  # e.g. a disk that lied about a write
    (run / "checkpoint_00000016.pth").write_bytes(b"PK\x03\x04broken")
    with caplog.at_level("WARNING", logger="visionfm.engine.trainer"):
        Trainer(Regression(), _cfg(run, max_steps=16, checkpoint_every=4, keep_last=2), _data()).fit(resume=True)
    assert "resuming from checkpoint_00000012.pth" in caplog.text
    resumed = _weights(run / "checkpoint_last.pth")
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # steps 13-16 redone exactly
    assert _steps(run) == list(range(1, 17))


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_last.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*checkpoint_last.pth"):
        Trainer(Regression(), _cfg(run, max_steps=4), _data()).fit(resume=True)


def test_a_finished_run_is_extended_by_a_larger_max_steps(tmp_path, caplog):
    def extended(name):
        run = tmp_path / name
        torch.manual_seed(0)
        Trainer(Regression(), _cfg(run, max_steps=16), _data()).fit()
        with caplog.at_level("INFO", logger="visionfm.engine.trainer"):
            t = Trainer(Regression(), _cfg(run, max_steps=24), _data())
            t.fit(resume=True)
        return run, t

    run, trainer = extended("a")
    assert "had 16 steps and now has 24" in caplog.text
    assert _steps(run) == list(range(1, 25))
    assert torch.load(run / "checkpoint_last.pth", weights_only=True)["step"] == 24
    lrs = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert lrs[16] == pytest.approx(float(trainer.lr_sched[16]))  # the new, longer cosine from the resumed step
    again, _ = extended("b")
    a, b = _weights(run / "checkpoint_last.pth"), _weights(again / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic


def test_atomic_write_gets_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        os.umask(0o077)
        with atomic_write(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporary left


def test_atomic_write_removes_its_temporary_on_error(tmp_path):
    with pytest.raises(OSError), atomic_write(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device", str(tmp))
    assert list(tmp_path.iterdir()) == []


def test_exclusive_output_refuses_a_second_writer_and_takes_over_a_stale_lock(tmp_path):
    out = tmp_path / "features.safetensors"
    with exclusive_output(out):
        assert lock_path(out).is_file()
        code = (
            "import sys\nfrom visionfm.fileio import exclusive_output, OutputLockedError\n"
            f"try:\n    with exclusive_output({str(out)!r}):\n        sys.exit(0)\n"
            "except OutputLockedError as e:\n    print(e)\n    sys.exit(3)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3 and f"pid {os.getpid()}" in r.stdout, r.stdout + r.stderr
    assert not lock_path(out).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    lock_path(out).write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")  # its writer was killed
    with exclusive_output(out):
        assert lock_path(out).read_text().startswith(str(os.getpid()))
    lock_path(out).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live process
    with pytest.raises(OutputLockedError, match="being written by another process"), exclusive_output(out):
        pass


def test_one_run_folder_policy_for_every_trainer(tmp_path):
    """New or empty: start; a run: --resume continues, --overwrite replaces, neither refuses; never delete a
    folder that is not a run; a file, or --resume without a checkpoint, is an error."""
    run, mine = tmp_path / "run", tmp_path / "mine"
    assert prepare_run_folder(run, "toy", ("toy.yaml",)) is False and not run.exists()  # not created before work
    run.mkdir()
    assert prepare_run_folder(run, "toy", ("toy.yaml",)) is False  # empty
    (run / "toy.yaml").write_text("a: 1")
    with pytest.raises(UserError, match="already holds a toy run; pass --resume to continue it or --overwrite"):
        prepare_run_folder(run, "toy", ("toy.yaml",))
    with pytest.raises(UserError, match="holds no checkpoint_last.pth"):
        prepare_run_folder(run, "toy", ("toy.yaml",), resume=True)
    (run / "checkpoint_last.pth").write_bytes(b"x")
    assert prepare_run_folder(run, "toy", ("toy.yaml",), resume=True) is True and (run / "toy.yaml").is_file()
    with pytest.raises(UserError, match="give one"):
        prepare_run_folder(run, "toy", ("toy.yaml",), resume=True, overwrite=True)
    assert prepare_run_folder(run, "toy", ("toy.yaml",), overwrite=True) is False and not run.exists()
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and not a toy run folder .*nothing was deleted"):
        prepare_run_folder(mine, "toy", ("toy.yaml",), overwrite=True)
    assert (mine / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare_run_folder(mine / "notes.txt", "toy", ("toy.yaml",))


def test_training_leaves_the_callers_random_state_alone(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = torch.rand(3), np.random.rand(3), random.random()
    trainer = Trainer(Regression(), _cfg(tmp_path / "r", epochs=1), _data())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    trainer.fit()
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
