"""Fidelity of a synthetic set: Frechet distance, precision/recall and a memorisation check on encoder features.

Both sets go through the same square preprocessing at the same resolution (by default the synthetic images'
side) before the encoder sees them, so the measures compare content, not image size or aspect ratio.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..checkpoints import atomic_write, resolve_encoder
from ..data import read_image
from ..distributed import resolve_device
from ..features import encode_batch
from ..models import VisionTransformer
from .data import load_square_images, scan_sources
from .metrics import MemorisationResult, frechet_distance_features, memorisation_check, precision_recall

__all__ = ["FidelityReport", "encode_images", "measure_fidelity", "save_pair_grid"]

log = logging.getLogger(__name__)


@dataclass
class FidelityReport:
    """Numbers of one real-vs-synthetic comparison (also written as ``fidelity.json``)."""

    n_real: int
    n_synthetic: int
    n_train: int
    resolution: int
    frechet_distance: float
    precision: float
    recall: float
    k: int
    memorised_fraction_features: float
    memorised_fraction_pixels: float
    threshold_features: float
    threshold_pixels: float
    encoder: str


@torch.no_grad()
def encode_images(
    encoder: VisionTransformer, images: Tensor, input_size: int = 224, batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """CLS features ``[N, D]`` of uint8 images ``[N, 3, S, S]`` (resized to ``input_size``, normalised)."""
    dev = next(encoder.parameters()).device
    mean = torch.tensor(encoder.info.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(encoder.info.std, device=dev).view(1, 3, 1, 1)
    out = []
    for s in tqdm(range(0, len(images), batch_size), desc="encode", unit="batch", disable=not progress):
        x = images[s : s + batch_size].to(dev).float().div(255.0)
        x = torch.nn.functional.interpolate(x, size=(input_size, input_size), mode="bicubic", align_corners=False)
        cls, _ = encode_batch(encoder, (x.clamp(0, 1) - mean) / std, n_last_blocks=1)
        out.append(cls.cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _paths(source: str | Path | list) -> list[Path]:
    return [s.path for s in scan_sources(source).samples]


def _pixel_vectors(images: Tensor, side: int = 32) -> np.ndarray:
    """uint8 ``[N, 3, S, S]`` -> ``[N, 3*side*side]`` in [0, 1] (area-downsampled: robust to tiny shifts)."""
    x = torch.nn.functional.interpolate(images.float().div(255.0), size=(side, side), mode="area")
    return x.flatten(1).numpy().astype(np.float64)


def save_pair_grid(
    synthetic: Tensor,
    train: Tensor,
    mem: MemorisationResult,
    path: str | Path,
    n_pairs: int = 8,
    metric: str = "feature",
) -> Path:
    """PNG of the ``n_pairs`` closest (synthetic, nearest training image) pairs, closest first, flags in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(mem.distance)[:n_pairs]
    fig, axes = plt.subplots(len(order), 2, figsize=(5, 2 * len(order)), squeeze=False)
    for row, i in enumerate(order):
        for col, img in enumerate((synthetic[i], train[mem.index[i]])):
            ax = axes[row, col]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        flag = mem.flagged[i]
        axes[row, 0].set_title(f"synthetic #{i}  d={mem.distance[i]:.3g}", fontsize=7, color="red" if flag else "k")
        axes[row, 1].set_title(
            f"nearest train #{mem.index[i]}" + ("  FLAGGED" if flag else ""), fontsize=7, color="red" if flag else "k"
        )
    fig.suptitle(f"nearest training image ({metric}); threshold {mem.threshold:.3g}", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def _synthetic_side(paths: list[Path]) -> int:
    h, w = read_image(paths[0]).shape[:2]
    return min(h, w)


def measure_fidelity(
    real: str | Path | list,
    synthetic: str | Path | list,
    weights: str | Path | VisionTransformer,
    output: str | Path,
    train: str | Path | list | None = None,
    modality: str | None = None,
    resolution: int | None = None,
    input_size: int = 224,
    k: int = 3,
    quantile: float = 0.05,
    n_pairs: int = 8,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
) -> FidelityReport:
    """Compare a synthetic set with a real one and check it for copies of the training images.

    Writes to ``output``: ``fidelity.json`` (the report and settings), ``nearest.csv`` (nearest training image of
    every synthetic image, in feature and pixel space, with flags) and ``nearest_pairs.png`` (image grid).

    Args:
        real: folder or manifest of real images, or a list of them (held-out real images are the fair reference).
        synthetic: folder or manifest of generated images (e.g. the ``manifest.csv`` of ``synth sample``).
        weights: encoder weights file (any format :func:`visionfm.load_encoder` reads) or a loaded encoder.
        train: the generator's training images for the memorisation check (default: ``real``).
        resolution: square side both sets are brought to first (default: the synthetic images' side).
        k: neighbourhood size of precision / recall.
        quantile: memorisation threshold = this quantile of training leave-one-out NN distances.
    """
    dev = resolve_device(device)
    enc = resolve_encoder(weights, modality, device=dev)
    enc = enc.to(dev).eval()
    syn_paths, real_paths = _paths(synthetic), _paths(real)
    train_paths = _paths(train) if train else real_paths
    side = resolution or _synthetic_side(syn_paths)
    syn = load_square_images(syn_paths, side, progress=progress, desc="synthetic")
    rea = load_square_images(real_paths, side, progress=progress, desc="real")
    tra = rea if not train else load_square_images(train_paths, side, progress=progress, desc="train")
    f_syn, f_real = (encode_images(enc, x, input_size, batch_size, progress) for x in (syn, rea))
    f_train = f_real if not train else encode_images(enc, tra, input_size, batch_size, progress)
    fd = frechet_distance_features(f_real, f_syn)
    prec, rec = precision_recall(f_real, f_syn, k)
    mem_f = memorisation_check(f_syn, f_train, "cosine", quantile)
    mem_p = memorisation_check(_pixel_vectors(syn), _pixel_vectors(tra), "euclidean", quantile)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    _write_nearest(out / "nearest.csv", syn_paths, train_paths, mem_f, mem_p)
    save_pair_grid(syn, tra, mem_f, out / "nearest_pairs.png", n_pairs, "encoder features, cosine")
    report = FidelityReport(
        len(real_paths),
        len(syn_paths),
        len(train_paths),
        side,
        fd,
        prec,
        rec,
        k,
        mem_f.flagged_fraction,
        mem_p.flagged_fraction,
        mem_f.threshold,
        mem_p.threshold,
        enc.info.source,
    )
    settings = {
        "real": _names(real),
        "synthetic": _names(synthetic),
        "train": _names(train or real),
        "input_size": input_size,
        "quantile": quantile,
        "modality": enc.info.modality,
        "arch": enc.info.arch,
    }
    with atomic_write(out / "fidelity.json") as tmp:
        tmp.write_text(json.dumps({"report": asdict(report), "settings": settings}, indent=1))
    log.info(
        "FD %.4g  precision %.3f  recall %.3f  memorised %.1f%% (features) %.1f%% (pixels)",
        fd,
        prec,
        rec,
        100 * mem_f.flagged_fraction,
        100 * mem_p.flagged_fraction,
    )
    return report


def _names(src: str | Path | list) -> list[str]:
    return [str(s) for s in ([src] if isinstance(src, (str, Path)) else src)]


def _write_nearest(
    path: Path, syn: list[Path], train: list[Path], mem_f: MemorisationResult, mem_p: MemorisationResult
) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "synthetic",
                "nearest_features",
                "cosine_distance",
                "flagged_features",
                "nearest_pixels",
                "pixel_distance",
                "flagged_pixels",
            ]
        )
        for i, p in enumerate(syn):
            w.writerow(
                [
                    p,
                    train[mem_f.index[i]],
                    f"{mem_f.distance[i]:.6g}",
                    int(mem_f.flagged[i]),
                    train[mem_p.index[i]],
                    f"{mem_p.distance[i]:.6g}",
                    int(mem_p.flagged[i]),
                ]
            )
