"""The CLI's error boundary: a user's mistake is one line and exit 2, a bug keeps its traceback, Ctrl-C is 130."""

from __future__ import annotations

import csv
import errno
import subprocess
import sys

import pytest
import yaml

from visionfm.checkpoints.io import CheckpointError
from visionfm.cli import COMMANDS, EXIT_INTERRUPTED, Command, main
from visionfm.data.images import ImageReadError
from visionfm.errors import ConfigError, UserError


@pytest.fixture
def raising(monkeypatch):
    """Register ``visionfm boom``, whose run raises whatever the test sets; removed afterwards."""
    box: dict = {}

    def configure(p):
        p.add_argument("--resume", action="store_true")

    def run(args):
        raise box["exc"]

    monkeypatch.setitem(COMMANDS._items, "boom", Command("boom", "raises", configure, run))
    monkeypatch.setitem(COMMANDS._aliases, "boom", "boom")
    monkeypatch.delenv("VISIONFM_DEBUG", raising=False)
    return box


def _yaml_error():
    try:
        yaml.safe_load("a: [1, 2\nb: 3")
    except yaml.YAMLError as e:
        return e


def _bomb():
    from PIL import Image

    return Image.DecompressionBombError("Image size (300000000 pixels) exceeds limit of 178956970 pixels")


@pytest.mark.parametrize(
    "exc,needle",
    [
        (UserError("--n must be positive"), "--n must be positive"),
        (ConfigError("run.yaml: unknown config keys ['lrr']"), "unknown config keys"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "nowhere.png"), "nowhere.png: No such file"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "/root/x: Permission denied"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "out"), "out: Is a directory"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "a.txt/b"), "a.txt/b: Not a directory"),
        (FileExistsError(errno.EEXIST, "File exists", "runs/x"), "runs/x: File exists"),
        (OSError(errno.ENOSPC, "No space left on device", "big.bin"), "big.bin: No space left on device (disk full)"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "/ro/x: Read-only file system"),
        (_yaml_error(), "line 2: invalid YAML"),
        (csv.Error("field larger than field limit"), "malformed CSV: field larger"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not utf-8 text (invalid start byte"),
        (_bomb(), "decompression bomb"),
        (CheckpointError("w.pth: not a checkpoint"), "w.pth: not a checkpoint"),
        (ImageReadError("a.png: cannot decode"), "a.png: cannot decode"),
    ],
)
def test_user_errors_are_one_line_exit_2(raising, capsys, exc, needle):
    raising["exc"] = exc
    assert main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visionfm boom: error: ") and needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_registry_name_is_a_user_error(raising, capsys):
    from visionfm.registry import Registry

    reg = Registry("head")
    reg.add("mlp", object())
    try:
        reg.get("mlpp")
    except KeyError as e:
        raising["exc"] = e
    assert main(["boom"]) == 2
    assert "unknown head 'mlpp'; valid: mlp" in capsys.readouterr().err


@pytest.mark.parametrize(
    "exc", [KeyError("teacher.backbone.x"), TypeError("bad"), AttributeError("x"), RuntimeError("shape mismatch")]
)
def test_bugs_keep_their_traceback(raising, exc):
    raising["exc"] = exc
    with pytest.raises(type(exc)):
        main(["boom"])


@pytest.mark.parametrize("how", ["flag", "flag-after", "env"])
def test_debug_shows_the_traceback(raising, capsys, monkeypatch, how):
    raising["exc"] = UserError("bad value")
    argv = {"flag": ["--debug", "boom"], "flag-after": ["boom", "--debug"], "env": ["boom"]}[how]
    if how == "env":
        monkeypatch.setenv("VISIONFM_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "visionfm boom: error: bad value" in err


def test_ctrl_c_is_clean_and_says_how_to_resume(raising, capsys):
    raising["exc"] = KeyboardInterrupt()
    assert main(["boom"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "visionfm boom: interrupted; resume with: visionfm boom --resume" in err and "Traceback" not in err


def test_argparse_errors_stay_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["toy-data", "--n", "many"])
    assert e.value.code == 2


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_imports_no_torch():
    """``visionfm --help`` parses without importing torch (what made help take seconds)."""
    r = _python(
        "import sys\nfrom visionfm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'PIL', 'monai', 'kornia') if m in sys.modules)\n"
        "print('HEAVY', heavy)"
    )
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout
    assert "demo" in r.stdout and "toy-data" in r.stdout


def test_python_dash_m_visionfm_is_the_cli(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "visionfm", "toy-data", "--kind", "nonsense", "--output", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.startswith("visionfm toy-data: error: "), r.stderr
    assert "nonsense" in r.stderr and "Traceback" not in r.stderr


def test_every_option_has_help_and_default():
    """In the commands of this part, every option says what it does and its default (or that it is required)."""
    from visionfm.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    missing = []
    for name in ("demo", "toy-data", "medmnist", "benchmark", "explain", "synth"):
        parsers = [subs[name]]
        for act in subs[name]._actions:
            if getattr(act, "choices", None) and isinstance(act.choices, dict):
                parsers += list(act.choices.values())
        for p in parsers:
            fmt = p._get_formatter()
            for act in p._actions:
                if not act.option_strings or act.dest == "help":
                    continue
                text = fmt._get_help_string(act) if act.help else ""
                if not text.strip() or not (act.required or act.default is None or "default" in text):
                    missing.append(f"{p.prog} {act.option_strings[0]}: {text!r}")
    assert not missing, "\n".join(missing)


def test_a_second_writer_to_one_output_is_refused(tmp_path, capsys):
    """``toy-data`` holds its output folder; a lock of a live process makes a second run stop before any work."""
    import os
    import socket

    from visionfm.fileio import lock_path

    out = tmp_path / "toy"
    lock_path(out).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # another live writer
    assert main(["toy-data", "--kind", "fundus-dr", "--output", str(out), "--n", "12", "--size", "32"]) == 2
    assert "being written by another process" in capsys.readouterr().err and not out.exists()
    lock_path(out).unlink()
    assert main(["toy-data", "--kind", "fundus-dr", "--output", str(out), "--n", "12", "--size", "32"]) == 0
    assert not lock_path(out).exists()  # released


def test_nested_config_fields_can_be_left_off_the_command_line():
    """``add_config_args(exclude=("train.x",))`` leaves a nested field out (it was compared unprefixed)."""
    import argparse

    from visionfm.config import add_config_args
    from visionfm.synth.config import GeneratorConfig

    p = argparse.ArgumentParser()
    add_config_args(p, GeneratorConfig, exclude=("train.select_metric", "crop"))
    flags = {s for a in p._actions for s in a.option_strings}
    assert "--max-steps" in flags and "--select-metric" not in flags and "--train.select-metric" not in flags
    assert "--crop" not in flags and "--channels" in flags
