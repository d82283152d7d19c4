"""Issue 14, "Leftovers" and runs: failed commands leave no partial file or half-made run folder, written files get
the umask's mode, resume trims the log, survives a corrupt last checkpoint, extends a finished run, and Ctrl-C ends
with exit 130, one line and a run that resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .conftest import EXTRACT, FAST_CLASSIFY, TINY_SEGMENT, cli, leftovers, one_line_error

STEPS = ["--batch-size", "8", "--n-boot", "0", "--device", "cpu", "--log-every", "1", "--val-fraction", "0.3"]


def _steps(run) -> list[int]:
    rows = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


@pytest.fixture
def umask():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_a_failed_extract_leaves_no_partial_file(tmp_path, capsys, world):
    data = tmp_path / "data"
    shutil.copytree(world["toy"] / "training", data)
    (data / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a truncated PNG
    out = tmp_path / "out" / "f.safetensors"
    one_line_error(
        *cli(capsys, "extract", "--weights", world["weights"], "--data", data, "--output", out, *EXTRACT),
        "zz_broken.png",
    )
    assert not out.exists() and leftovers(tmp_path) == []


def test_failed_training_commands_leave_no_half_made_run_folder(tmp_path, capsys, world):
    from tests.dense.conftest import make_drive_like

    data = make_drive_like(tmp_path / "drive", n=2)
    next((data / "training" / "1st_manual").iterdir()).unlink()  # an image without its mask
    one_line_error(*cli(capsys, "segment", "train", "--data", data, "--output", tmp_path / "seg", *TINY_SEGMENT))
    one_line_error(
        *cli(
            capsys,
            "pretrain",
            "--data",
            tmp_path / "nothing_here",
            "--output-dir",
            tmp_path / "pt",
            "--arch",
            "vit_test",
            "--max-steps",
            "1",
            "--device",
            "cpu",
        ),
        "nothing_here",
    )
    one_line_error(
        *cli(
            capsys,
            "classify",
            "train",
            "--train",
            tmp_path / "missing.safetensors",
            "--output",
            tmp_path / "cls",
            *FAST_CLASSIFY,
        ),
        "missing.safetensors",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive"]


def test_written_files_get_the_umask_mode(tmp_path, capsys, world, umask):
    out = tmp_path / "f.safetensors"
    assert (
        cli(capsys, "extract", "--weights", world["weights"], "--data", world["toy"], "--output", out, *EXTRACT)[0] == 0
    )
    run = tmp_path / "run"
    assert (
        cli(
            capsys,
            "classify",
            "train",
            "--train",
            world["features"]["training"],
            "--output",
            run,
            "--max-steps",
            "2",
            "--checkpoint-every",
            "1",
            *STEPS,
        )[0]
        == 0
    )
    files = [out, run / "checkpoint_last.pth", run / "metrics.json", *run.glob("checkpoint_0*.pth")]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o640) for p in files}


def test_resume_trims_the_log_and_extends_a_finished_run(tmp_path, capsys, world):
    run = tmp_path / "run"
    base = [
        "classify",
        "train",
        "--train",
        world["features"]["training"],
        "--output",
        run,
        "--checkpoint-every",
        "2",
        "--keep-last",
        "5",
        *STEPS,
    ]
    assert cli(capsys, *base, "--max-steps", "8")[0] == 0
    shutil.copy(run / "checkpoint_00000004.pth", run / "checkpoint_last.pth")  # as if killed between steps 4 and 8
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 9, "lo')  # the line the kill tore
    rc, err = cli(capsys, *base, "--max-steps", "8", "--resume")
    assert rc == 0, err
    assert _steps(run) == list(range(1, 9))  # every step once
    rc, err = cli(capsys, *base, "--max-steps", "12", "--resume")  # a finished run goes on to more steps
    assert rc == 0, err
    assert _steps(run) == list(range(1, 13))


def test_a_corrupt_last_checkpoint_falls_back_to_an_intact_one_or_is_named(tmp_path, capsys, world):
    run = tmp_path / "run"
    base = [
        "classify",
        "train",
        "--train",
        world["features"]["training"],
        "--output",
        run,
        "--checkpoint-every",
        "2",
        "--keep-last",
        "2",
        "--max-steps",
        "6",
        *STEPS,
    ]
    assert cli(capsys, *base)[0] == 0
    (run / "checkpoint_last.pth").write_bytes(b"\x00garbage" * 64)  # a disk that lied about a write
    (run / "checkpoint_00000006.pth").write_bytes(b"PK\x03\x04broken")
    rc, err = cli(capsys, *base, "--resume")
    assert rc == 0, err
    assert "checkpoint_00000004.pth" in err and "Traceback" not in err
    assert _steps(run) == list(range(1, 7))
    for p in run.glob("checkpoint*.pth"):
        p.write_bytes(b"\x00")
    one_line_error(*cli(capsys, *base, "--resume"), "no intact checkpoint")


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_exit_130_and_resumes(tmp_path, capsys, world):
    """SIGINT to a running `classify train`: exit 130, "interrupted; resume with: ...", and that command resumes."""
    run = tmp_path / "run"
    args = [
        "classify",
        "train",
        "--train",
        str(world["features"]["training"]),
        "--output",
        str(run),
        "--max-steps",
        "200000",
        "--checkpoint-every",
        "20",
        "--no-progress",
        *STEPS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "visionfm", *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        t0 = time.time()
        while not (run / "checkpoint_last.pth").is_file():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() - t0 < 240, "no checkpoint after 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("visionfm classify") and "interrupted; resume with: visionfm classify train" in last, last
    assert "--resume" in last and leftovers(run) == []
    done = max(_steps(run))
    hint = last.split("resume with: ", 1)[1].split()[1:]
    hint[hint.index("--max-steps") + 1] = str(done + 3)  # the printed line, shortened to finish soon
    rc, err = cli(capsys, *hint)
    assert rc == 0, err
    assert _steps(run) == list(range(1, done + 4))


def test_ctrl_c_during_extract_leaves_nothing_half_written(tmp_path, capsys, world, monkeypatch):
    """KeyboardInterrupt after the first batch (in-process): exit 130, one line, no partial file, no lock."""
    import visionfm.features as features

    real, calls = features.encode_batch, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(features, "encode_batch", interrupted)
    out = tmp_path / "f.safetensors"
    rc, err = cli(capsys, "extract", "--weights", world["weights"], "--data", world["toy"], "--output", out, *EXTRACT)
    assert rc == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "visionfm extract: interrupted"
    assert not out.exists() and leftovers(tmp_path) == []
