"""Writing files safely: atomic publication by rename with the user's umask, and one writer per output.

No torch import here (the CLI's help imports this module).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

__all__ = [
    "RUN_MARKERS",
    "OutputLockedError",
    "atomic_write",
    "exclusive_output",
    "file_sha256",
    "lock_path",
    "prepare_run_folder",
    "umask_mode",
]

log = logging.getLogger(__name__)

# Files the training loop writes into every run folder: one of them (or the task's own config) marks a folder as a run
RUN_MARKERS = ("checkpoint_last.pth", "log.jsonl", "config.yaml")


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process umask applied: the mode ``open()`` would have given a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, unique to this call; on success it is fsynced and renamed onto it.

    A crash at any moment leaves either the old file or the new one, never a half-written file; on any error
    (disk full included) the temporary file is removed. The published file gets the umask's mode (``mkstemp``
    alone would leave it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name is chosen before the file is made, so the cleanup below knows it even when Ctrl-C lands while the
    # file is being created (mkstemp would create it and be interrupted before returning its name)
    tmp_path = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        yield tmp_path
        os.chmod(tmp_path, umask_mode())
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class OutputLockedError(UserError):
    """Another live process is writing the same output."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: a hidden ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _holder(lock: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; (None, "") when it is unreadable or torn."""
    try:
        pid, _, host = lock.read_text().partition(" ")
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _age(lock: Path) -> float:
    try:
        return time.time() - lock.stat().st_mtime
    except OSError:
        return float("inf")


def _try_lock(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True


@contextmanager
def exclusive_output(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the right to write ``path`` for the block: a second writer (another process) is refused, not mixed in.

    The lock is a file ``.NAME.lock`` beside ``path``, created with ``O_CREAT | O_EXCL`` and holding the writer's
    pid and host; it is removed when the block ends (also on errors). A lock left by a process that died (same
    host, pid gone) is stale and taken over; one of another host is left alone (its pid means nothing here).
    Combine with :func:`atomic_write` for the file itself.

    Raises:
        OutputLockedError: a live process holds the lock (named, with the lock file to remove if it is wrong).
        PermissionError: the folder of ``path`` is not writable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path(path)
    for _ in range(3):  # the stale-lock takeover may race with another taker: retry a few times
        if _try_lock(lock):
            break
        pid, host = _holder(lock)
        if pid is None and _age(lock) < 5.0:  # just created: its writer has not written its pid yet
            raise OutputLockedError(f"{path} is being written by another process (lock {lock})")
        if pid is not None and (host != socket.gethostname() or _alive(pid)):
            raise OutputLockedError(
                f"{path} is being written by another process (pid {pid} on {host}); wait for "
                f"it to finish, or remove {lock} if that process is gone"
            )
        try:  # stale (dead pid) or torn: remove and retry
            lock.unlink()
        except FileNotFoundError:
            pass
    else:
        raise OutputLockedError(f"{path}: could not take the lock {lock}")
    try:
        yield path
    finally:
        try:
            if _holder(lock)[0] == os.getpid():
                lock.unlink()
        except OSError as e:  # pragma: no cover - the folder vanished or turned read-only meanwhile
            if e.errno != errno.ENOENT:
                raise


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 4 MiB blocks (memoised per real path, modification time and size)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256(str(p), st.st_mtime_ns, st.st_size)


def prepare_run_folder(
    run: str | os.PathLike, what: str, markers: tuple[str, ...], resume: bool = False, overwrite: bool = False
) -> bool:
    """Check a training run's output folder before any work; returns whether there is a run to continue.

    The one policy of every trainer: a new or empty folder starts a run; a folder holding a run (one of
    the task's ``markers`` or of :data:`RUN_MARKERS`) is continued with ``resume`` or removed with ``overwrite``,
    and is an error with neither, so no run is appended to or replaced by accident; a non-empty folder that is not
    a run is never written into nor deleted. The folder is not created here: the first write does it, so a start
    that fails on its data leaves no empty folder. Under ``torchrun`` only rank 0 deletes.

    Args:
        run: the output folder.
        what: the kind of run, for messages ("pretraining", "generator", ...).
        markers: the files the task writes into its run folders, its resolved config first.

    Raises:
        UserError: both options; the path is a file; ``resume`` without ``checkpoint_last.pth``; an existing run
            without an option; a non-empty folder that is not a run.
    """
    run = Path(run)
    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite replaces it: give one")
    if run.exists() and not run.is_dir():
        raise UserError(f"--output {run} is a file, not a folder")
    if resume:
        if not (run / "checkpoint_last.pth").is_file():
            raise UserError(f"--resume: {run} holds no checkpoint_last.pth to continue from")
        return True
    if not (run.is_dir() and any(run.iterdir())):
        return False
    if not any((run / name).exists() for name in (*markers, *RUN_MARKERS)):
        raise UserError(
            f"--output {run} is not empty and not a {what} run folder (no {markers[0]}, log.jsonl "
            "or checkpoint); choose another --output (nothing was deleted)"
        )
    if not overwrite:
        raise UserError(
            f"--output {run} already holds a {what} run; pass --resume to continue it or --overwrite to replace it"
        )
    if os.environ.get("RANK", "0") == "0":
        shutil.rmtree(run)
        log.info("--overwrite: removed the previous %s run in %s", what, run)
    return False
