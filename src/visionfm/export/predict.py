"""``predict --backend onnxruntime``: a recognition run applied to a folder or manifest through its ONNX export.

The images are read and preprocessed exactly as the torch path does (the run's input size, resize filter,
normalisation, fine-tuned runs' crop), the encoder + head run under ONNX Runtime, and the CSV is written by the
recognition package's own writer, so both backends give the same file layout (and, checked by the tests, the same
probabilities to 1e-4). The ONNX file must have been exported from this run as it is now (SHA-256 of its files).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..recognition.predict import read_intervals
from .onnx import OnnxModel, export_onnx, load_onnx
from .pipelines import ModelCard, preprocess_image

__all__ = ["predict_onnx"]

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
            feed = {"image": np.stack([preprocess_image(card, read_image(s.path)) for s in chunk])}
            if t is not None:
                feed["interval_days"] = t[a : a + len(chunk)]
            scores.append(model.run(feed)[0])
    out = write_split_predictions(
        Path(output_csv), task, [s.rel for s in coll.samples], np.concatenate(scores).astype(np.float64), None
    )
    log.info("%d predictions (%s, onnxruntime) -> %s", len(coll), card.kind, out)
    return out
