"""Feature extraction: stream a folder or manifest through a frozen encoder into one safetensors file.

Memory stays bounded whatever the dataset size: the output file's layout is fixed up front (N is known), so it is
created and preallocated once (a full disk fails before any image is read) and every batch is written straight into
its rows with ``pwrite`` (:mod:`visionfm.data.writer`: locked against a second writer, unique temporary name,
published by rename). Under ``torchrun`` every process writes its own rows of the same file (rank r takes samples
r, r+W, ...), which gives one merged output with no duplicated or missing row and no gather through memory; this
needs the output on a filesystem all processes share (always true on one node).

Preprocessing follows the official extraction (``evaluation/extract_features.py``): a square **bilinear** resize of
the RGB image, ``/255``, the modality's normalisation; ``interpolation="bicubic"`` gives the fine-tuning pipeline's
filter instead. The filter, the full preprocessing and the split are recorded in the file's metadata.

File contents (safetensors, float32):
    ``cls``: ``[N, n*D]`` CLS tokens of the last n blocks, concatenated (the official probe feature);
    ``patch_mean``: ``[N, D]`` mean of the last block's patch tokens;
    ``labels``: ``[N, K]`` when the data has labels (NaN = missing);
    metadata: ``paths`` (JSON list, relative to the data root), ``label_names``, ``split``, ``interpolation``,
        ``preprocess`` (JSON), ``dicom`` (JSON: laterality and pixel spacing of DICOM rows), encoder facts, options.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .checkpoints import resolve_encoder
from .data.datasets import ImageCollection, ImageDataset, scan
from .data.images import DICOM_EXTENSIONS, INTERPOLATIONS, Preprocess
from .data.writer import OutputLock, RowFile, check_output
from .distributed import barrier, init_distributed, resolve_device
from .engine.precision import cpu_has_native_bf16
from .errors import UserError
from .models import VisionTransformer
from .models.inference import (
    COMPILE_MODES,
    FeatureModule,
    cast_encoder,
    compile_mode,
    compiled_blocks,
    feature_pair,
    frozen_features,
    reuse_large_allocations,
)

__all__ = [
    "COMPILE_MODES",
    "EXTRACT_PRECISIONS",
    "PRECISION_CHOICES",
    "TTA_MODES",
    "FeatureSet",
    "autocast_context",
    "cast_encoder",
    "compiled_blocks",
    "cpu_has_native_bf16",
    "encode_batch",
    "extract_features",
    "frozen_features",
    "load_features",
    "resolve_precision",
]

log = logging.getLogger(__name__)
TTA_MODES = ("none", "hflip", "hvflip")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
EXTRACT_PRECISIONS = (*PRECISION_CHOICES, "int8")  # int8: static, calibrated per extraction (CPU only)
INT8_CALIBRATION_IMAGES = 8


@dataclass
class FeatureSet:
    """Features read back from an extraction file.

    Attributes:
        cls: ``[N, n*D]``.
        patch_mean: ``[N, D]``.
        labels: ``[N, K]`` float with NaN for missing, or None.
        paths: relative image paths, aligned with the rows.
        meta: everything else recorded at extraction.
    """

    cls: np.ndarray
    patch_mean: np.ndarray
    labels: np.ndarray | None
    paths: list[str]
    meta: dict[str, str]


def autocast_context(device: torch.device, precision: str):
    """``torch.autocast`` for ``bf16``/``fp16``; a no-op context for ``fp32``."""
    if precision not in _DTYPES:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(_DTYPES)}")
    dtype = _DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.inference_mode()
def encode_batch(
    encoder: VisionTransformer, x: Tensor, n_last_blocks: int = 1, tta: str = "none", precision: str = "fp32"
) -> tuple[Tensor, Tensor]:
    """Features of one batch, averaged over the flip test-time augmentations asked for.

    Args:
        x: ``[B, 3, H, W]`` normalised images on the encoder's device.

    Returns:
        (CLS of the last n blocks ``[B, n*D]``, patch-token mean ``[B, D]``), float32.
    """
    if tta not in TTA_MODES:
        raise UserError(f"unknown tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    views = [x] + ([x.flip(-1)] if tta != "none" else []) + ([x.flip(-2)] if tta == "hvflip" else [])
    cls_sum, patch_sum = 0, 0
    if (precision == "int8") != _is_int8(encoder):
        raise UserError("precision int8 needs the int8 encoder of visionfm.models.vit_int8.quantize_encoder and back")
    dtype = _DTYPES.get(precision)
    # every weight already in the precision (cast_encoder): no autocast; a partly cast model (serve) keeps it
    cast = dtype is not None and all(p.dtype == dtype for p in encoder.parameters())
    with nullcontext() if cast or precision == "int8" else autocast_context(x.device, precision):
        for v in views:
            cls, patch = _features(encoder, v.to(dtype) if cast else v, n_last_blocks)
            cls_sum, patch_sum = cls_sum + cls, patch_sum + patch
    return cls_sum / len(views), patch_sum / len(views)


def _features(encoder, x: Tensor, n_last_blocks: int) -> tuple[Tensor, Tensor]:
    """(CLS of the last n blocks ``[B, n*D]``, patch-token mean ``[B, D]``) in float32, from an encoder or from a
    :class:`FeatureModule` (compiled or not)."""
    if isinstance(getattr(encoder, "_orig_mod", encoder), FeatureModule):
        return encoder(x)
    return feature_pair(encoder(x, n_last_blocks=n_last_blocks))


def _is_int8(encoder) -> bool:
    from .models.vit_int8 import Int8VisionTransformer

    return isinstance(getattr(encoder, "_orig_mod", encoder), Int8VisionTransformer)


def _resolve_extract_precision(precision: str, device: torch.device) -> str:
    """:func:`resolve_precision` plus ``int8`` (static int8 on oneDNN: CPU only)."""
    if precision != "int8":
        return resolve_precision(precision, device)
    if device.type != "cpu":
        raise UserError(f"precision int8 runs on the CPU only (oneDNN), not on {device}; use bf16 there")
    from .models.vit_int8 import cpu_has_amx_int8

    if not cpu_has_amx_int8():
        log.warning("precision int8: this CPU has no AMX-INT8; int8 may be no faster than bf16 here")
    return precision


def _int8_encoder(enc: VisionTransformer, coll: ImageCollection, prep: Preprocess, jpeg_draft: bool):
    """The int8 copy of ``enc``, calibrated on the collection's first :data:`INT8_CALIBRATION_IMAGES` images
    (decoded as the extraction decodes them; the same on every rank, so every process quantises alike)."""
    from .models.vit_int8 import quantize_encoder

    if not isinstance(enc, VisionTransformer):
        raise UserError("precision int8 needs a visionfm VisionTransformer encoder; use bf16 for this one")
    if any(p.dtype != torch.float32 for p in enc.parameters()):  # quantise from float32, leave the caller's alone
        enc = copy.deepcopy(enc).float()
    calib = ImageDataset(coll.samples[:INT8_CALIBRATION_IMAGES], prep, draft=prep.size if jpeg_draft else None)
    return quantize_encoder(enc, [torch.stack([calib[i][0] for i in range(len(calib))])])


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it natively (CPUs with AMX or AVX512-BF16, CUDA with bf16
    support), else ``fp32``; any other value is returned checked."""
    if precision != "auto":
        if precision not in _DTYPES:
            raise UserError(f"unknown precision {precision!r}; valid: auto, {', '.join(_DTYPES)}")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def _meta(
    encoder: VisionTransformer,
    coll: ImageCollection,
    n_last_blocks: int,
    prep: Preprocess,
    tta: str,
    precision: str,
    split: str,
    draft: bool,
) -> dict[str, str]:
    info = encoder.info
    dicom = _dicom_facts(coll)
    return {
        "paths": json.dumps([s.rel for s in coll.samples]),
        "label_names": json.dumps(coll.label_names),
        "data_root": str(coll.root),
        "layout": coll.layout,
        "split": split,
        "weights": info.source,
        "arch": info.arch,
        "config": json.dumps(info.config.to_dict()),
        "modality": info.modality or "",
        "mean": json.dumps(list(info.mean)),
        "std": json.dumps(list(info.std)),
        "n_last_blocks": str(n_last_blocks),
        "input_size": str(prep.size),
        "interpolation": prep.interpolation,
        "jpeg_draft": str(draft).lower(),
        "preprocess": json.dumps(prep.describe()),
        "tta": tta,
        "precision": precision,
        "dicom": json.dumps(dicom),
        "visionfm_features": "1",
    }


def _check_args(
    output: Path,
    input_size: int | None,
    n_last_blocks: int,
    batch_size: int,
    num_workers: int,
    tta: str,
    interpolation: str,
) -> None:
    """Every argument checked before any file is read (sizes positive, names known, output writable)."""
    for name, value in (("--input-size", input_size), ("--n-last-blocks", n_last_blocks), ("--batch-size", batch_size)):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value}")
    if num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {num_workers}")
    if tta not in TTA_MODES:
        raise UserError(f"unknown --tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"unknown --interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    check_output(output, ".safetensors")


def _last_blocks(n_last_blocks: int | None, enc: VisionTransformer) -> int:
    """An explicit ``n_last_blocks`` above the depth is an error; the default is 4, or the depth when smaller."""
    if n_last_blocks is None:
        if enc.cfg.depth < 4:
            log.info(
                "n_last_blocks: the encoder has %d blocks, so the CLS tokens of all %d are used (default 4)",
                enc.cfg.depth,
                enc.cfg.depth,
            )
        return min(4, enc.cfg.depth)
    if n_last_blocks > enc.cfg.depth:
        raise UserError(f"--n-last-blocks {n_last_blocks} exceeds the encoder's depth ({enc.cfg.depth} blocks)")
    return n_last_blocks


def _shared_tmp_name(output: Path) -> Path:
    """A temporary name unique to this job: the main process's pid, broadcast to the others under torchrun."""
    name = [f".{output.name}.{os.getpid()}.partial"]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(name, src=0)
    return output.with_name(name[0])


def _dicom_facts(coll: ImageCollection) -> dict[str, dict]:
    """Laterality, pixel spacing and identity of each DICOM sample, read from its header only."""
    facts = {}
    for s in coll.samples:
        if s.path.suffix.lower() in DICOM_EXTENSIONS:
            from .data.dicom import dicom_header

            facts[s.rel] = dicom_header(s.path)
    return facts


def extract_features(
    weights: str | Path | VisionTransformer,
    data: str | Path | ImageCollection,
    output: str | Path,
    modality: str | None = None,
    layout: str = "auto",
    split: str | None = None,
    label_columns: Sequence[str] | None = None,
    input_size: int | None = None,
    n_last_blocks: int | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    tta: str = "none",
    precision: str = "fp32",
    device: str | None = "auto",
    compile: bool | str = False,
    progress: bool = True,
    interpolation: str = "bilinear",
    jpeg_draft: bool = False,
) -> Path:
    """Extract features of every image of ``data`` into ``output`` (``.safetensors``).

    Works alone or in every process of a ``torchrun`` job (each writes its own rows of the same file). Arguments,
    the output path and its folder are checked before any image is read; a second extraction to the same output is
    refused while the first runs; the file appears complete or not at all.

    Args:
        weights: a weights file (any supported format) or an already loaded encoder.
        data: folder or manifest (see :func:`visionfm.data.scan`), or a scanned collection.
        modality: modality of the images (sets normalisation unless the weights fix it).
        split: for the official vfm layout, which ``<split>_labels.txt`` (default ``training``); recorded in the
            file's metadata for every layout.
        input_size: square input side; default 224.
        n_last_blocks: CLS tokens of this many last blocks are concatenated (default 4, or the encoder's depth when
            it has fewer blocks; an explicit value above the depth is an error).
        tta: ``none``, ``hflip`` or ``hvflip`` (features averaged over the flips).
        precision: ``fp32`` (exact), ``bf16`` (weights cast once), ``fp16``, ``auto`` (bf16 where the CPU/GPU
            runs it natively), or ``int8`` (CPU: static int8 on oneDNN, scales calibrated on the first 8 images,
            recorded as ``int8_calibration``, the qkv and fc1 inputs smoothed (SmoothQuant, alpha recorded as
            ``int8_smoothing_alpha``); see :mod:`visionfm.models.vit_int8`).
        compile: ``False``/``"none"``, ``True``/``"blocks"`` (each block compiled: one graph serves every block)
            or ``"frozen"`` (the whole encoder, weights frozen); the last batch is padded to the batch size so
            nothing recompiles. Compiling costs ~10-30 s cold, so it pays only on large sets (see
            ``benchmarks/extract.py``, rows ``compile``, ``frozen``, ``frozen-warm``).
        interpolation: resize filter; ``bilinear`` is the official extraction's (``evaluation/transforms.Resize``).
        jpeg_draft: decode JPEGs at reduced size (a power-of-two DCT downscale to >= the input size): faster
            decoding, slightly different pixels.

    Returns:
        the output path.
    """
    output = Path(output)
    _check_args(output, input_size, n_last_blocks, batch_size, num_workers, tta, interpolation)
    compile_mode(compile)  # a bad mode is refused before anything is read
    reuse_large_allocations()
    dist_info = init_distributed(resolve_device(device))
    dev = resolve_device(device, dist_info.local_rank)
    enc = resolve_encoder(weights, modality, device=dev)
    n_last_blocks = _last_blocks(n_last_blocks, enc)
    precision = _resolve_extract_precision(precision, dev)
    if precision == "int8" and (compile_mode(compile) != "none" or enc.cfg.layer_scale):
        raise UserError("precision int8 runs eagerly on plain ViTs: no --compile, no layer-scale (DINOv2) encoders")
    enc = enc.to(dev).eval()
    coll = data if isinstance(data, ImageCollection) else scan(data, layout, split or "training", label_columns)
    scanned_here = not isinstance(data, ImageCollection)  # a given collection's split is unknown unless stated
    split = split if split is not None else ("training" if coll.layout == "vfm" and scanned_here else "")
    prep = Preprocess(input_size or 224, enc.info.mean, enc.info.std, interpolation)
    d, n = enc.cfg.embed_dim, len(coll)
    labels = coll.label_matrix() if coll.has_labels else None
    shapes = {"cls": ((n, n_last_blocks * d), np.float32), "patch_mean": ((n, d), np.float32)}
    if labels is not None:
        shapes["labels"] = (labels.shape, np.float32)
    with OutputLock(output) if dist_info.is_main else nullcontext():
        tmp = _shared_tmp_name(output)
        meta = _meta(enc, coll, n_last_blocks, prep, tta, precision, split, jpeg_draft)
        if precision == "int8":  # the images whose activation ranges set the int8 scales, and the smoothing
            from .models.vit_int8 import SMOOTH_ALPHA

            meta["int8_calibration"] = json.dumps([s.rel for s in coll.samples[:INT8_CALIBRATION_IMAGES]])
            meta["int8_smoothing_alpha"] = str(SMOOTH_ALPHA)
        rows = RowFile.create(output, tmp, shapes, meta) if dist_info.is_main else None
        barrier()
        rows = rows or RowFile.attach(output, tmp, shapes)  # every rank reads the header rank 0 wrote
        try:
            _encode_into(
                rows,
                enc,
                coll,
                prep,
                dist_info,
                dev,
                batch_size,
                num_workers,
                n_last_blocks,
                tta,
                precision,
                jpeg_draft,
                progress,
                compile,
            )
            if labels is not None and dist_info.is_main:
                rows.write_all("labels", labels.astype(np.float32))
            barrier()
            if dist_info.is_main:
                rows.publish()  # the finished file appears whole, or not at all
                log.info(
                    "wrote %d x %s features to %s (%s, %s resize)",
                    n,
                    shapes["cls"][0][1],
                    output,
                    precision,
                    interpolation,
                )
            else:
                rows.close()
        except BaseException:
            if dist_info.is_main:
                rows.abort()
            else:
                rows.close()
            raise
    barrier()
    return output


def _encode_into(
    rows: RowFile,
    run_enc,
    coll: ImageCollection,
    prep: Preprocess,
    dist_info,
    dev: torch.device,
    batch_size: int,
    num_workers: int,
    n_last_blocks: int,
    tta: str,
    precision: str,
    jpeg_draft: bool,
    progress: bool,
    compile: bool | str = False,
) -> None:
    """Decode (in ``num_workers`` processes, prefetching) and encode this rank's samples into ``rows``."""
    mine = list(range(dist_info.rank, len(coll), dist_info.world_size))
    dataset = Subset(ImageDataset(coll.samples, prep, draft=prep.size if jpeg_draft else None), mine)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    bar = tqdm(total=len(mine), desc="extract", unit="img", disable=not (progress and dist_info.is_main))
    mode = compile_mode(compile)
    batches = iter(loader)  # the decoding workers start now, so they prefetch while the encoder is prepared
    if precision == "int8":
        run_enc = _int8_encoder(run_enc, coll, prep, jpeg_draft)
    # bf16: weights cast once, not by autocast in every forward; eager on the CPU: oneDNN-packed, fused
    run_enc = cast_encoder(run_enc, precision, packed=mode == "none" and dev.type == "cpu" and cpu_has_native_bf16())
    if mode == "frozen":
        run_enc = frozen_features(run_enc, n_last_blocks)
    with compiled_blocks(run_enc, mode == "blocks"):
        for x, idx in batches:
            n = len(idx)
            if mode != "none" and n < batch_size:  # pad the last batch: a new shape would compile again
                x = torch.cat([x, x[:1].expand(batch_size - n, *x.shape[1:])])
            cls, patch = encode_batch(run_enc, x.to(dev, non_blocking=True), n_last_blocks, tta, precision)
            rows.write_rows("cls", idx.numpy(), cls[:n].cpu().numpy())
            rows.write_rows("patch_mean", idx.numpy(), patch[:n].cpu().numpy())
            bar.update(n)
    bar.close()


def load_features(path: str | Path) -> FeatureSet:
    """Read a features file written by :func:`extract_features`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            if "visionfm_features" not in meta:
                raise UserError(f"{path}: not a visionfm features file (no 'visionfm_features' metadata)")
            if meta.get("volume_features") == "1":
                raise UserError(
                    f"{path}: holds per-B-scan features of volumes; train on it with 'visionfm volumes "
                    f"train' (visionfm.volumes.load_volume_features)"
                )
            t = {k: f.get_tensor(k) for k in f.keys()}  # safe_open is not iterable
    except (OSError, RuntimeError) as e:  # safetensors raises for truncated or foreign files
        raise UserError(f"{path}: not a readable safetensors features file ({e})") from None
    meta.setdefault("interpolation", "bicubic")  # files written before the choice was recorded were bicubic
    meta.setdefault("split", "")
    return FeatureSet(t["cls"], t["patch_mean"], t.get("labels"), json.loads(meta["paths"]), meta)
