"""``visionfm <command>``: a thin command line over the library, with one error boundary.

Each command lives in its own module of this package and registers itself with :func:`command`; ``main`` imports
every module here, so adding a command is adding a file. ``main(argv)`` takes a list, so tests run the real CLI.

Help is fast: command modules import their library inside ``configure`` / ``run``, and :func:`main` configures only
the command named on the command line, so ``visionfm --help`` never imports torch.

The error boundary (:func:`main`): a user's mistake (:class:`visionfm.errors.UserError` and every ``ValueError``
the library raises for a bad value, missing or unreadable files, permissions, folders where files are expected, a
full or read-only disk, YAML / CSV / text-encoding errors, undecodable or oversized images) is one line
``visionfm <command>: error: ...`` and exit code 2; ``--debug`` (anywhere on the line) or ``VISIONFM_DEBUG=1``
shows the traceback. Anything else (``KeyError``, ``TypeError``, ``RuntimeError`` ... from inside the library) is a
bug and keeps its traceback. Ctrl-C ends with "interrupted" (and how to resume, for commands that can), exit 130.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import importlib
import logging
import os
import pkgutil
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..registry import Registry

__all__ = [
    "COMMANDS",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "GROUPS",
    "Command",
    "HelpFormatter",
    "build_parser",
    "command",
    "command_group",
    "main",
    "user_error_message",
]

EXIT_USAGE = 2  # argparse's own code for bad arguments; every user error uses it
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


@dataclass(frozen=True)
class Command:
    """A sub-command: ``configure`` adds its arguments, ``run`` does the work and returns an exit code.

    ``resume_hint`` (optional) turns the parsed arguments into the command line that continues an interrupted run;
    without it, a command with a ``--resume`` option is told to rerun with ``--resume`` added.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    resume_hint: Callable[[argparse.Namespace, list[str]], str | None] | None = None


COMMANDS: Registry[Command] = Registry("command")
GROUPS: dict[str, str] = {}  # group name -> help; its steps are the commands named "<group> <step>"


def command_group(name: str, help: str) -> None:
    """Declare ``visionfm <name> <step>``: commands registered as ``"<name> <step>"`` become its steps."""
    GROUPS[name] = help


def command(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    resume_hint: Callable[[argparse.Namespace, list[str]], str | None] | None = None,
):
    """Decorator registering ``run(args)`` as ``visionfm <name>`` (``"group step"``: a step of a group)."""

    def deco(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS.add(name, Command(name, help, configure, run, resume_hint))
        return run

    return deco


def _load_commands() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def _selected(argv: Sequence[str]) -> str | None:
    """The command named on the command line (``"group step"`` for a group's step), or None."""
    words = []
    for word in argv:
        if word == "--":
            break
        if not word.startswith("-"):
            words.append(word)
    if words and words[0] in GROUPS:
        return " ".join(words[:2])
    return words[0] if words and words[0] in COMMANDS else None


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default: appends ``(default: X)`` unless the help already says it (``off`` for flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or action.required
            or not action.option_strings
        ):
            return text
        shown = (
            "off"
            if default is False
            else "on"
            if default is True
            else (" ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default))
        )
        return f"{text} (default: {shown.replace('%', '%%')})".strip()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``argv``, only the command named there gets its options (the others: name + help).

    Args:
        argv: the command line about to be parsed; None configures every command (the full parser, for tests and
            documentation).
    """
    _load_commands()
    only = _selected(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="visionfm",
        formatter_class=HelpFormatter,
        description="VisionFM: ophthalmic vision foundation models.",
        epilog="`visionfm <command> --help` lists a command's options. User errors print one line and exit 2; "
        "--debug (or VISIONFM_DEBUG=1) shows the traceback.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also VISIONFM_DEBUG=1; default: one line)",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    steps: dict[str, argparse._SubParsersAction] = {}
    for name in sorted({n.split(" ")[0] for n in COMMANDS} | set(GROUPS)):
        if name in GROUPS:
            group = sub.add_parser(
                name, help=GROUPS[name].replace("%", "%%"), description=GROUPS[name], formatter_class=HelpFormatter
            )
            steps[name] = group.add_subparsers(dest="_step", metavar="<step>")
            continue
        _add_command(sub, name, COMMANDS.get(name), argv is None or name == only)
    for full in COMMANDS:  # a group's steps in the order they were registered
        if " " in full:
            group, step = full.split(" ", 1)
            _add_command(steps[group], step, COMMANDS.get(full), argv is None or full == only)
    return parser


def _add_command(sub: argparse._SubParsersAction, name: str, cmd: Command, configure: bool) -> None:
    p = sub.add_parser(name, help=cmd.help.replace("%", "%%"), description=cmd.help, formatter_class=HelpFormatter)
    if configure:
        cmd.configure(p)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap and close it between calls), through
    ``tqdm.write`` so a log line never cuts a progress bar (the bar is cleared, the line printed, the bar redrawn)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; the property always follows sys.stderr
        pass


# Errno values that describe the user's files or machine, not a bug (the rest of OSError is mapped too; these
# get a hint).
_ERRNO_HINTS = {
    errno.ENOSPC: "disk full",
    errno.EROFS: "read-only file system",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded",
}


def _os_message(e: OSError) -> str:
    """``PATH: reason`` for an operating-system error (the path named, the hint for disk-full and the like)."""
    reason = e.strerror or str(e) or type(e).__name__
    hint = _ERRNO_HINTS.get(e.errno or 0)
    if hint and hint.lower() not in reason.lower():
        reason = f"{reason} ({hint})"
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    if not names:
        return str(e) or reason
    msg = f"{names[0]}: {reason}"
    return f"{msg} (-> {names[1]})" if len(names) > 1 else msg


def user_error_message(e: BaseException) -> str | None:
    """The one-line message for a user-facing error, or None when ``e`` is a bug (which keeps its traceback)."""
    try:  # optional heavy modules: only consulted when already imported (an error there means they were)
        from PIL import Image, UnidentifiedImageError

        if isinstance(e, Image.DecompressionBombError):
            return f"image too large (possible decompression bomb): {e}"
        if isinstance(e, UnidentifiedImageError):
            return f"not a readable image: {e}"
    except ImportError:  # pragma: no cover - PIL is a dependency
        pass
    import yaml

    if isinstance(e, yaml.YAMLError):
        mark = getattr(e, "problem_mark", None)
        name = "" if mark is None or str(mark.name).startswith("<") else f"{mark.name} "
        where = f"{name}line {mark.line + 1}: " if mark is not None else ""
        return f"{where}invalid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]})"
    if isinstance(e, csv.Error):
        return f"malformed CSV: {e}"
    if isinstance(e, UnicodeDecodeError):
        return f"not {e.encoding} text ({e.reason} at byte {e.start}); save the file as UTF-8"
    if isinstance(e, OSError):
        return _os_message(e)
    if isinstance(e, ValueError):  # UserError, ConfigError, CheckpointError, ImageReadError, UnknownNameError ...
        return str(e) or type(e).__name__
    return None


def _resume_hint(cmd: Command, args: argparse.Namespace, argv: list[str]) -> str | None:
    if cmd.resume_hint is not None:
        return cmd.resume_hint(args, argv)
    if hasattr(args, "resume"):  # the same line, continuing instead of starting again
        words = [w for w in argv if w != "--overwrite"]
        return shlex.join(["visionfm", *words, *([] if "--resume" in words else ["--resume"])])
    return None


def _close_progress_bars() -> None:
    """End the progress bars an error left open, so the error line stands alone and is the last line written."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) if tqdm else ()):
        with contextlib.suppress(Exception):  # a bar that cannot close must not hide the error being reported
            bar.close()


def _debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """``--debug`` may stand anywhere on the line; it is taken out before the command's own parsing."""
    env = os.environ.get("VISIONFM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    if "--debug" in argv:
        cut = argv.index("--") if "--" in argv else len(argv)
        if argv.index("--debug") < cut:
            argv = [a for i, a in enumerate(argv) if not (a == "--debug" and i < cut)]
            return argv, True
    return argv, env


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv, debug = _debug_requested(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        handlers=[_CurrentStderr()],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if not args.command:
        parser.print_help()
        return 0
    if args.command in GROUPS:
        steps = [n.split(" ", 1)[1] for n in COMMANDS if n.startswith(args.command + " ")]
        if not getattr(args, "_step", None):
            print(f"visionfm {args.command}: error: choose a step: {', '.join(steps)}", file=sys.stderr)
            return EXIT_USAGE
        args.command = f"{args.command} {args._step}"
    cmd = COMMANDS.get(args.command)
    try:
        return int(cmd.run(args) or 0)
    except KeyboardInterrupt:
        _close_progress_bars()
        hint = _resume_hint(cmd, args, argv)
        print(f"\nvisionfm {args.command}: interrupted" + (f"; resume with: {hint}" if hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `visionfm ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"visionfm {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
