"""``visionfm <command>``: a thin command line over the library.

Each command lives in its own module of this package and registers itself with :func:`command`; ``main`` imports
every module here, so adding a command is adding a file. ``main(argv)`` takes a list, so tests run the real CLI.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from ..registry import Registry

__all__ = ["COMMANDS", "Command", "command", "main", "build_parser"]


@dataclass(frozen=True)
class Command:
    """A sub-command: ``configure`` adds its arguments, ``run`` does the work and returns an exit code."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering ``run(args)`` as ``visionfm <name>``."""

    def deco(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS.add(name, Command(name, help, configure, run))
        return run

    return deco


def _load_commands() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="visionfm", description="VisionFM: ophthalmic vision foundation models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in sorted(COMMANDS):
        cmd = COMMANDS.get(name)
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap and close it between calls)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; the property always follows sys.stderr
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[_CurrentStderr()],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return int(COMMANDS.get(args.command).run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # User errors: one clear line, not a traceback (``-v`` shows it).
        logging.getLogger("visionfm").debug("traceback", exc_info=True)
        print(f"visionfm {args.command}: error: {e}", file=sys.stderr)
        return 2
