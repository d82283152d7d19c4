"""Paths of the shared real data and a skip helper, importable by every test module as ``tests.helpers``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("VISIONFM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = Path(os.environ.get("VISIONFM_DATA", SHARED / "data"))
FIXTURES = SHARED / "fixtures" / "visionfm-official-format"
ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "DATA",
    "FIXTURES",
    "ROOT",
    "SHARED",
    "cli",
    "kill_and_resume",
    "require",
    "save_tiny_encoder",
    "tiny_encoder",
    "visionfm_process",
]


def require(path: Path) -> Path:
    """Skip the calling test with a clear message when shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set VISIONFM_DATA / VISIONFM_SHARED to run this test)")
    return path


def tiny_encoder(seed: int = 0, modality: str = "Fundus"):
    """A randomly initialised test-sized ViT (``vit_test``: depth 2, width 64, 32 px) with ``modality``'s facts."""
    from visionfm.checkpoints import random_encoder

    return random_encoder("vit_test", seed, modality)


def save_tiny_encoder(path: Path, seed: int = 0, modality: str = "Fundus") -> Path:
    """:func:`tiny_encoder` saved as visionfm safetensors at ``path``."""
    from visionfm.checkpoints import save_encoder

    save_encoder(tiny_encoder(seed, modality), path)
    return path


def cli(*argv: object) -> int:
    """``visionfm ARGV`` in-process (paths and numbers given as they are, turned into strings); the exit code."""
    from visionfm.cli import main

    return main([str(a) for a in argv])


def visionfm_process(args: list[str], nproc: int = 0, port: int = 29500) -> subprocess.Popen:
    """``python -m visionfm ARGS`` (under ``torchrun`` with ``nproc`` > 0 processes) with one thread per process,
    in its own session, so that ``os.killpg`` reaches the launcher and every worker at once."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port)]
    return subprocess.Popen(
        [sys.executable, *(launcher if nproc else []), "-m", "visionfm", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_and_resume(
    args: Callable[[Path], list[str]],
    root: Path,
    checkpoints: str,
    nproc: int = 0,
    port: int = 29500,
    killed: Callable[[Path], None] = lambda run: None,
) -> str:
    """Run ``args(root/'full')`` and ``args(root/'killed')`` side by side, SIGKILL the second (launcher and workers)
    once a checkpoint matching the glob ``checkpoints`` appears in it, check it with ``killed(run)``, resume it with
    ``--resume`` and wait for both.

    Returns:
        the resumed process's output (both processes have exited with code 0).
    """
    full, victim = (visionfm_process(args(root / n), nproc, port + i) for i, n in enumerate(("full", "killed")))
    deadline = time.time() + 240
    while not list((root / "killed").glob(checkpoints)):
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed(root / "killed")
    resumed = visionfm_process([*args(root / "killed"), "--resume"], nproc, port + 2)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert full.wait(timeout=300) == 0, full.communicate()[0][-3000:]
    return out
