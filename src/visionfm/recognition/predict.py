"""``predict``: a trained run applied to new images -> CSV of probabilities (or predictions) with class names.

The run stores its encoder reference (weights path, SHA-256, architecture, modality, preprocessing). Prediction
re-extracts features with exactly that encoder and refuses, with a clear error, weights whose checksum or
architecture differ, or images of a modality the head was not trained on.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..checkpoints import load_encoder
from ..data.datasets import ImageCollection, ImageDataset, scan
from ..data.images import Preprocess
from ..distributed import resolve_device
from ..errors import UserError
from ..features import extract_features, load_features
from ..modalities import canonical_modality
from ..models import VisionTransformer
from .data import EncoderRef, encoder_features, file_sha256, pick_features
from .reporting import write_split_predictions
from .runs import load_run, run_encoders

__all__ = ["encode_images", "finetuned_features", "pick_modality", "predict", "predict_paths", "resolve_encoder"]

log = logging.getLogger(__name__)


def pick_modality(encoders: dict[str, EncoderRef], modality: str | None, run: Path) -> str:
    if modality is None:
        if len(encoders) > 1:
            raise UserError(f"{run} was trained on several modalities {sorted(encoders)}: pass --modality")
        return next(iter(encoders))
    mod = canonical_modality(modality) if modality.lower() != "unknown" else "unknown"
    if mod not in encoders:
        raise UserError(
            f"{run}: the head was trained on features of {sorted(encoders)}, not {mod}; refusing to "
            f"apply it to {mod} images"
        )
    return mod


def resolve_encoder(
    ref: EncoderRef, weights: str | Path | None = None, device: str | torch.device = "cpu", where: str = "the run"
) -> VisionTransformer:
    """Load the encoder ``ref`` names (or ``weights``), verified by SHA-256 and architecture.

    Raises:
        FileNotFoundError: the weights cannot be found (pass ``weights``).
        ValueError: the weights are not the encoder the head was trained with.
    """
    path = Path(weights) if weights else Path(ref.weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"{where} uses encoder weights {ref.weights} ({ref.arch}, sha256 "
            f"{ref.sha256[:12] or 'unknown'}), not found: pass the weights file (--weights)"
        )
    if ref.sha256:
        sha = file_sha256(path)
        if sha != ref.sha256:
            raise UserError(
                f"refusing {path}: sha256 {sha[:12]} is not the encoder {where} was trained with "
                f"({ref.weights}, sha256 {ref.sha256[:12]})"
            )
    else:
        log.warning("%s recorded no checksum for its encoder; %s is checked by architecture only", where, path)
    enc = load_encoder(path, ref.modality or None, device=device)
    if enc.cfg.to_dict() != ref.config:
        raise UserError(
            f"refusing {path}: architecture {enc.info.arch} differs from the encoder {where} was "
            f"trained with ({ref.arch})"
        )
    return enc


def encode_images(
    enc: VisionTransformer,
    ref: EncoderRef,
    coll: ImageCollection,
    feature: str,
    batch_size: int = 32,
    num_workers: int = 0,
) -> np.ndarray:
    """Features ``[N, F]`` of a collection, extracted as the run's features were (size, blocks, TTA, resize filter,
    precision, JPEG decoding)."""
    with tempfile.TemporaryDirectory() as tmp:
        fs = load_features(
            extract_features(
                enc,
                coll,
                Path(tmp) / "features.safetensors",
                input_size=ref.input_size,
                n_last_blocks=ref.n_last_blocks,
                tta=ref.tta,
                interpolation=ref.interpolation,
                precision=ref.precision,
                jpeg_draft=ref.jpeg_draft,
                batch_size=batch_size,
                num_workers=num_workers,
                device=str(next(enc.parameters()).device),
                progress=False,
            )
        )
    return pick_features(fs.cls, fs.patch_mean, feature)


@torch.no_grad()
def finetuned_features(
    enc: VisionTransformer,
    ref: EncoderRef,
    coll: ImageCollection,
    info: dict,
    batch_size: int = 32,
    num_workers: int = 0,
) -> torch.Tensor:
    """Features ``[N, F]`` of a collection through a fine-tuned run's encoder with the transform its validation and
    test images had (resize, or RETFound's resize to input / crop fraction and centre crop)."""
    from .recipes import CropPreprocess

    crop = float(info["recipe"].get("eval_crop", 1.0))
    pre = (
        CropPreprocess(ref.input_size, ref.mean, ref.std, crop)
        if crop < 1
        else Preprocess(ref.input_size, ref.mean, ref.std, interpolation=ref.interpolation)
    )
    dev = next(enc.parameters()).device
    loader = DataLoader(ImageDataset(coll.samples, pre), batch_size=batch_size, num_workers=num_workers)
    feats = [encoder_features(enc(x.to(dev), n_last_blocks=ref.n_last_blocks), info["feature"]) for x, _ in loader]
    return torch.cat(feats).float()


def read_intervals(samples: Sequence, column: str, source: str | Path) -> np.ndarray:
    """Forecasting intervals (days to the next visit) from a manifest column, ``[N]`` float32; named errors."""
    vals = []
    for i, s in enumerate(samples):
        if column not in s.extra:
            raise UserError(
                f"{source}: forecasting needs the interval to the next visit in a '{column}' column "
                f"(days) of a CSV manifest"
            )
        try:
            vals.append(float(s.extra[column]))
        except ValueError:
            raise UserError(f"{source}, line {i + 2}: interval {s.extra[column]!r} is not a number") from None
    return np.array(vals, dtype=np.float32)


def predict(
    run: str | Path,
    images: str | Path,
    output_csv: str | Path,
    weights: str | Path | None = None,
    modality: str | None = None,
    layout: str = "auto",
    interval_column: str = "interval_days",
    device: str = "auto",
    batch_size: int = 32,
    num_workers: int = 0,
) -> Path:
    """Apply a run to new images: one CSV row per image with ``prob_<class>`` columns and the prediction.

    Args:
        run: a run folder (``train_head`` or ``finetune``).
        images: image folder or CSV manifest (``path`` column; forecasting: also ``interval_column``).
        output_csv: where to write the predictions.
        weights: the encoder weights file, when it is no longer where the run recorded it (verified).
        modality: modality of the images; required for runs trained on several modalities.
        layout: data layout of ``images`` (see :func:`visionfm.data.scan`).

    Raises:
        ValueError / FileNotFoundError: wrong encoder, modality not trained on, missing weights or images.
    """
    run = Path(run)
    dev = resolve_device(device)
    task, info = load_run(run, dev)
    encoders = run_encoders(info)
    mod = pick_modality(encoders, modality, run)
    ref = encoders[mod]
    enc = resolve_encoder(ref, weights, dev, str(run))
    coll = scan(
        images, "csv" if str(images).endswith(".csv") else ("tree" if layout == "auto" else layout), label_columns=[]
    )
    if "recipe" in info:  # a fine-tuned run: its own evaluation transform (RETFound's centre crop included)
        x = finetuned_features(enc, ref, coll, info, batch_size, num_workers)
    else:
        x = torch.from_numpy(encode_images(enc, ref, coll, info["feature"], batch_size, num_workers)).to(dev)
    needs_time = getattr(task.head, "requires_time", False)  # forecasting: the interval to the next visit
    t = torch.from_numpy(read_intervals(coll.samples, interval_column, images)).to(dev) if needs_time else None
    with torch.no_grad():
        scores = task.scores(task.head(x, t).float()).cpu().double().numpy()
    out = write_split_predictions(Path(output_csv), task, [s.rel for s in coll.samples], scores, None)
    log.info("%d predictions (%s, %s encoder) -> %s", len(coll), info["kind"], mod, out)
    return out


def predict_paths(run: str | Path, paths: Sequence[str | Path], output_csv: str | Path, **kw) -> Path:
    """:func:`predict` on a list of image files (written to a temporary manifest)."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "images.csv"
        with open(manifest, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path"])
            writer.writerows([[str(Path(p).resolve())] for p in paths])
        return predict(run, manifest, output_csv, **kw)
