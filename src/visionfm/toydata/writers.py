"""Write toy data sets to disk in every layout the toolkit reads.

Per task (``<out>`` is the data set folder; ``<split>`` is ``training`` or ``test``: samples are dealt out class by
class, and the second of every four rounds goes to ``test``, so both splits hold every class and 25% is test):

* classification / multilabel / regression / forecasting: ``<split>/<i>.png`` with the official
  ``<split>_labels.txt`` (``training/0.png;0, 0, 1, ...``), ``manifest.csv`` (``path, split``, the label columns and
  every measured target), and for classification the ImageNet layout ``imagenet/<split>/<c>_<class>/<i>.png``
  (hard links to the same files where the file system allows; the index prefix keeps sorted order = class order).
* segmentation: ``<split>/images/<i>.png``, ``<split>/labels/<i>.png`` (label map 0..C; later classes win where
  they overlap) and ``<split>/masks/<class>/<i>.png`` (0/255, one folder per class, full extent).
* landmarks: ``<split>/images/<i>.png`` with ``<split>/landmarks.csv`` (``image,<name>_x,<name>_y,...``),
  ``<split>/landmarks.json`` (``{image: {name: [x, y]}}``) and the official form, ``<split>/labels/<i>.npy``
  Gaussian heatmaps ``[K, H, W]``.

Every data set also gets ``manifest.csv``, ``toydata.json`` (kind, seed, classes, columns, counts) and
``preview.png`` (the first 8 images; for masks and landmarks a second row with the ground truth drawn on).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .kinds import KINDS, ToyKind
from .phantom import Phantom, square_size

__all__ = ["SPLITS", "ToyDataset", "generate", "make_all", "make_dataset", "split_of"]

log = logging.getLogger(__name__)
SPLITS = ("training", "test")
_MARKER = "toydata.json"


@dataclass
class ToyDataset:
    """What :func:`make_dataset` wrote.

    Attributes:
        kind: kind name.
        root: the data set folder.
        task: the kind's task.
        modality: canonical modality name.
        n: number of images; counts: images per split.
        columns: label columns of the official label file / manifest.
        classes: class, mask-class or landmark names.
        seed, size: generation parameters.
        layouts: layout name -> path (relative to ``root``) to pass to the readers.
    """

    kind: str
    root: Path
    task: str
    modality: str
    n: int
    columns: list[str]
    classes: list[str]
    seed: int
    size: int
    counts: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)


def split_of(kind: ToyKind, i: int) -> str:
    """Deterministic split of sample ``i`` (class ``i % C`` for classification): round ``i // C`` = 1 mod 4 is test."""
    per = len(kind.classes) if kind.task == "classification" else 1
    return SPLITS[1] if (i // per) % 4 == 1 else SPLITS[0]


def generate(kind: str, index: int, seed: int = 0, size: int = 128) -> tuple[Phantom, list[float]]:
    """Sample ``index`` of a kind: the same phantom whatever ``n``, for a given seed (independent streams per index)."""
    k = KINDS.get(kind)
    rng = np.random.default_rng([int(seed), zlib.crc32(k.name.encode()), int(index)])
    return k.sample(rng, int(index), int(size))


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, compress_level=1)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, dst)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):.6g}"


def _prepare(out: Path, overwrite: bool, kind: str) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"output folder {out} is not empty (pass overwrite=True / --overwrite to replace it)")
        if not (out / _MARKER).is_file():
            raise ValueError(f"refusing to overwrite {out}: it holds no {_MARKER}, so it is not a toy data set")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    # marked at once, so an interrupted run can be replaced with overwrite=True; "complete" is set at the end
    (out / _MARKER).write_text(json.dumps({"kind": kind, "complete": False}))


def _write_sample(k: ToyKind, out: Path, i: int, split: str, p: Phantom, values: list[float], state: dict) -> str:
    """Write one sample's image and ground truth; returns the image path relative to ``out``."""
    if k.task in ("segmentation", "landmarks"):
        rel = f"{split}/images/{i}.png"
    else:
        rel = f"{split}/{i}.png"
    _save_png(p.image, out / rel)
    if k.task == "classification":
        c = int(values[0])  # folders "<index>_<name>" so that sorted folder order is the class order
        _link(out / rel, out / "imagenet" / split / f"{c}_{k.classes[c]}" / f"{i}.png")
    if k.task == "segmentation":
        labelmap = np.zeros(p.image.shape[:2], np.uint8)
        for c, name in enumerate(k.classes, start=1):
            labelmap[p.masks[name]] = c
            _save_png((p.masks[name] * 255).astype(np.uint8), out / split / "masks" / name / f"{i}.png")
        _save_png(labelmap, out / split / "labels" / f"{i}.png")
    elif k.task == "landmarks":
        state.setdefault(split, {})[f"{i}.png"] = {n: [round(v, 3) for v in p.points[n]] for n in k.classes}
        heat = _heatmaps([p.points[n] for n in k.classes], p.image.shape[:2])
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        np.save(out / split / "labels" / f"{i}.npy", heat)
    else:
        state.setdefault("lines", {}).setdefault(split, []).append(f"{rel};{', '.join(_fmt(v) for v in values)}")
    return rel


def _heatmaps(points: list[tuple[float, float]], shape: tuple[int, int]) -> np.ndarray:
    """Official-style landmark labels: one Gaussian per landmark ``[K, H, W]`` float16, peak 1 at the sub-pixel point.

    sigma = max(1.5, side / 64) pixels, so the peak spans a few pixels at every size.
    """
    h, w = shape
    sigma = max(1.5, max(h, w) / 64)
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None]
    return np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points]).astype(np.float16)


def _write_landmarks(k: ToyKind, out: Path, state: dict) -> None:
    for split in SPLITS:
        table = state.get(split, {})
        if not table:
            continue
        (out / split / "landmarks.json").write_text(json.dumps(table, indent=1))
        with open(out / split / "landmarks.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image"] + [f"{n}_{a}" for n in k.classes for a in ("x", "y")])
            for img, pts in table.items():
                w.writerow([img] + [f"{v:.3f}" for n in k.classes for v in pts[n]])


def _preview(k: ToyKind, samples: list[tuple[Phantom, list[float]]], path: Path) -> None:
    """A contact sheet of the first samples: images on top, their ground truth drawn below (masks, landmarks)."""
    top, bottom = [], []
    colours = np.array(
        [
            [255, 64, 64],
            [64, 255, 64],
            [64, 128, 255],
            [255, 255, 64],
            [255, 64, 255],
            [64, 255, 255],
            [255, 160, 64],
            [160, 64, 255],
            [255, 255, 255],
        ],
        np.uint8,
    )
    for p, _ in samples:
        top.append(p.image)
        truth = p.image.copy()
        if k.task == "segmentation":
            for c, name in enumerate(k.classes):
                truth[p.masks[name]] = colours[c % len(colours)]
        elif k.task == "landmarks":
            canvas = Image.fromarray(truth)
            draw = ImageDraw.Draw(canvas)
            for c, name in enumerate(k.classes):
                x, y = p.points[name]
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=tuple(int(v) for v in colours[c]))
            truth = np.asarray(canvas)
        bottom.append(truth)
    rows = [np.concatenate(top, axis=1)]
    if k.task in ("segmentation", "landmarks"):
        rows.append(np.concatenate(bottom, axis=1))
    _save_png(np.concatenate(rows, axis=0), path)


def _finish_layouts(k: ToyKind, out: Path, state: dict, rows: list[dict], first: list) -> dict[str, str]:
    """Write the label files, landmark tables, manifest and preview; returns layout name -> path."""
    layouts = {"csv": "manifest.csv"}
    for split, lines in state.get("lines", {}).items():
        (out / f"{split}_labels.txt").write_text("\n".join(lines) + "\n")
        layouts["vfm"] = "."
    if k.task == "classification":
        layouts["imagenet"] = "imagenet/<split>"
    if k.task == "segmentation":
        layouts.update(images="<split>/images", labelmap="<split>/labels", per_class="<split>/masks")
    if k.task == "landmarks":
        _write_landmarks(k, out, state)
        layouts.update(
            images="<split>/images",
            landmarks_csv="<split>/landmarks.csv",
            landmarks_json="<split>/landmarks.json",
            heatmaps="<split>/labels",
        )
    _preview(k, first, out / "preview.png")
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return layouts


def make_dataset(
    kind: str,
    out_dir: str | Path,
    n: int = 64,
    seed: int = 0,
    size: int = 128,
    overwrite: bool = False,
    progress: bool = True,
) -> ToyDataset:
    """Generate ``n`` phantoms of ``kind`` with ground truth into ``out_dir``.

    Args:
        kind: a name of :data:`KINDS` (``visionfm toy-data --help`` lists them).
        out_dir: folder to create (must be empty unless ``overwrite`` and it is an earlier toy data set).
        n: number of images (at least 4, and two per class, so both splits exist).
        seed: generation seed; sample i is the same for any ``n``.
        size: square image side in pixels (>= 32).

    Returns:
        :class:`ToyDataset` describing what was written.
    """
    k = KINDS.get(kind)
    per = len(k.classes) if k.task == "classification" else 1
    if n < max(4, 2 * per):
        raise ValueError(f"n must be at least {max(4, 2 * per)} for {k.name} (both splits need images), got {n}")
    size = square_size(size)  # fail before touching the output folder
    out = Path(out_dir)
    _prepare(out, overwrite, k.name)
    state: dict = {}
    rows, counts, first = [], dict.fromkeys(SPLITS, 0), []
    for i in tqdm(range(n), desc=f"toy-data {k.name}", unit="img", disable=not progress, leave=False):
        p, values = generate(k.name, i, seed, size)
        split = split_of(k, i)
        rel = _write_sample(k, out, i, split, p, values, state)
        counts[split] += 1
        if len(first) < 8:
            first.append((p, values))
        rows.append(
            {
                "path": rel,
                "split": split,
                **dict(zip(k.columns, map(_fmt, values))),
                **{t: _fmt(v) for t, v in p.targets.items()},
                **{f"y_{key}": str(v) for key, v in p.labels.items()},
            }
        )
    layouts = _finish_layouts(k, out, state, rows, first)
    info = ToyDataset(k.name, out, k.task, k.modality, n, list(k.columns), list(k.classes), seed, size, counts, layouts)
    (out / _MARKER).write_text(
        json.dumps({**asdict(info), "root": str(out), "description": k.description, "complete": True}, indent=1)
    )
    log.info("wrote %d %s phantoms (%s) to %s", n, k.name, k.task, out)
    return info


def make_all(
    out_dir: str | Path,
    n: int = 48,
    seed: int = 0,
    size: int = 64,
    kinds: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, ToyDataset]:
    """One small data set per kind (every task) under ``out_dir/<kind>``; returns kind -> :class:`ToyDataset`."""
    names = list(kinds) if kinds else KINDS.names()
    for name in names:
        KINDS.get(name)  # fail before writing anything
    out = Path(out_dir)
    return {name: make_dataset(name, out / name, n, seed, size, overwrite, progress) for name in names}
