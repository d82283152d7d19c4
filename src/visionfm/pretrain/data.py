"""Pretraining data: image folders or manifests of one or several modalities, synthetic images mixed in at a fixed
ratio in every epoch, corrupt images skipped (counted, logged by path) or fatal, multi-crop views and masks.

An epoch is every real image once plus ``round(ratio * n_real)`` synthetic images, drawn without replacement from
a per-epoch permutation of the synthetic pool (cycling through fresh permutations when the pool is smaller), so
the real:synthetic ratio holds in every epoch, up to the few samples ``drop_last`` leaves out. Every random choice
of a sample (which synthetic image, crops, flips, masks) comes from a generator seeded by (seed, epoch, index).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.datasets import scan
from ..data.images import ImageReadError, read_image
from ..modalities import IMAGENET_MEAN, IMAGENET_STD, canonical_modality, get_modality
from .augment import crop_resize
from .config import PretrainConfig
from .masking import make_mask

__all__ = ["PretrainDataset", "Source", "build_dataset", "collect_images", "parse_sources"]

log = logging.getLogger(__name__)
_MAX_RETRIES = 20


@dataclass(frozen=True)
class Source:
    """One data folder or manifest with its modality."""

    path: Path
    modality: str
    synthetic: bool = False


def _parse_entry(entry: str, default_modality: str, synthetic: bool) -> Source:
    if "=" in entry and not Path(entry).exists():
        prefix, rest = entry.split("=", 1)
        return Source(Path(rest), canonical_modality(prefix), synthetic)
    return Source(Path(entry), default_modality, synthetic)


def parse_sources(cfg: PretrainConfig) -> list[Source]:
    """Real and synthetic sources of ``cfg``; ``"Modality=path"`` entries carry their own modality.

    Raises:
        ValueError: an unknown modality (the message lists the valid ones).
    """
    default = canonical_modality(cfg.modality)
    out = [_parse_entry(e, default, False) for e in cfg.data]
    out += [_parse_entry(e, default, True) for e in (cfg.synthetic or [])]
    return out


def collect_images(source: Source) -> list[Path]:
    """Every image of a folder (recursive, mixed extensions) or CSV manifest.

    Raises:
        FileNotFoundError: the folder or manifest does not exist.
        ValueError: it holds no images, or is a file that is not a ``.csv`` manifest.
    """
    p = source.path
    kind = "synthetic" if source.synthetic else "data"
    if not p.exists():
        raise FileNotFoundError(f"{kind} folder not found: {p}")
    if p.is_file() and p.suffix.lower() != ".csv":
        raise ValueError(f"{kind} {p}: expected an image folder or a .csv manifest with a 'path' column")
    coll = scan(p, layout="csv" if p.is_file() else "tree")
    return [s.path for s in coll.samples]


def _open_rgb(path: Path, load_size: int | None) -> Image.Image:
    """Decode to an RGB PIL image; with ``load_size`` the shorter side is reduced to about that (JPEG draft)."""
    # read_image: JPEG draft when load_size is set, and the decompression-bomb limit as an ImageReadError (skippable)
    arr = read_image(path, draft=load_size)
    if arr.dtype != np.uint8:
        arr = np.round(arr * 255.0).astype(np.uint8)
    im = Image.fromarray(arr)
    if load_size is not None and min(im.size) > load_size:
        f = load_size / min(im.size)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BICUBIC)
    return im


def _stack(views: list[np.ndarray], size: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 crops -> ``[V, 3, H, W]`` (``[0, 3, size, size]`` when there are none)."""
    if not views:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).contiguous()


class PretrainDataset(Dataset):
    """Item ``i`` of epoch ``e`` -> dict of views, masks and normalisation (see :meth:`__getitem__`).

    Args:
        real: ``(path, modality index)`` of the real images.
        synthetic: the same for synthetic images.
        modalities: canonical modality names the indices refer to.
        cfg: method, crops, masking, ratio, seed (``train.seed``) and bad-image policy.
        patch_size: encoder patch side (mask grid = crop side / patch).
        bad_log: file that skipped images are appended to (one path per line), or None.
    """

    def __init__(
        self,
        real: Sequence[tuple[Path, int]],
        synthetic: Sequence[tuple[Path, int]],
        modalities: Sequence[str],
        cfg: PretrainConfig,
        patch_size: int,
        bad_log: Path | None = None,
    ) -> None:
        if cfg.global_size % patch_size:
            raise ValueError(f"global_size {cfg.global_size} is not a multiple of the patch size {patch_size}")
        if cfg.local_crops and cfg.local_size % patch_size:
            raise ValueError(f"local_size {cfg.local_size} is not a multiple of the patch size {patch_size}")
        self.real, self.synthetic, self.patch_size = list(real), list(synthetic), patch_size
        self.cfg, self.bad_log, self.epoch = cfg, bad_log, 0
        self.modalities = list(modalities)
        stats = [
            (IMAGENET_MEAN, IMAGENET_STD) if cfg.imagenet_stats else (get_modality(m).mean, get_modality(m).std)
            for m in modalities
        ]
        self.mean = torch.tensor([m for m, _ in stats], dtype=torch.float32)
        self.std = torch.tensor([s for _, s in stats], dtype=torch.float32)
        grid = cfg.global_size // patch_size
        self.mask_ratio = cfg.mae_mask_ratio(list(modalities)) if cfg.method == "mae" else None
        self.n_patches = grid * grid
        if self.real and self.synthetic and cfg.synthetic_ratio is not None:
            self.n_synthetic = round(cfg.synthetic_ratio * len(self.real))
        else:
            self.n_synthetic = len(self.synthetic)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.real) + self.n_synthetic

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (synthetic draw, crops and masks depend on it)."""
        self.epoch = epoch

    def item(self, i: int) -> tuple[Path, int]:
        """Which image index ``i`` of the current epoch is: real images first, then synthetic slots."""
        if i < len(self.real):
            return self.real[i]
        slot = i - len(self.real)
        cycle, pos = divmod(slot, len(self.synthetic))
        key = (self.epoch, cycle)
        if key not in self._perm_cache:
            self._perm_cache = {
                key: np.random.default_rng([self.cfg.train.seed, self.epoch, cycle, 7]).permutation(len(self.synthetic))
            }
        return self.synthetic[int(self._perm_cache[key][pos])]

    def _report_bad(self, path: Path, err: Exception) -> None:
        if self.cfg.on_bad_image == "fail":
            raise ImageReadError(f"{err} (set on_bad_image: skip to skip corrupt images)")
        if str(path) in self._reported:
            return
        self._reported.add(str(path))
        log.warning("skipping corrupt image %s: %s", path, err)
        if self.bad_log is not None:
            with open(self.bad_log, "a") as f:
                f.write(f"{path}\n")

    def _load(self, i: int) -> tuple[Image.Image, int, int]:
        """(image, modality index, images skipped) for index ``i``, skipping corrupt ones to the next index."""
        for attempt in range(_MAX_RETRIES):
            path, mod = self.item((i + attempt) % len(self))
            try:
                return _open_rgb(path, self.cfg.load_size), mod, attempt
            except ImageReadError as e:
                self._report_bad(path, e)
        raise ImageReadError(f"{_MAX_RETRIES} consecutive images from index {i} are unreadable; see the log")

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Returns:
        ``global`` uint8 ``[G, 3, S, S]`` (G = 2 for iBOT, 1 for MAE), ``local`` uint8 ``[L, 3, s, s]`` (L may
        be 0), ``mean``/``std`` ``[3]``, ``bad`` (images skipped to produce this one), and the method's masking:
        iBOT ``mask`` bool ``[G, S/p, S/p]`` (all False before ``pred_start_epoch`` or without MIM); MAE
        ``noise`` float ``[N]``, whose argsort decides which patches the encoder sees.
        """
        c = self.cfg
        img, mod, bad = self._load(i)
        rng = np.random.default_rng([c.train.seed, self.epoch, i])
        scale_g, ratio_g = tuple(c.global_scale), tuple(c.global_ratio)
        glob = [crop_resize(img, c.global_size, scale_g, ratio_g, rng) for _ in range(c.global_views)]
        local = [
            crop_resize(img, c.local_size, tuple(c.local_scale), (3 / 4, 4 / 3), rng)
            for _ in range(c.local_crops if c.method == "ibot" else 0)
        ]
        item = {
            "global": _stack(glob, c.global_size),
            "local": _stack(local, c.local_size),
            "mean": self.mean[mod],
            "std": self.std[mod],
            "bad": torch.tensor(bad),
        }
        if c.method == "mae":
            item["noise"] = torch.from_numpy(rng.random(self.n_patches, dtype=np.float32))
            return item
        grid = c.global_size // self.patch_size
        masks = np.zeros((2, grid, grid), dtype=bool)
        if c.mim and self.epoch >= c.pred_start_epoch:
            for v in range(2):
                masks[v] = make_mask(
                    grid, grid, c.pred_ratio, c.pred_ratios_var(), rng, c.pred_shape, c.pred_aspect_min
                )
        item["mask"] = torch.from_numpy(masks)
        return item


def build_dataset(cfg: PretrainConfig, patch_size: int, bad_log: Path | None = None) -> PretrainDataset:
    """Collect the sources of ``cfg`` into a :class:`PretrainDataset`; logs what each source contributed."""
    sources = parse_sources(cfg)
    modalities = sorted({s.modality for s in sources} | {canonical_modality(cfg.modality)})
    real, synthetic = [], []
    for s in sources:
        paths = collect_images(s)
        log.info("%s %s (%s): %d images", "synthetic" if s.synthetic else "data", s.path, s.modality, len(paths))
        (synthetic if s.synthetic else real).extend((p, modalities.index(s.modality)) for p in paths)
    ds = PretrainDataset(real, synthetic, modalities, cfg, patch_size, bad_log)
    log.info("epoch = %d real + %d synthetic images", len(real), ds.n_synthetic)
    return ds
