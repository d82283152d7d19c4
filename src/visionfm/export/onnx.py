"""ONNX export of a run (encoder + head, dense model, or encoder alone), checked against PyTorch when written.

``export_onnx`` traces the run's inference module (:mod:`visionfm.export.pipelines`) with a dynamic batch axis and
the run's input size, runs the same check images through PyTorch and ONNX Runtime (batch sizes 1 and N, so the
dynamic axis is exercised), and refuses to write a file whose largest absolute difference exceeds the tolerance.
Beside ``model.onnx`` goes ``model.onnx.json``: the model card (identity, task, outputs, preprocessing), the
SHA-256 of every source file and of the ONNX file, the check's images and its maximum error, and the versions used.

The ViT's attention runs through ``scaled_dot_product_attention``, which the TorchScript exporter lowers to plain
MatMul / Softmax nodes (opset >= 17); the dynamo exporter is not used (``dynamo=False``). The graph's image size
is fixed (only the batch axis is dynamic), so a ViT run at a size other than its training size gets its position
embeddings interpolated once, for that size, and stored as a constant (:func:`_fixed_pos_embed`): tracing the
interpolation itself fails (the tracer makes the patch grid a tensor, which the bicubic scale factor cannot take).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write, file_sha256
from .pipelines import LoadedModel, ModelCard, load_model, preprocess_image

__all__ = ["MIN_OPSET", "ExportResult", "OnnxModel", "check_images", "export_onnx", "load_onnx", "sidecar_path"]

log = logging.getLogger(__name__)
MIN_OPSET = 17


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote: the ONNX file, its sidecar JSON and the parity check's maximum error."""

    path: Path
    sidecar: Path
    max_abs_error: float
    info: dict[str, Any]


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def check_images(
    card: ModelCard, images: Sequence[str | Path] | None = None, n: int = 4, seed: int = 0
) -> tuple[list[np.ndarray], list[str]]:
    """Images for the parity check: the given files (folders are searched) or ``n`` generated fundus phantoms.
    Volume classifiers: the images are the B-scans of one check volume (a given volume, multi-frame DICOM or
    vendor file, is read whole; default ``n`` generated OCT B-scans).

    Returns:
        (RGB images ``[H, W, 3]``, their names).
    """
    from ..data import read_image

    if card.kind == "volume":
        return _check_bscans(card, images, n, seed)
    if images:
        from ..explain import collect_images

        paths = collect_images([str(p) for p in images])[: max(n, 1)]
        return [read_image(p) for p in paths], [str(p) for p in paths]
    from ..toydata.writers import generate

    side = card.input_size or 128
    imgs = [generate("fundus-dr", i, seed=seed, size=side)[0].image for i in range(n)]
    return imgs, [f"generated fundus phantom {i} ({side} px, seed {seed})" for i in range(n)]


def _check_bscans(
    card: ModelCard, images: Sequence[str | Path] | None, n: int, seed: int
) -> tuple[list[np.ndarray], list[str]]:
    """The check volume of a volume classifier: a given volume (its first ``max(n, 8)`` B-scans), given B-scan
    images (folders searched), or ``n`` generated OCT B-scans."""
    from ..data import read_image
    from ..volumes.io import EYEPY_READERS, _is_multiframe_dicom, read_volume

    if not images:
        from ..toydata.writers import generate

        side = card.input_size or 128
        imgs = [generate("oct-dme", i, seed=seed, size=side)[0].image for i in range(n)]
        return imgs, [f"generated OCT B-scan {i} ({side} px, seed {seed})" for i in range(n)]
    first = Path(images[0])
    if first.is_file() and (first.suffix.lower() in EYEPY_READERS or _is_multiframe_dicom(first)):
        vol = read_volume(first)
        k = min(len(vol), max(n, 8))
        return list(vol.bscans[:k]), [f"{first}#{b}" for b in range(k)]
    from ..explain import collect_images

    paths = collect_images([str(p) for p in images])[: max(n, 1)]
    return [read_image(p) for p in paths], [str(p) for p in paths]


def _example_inputs(card: ModelCard, imgs: list[np.ndarray]) -> dict[str, np.ndarray]:
    x = np.stack([preprocess_image(card, im) for im in imgs]).astype(np.float32)
    inputs = {"image": x}
    if "interval_days" in card.inputs:
        inputs["interval_days"] = np.linspace(90.0, 720.0, len(imgs), dtype=np.float32)
    return inputs


def _output_names(card: ModelCard) -> list[str]:
    if card.kind == "encoder":
        return ["cls", "patch_mean"]
    if card.kind == "vl":
        return ["embedding"]  # unit image embeddings; the classes are text, embedded by the serving side
    if card.kind == "volume":
        return ["logits", "relevance"]  # one volume per call: [1, C] and [1, N]; the batch axis is the B-scans
    return ["logits"] if card.kind in ("segment", "landmark") else ["scores"]


def _torch_outputs(model: LoadedModel, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = model.module(*[torch.from_numpy(inputs[k]) for k in model.card.inputs])
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().numpy() for o in out]


def _dynamic_axes(card: ModelCard) -> dict[str, dict[int, str]]:
    """Axis 0 of every input and output is the batch; a volume classifier's batch is one volume's B-scans."""
    if card.kind == "volume":
        return {"image": {0: "bscans"}, "relevance": {1: "bscans"}}
    return {k: {0: "batch"} for k in card.inputs + _output_names(card)}


def _grids_seen(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> dict[Any, set[tuple[int, int]]]:
    """The patch grids (rows, cols) each ViT inside ``module`` tokenises in one forward over ``args`` (recorded at
    ``prepare_tokens``, which the ViT's own forward and the dense backbones both call)."""
    from ..models import VisionTransformer

    seen: dict[Any, set[tuple[int, int]]] = {}
    for vit in (m for m in module.modules() if isinstance(m, VisionTransformer)):
        grids = seen.setdefault(vit, set())

        def record(x, *a, _vit=vit, _grids=grids, **kw):
            p = _vit.cfg.patch_size
            _grids.add((int(x.shape[-2]) // p, int(x.shape[-1]) // p))
            return type(_vit).prepare_tokens(_vit, x, *a, **kw)

        vit.prepare_tokens = record  # an instance attribute for this one pass, removed below
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for vit in seen:
            del vit.prepare_tokens
    return seen


@contextmanager
def _fixed_pos_embed(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Iterator[None]:
    """While tracing: each ViT's position embeddings replaced by their interpolation to the one patch grid it sees
    at the export size (the official rule, its own ``pos_interp`` mode), so the model adds them as they are.

    The values are exactly those PyTorch computes on every call (same function, same inputs), and the exported
    graph's image size is fixed anyway (only the batch axis is dynamic). A ViT at its training grid is untouched.
    """
    from ..models import interpolate_pos_embed

    saved = []
    for vit, grids in _grids_seen(module, args).items():
        (rows, cols), n = next(iter(grids), (0, 0)), vit.pos_embed.shape[1] - 1
        if len(grids) != 1 or rows != cols or rows * cols == n:  # one square grid other than the training one
            continue
        with torch.no_grad():
            fixed = interpolate_pos_embed(vit.pos_embed, rows, cols, mode=vit.cfg.pos_interp)
        saved.append((vit, vit.pos_embed))
        vit.pos_embed = torch.nn.Parameter(fixed.detach().clone(), requires_grad=False)
    try:
        yield
    finally:
        for vit, pos in saved:
            vit.pos_embed = pos


def _trace(model: LoadedModel, inputs: dict[str, np.ndarray], path: Path, opset: int) -> None:
    names = model.card.inputs
    outs = _output_names(model.card)
    dynamic = _dynamic_axes(model.card)
    args = tuple(torch.from_numpy(inputs[k]) for k in names)
    with warnings.catch_warnings(), torch.no_grad(), _fixed_pos_embed(model.module, args):
        warnings.simplefilter("ignore")  # tracer warnings on Python branches over fixed shapes (patch grid)
        torch.onnx.export(
            model.module,
            args,
            str(path),
            input_names=names,
            output_names=outs,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _max_error(session: OnnxModel, model: LoadedModel, inputs: dict[str, np.ndarray]) -> float:
    """Largest |torch - ORT| over the whole batch and over the first image alone (batch 1)."""
    worst = 0.0
    for sub in (inputs, {k: v[:1] for k, v in inputs.items()}):
        ref = _torch_outputs(model, sub)
        got = session.run(sub)
        for r, g in zip(ref, got):
            if r.shape != g.shape:
                raise UserError(f"ONNX output shape {g.shape} differs from PyTorch {r.shape}")
            worst = max(worst, float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))))
    return worst


def export_onnx(
    source: str | Path,
    output: str | Path,
    encoder_only: bool = False,
    images: Sequence[str | Path] | None = None,
    opset: int = MIN_OPSET,
    tolerance: float = 1e-4,
    weights: str | None = None,
    modality: str | None = None,
    input_size: int | None = None,
    n_check: int = 4,
) -> ExportResult:
    """Export a run (or an encoder weights file) to ONNX and check it against PyTorch.

    Args:
        source: a recognition, dense, OCT-volume or vision-language run folder, or an encoder weights file
            (a volume classifier exports as one graph: one volume's B-scans ``[N, 3, S, S]`` -> logits ``[1, C]``
            and relevance ``[1, N]``).
        output: the ``.onnx`` file to write (its sidecar ``.onnx.json`` goes beside it).
        encoder_only: export the run's encoder alone (features), not its outputs.
        images: check images (files or folders); default generated fundus phantoms.
        opset: ONNX opset (>= 17).
        tolerance: the largest absolute difference from PyTorch accepted.
        weights, modality: as for :func:`~visionfm.export.load_model`.
        input_size: encoder files only: square input side (default the encoder's).

    Raises:
        UserError: a run that cannot be exported (native-resolution dense runs), bad options, or a parity check
            that fails (nothing is written then).
    """
    output = Path(output)
    if output.suffix != ".onnx":
        raise UserError(f"--output {output}: ONNX files end in .onnx")
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset}: the ViT export needs opset {MIN_OPSET} or newer")
    model = load_model(source, "cpu", weights, modality, encoder_only, input_size)
    card = model.card
    if card.input_size is None:
        raise UserError(
            f"{source}: the run predicts whole images at their native resolution (trained with "
            f"--crop); ONNX export needs a fixed input size (serve it with the torch backend)"
        )
    imgs, names = check_images(card, images, n_check)
    inputs = _example_inputs(card, imgs)
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        tmp_onnx = Path(tmp) / output.name
        _trace(model, inputs, tmp_onnx, opset)
        err = _max_error(OnnxModel(tmp_onnx, card), model, inputs)
        if not err <= tolerance:
            raise UserError(
                f"{source}: ONNX output differs from PyTorch by {err:.3g} > tolerance {tolerance:g} "
                f"on {len(imgs)} check images; nothing written"
            )
        info = _sidecar(card, tmp_onnx, output, err, tolerance, names, opset, _output_names(card))
        os.replace(tmp_onnx, output)
    side = sidecar_path(output)
    with atomic_write(side) as t:
        Path(t).write_text(json.dumps(info, indent=2))
    log.info(
        "exported %s -> %s in %.1f s; max |onnx - torch| = %.2e on %d images",
        source,
        output,
        time.perf_counter() - t0,
        err,
        len(imgs),
    )
    return ExportResult(output, side, err, info)


def _sidecar(
    card: ModelCard,
    tmp_onnx: Path,
    output: Path,
    err: float,
    tol: float,
    names: list[str],
    opset: int,
    outputs: list[str],
) -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "visionfm_onnx": 1,
        "model": card.to_dict(),
        "onnx_file": output.name,
        "onnx_sha256": file_sha256(tmp_onnx),
        "source_sha256": card.files,
        "inputs": card.inputs,
        "outputs": outputs,
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in _dynamic_axes(card).items()},
        "opset": opset,
        "preprocessing": {
            "input_size": card.input_size,
            "resize": card.resize,
            "scale": "1/255 (8-bit) or [0, 1] (deeper)",
            "mean": card.mean,
            "std": card.std,
            "layout": "NCHW RGB float32",
        },
        "check": {"max_abs_error": err, "tolerance": tol, "images": names, "batch_sizes": [len(names), 1]},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }


class OnnxModel:
    """An exported model under ONNX Runtime (CPU): ``run({"image": [B, 3, S, S]}) -> [outputs]``.

    Args:
        path: the ``.onnx`` file.
        card: its model card (default: read from the sidecar JSON).
        threads: intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(self, path: str | Path, card: ModelCard | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.card = card if card is not None else ModelCard(**_read_sidecar(self.path)["model"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {k: np.ascontiguousarray(inputs[k], dtype=np.float32) for k in self.input_names}
        return self.session.run(None, feed)


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side} not found: ONNX files are read with the sidecar visionfm export writes")
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("visionfm_onnx") != 1:
        raise UserError(f"{side}: not a visionfm ONNX sidecar")
    return info


def load_onnx(path: str | Path, threads: int = 0, verify: bool = True) -> OnnxModel:
    """An exported model with its card; ``verify`` checks the file's SHA-256 against the sidecar.

    Raises:
        FileNotFoundError: no file or sidecar; UserError: the file changed since export.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    info = _read_sidecar(path)
    if verify and file_sha256(path) != info["onnx_sha256"]:
        raise UserError(f"{path}: SHA-256 differs from the one recorded at export ({sidecar_path(path)})")
    return OnnxModel(path, ModelCard(**info["model"]), threads)
