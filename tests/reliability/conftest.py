"""Fixtures of the reliability matrix (issue 14): a tiny encoder, 32-px phantoms, their features, and helpers that
run the real CLI and check what a user sees (exit code, one error line, no traceback, nothing left behind)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import save_tiny_encoder
from visionfm.cli import main

# Arguments that keep every run tiny: the test encoder has 2 blocks and a 32-px input.
EXTRACT = ["--input-size", "32", "--n-last-blocks", "2", "--num-workers", "0", "--batch-size", "8", "--device", "cpu"]
FAST_CLASSIFY = ["--epochs", "2", "--batch-size", "8", "--n-boot", "0", "--device", "cpu"]
TINY_SEGMENT = [
    "--unet",
    "--crop",
    "32",
    "--input-size",
    "32",
    "--max-steps",
    "2",
    "--batch-size",
    "2",
    "--device",
    "cpu",
]
LEFTOVER_PATTERNS = ("*.partial", "*.tmp", "*.lock")


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``visionfm args...`` in-process; returns (exit code, stderr). argparse's own exits count too."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse: bad option values
        rc = e.code
    return rc, capsys.readouterr().err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    """Assert exit 2, no traceback and exactly one error line (the last line), containing every needle."""
    assert "Traceback" not in err, err
    assert rc == 2, (rc, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def leftovers(folder: Path) -> list[Path]:
    """Temporary, partial and lock files anywhere under ``folder`` (none may survive a finished command)."""
    return sorted(p for pat in LEFTOVER_PATTERNS for p in Path(folder).rglob(pat)) if Path(folder).exists() else []


class Hang(BaseException):
    """Raised by :func:`deadline` (a BaseException: the CLI's boundary must not turn it into an error line)."""


@pytest.fixture
def deadline():
    """``deadline(seconds)``: fail the test instead of hanging when the code under test never returns."""

    def on_alarm(signum, frame):
        raise Hang("the command did not finish in time (a hang)")

    old = signal.signal(signal.SIGALRM, on_alarm)

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    """Shared, read-only inputs: tiny encoder, 40 DR phantoms (vfm layout, 32 px) and their features per split."""
    from visionfm import extract_features
    from visionfm.toydata import make_dataset

    root = tmp_path_factory.mktemp("reliability")
    weights = save_tiny_encoder(root / "tiny.safetensors")
    toy = make_dataset("fundus-dr", root / "toy", n=40, seed=0, size=32, progress=False)
    feats = {}
    for split in ("training", "test"):
        feats[split] = extract_features(
            weights,
            toy.root,
            root / f"{split}.safetensors",
            split=split,
            input_size=32,
            n_last_blocks=2,
            num_workers=0,
            batch_size=16,
            progress=False,
            device="cpu",
        )
    return {"root": root, "weights": weights, "toy": toy.root, "features": feats}


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory) -> Path:
    """A finished 2-step U-Net segmentation run on DRIVE-like 40x36 images."""
    from tests.dense.conftest import make_drive_like

    root = tmp_path_factory.mktemp("segment")
    data = make_drive_like(root / "drive", n=3)
    run = root / "run"
    assert main(["segment", "train", "--data", str(data), "--output", str(run), *TINY_SEGMENT]) == 0
    return run
