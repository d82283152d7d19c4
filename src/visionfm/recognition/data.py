"""Feature caches as labelled tables for the heads, with the encoder that made them checked at every step.

A cache is a ``.safetensors`` file from :func:`visionfm.extract_features`. Its metadata names the encoder
(weights path, architecture, modality, input size, blocks); :class:`EncoderRef` adds the weights' SHA-256 so a
head is never trained or evaluated on features of another encoder. Several caches of *different modalities*
(each from its own modality encoder, same feature width) combine into one table for the modality-agnostic decoder;
two caches of the same modality must come from the same encoder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..features import FeatureSet, load_features
from ..fileio import file_sha256  # re-exported: callers import it from here
from .kinds import task_class
from .labels import LabelRow, LabelSpec, LabelTable, normalise_rel, read_labels

__all__ = [
    "FEATURES",
    "EncoderRef",
    "FeatureDataset",
    "FeatureTable",
    "RepeatDataset",
    "encoder_features",
    "feature_width",
    "file_sha256",
    "load_table",
    "pick_features",
]


log = logging.getLogger(__name__)
FEATURES = ("cls", "last", "cls+patch", "patch")


@dataclass
class EncoderRef:
    """The encoder behind a feature cache or a run.

    Attributes:
        weights: absolute path of the weights file ("" if unknown).
        sha256: its SHA-256 ("" when the file could not be found).
        arch, config: architecture name and full ViT config.
        modality: canonical modality ("" if none recorded).
        mean, std: input normalisation.
        input_size, n_last_blocks, tta, interpolation: how the features were extracted (the resize filter of
            runs written before it was recorded: bicubic).
        precision, jpeg_draft: the extraction's numeric precision and JPEG draft decoding (runs written before
            they were recorded: fp32, full decode); ``classify predict`` extracts new images the same way.
    """

    weights: str
    sha256: str
    arch: str
    config: dict
    modality: str
    mean: list[float]
    std: list[float]
    input_size: int
    n_last_blocks: int
    tta: str = "none"
    interpolation: str = "bicubic"
    precision: str = "fp32"
    jpeg_draft: bool = False

    @classmethod
    def from_meta(cls, meta: dict[str, str], cache: Path) -> EncoderRef:
        """The encoder recorded in a cache's metadata; the weights file is looked up as given, then beside it."""
        raw = meta.get("weights", "")
        found = next((p for p in (Path(raw), cache.parent / raw) if raw and p.is_file()), None)
        if found is None:
            log.warning("%s: encoder weights %r not found; the head cannot verify the encoder by checksum", cache, raw)
        return cls(
            str(found.resolve()) if found else raw,
            file_sha256(found) if found else "",
            meta.get("arch", ""),
            json.loads(meta.get("config", "{}")),
            meta.get("modality", ""),
            json.loads(meta.get("mean", "[]")),
            json.loads(meta.get("std", "[]")),
            int(meta.get("input_size", 224)),
            int(meta.get("n_last_blocks", 1)),
            meta.get("tta", "none"),
            meta.get("interpolation", "bicubic"),
            meta.get("precision", "fp32"),
            meta.get("jpeg_draft", "false") == "true",
        )

    def mismatch(self, other: EncoderRef) -> str | None:
        """Why ``other`` is not the same encoder + extraction as this one (None if it is)."""
        if self.sha256 and other.sha256:
            if self.sha256 != other.sha256:
                return (
                    f"weights differ ({self.weights} sha256 {self.sha256[:12]} vs {other.weights} "
                    f"sha256 {other.sha256[:12]})"
                )
        elif Path(self.weights).name != Path(other.weights).name:
            return f"weights differ ({self.weights} vs {other.weights})"
        for key in ("arch", "config", "modality", "input_size", "n_last_blocks", "tta", "interpolation"):
            if getattr(self, key) != getattr(other, key):
                return f"{key} differs ({getattr(self, key)!r} vs {getattr(other, key)!r})"
        return None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeatureTable:
    """Features and labels of one split.

    Attributes:
        x: ``[N, F]`` float32 features.
        y: ``[N, W]`` float labels (NaN = missing; forecast: converts, interval days).
        paths: image paths relative to their data root.
        modality: ``[N]`` modality of each row.
        patients: ``[N]`` patient ids or None.
        sources: ``[N]`` cache file of each row.
        encoders: modality -> encoder.
        roots: modality -> data root of the images (for reports).
        label_sources: feature file -> the label file (or "stored in the features") its labels came from.
    """

    x: np.ndarray
    y: np.ndarray
    paths: list[str]
    modality: np.ndarray
    patients: np.ndarray | None
    sources: np.ndarray
    encoders: dict[str, EncoderRef] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)
    label_sources: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: np.ndarray) -> FeatureTable:
        idx = np.asarray(idx, dtype=np.int64)
        return FeatureTable(
            self.x[idx],
            self.y[idx],
            [self.paths[i] for i in idx],
            self.modality[idx],
            None if self.patients is None else self.patients[idx],
            self.sources[idx],
            self.encoders,
            self.roots,
            self.label_sources,
        )


def pick_features(cls: np.ndarray, patch_mean: np.ndarray, feature: str) -> np.ndarray:
    """The chosen feature from CLS tokens ``[N, n*D]`` and patch means ``[N, D]``: ``cls``: CLS of the last n blocks
    concatenated (official); ``last``: last block's CLS; ``cls+patch``: last CLS and the patch-token mean
    (DINOv2-style probe); ``patch``: the patch-token mean alone (RETFound's global pool). Returns ``[N, F]``
    float32."""
    if feature not in FEATURES:
        raise UserError(f"unknown feature {feature!r}; valid: {', '.join(FEATURES)}")
    d = patch_mean.shape[1]
    if feature == "cls":
        return np.asarray(cls, dtype=np.float32)
    if feature == "last":
        return np.asarray(cls[:, -d:], dtype=np.float32)
    if feature == "patch":
        return np.asarray(patch_mean, dtype=np.float32)
    return np.concatenate([cls[:, -d:], patch_mean], axis=1).astype(np.float32)


def encoder_features(out: Any, feature: str) -> torch.Tensor:
    """The feature of :func:`pick_features` from an encoder's outputs (fine-tuning), ``[B, F]``.

    Args:
        out: a :class:`~visionfm.models.EncoderOutput` (``layers`` = the last n blocks for ``cls``).
        feature: as in :func:`pick_features`.
    """
    if feature == "cls":
        return out.cls_concat()
    if feature == "last":
        return out.cls
    if feature == "patch":
        return out.patch_tokens.mean(1)
    if feature == "cls+patch":
        return torch.cat([out.cls, out.patch_tokens.mean(1)], dim=-1)
    raise UserError(f"unknown feature {feature!r}; valid: {', '.join(FEATURES)}")


def _vfm_label_file(fs: FeatureSet, cache: Path) -> Path | None:
    """The official label file of the split a ``vfm`` cache was extracted from, as its metadata records it.

    Features without a recorded split use the labels stored in them (read from that split's file at extraction),
    never a label file guessed from the folder.
    """
    root, split = Path(fs.meta.get("data_root", "")), fs.meta.get("split", "")
    if fs.meta.get("layout") != "vfm" or not split:
        return None
    label_file = root / f"{split}_labels.txt"
    if not label_file.is_file():
        raise UserError(
            f"{cache}: extracted from split {split!r}, but {label_file} is no longer there; pass the "
            f"label file (--labels)"
        )
    return label_file


def _cache_labels(fs: FeatureSet, cache: Path, spec: LabelSpec) -> LabelTable:
    """Labels of the cache: re-read strictly from its split's official label file, else those stored in it."""
    label_file = _vfm_label_file(fs, cache)
    if label_file is not None:
        return read_labels(label_file, spec, check_images=False)
    if fs.labels is None:
        raise UserError(f"{cache}: the features carry no labels and record no label file; pass a label file (--labels)")
    if spec.names is None and fs.meta.get("label_names"):
        spec.rules.adopt_stored_names(spec, json.loads(fs.meta["label_names"]))
    table = LabelTable(cache)
    for i, (rel, row) in enumerate(zip(fs.paths, fs.labels)):
        where = f"{cache}, row {i} ({rel})"
        table.add(LabelRow(normalise_rel(rel), spec.check(spec.rules.trim_cache_row(row), where), where))
    return table


def _labels_for(
    fs: FeatureSet, cache: Path, spec: LabelSpec, labels: LabelTable | None, modality: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """(kept row indices, label rows, patients, label source) of one cache."""
    table = labels if labels is not None else _cache_labels(fs, cache, spec)
    keep, ys, pats = [], [], []
    for i, rel in enumerate(fs.paths):
        row = table.rows.get(normalise_rel(rel))
        if row is None or (row.modality and modality and row.modality.lower() != modality.lower()):
            continue
        keep.append(i)
        ys.append(row.values)
        pats.append(row.patient)
    if not keep:
        raise UserError(f"{cache}: none of its {len(fs.paths)} images is labelled in {table.source}")
    if len(keep) < len(fs.paths):
        log.info("%s: %d of %d images labelled in %s", cache, len(keep), len(fs.paths), table.source)
    has_pat = any(p is not None for p in pats)
    src = str(table.source) if labels is not None or table.source != cache else f"stored in {cache}"
    return np.array(keep), np.array(ys, dtype=np.float64), (np.array(pats, dtype=object) if has_pat else None), src


def load_table(
    caches: Sequence[str | Path],
    spec: LabelSpec,
    labels: str | Path | Sequence[str | Path | None] | None = None,
    feature: str = "cls",
    encoders: dict[str, EncoderRef] | None = None,
    label_columns: Sequence[str] | None = None,
    patient_column: str | None = None,
    modality_column: str | None = None,
) -> FeatureTable:
    """Load one split from one or more caches, with labels from the caches or a label file.

    Args:
        caches: feature files (one per modality for the multi-modality decoder).
        spec: label requirements of the task.
        labels: label file / folder joined on image path (default: the labels stored with each cache); one for
            all caches or a list with one per cache (None entries: that cache's own labels).
        feature: which features (see :func:`pick_features`).
        encoders: the encoders every cache must match (from the training split or a run), keyed by modality.
        label_columns, patient_column, modality_column: CSV options (see :func:`read_labels`).

    Raises:
        ValueError: a cache from a different encoder (file and reason named), feature widths that differ,
            bad labels (file and line named).
    """
    if not caches:
        raise UserError("no feature files given")
    label_list = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    if len(label_list) == 1:
        label_list = label_list * len(caches)
    if len(label_list) != len(caches):
        raise UserError(
            f"{len(label_list)} label files for {len(caches)} feature files: give one, or one per feature file"
        )
    tables = {
        lab: read_labels(lab, spec, label_columns, patient_column, modality_column, check_images=False)
        for lab in dict.fromkeys(label_list)
        if lab is not None
    }
    refs: dict[str, EncoderRef] = dict(encoders or {})
    first_src: dict[str, str] = dict.fromkeys(refs, "the training features / run")
    parts = []
    for cache, lab in zip(map(Path, caches), label_list):
        fs = load_features(cache)
        ref = EncoderRef.from_meta(fs.meta, cache)
        mod = ref.modality or "unknown"
        if mod in refs:
            why = refs[mod].mismatch(ref)
            if why:
                raise UserError(
                    f"{cache}: features from a different encoder than {first_src[mod]} for modality {mod}: {why}"
                )
        elif encoders is not None:
            raise UserError(
                f"{cache}: modality {mod!r} is not among the modalities {sorted(encoders)} the head was trained on"
            )
        refs.setdefault(mod, ref)
        first_src.setdefault(mod, str(cache))
        keep, y, pats, src = _labels_for(fs, cache, spec, tables.get(lab), mod)
        x = pick_features(fs.cls, fs.patch_mean, feature)[keep]
        if parts and x.shape[1] != parts[0][0].shape[1]:
            raise UserError(
                f"{cache}: feature width {x.shape[1]} differs from {parts[0][3]} "
                f"({parts[0][0].shape[1]}); one decoder needs one width"
            )
        parts.append((x, y, [fs.paths[i] for i in keep], str(cache), mod, pats, fs.meta.get("data_root", ""), src))
    return _concat(parts, refs, spec)


def _concat(parts: list, refs: dict[str, EncoderRef], spec: LabelSpec) -> FeatureTable:
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    paths = [rel for p in parts for rel in p[2]]
    sources = np.array([p[3] for p in parts for _ in p[2]], dtype=object)
    modality = np.array([p[4] for p in parts for _ in p[2]], dtype=object)
    pats = None
    if any(p[5] is not None for p in parts):
        pats = np.concatenate(
            [
                p[5] if p[5] is not None else np.array([f"{p[3]}#{i}" for i in range(len(p[2]))], dtype=object)
                for p in parts
            ]
        )
    spec.rules.finish_names(spec, y)
    roots = {p[4]: p[6] for p in parts}
    return FeatureTable(x, y, paths, modality, pats, sources, refs, roots, {p[3]: p[7] for p in parts})


class FeatureDataset(Dataset):
    """Rows of a :class:`FeatureTable` as ``{"x": [F], "y": [W]}`` (forecast: plus ``"t"`` days).

    Args:
        table: features and labels.
        kind: the task kind (its class splits the label rows into targets and an interval).
    """

    def __init__(self, table: FeatureTable, kind: str | type) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(table.x, dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(table.y, dtype=np.float32))
        rules = task_class(kind) if isinstance(kind, str) else kind
        self.y, t = rules.split_targets(y)
        self.t = None if t is None else t.clone()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[i], "y": self.y[i]}
        if self.t is not None:
            item["t"] = self.t[i]
        return item


class RepeatDataset(Dataset):
    """``dataset`` repeated to at least ``length`` items (tiny k-shot sets fill whole epochs of batches)."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.n = dataset, len(dataset)
        self.length = max(self.n, int(length))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i % self.n]


def feature_width(feature: str, n_last_blocks: int, dim: int) -> int:
    """Width F of a feature (see :func:`pick_features`) of an encoder of width ``dim``."""
    return {"cls": n_last_blocks * dim, "last": dim, "patch": dim, "cls+patch": 2 * dim}[feature]
