"""Writing one large safetensors file row by row: checked first, locked, preallocated, published by rename.

The rules a long extraction must keep (issue 14):

* the output path and its folder's permissions are checked before any image is read (:func:`check_output`);
* two writers to one output: the second is refused with a message naming the first (an ``fcntl`` lock on
  ``.<name>.lock`` beside the output; the kernel releases it when a process dies, so a crash leaves no stale lock);
* the temporary file is unique per job (``.<name>.<pid>.partial``) and appears as ``<name>`` only when complete
  (``os.replace``);
* the file is preallocated with ``posix_fallocate`` (or written with zeros where the filesystem cannot), so a full
  disk shows at the start as a clean error instead of a SIGBUS in the middle, and rows are written with ``pwrite``,
  never through a memory map of a sparse file; on any error the partial file is removed.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import umask_mode

__all__ = ["OutputLock", "RowFile", "check_output", "safetensors_layout"]

_DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}


def check_output(output: str | Path, suffix: str | None = None, what: str = "--output") -> Path:
    """Check an output file can be written, before any work: suffix, not a folder, folder writable.

    Raises:
        UserError: naming the path and what is wrong.
    """
    output = Path(output)
    if suffix is not None and output.suffix != suffix:
        raise UserError(f"{what} {output}: must end in {suffix}")
    if output.is_dir():
        raise UserError(f"{what} {output}: is a folder; give a file name ending in {suffix or 'the right suffix'}")
    if output.exists() and not output.is_file():
        raise UserError(f"{what} {output}: exists and is not a regular file")
    parent = output.parent
    while not parent.exists():  # the nearest existing ancestor must let us create the missing folders
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {output}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {output}: no permission to write in {parent}")
    return output


class OutputLock:
    """An exclusive, non-blocking lock on ``.<name>.lock`` beside ``output`` (``with OutputLock(path): ...``).

    Raises:
        UserError: another process holds it (its pid is named).
    """

    def __init__(self, output: Path) -> None:
        self.path = output.parent / f".{output.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl  # POSIX only; imported here so the module imports anywhere

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UserError(
                    f"{self.path.name[1:-5]}: another extraction (pid {holder}) is writing this output "
                    f"(lock {self.path}); wait for it or choose another --output"
                ) from None
            try:  # the holder may have unlinked the lock file between our open and flock: lock the live one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def safetensors_layout(
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]], meta: dict[str, str]
) -> tuple[bytes, dict[str, int], int]:
    """Header bytes, absolute offset of each tensor and total file size for tensors of ``shapes`` (name order)."""
    from ..checkpoints.io import safetensors_header

    header: dict[str, Any] = {"__metadata__": meta}
    pos = 0
    for name, (shape, dtype) in shapes.items():
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    raw = safetensors_header(header)
    return raw, {k: len(raw) + v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}, len(raw) + pos


def _read_layout(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(hlen))
    return {k: 8 + hlen + v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def _disk_error(e: OSError, output: Path) -> UserError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return UserError(f"{output}: {os.strerror(e.errno).lower()} while writing; the partial file was removed")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"{output}: cannot write ({os.strerror(e.errno).lower()})")
    return UserError(f"{output}: write failed ({e})")


class RowFile:
    """A safetensors file being filled row by row at ``tmp``, published as ``output`` by :meth:`publish`.

    Create it on one process with :meth:`create`; other processes of the job :meth:`attach` to the same ``tmp``.
    """

    def __init__(self, output: Path, tmp: Path, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.output, self.tmp, self.shapes = output, tmp, {k: (tuple(s), np.dtype(d)) for k, (s, d) in shapes.items()}
        self.fd: int | None = None
        self.offsets: dict[str, int] = {}

    @classmethod
    def create(cls, output: Path, tmp: Path, shapes: dict, meta: dict[str, str]) -> RowFile:
        """Write the header and reserve every byte of the file (a full disk fails here, before any work)."""
        rf = cls(output, tmp, shapes)
        raw, rf.offsets, size = safetensors_layout(rf.shapes, meta)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            rf.fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, umask_mode())
            os.pwrite(rf.fd, raw, 0)
            try:
                os.posix_fallocate(rf.fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                rf._zero_fill(len(raw), size)  # filesystems without fallocate: real zeros, never a sparse hole
        except OSError as e:
            rf.abort()
            raise _disk_error(e, output) from None
        return rf

    @classmethod
    def attach(cls, output: Path, tmp: Path, shapes: dict) -> RowFile:
        rf = cls(output, tmp, shapes)
        rf.fd = os.open(tmp, os.O_RDWR)
        rf.offsets = _read_layout(tmp)
        return rf

    def _zero_fill(self, start: int, end: int) -> None:
        chunk = bytes(1 << 20)
        pos = start
        while pos < end:
            pos += os.pwrite(self.fd, chunk[: min(len(chunk), end - pos)], pos)

    def write_rows(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` as row ``rows[i]`` of tensor ``name`` (runs of consecutive rows in one call)."""
        shape, dtype = self.shapes[name]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        values = np.ascontiguousarray(values, dtype=dtype.newbyteorder("<"))
        rows = np.asarray(rows, dtype=np.int64)
        start = 0
        try:
            for i in range(1, len(rows) + 1):
                if i == len(rows) or rows[i] != rows[i - 1] + 1:
                    self._pwrite(values[start:i].tobytes(), self.offsets[name] + int(rows[start]) * row_bytes)
                    start = i
        except OSError as e:
            self.abort()
            raise _disk_error(e, self.output) from None

    def write_all(self, name: str, values: np.ndarray) -> None:
        self.write_rows(name, np.arange(len(values)), values)

    def _pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def publish(self) -> Path:
        """fsync and rename onto the output: it appears whole, or not at all."""
        try:
            os.fsync(self.fd)
            self.close()
            os.replace(self.tmp, self.output)
        except OSError as e:
            self.abort()
            raise _disk_error(e, self.output) from None
        return self.output

    def abort(self) -> None:
        """Close and remove the partial file (idempotent)."""
        self.close()
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
