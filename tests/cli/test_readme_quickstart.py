"""The README's quick-start block runs verbatim (issue 13: the README runs as pasted).

The block needs what ``make demo`` leaves on disk (``outputs/demo/encoder.safetensors`` and the phantoms under
``outputs/demo/data``). The test makes those the cheap way, with the demo's own command (``--stages phantoms encoder
--weights`` a tiny encoder, fast mode), in a temporary repository root holding a link to the environment, then runs
the block exactly as the README prints it with bash (``set -e``: any failing line fails the test).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quickstart_block(readme: Path = ROOT / "README.md") -> str:
    """The fenced bash block between ``<!-- quickstart -->`` and ``<!-- /quickstart -->``."""
    text = readme.read_text()
    m = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert m, "README.md has no <!-- quickstart --> ... <!-- /quickstart --> bash block"
    return m.group(1)


def test_the_block_is_marked_and_uses_the_demo_outputs():
    block = quickstart_block()
    assert block.startswith("source .venv/bin/activate") and "outputs/demo/encoder.safetensors" in block


@pytest.mark.slow
def test_readme_quickstart_runs_verbatim(tmp_path, tiny_weights):
    venv = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(sys.prefix)  # the environment running the tests
    (tmp_path / ".venv").symlink_to(venv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("VISIONFM_DATA", None)
    prep = subprocess.run(
        [
            str(venv / "bin" / "visionfm"),
            "demo",
            "--fast",
            "--stages",
            "phantoms",
            "encoder",
            "--weights",
            str(tiny_weights),
            "--output",
            "outputs/demo",
            "--heartbeat",
            "0",
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert prep.returncode == 0, prep.stderr[-3000:]
    assert (tmp_path / "outputs" / "demo" / "encoder.safetensors").is_file()
    run = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", quickstart_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"the README quick start failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    out = tmp_path / "outputs" / "quickstart"
    assert (out / "dr_training.safetensors").is_file() and (out / "dr_test.safetensors").is_file()
    assert (out / "dr_linear" / "metrics.json").is_file()
    assert any((out / "attention").glob("*.png"))
