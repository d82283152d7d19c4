"""Safe reading and atomic, deterministic writing of checkpoint files.

Reading never unpickles arbitrary objects: ``torch.load(weights_only=True)`` with an explicit allow-list of the
few harmless classes released checkpoints contain (``argparse.Namespace`` for the official VisionFM/RETFound
``args``, numpy scalars and dtypes). Anything else is refused with an error naming the file and the class.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write
from .hub import resolve_weights_path

__all__ = [
    "SAFE_GLOBALS",
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write",
    "safe_torch_load",
    "safetensors_header",
    "save_safetensors",
]


class CheckpointError(UserError):
    """A file is unreadable, not a checkpoint, or does not fit the requested model (a user error: one line, exit 2)."""


def _numpy_globals() -> list[Any]:
    out: list[Any] = [np.dtype, np.ndarray]
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    out += [core.multiarray.scalar, core.multiarray._reconstruct]
    out += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool")]
    return out


SAFE_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_globals()]


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``torch.save`` file (or an ``hf-hub:`` reference to one) without arbitrary unpickling.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a torch checkpoint, or holds a class outside the allow-list.
    """
    path = resolve_weights_path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = _container_kind(path)
    if kind:
        raise CheckpointError(f"{path}: {kind}, not a torch checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing on them: say it once
            warnings.simplefilter("ignore", UserWarning)
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{path}: refused to unpickle {found[1]} (not on the allow-list: untrusted pickles can run code); "
                "re-save its state_dict where you trust the file, or use safetensors"
            ) from None
        op = re.search(r"Unsupported operand \d+", text)
        detail = op[0] if op else (text.splitlines() or [type(e).__name__])[0][:120]
        raise CheckpointError(
            f"{path}: not a torch checkpoint (a plain pickle, or corrupt or truncated bytes: {detail})"
        ) from None
    except Exception as e:  # random or truncated bytes fail anywhere in torch's readers: one message for all
        detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
        raise CheckpointError(
            f"{path}: not a torch checkpoint (a plain pickle, or corrupt or truncated bytes: {detail})"
        ) from None


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file read as text (UTF-8, no control bytes but whitespace)."""
    try:
        text = head.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of ``head`` is still text
        if e.start < len(head) - 3:
            return False
        text = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _container_kind(path: Path) -> str:
    """What a file that torch cannot read really is, from its first bytes: "" when it may be a torch checkpoint."""
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.lstrip().startswith((b"{", b"[")) and _is_text(head):
        return "a JSON/text file"
    if not zipfile.is_zipfile(path):
        return ""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("data.pkl") for n in names):
        return ""
    if names and all(n.endswith(".npy") for n in names):
        return "a NumPy .npz archive"
    return "a zip archive without a torch data.pkl"


def atomic_torch_save(obj: Any, path: str | os.PathLike, saver: Callable[[Any, Path], None] | None = None) -> None:
    """``torch.save`` (or ``saver(obj, tmp)``) to ``path`` atomically."""
    with atomic_write(path) as tmp:
        (saver or (lambda o, p: torch.save(o, p)))(obj, tmp)


_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def safetensors_header(header: dict[str, Any]) -> bytes:
    """The 8-byte length and the JSON header of a safetensors file, padded so the data starts 8-byte aligned."""
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` (moved to CPU) and string ``metadata`` as a safetensors file, atomically and deterministically.

    Tensors are laid out by sorted name and the metadata keys are sorted, so the same content gives the same bytes
    (and SHA-256) in every process; ``safetensors.torch.save_file`` orders metadata through a hash map, so its bytes
    change from one process to the next and a re-saved, identical encoder would look like another file.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    cpu = {k: tensors[k].detach().cpu().contiguous() for k in sorted(tensors)}
    pos = 0
    for name, t in cpu.items():
        if t.dtype not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + n]}
        pos += n
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(safetensors_header(header))
        for t in cpu.values():  # one tensor's bytes at a time: no second copy of the whole model
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return Path(path)
