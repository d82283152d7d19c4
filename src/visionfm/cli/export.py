"""``visionfm export``: a trained run (or an encoder) as an ONNX file, checked against PyTorch when written."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from . import command


@dataclass
class ExportConfig:
    """One export.

    Attributes:
        run: run folder (recognition, dense, OCT volume classifier, vision-language) or encoder weights file.
        format: output format.
        output: the file to write (``.onnx``; its sidecar ``.onnx.json`` goes beside it).
        encoder_only: export the run's encoder alone (features), not its outputs.
        images: check images (files or folders) for the parity check; default generated fundus phantoms.
        tolerance: largest absolute difference from PyTorch accepted.
        opset: ONNX opset (17 or newer).
        weights: the run's encoder weights, when no longer where the run recorded them (verified by SHA-256).
        modality: which encoder of a run trained over several modalities (or the modality of a weights file).
        input_size: encoder weights files: square input side (default the encoder's training size).
    """

    run: str = ""
    format: str = field(default="onnx", metadata={"choices": ("onnx",)})
    output: str = ""
    encoder_only: bool = False
    images: list[str] | None = None
    tolerance: float = 1e-4
    opset: int = 17
    weights: str | None = None
    modality: str | None = None
    input_size: int | None = None


def _configure(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args

    add_config_args(p, ExportConfig)


@command(
    "export",
    "Export a trained run (encoder + head, dense model) or an encoder to ONNX with a dynamic batch "
    "axis, checked against PyTorch (max error printed and stored in a sidecar JSON).",
    _configure,
)
def run(a: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..errors import UserError
    from ..export import export_onnx

    cfg = config_from_args(ExportConfig, a)
    if not cfg.run or not cfg.output:
        raise UserError("--run and --output are required")
    res = export_onnx(
        cfg.run,
        cfg.output,
        cfg.encoder_only,
        cfg.images,
        cfg.opset,
        cfg.tolerance,
        cfg.weights,
        cfg.modality,
        cfg.input_size,
    )
    card = res.info["model"]
    axis = "bscans of one volume" if card["kind"] == "volume" else "batch"
    print(
        f"wrote {res.path} ({card['kind']}, outputs {', '.join(res.info['outputs'])}, input "
        f"[{axis}, 3, {card['input_size']}, {card['input_size']}])"
    )
    print(
        f"max |onnx - torch| = {res.max_abs_error:.3e} on {len(res.info['check']['images'])} check images "
        f"(tolerance {cfg.tolerance:g}); sidecar {res.sidecar}"
    )
    return 0
