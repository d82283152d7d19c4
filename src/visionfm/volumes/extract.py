"""Features of every B-scan of every volume, in one safetensors file (``extract --volumes``).

File contents (safetensors):
    ``cls``: ``[M, n*D]`` float32, one row per B-scan (M = all B-scans of all volumes, volume after volume);
    ``patch_mean``: ``[M, D]`` float32;
    ``volume_index``: ``[M]`` int64, the volume each row belongs to; ``bscan_index``: ``[M]`` int64, its position;
    ``labels``: ``[V, K]`` float32 per volume when the data has labels (NaN = missing);
    metadata: as an image features file (encoder, preprocessing, split...) plus ``volume_features`` = "1",
        ``volumes`` (JSON: relative path per volume), ``volume_meta`` (JSON: B-scan count, laterality and spacing
        per volume) and ``paths`` (``<volume>#<B-scan name>`` per row).

The B-scan counts are read first (headers and listings; eyepy files are read twice), so the file is laid out and
preallocated before any pixel is decoded, with the same lock, temporary name and atomic publication as
:func:`visionfm.features.extract_features`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpoints import load_encoder
from ..data.datasets import ImageCollection
from ..data.images import Preprocess
from ..data.writer import OutputLock, RowFile
from ..distributed import init_distributed, resolve_device
from ..engine.precision import cpu_has_native_bf16
from ..errors import UserError
from ..features import _check_args, _last_blocks, _shared_tmp_name, cast_encoder, encode_batch, resolve_precision
from ..models import VisionTransformer
from .io import read_volume, scan_volumes, volume_header

__all__ = ["VolumeFeatures", "extract_volume_features", "load_volume_features"]

log = logging.getLogger(__name__)


@dataclass
class VolumeFeatures:
    """A volume features file read back.

    Attributes:
        cls: ``[M, n*D]``; patch_mean: ``[M, D]``; volume_index, bscan_index: ``[M]``.
        labels: ``[V, K]`` or None; volumes: V relative paths; volume_meta: V dicts; bscan_names: M names.
    """

    cls: np.ndarray
    patch_mean: np.ndarray
    volume_index: np.ndarray
    bscan_index: np.ndarray
    labels: np.ndarray | None
    volumes: list[str]
    volume_meta: list[dict]
    bscan_names: list[str]
    meta: dict[str, str]

    def bags(self, feature: str = "cls") -> list[np.ndarray]:
        """Per volume, its B-scan features ``[N_v, F]`` in B-scan order."""
        x = self.cls if feature == "cls" else self.patch_mean
        return [x[self.volume_index == v] for v in range(len(self.volumes))]


class _VolumeDataset(Dataset):
    """Item ``v`` -> (preprocessed B-scans ``[N_v, 3, S, S]``, v)."""

    def __init__(self, coll: ImageCollection, prep: Preprocess) -> None:
        self.coll, self.prep = coll, prep

    def __len__(self) -> int:
        return len(self.coll)

    def __getitem__(self, v: int) -> tuple[Tensor, int]:
        vol = read_volume(self.coll.samples[v].path)
        return torch.stack([self.prep(b) for b in vol.bscans]), v


def _volume_meta(coll: ImageCollection) -> tuple[list[int], list[dict], list[str]]:
    """B-scan counts, per-volume facts (from headers where possible) and per-row names, before any decoding."""
    counts, metas, names = [], [], []
    for s in coll.samples:
        head = volume_header(s.path)
        n = head["n_bscans"]
        if n == 0:
            raise UserError(f"{s.path}: volume without B-scans")
        counts.append(n)
        metas.append(head)
        names += [f"{s.rel}#{k}" for k in range(n)]
    return counts, metas, names


def extract_volume_features(
    weights: str | Path | VisionTransformer,
    data: str | Path | ImageCollection,
    output: str | Path,
    modality: str | None = None,
    layout: str = "auto",
    label_columns: Sequence[str] | None = None,
    split: str | None = None,
    input_size: int | None = None,
    n_last_blocks: int | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    precision: str = "fp32",
    device: str | None = "auto",
    progress: bool = True,
    interpolation: str = "bilinear",
) -> Path:
    """Extract per-B-scan features of every volume of ``data`` into ``output`` (one process; see module doc).

    Args mirror :func:`visionfm.features.extract_features`; ``data`` is a folder of volumes, a manifest of volumes,
    or a scanned volume collection (:func:`visionfm.volumes.scan_volumes`).
    """
    output = Path(output)
    _check_args(output, input_size, n_last_blocks, batch_size, num_workers, "none", interpolation)
    if init_distributed().world_size > 1:
        raise UserError("extract --volumes runs in one process; start it without torchrun")
    dev = resolve_device(device)
    enc = weights if isinstance(weights, VisionTransformer) else load_encoder(weights, modality, device=dev)
    n_last_blocks = _last_blocks(n_last_blocks, enc)
    precision = resolve_precision(precision, dev)
    enc = enc.to(dev).eval()
    coll = data if isinstance(data, ImageCollection) else scan_volumes(data, layout, label_columns)
    prep = Preprocess(input_size or 224, enc.info.mean, enc.info.std, interpolation)
    counts, metas, names = _volume_meta(coll)
    m, d = sum(counts), enc.cfg.embed_dim
    labels = coll.label_matrix() if coll.has_labels else None
    shapes = {
        "cls": ((m, n_last_blocks * d), np.float32),
        "patch_mean": ((m, d), np.float32),
        "volume_index": ((m,), np.int64),
        "bscan_index": ((m,), np.int64),
    }
    if labels is not None:
        shapes["labels"] = (labels.shape, np.float32)
    from ..features import _meta

    meta = _meta(enc, coll, n_last_blocks, prep, "none", precision, split or "", False)
    meta.update(paths=json.dumps(names), volume_features="1", volumes=json.dumps([s.rel for s in coll.samples]))
    starts = np.concatenate([[0], np.cumsum(counts)])
    with OutputLock(output):
        rows = RowFile.create(output, _shared_tmp_name(output), shapes, {**meta, "volume_meta": json.dumps(metas)})
        try:
            loader = DataLoader(
                _VolumeDataset(coll, prep),
                batch_size=None,
                num_workers=num_workers,
                prefetch_factor=2 if num_workers else None,
            )
            # bf16 on a native-bf16 CPU: the fused model, as image extraction (and serve) run it
            run_enc = cast_encoder(enc, precision, packed=dev.type == "cpu" and cpu_has_native_bf16())
            bar = tqdm(total=m, desc="extract volumes", unit="B-scan", disable=not progress)
            for x, v in loader:
                if len(x) != counts[v]:
                    raise UserError(f"{coll.samples[v].path}: {len(x)} B-scans read, {counts[v]} counted")
                for a in range(0, len(x), batch_size):
                    cls, patch = encode_batch(run_enc, x[a : a + batch_size].to(dev), n_last_blocks, "none", precision)
                    idx = np.arange(starts[v] + a, starts[v] + a + len(cls))
                    rows.write_rows("cls", idx, cls.cpu().numpy())
                    rows.write_rows("patch_mean", idx, patch.cpu().numpy())
                    bar.update(len(cls))
            bar.close()
            rows.write_all("volume_index", np.repeat(np.arange(len(counts)), counts))
            rows.write_all("bscan_index", np.concatenate([np.arange(c) for c in counts]))
            if labels is not None:
                rows.write_all("labels", labels.astype(np.float32))
            rows.publish()
        except BaseException:
            rows.abort()
            raise
    log.info("wrote features of %d B-scans in %d volumes to %s", m, len(counts), output)
    return output


def load_volume_features(path: str | Path) -> VolumeFeatures:
    """Read a file written by :func:`extract_volume_features`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"volume features file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            t = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("volume_features") != "1":
        raise UserError(f"{path}: not a volume features file (write one with 'visionfm extract --volumes')")
    return VolumeFeatures(
        t["cls"],
        t["patch_mean"],
        t["volume_index"],
        t["bscan_index"],
        t.get("labels"),
        json.loads(meta["volumes"]),
        json.loads(meta["volume_meta"]),
        json.loads(meta["paths"]),
        meta,
    )
