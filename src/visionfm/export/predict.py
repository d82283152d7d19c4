"""``predict --backend onnxruntime``: a recognition run applied to a folder or manifest through its ONNX export
(``volumes predict --backend onnxruntime``: an OCT volume classifier applied to volumes, one row per volume).

The images are read and preprocessed exactly as the torch path does (the run's input size, resize filter,
normalisation, fine-tuned runs' crop), the encoder + head run under ONNX Runtime, and the CSV is written by the
recognition package's own writer, so both backends give the same file layout (and, checked by the tests, the same
probabilities to 1e-4). The ONNX file must have been exported from this run as it is now (SHA-256 of its files).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..recognition.predict import read_intervals
from .onnx import OnnxModel, export_onnx, load_onnx
from .pipelines import ModelCard, preprocess_image

__all__ = ["predict_onnx", "predict_volumes_onnx"]

log = logging.getLogger(__name__)


def _check_source(model: OnnxModel, card: ModelCard, onnx: Path) -> None:
    if model.card.files != card.files or model.card.kind != card.kind:
        raise UserError(
            f"{onnx} was exported from {model.card.source} ({model.card.kind}), not from {card.source} "
            f"as it is now (SHA-256 of the run's files differ); export it again"
        )


def predict_onnx(
    run: str | Path,
    images: str | Path,
    output_csv: str | Path,
    onnx: str | Path | None = None,
    modality: str | None = None,
    layout: str = "auto",
    interval_column: str = "interval_days",
    batch_size: int = 32,
    threads: int = 0,
    weights: str | None = None,
) -> Path:
    """Apply a recognition run through ONNX Runtime: one CSV row per image, as ``visionfm predict`` writes.

    Args:
        run: the recognition run folder (its description names the classes and the CSV columns).
        images: image folder or CSV manifest (``path`` column; forecasting: also ``interval_column``).
        onnx: the run's exported ``.onnx`` (default: exported now into a temporary folder, parity-checked).
        threads: ONNX Runtime intra-op threads (0: its default).
        weights: the encoder weights, when no longer where the run recorded them (verified by SHA-256).

    Raises:
        UserError: an ONNX file of another run or of changed run files, a run that is not a recognition run.
    """
    from ..data import read_image, scan
    from ..recognition.reporting import write_split_predictions
    from ..recognition.runs import load_run
    from .pipelines import load_model

    loaded = load_model(run, "cpu", weights, modality)
    card = loaded.card
    if card.kind == "volume":
        return predict_volumes_onnx(run, images, output_csv, onnx, threads=threads, weights=weights)
    if card.kind not in ("classify", "multilabel", "regress", "forecast"):
        raise UserError(f"{run}: predict applies recognition runs; this is a {card.kind} run")
    task, _ = load_run(run)
    with tempfile.TemporaryDirectory() as tmp:
        if onnx is None:
            onnx = Path(tmp) / "model.onnx"
            export_onnx(run, onnx, weights=weights, modality=modality)
        model = load_onnx(onnx, threads)
        _check_source(model, card, Path(onnx))
        coll = scan(
            images,
            "csv" if str(images).endswith(".csv") else ("tree" if layout == "auto" else layout),
            label_columns=[],
        )
        t = read_intervals(coll.samples, interval_column, images) if "interval_days" in card.inputs else None
        scores = []
        for a in range(0, len(coll.samples), batch_size):
            chunk = coll.samples[a : a + batch_size]
            # JPEGs decoded as the run's features were (draft-decoded when its extraction was), as `predict` does
            imgs = [read_image(s.path, draft=card.draft_side()) for s in chunk]
            feed = {"image": np.stack([preprocess_image(card, im) for im in imgs])}
            if t is not None:
                feed["interval_days"] = t[a : a + len(chunk)]
            scores.append(model.run(feed)[0])
    out = write_split_predictions(
        Path(output_csv), task, [s.rel for s in coll.samples], np.concatenate(scores).astype(np.float64), None
    )
    log.info("%d predictions (%s, onnxruntime) -> %s", len(coll), card.kind, out)
    return out


def predict_volume_run(
    run: str | Path,
    output_csv: str | Path,
    backend: str = "torch",
    onnx: str | Path | None = None,
    **kwargs: Any,
) -> Path:
    """``volumes predict`` / ``predict`` on a volume classifier with either backend: ``torch`` ->
    :func:`visionfm.volumes.predict_volumes` (``kwargs``: features, data, weights, layout, device, num_workers);
    ``onnxruntime`` -> :func:`predict_volumes_onnx` on ``data`` (from image files only, not cached features)."""
    if backend == "torch":
        from ..volumes import predict_volumes

        return predict_volumes(run, output_csv, **kwargs)
    if backend != "onnxruntime":
        raise UserError(f"--backend {backend!r}: torch or onnxruntime")
    if kwargs.get("features") or not kwargs.get("data"):
        raise UserError("--backend onnxruntime runs the exported encoder on volumes: give --data, not --features")
    return predict_volumes_onnx(
        run, kwargs["data"], output_csv, onnx, layout=kwargs.get("layout", "auto"), weights=kwargs.get("weights")
    )


def predict_volumes_onnx(
    run: str | Path,
    data: str | Path,
    output_csv: str | Path,
    onnx: str | Path | None = None,
    layout: str = "auto",
    threads: int = 0,
    weights: str | Path | None = None,
) -> Path:
    """Apply an OCT volume classifier through its ONNX export: one CSV row per volume, as ``volumes predict``
    writes (columns of :func:`visionfm.volumes.train.volume_row`).

    Each volume is read by :func:`visionfm.volumes.read_volume`, its B-scans preprocessed as ``extract --volumes``
    did for the classifier's training features (input size, resize filter, normalisation from the run), and the
    exported graph (encoder + the run's MIL head, one volume per call) gives the logits and per-B-scan relevance
    that :meth:`visionfm.volumes.VolumeClassifier.decide` turns into the answer.

    Args:
        run: the volume classifier's run folder.
        data: a folder or CSV manifest of volumes (:func:`visionfm.volumes.scan_volumes`).
        onnx: the run's exported ``.onnx`` (default: exported now into a temporary folder, parity-checked).
        weights: the encoder, when no longer where the training features recorded it.
    """
    from ..volumes import read_volume, scan_volumes, volume_header
    from ..volumes.train import volume_row, write_volume_csv
    from .pipelines import load_model

    loaded = load_model(run, "cpu", None if weights is None else str(weights))
    card = loaded.card
    if card.kind != "volume":
        raise UserError(f"{run}: not an OCT volume classifier (a {card.kind} run)")
    coll = scan_volumes(data, layout)
    with tempfile.TemporaryDirectory() as tmp:
        if onnx is None:
            onnx = Path(tmp) / "volumes.onnx"
            export_onnx(run, onnx, weights=None if weights is None else str(weights))
        model = load_onnx(onnx, threads)
        _check_source(model, card, Path(onnx))
        rows = []
        for s in coll.samples:
            vol = read_volume(s.path)
            logits, rel = model.run({"image": np.stack([preprocess_image(card, b) for b in vol.bscans])})
            names = [f"{s.rel}#{k}" for k in range(len(vol))]
            decision = loaded.volume_head.decide(logits[0], rel[0])
            rows.append(volume_row(s.rel, decision, names, volume_header(s.path).get("laterality", "")))
    if not rows:
        raise UserError(f"{data}: no volumes found")
    out = write_volume_csv(rows, output_csv)
    log.info("%d volume predictions (onnxruntime) -> %s", len(rows), out)
    return out
