"""Image-text training data from categorical manifests, report manifests and class folders.

A data source is ``PATH`` or ``Modality=PATH``:

- a CSV manifest with a ``path`` column and either a free-text column (``report``, ``caption_en``, ``caption`` or
  ``text``: a report dataset, each image paired with its own text) or a ``label`` column of category *names* (a
  categorical dataset: each image paired with a prompt of its category, drawn per epoch from the template and the
  category's expert descriptions). A ``modality`` column, when present, sets each row's modality;
- a folder of class sub-folders (ImageNet layout): the sub-folder names are the categories (``_`` read as space).

Rows whose label is missing (``-``, empty, ``nan``) are skipped and counted.
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.datasets import MISSING, list_images
from ..data.images import read_image, resize_image
from ..errors import UserError
from ..modalities import canonical_modality
from .knowledge import Knowledge

__all__ = [
    "TEXT_COLUMNS",
    "TextTable",
    "VLItem",
    "VLTrainData",
    "decode_pixels",
    "parse_source",
    "read_source",
    "read_sources",
]

log = logging.getLogger(__name__)
TEXT_COLUMNS = ("report", "caption_en", "caption", "text")


@dataclass
class VLItem:
    """One training image: where it is, its modality, what it is paired with.

    Attributes:
        path: the image file.
        modality: canonical modality or None.
        key: what makes two pairs positives: ``"category:<name>"`` or ``"report:<text>"``.
        texts: candidate texts (one is drawn per epoch).
        source: the manifest or folder it came from.
    """

    path: Path
    modality: str | None
    key: str
    texts: list[str]
    source: str


def parse_source(spec: str) -> tuple[str | None, Path]:
    """``"OCT=/data/oct.csv"`` -> ("OCT", path); ``"/data/x.csv"`` -> (None, path)."""
    head, sep, rest = spec.partition("=")
    if sep and head and "/" not in head and not Path(spec).exists():
        return canonical_modality(head), Path(rest)
    return None, Path(spec)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _category_item(
    path: Path, label: str, modality: str | None, knowledge: Knowledge, domain_knowledge: bool, where: str, source: str
) -> VLItem:
    if _is_number(label):
        raise UserError(
            f"{where}: label {label!r} is a number; vision-language training needs category names "
            f"(e.g. 'mild diabetic retinopathy') in the label column"
        )
    cat = knowledge.find(label)
    name = cat.name if cat else label  # aliases of one category share a key
    return VLItem(path, modality, f"category:{name}", knowledge.prompts(label, modality, domain_knowledge), source)


def _read_csv(manifest: Path, modality: str | None, knowledge: Knowledge, domain_knowledge: bool) -> list[VLItem]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        rows = list(reader)
    if "path" not in cols:
        raise UserError(f"{manifest}: a manifest needs a 'path' column; found {cols}")
    text_col = next((c for c in TEXT_COLUMNS if c in cols), None)
    if text_col is None and "label" not in cols:
        raise UserError(
            f"{manifest}: needs a text column ({', '.join(TEXT_COLUMNS)}) or a 'label' column of "
            f"category names; found {cols}"
        )
    items, skipped = [], 0
    for n, row in enumerate(rows, 2):
        where = f"{manifest}, line {n}"
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else manifest.parent / row["path"]
        if not path.is_file():
            raise UserError(f"{where}: image {path} not found")
        mod = canonical_modality(row["modality"]) if row.get("modality") else modality
        value = (row.get(text_col) if text_col else row.get("label")) or ""
        if value.strip() in MISSING:
            skipped += 1
            continue
        if text_col:
            items.append(VLItem(path, mod, f"report:{value.strip()}", [value.strip()], str(manifest)))
        else:
            items.append(_category_item(path, value.strip(), mod, knowledge, domain_knowledge, where, str(manifest)))
    if skipped:
        log.info("%s: %d rows without a label or text skipped", manifest, skipped)
    return items


def read_source(
    spec: str, knowledge: Knowledge, default_modality: str | None = None, domain_knowledge: bool = True
) -> list[VLItem]:
    """The items of one data source (see the module docstring)."""
    modality, path = parse_source(spec)
    modality = modality or (canonical_modality(default_modality) if default_modality else None)
    if not path.exists():
        raise UserError(f"--data {spec}: not found")
    if path.is_file():
        items = _read_csv(path, modality, knowledge, domain_knowledge)
    else:
        classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise UserError(f"--data {spec}: a folder source needs one sub-folder per category")
        items = [
            _category_item(p, d.name.replace("_", " "), modality, knowledge, domain_knowledge, str(p), str(path))
            for d in classes
            for p in list_images(d)
        ]
    if not items:
        raise UserError(f"--data {spec}: no labelled images")
    return items


def read_sources(
    specs: Sequence[str], knowledge: Knowledge, default_modality: str | None = None, domain_knowledge: bool = True
) -> list[VLItem]:
    """The items of every source, in order."""
    return [it for s in specs for it in read_source(s, knowledge, default_modality, domain_knowledge)]


class TextTable:
    """Every distinct text and key of a set of items, as integer ids.

    Attributes:
        texts: distinct texts (prompts and reports).
        keys: distinct keys.
        item_texts: per item, the ids of its candidate texts.
        item_keys: ``[N]`` key id per item.
    """

    def __init__(self, items: Sequence[VLItem]) -> None:
        text_ids: dict[str, int] = {}
        key_ids: dict[str, int] = {}
        self.item_texts = [[text_ids.setdefault(t, len(text_ids)) for t in it.texts] for it in items]
        self.item_keys = torch.tensor([key_ids.setdefault(it.key, len(key_ids)) for it in items])
        self.texts, self.keys = list(text_ids), list(key_ids)


def decode_pixels(items: Sequence[VLItem], size: int) -> Tensor:
    """Every image decoded once and resized (bilinear, as ``visionfm extract``) to ``size`` x ``size``:
    ``[N, 3, S, S]`` uint8, held in memory."""
    out = torch.empty(len(items), 3, size, size, dtype=torch.uint8)
    for i, it in enumerate(items):
        img = resize_image(read_image(it.path), (size, size), "bilinear")
        out[i] = torch.from_numpy(np.round(img * 255).astype(np.uint8)).permute(2, 0, 1)
    return out


def norm_stats(items: Sequence[VLItem], encoder_info) -> tuple[Tensor, Tensor]:
    """Per-item normalisation ``[N, 3]`` mean and std: the encoder's recorded statistics (its modality's), the same
    ones ``visionfm extract`` and :meth:`VLRun.encode_image` use, so cached and live features agree."""
    n = len(items)
    return torch.tensor([encoder_info.mean] * n), torch.tensor([encoder_info.std] * n)


class VLTrainData(Dataset):
    """Pairs for the trainer: ``{"image" [3,S,S] | "feat" [D], "text": id, "key": id}``.

    With cached features (frozen image encoder) items are features; otherwise pixels, normalised per item and
    flipped horizontally at random. The text drawn among an item's candidates and the flip depend only on
    (seed, epoch, index), so a resumed run sees exactly the same pairs.
    """

    def __init__(
        self,
        table: TextTable,
        seed: int,
        feats: Tensor | None = None,
        pixels: Tensor | None = None,
        mean: Tensor | None = None,
        std: Tensor | None = None,
        flip: bool = True,
    ) -> None:
        if (feats is None) == (pixels is None):
            raise ValueError("give exactly one of feats and pixels")
        self.table, self.seed, self.feats, self.pixels, self.flip = table, seed, feats, pixels, flip
        self.mean, self.std, self.epoch = mean, std, 0
        self.index = list(range(len(table.item_texts)))

    def subset(self, index: Sequence[int]) -> VLTrainData:
        """A view of the items ``index`` (same draws per item: they depend on the item, not its position)."""
        view = copy.copy(self)
        view.index = list(index)
        return view

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> dict[str, Tensor]:
        i = self.index[j]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        cands = self.table.item_texts[i]
        out = {"text": torch.tensor(cands[int(rng.integers(len(cands)))]), "key": self.table.item_keys[i]}
        if self.feats is not None:
            out["feat"] = self.feats[i]
            return out
        x = (self.pixels[i].float() / 255 - self.mean[i].view(3, 1, 1)) / self.std[i].view(3, 1, 1)
        out["image"] = x.flip(-1) if self.flip and rng.random() < 0.5 else x
        return out
