"""A served model: a loaded run with a backend (eager PyTorch or ONNX Runtime), batch functions for the batcher,
and the turn of raw outputs into answers (probabilities, values, landmarks, masks, attention overlays).

Batch functions run on the batcher's worker thread; everything per image (preprocessing, upsampling masks to the
original resolution, PNG encoding) runs in the request's thread-pool thread.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..export import LoadedModel, ModelCard, export_onnx, load_model, load_onnx, preprocess_image

__all__ = ["ServedModel", "load_served", "png_base64", "png_bytes"]

log = logging.getLogger(__name__)
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def png_bytes(arr: np.ndarray) -> bytes:
    """A ``[H, W]`` or ``[H, W, 3]`` uint8 array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_base64(arr: np.ndarray) -> str:
    return base64.b64encode(png_bytes(arr)).decode("ascii")


def _rgb8(img: np.ndarray) -> np.ndarray:
    return img if img.dtype == np.uint8 else np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _cast_matmul_weights(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store the Linear / Conv weights in ``dtype`` once: autocast would cast them to it at every forward anyway
    (same values, so the answers are those of plain autocast), and that per-forward cast is a fixed cost that made
    one image at a time look worse than it is."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.to(dtype)


_SUMMARY_KEYS = ("name", "kind", "run", "encoder_sha256", "arch", "backend", "precision")


def _run_precision(card: ModelCard) -> str:
    """``--precision run``: the precision a recognition or volume run's features were extracted with (int8
    extraction has no served counterpart: fp32), fp32 for every other run."""
    return card.precision if card.precision in ("fp32", "bf16", "fp16") else "fp32"


# kinds whose features come from ``extract`` (or ``extract --volumes``): the fused bf16 model on native-bf16 CPUs
_FUSED_KINDS = ("classify", "multilabel", "regress", "forecast", "encoder", "volume")


def feature_encoder(model: LoadedModel, device: torch.device, precision: str) -> torch.nn.Module | None:
    """The encoder the service computes a run's features with: at bf16 on a CPU with native bf16, the fused copy
    ``extract`` runs (:class:`visionfm.models.vit_fused.PackedBf16ViT`: the same kernels, so served features equal
    the run's training features), else the loaded encoder. Call before :func:`_torch_runner` casts weights."""
    from ..engine.precision import cpu_has_native_bf16
    from ..models.inference import cast_encoder

    enc = model.encoder
    if precision != "bf16" or device.type != "cpu" or enc is None or model.card.kind not in _FUSED_KINDS:
        return enc
    return cast_encoder(enc, "bf16", packed=cpu_has_native_bf16())


def _torch_runner(
    model: LoadedModel, device: torch.device, precision: str = "fp32", features: torch.nn.Module | None = None
) -> Runner:
    """Eager PyTorch; ``bf16``: one autocast forward per batch (matmuls in bf16, outputs returned as float32), or,
    where the pipeline can take another encoder, the encoder part through ``features`` (:func:`feature_encoder`'s
    fused model) and the head in float32: exactly what ``predict`` computes from the run's features."""
    from ..features import autocast_context

    names = model.card.inputs
    module = model.module
    fused = features is not None and features is not model.encoder and hasattr(module, "with_encoder")
    if fused:  # the fused encoder keeps its own precision; the head runs in float32, as it was trained
        module = module.with_encoder(features)
    if precision != "fp32":  # a volume classifier's MIL head runs in float32 after the encoder: encoder only
        target = model.encoder if model.card.kind == "volume" or fused else model.module
        _cast_matmul_weights(target, torch.bfloat16 if precision == "bf16" else torch.float16)

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode(), autocast_context(device, "fp32" if fused else precision):
            out = module(*[torch.from_numpy(inputs[k]).to(device) for k in names])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]

    return run


class ServedModel:
    """One model of the service.

    Args:
        loaded: the run loaded in PyTorch (its encoder draws attention maps whatever the backend).
        runner: ``{input name: [B, ...]}`` -> outputs ``[B, ...]``.
        backend: ``torch`` or ``onnxruntime``.
        onnx_path: the ONNX file served (onnxruntime backend).
        features: the encoder features are computed with (embeddings, volumes): :func:`feature_encoder`'s choice;
            default the loaded encoder.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        runner: Runner,
        backend: str,
        onnx_path: str = "",
        precision: str = "fp32",
        features: torch.nn.Module | None = None,
    ) -> None:
        self.loaded, self.card, self.runner = loaded, loaded.card, runner
        self.backend, self.onnx_path, self.precision = backend, onnx_path, precision
        self.features = features if features is not None else loaded.encoder
        self.device = next(loaded.module.parameters()).device
        self._text_lock = threading.Lock()  # the tokenizer is not thread-safe; class embeddings are cached
        self._class_cache: dict[tuple, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return self.card.name

    def summary(self) -> dict[str, Any]:
        """The model's identity in every answer (shortened :meth:`identity`)."""
        return {k: v for k, v in self.identity().items() if k in _SUMMARY_KEYS}

    def identity(self) -> dict[str, Any]:
        """What a client sees of the model: name, task, outputs, encoder identity, preprocessing, backend."""
        c = self.card
        return {
            "name": c.name,
            "kind": c.kind,
            "outputs": c.names,
            "run": c.source,
            "encoder_sha256": c.encoder_sha256,
            "arch": c.arch,
            "modality": c.modality,
            "files": c.files,
            "backend": self.backend,
            "precision": self.precision,
            "onnx": self.onnx_path or None,
            "inputs": c.inputs,
            "preprocessing": {
                "input_size": c.input_size,
                "max_side": c.max_side,
                "resize": c.resize,
                "mean": c.mean,
                "std": c.std,
                "jpeg_draft": c.draft_side() is not None,  # JPEGs draft-decoded as the run's features were
            },
            "explain": self.loaded.encoder is not None,
            **({"zero_shot": self._vl_facts()} if c.kind == "vl" else {}),
            **({"thresholds": c.thresholds or [0.5] * len(c.names)} if c.kind == "segment" else {}),
        }

    # -- vision-language (zero-shot from class names) ---------------------------------------------------------------
    def _vl_facts(self) -> dict[str, Any]:
        vl = self.loaded.vl
        return {
            "text_encoder": vl.info["text_encoder"]["name"],
            "knowledge_version": vl.knowledge.version,
            "known_categories": sorted(vl.knowledge.categories),
            "logit_scale": vl.model.logit_scale,
        }

    def class_embeddings(self, classes: Sequence[str], domain_knowledge: bool) -> torch.Tensor:
        """``[C, E]`` prompt-ensemble embeddings of class names (cached: a class list is embedded once)."""
        key = (tuple(classes), bool(domain_knowledge))
        with self._text_lock:
            if key not in self._class_cache:
                if len(self._class_cache) > 256:  # bounded: clients may send any class names
                    self._class_cache.clear()
                self._class_cache[key] = self.loaded.vl.class_embeddings(list(classes), domain_knowledge)
            return self._class_cache[key]

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings ``[T, E]`` of raw texts (:meth:`visionfm.vl.VLRun.encode_text`)."""
        with self._text_lock:
            return self.loaded.vl.encode_text(list(texts)).float().cpu().numpy()

    def zeroshot(self, embedding: np.ndarray, classes: Sequence[str], domain_knowledge: bool) -> dict[str, Any]:
        """A unit image embedding ``[E]`` -> class probabilities (softmax of the scaled cosine similarities), as
        :meth:`visionfm.vl.VLRun.zeroshot` computes them."""
        txt = self.class_embeddings(classes, domain_knowledge)
        with torch.no_grad():
            img = torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None].to(txt.device)
            probs = self.loaded.vl.model.logits(img, txt).softmax(-1)[0].tolist()
        out = dict(zip(classes, probs))
        return {"probabilities": out, "prediction": max(out, key=out.get), "domain_knowledge": bool(domain_knowledge)}

    # -- inference (worker thread) ---------------------------------------------------------------------------------
    def prepare(self, img: np.ndarray, interval_days: float | None = None) -> dict[str, np.ndarray]:
        """One image (a volume: ``[N, H, W, 3]`` B-scans) -> its model inputs (unbatched)."""
        if self.card.kind == "volume":
            return {"image": np.stack([preprocess_image(self.card, b) for b in img])}
        x = {"image": preprocess_image(self.card, img)}
        if "interval_days" in self.card.inputs:
            x["interval_days"] = np.asarray(interval_days, dtype=np.float32)
        return x

    def run_batch(self, payloads: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Batch function: stacked inputs -> one forward -> per-payload output rows."""
        if self.card.kind == "volume":
            return [self._volume(p["image"]) for p in payloads]
        inputs = {k: np.stack([p[k] for p in payloads]) for k in payloads[0]}
        outs = self.runner(inputs)
        return [[o[i] for o in outs] for i in range(len(payloads))]

    def _volume(self, bscans: np.ndarray, chunk: int = 32) -> list:
        """One volume's B-scans ``[N, 3, S, S]`` -> the classifier's decision, from features extracted exactly as
        ``extract --volumes`` does (:func:`visionfm.features.encode_batch`, the service's precision, no TTA);
        onnxruntime: the exported volume graph (encoder + the same head) gives the head's logits and relevance."""
        if self.backend == "onnxruntime":
            logits, rel = self.runner({"image": bscans})
            return [self.loaded.volume_head.decide(logits[0], rel[0])]
        from ..features import encode_batch

        x = torch.from_numpy(bscans).to(self.device)
        feats = [
            encode_batch(self.features, x[a : a + chunk], self.card.n_last_blocks, "none", self.precision)
            for a in range(0, len(x), chunk)
        ]
        bag = torch.cat([f[0] if self.card.feature == "cls" else f[1] for f in feats]).cpu().numpy()
        return [self.loaded.volume_head.predict_bag(bag)]

    def explain_batch(self, payloads: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batch function: normalised images ``[3, S, S]`` -> (merged last-block map, rollout) on the patch grid."""
        from ..explain import attention_maps
        from ..features import autocast_context

        x = torch.from_numpy(np.stack(payloads)).to(self.device)
        with autocast_context(self.device, self.precision):
            maps = attention_maps(self.loaded.encoder, x)
        return [
            (maps.mean[i].float().cpu().numpy(), maps.rollout[i].float().cpu().numpy()) for i in range(len(payloads))
        ]

    def explain_input(self, img: np.ndarray) -> np.ndarray:
        """The square input the attention is drawn from (the run's size, else the encoder's training size)."""
        from ..data.images import Preprocess

        if self.card.kind not in ("segment", "landmark"):  # the model's own input (crop of fine-tuned runs too)
            return preprocess_image(self.card, img)
        size = int(self.card.input_size or self.loaded.encoder.cfg.img_size)
        return Preprocess(size, self.card.mean, self.card.std, self.card.resize)(img).numpy()

    # -- answers (request threads) -----------------------------------------------------------------------------------
    def describe(self, row: list[np.ndarray], img: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
        """Raw outputs of one image -> the JSON answer of ``/v1/predict``."""
        kind, names = self.card.kind, self.card.names
        if kind == "encoder":
            return {"features": {"cls": row[0].tolist(), "patch_mean": row[1].tolist()}}
        if kind == "volume":
            r = row[0]
            return {
                "probabilities": r["probs"],
                "prediction": r["prediction"],
                "n_bscans": len(r["relevance"]),
                "driving_bscan": r["driving_bscan"],
                "relevance": r["relevance"],
            }
        if kind == "regress":
            return {"values": {n: float(v) for n, v in zip(names, row[0])}}
        if kind in ("classify", "forecast", "multilabel"):
            probs = {n: float(p) for n, p in zip(names, row[0])}
            out: dict[str, Any] = {"probabilities": probs}
            if kind == "multilabel":
                out["positive"] = [n for n, p in probs.items() if p >= (0.5 if threshold is None else threshold)]
            else:
                out["prediction"] = max(probs, key=probs.get)
            return out
        if kind == "landmark":
            return {"landmarks": self.landmarks(row[0], img.shape[:2])}
        masks = self.masks(row[0], img, threshold)
        return {"pixel_fraction": {n: float(m.mean()) for n, m in zip(names, masks)}}

    def probabilities(self, logits: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Segmentation logits ``[K, h, w]`` -> probabilities ``[K, H, W]`` at the original size: logits are
        upsampled, then the sigmoid (and nesting), as ``segment predict`` does."""
        t = torch.from_numpy(np.ascontiguousarray(logits))[None]
        prob = torch.sigmoid(F.interpolate(t, size=hw, mode="bilinear", align_corners=False))[0]
        if self.card.nested:
            prob = torch.cummin(prob, dim=0).values
        return prob.numpy()

    def masks(self, logits: np.ndarray, img: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Boolean masks ``[K, H, W]``; background outside the estimated field of view of fundus runs.

        ``threshold`` None: the run's per-class thresholds chosen on validation, else 0.5 (as ``segment predict``).
        """
        if threshold is None:
            threshold = np.asarray(self.card.thresholds or [0.5] * len(self.card.names), np.float32)[:, None, None]
        pred = self.probabilities(logits, img.shape[:2]) > threshold
        if self.card.fov == "estimate":
            from ..dense.fov import estimate_fov

            pred &= estimate_fov(_rgb8(img))[None]
        return pred

    def landmarks(self, logits: np.ndarray, hw: tuple[int, int]) -> dict[str, list[float]]:
        """Heatmap logits ``[K, S, S]`` -> ``{name: [x, y]}`` in original pixels (argmax + sub-pixel refinement)."""
        from ..dense.landmarks import argmax_subpixel, heatmap_from_logits, scale_points

        s = self.card.input_size
        pts = argmax_subpixel(heatmap_from_logits(torch.from_numpy(logits)[None]))[0].double().numpy()
        orig = scale_points(pts, (s, s), hw)
        return {n: [float(x), float(y)] for n, (x, y) in zip(self.card.names, orig)}

    def segmentation_overlay(self, img: np.ndarray, masks: np.ndarray) -> np.ndarray:
        from ..dense.segment import overlay

        return overlay(_rgb8(img), masks)


def _display(img: np.ndarray, side: int) -> np.ndarray:
    """The image as uint8, scaled down so its longer side is at most ``side``."""
    im = _rgb8(img)
    h, w = im.shape[:2]
    if max(h, w) <= side:
        return im
    s = side / max(h, w)
    return np.asarray(Image.fromarray(im).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


def heat_overlay(img: np.ndarray, heat: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(the display image, the heat map blended over it) for a patch-grid map."""
    from ..explain import overlay

    disp = _display(img, side)
    return disp, overlay(disp, torch.from_numpy(heat))


def _onnx_runner(loaded: LoadedModel, onnx_file: str | None, threads: int, workdir: Path) -> tuple[Runner, str]:
    """The ONNX Runtime runner of a run: the given file (checked against the run's files) or a fresh export."""
    if onnx_file:
        model = load_onnx(onnx_file, threads)
        if model.card.files != loaded.card.files or model.card.kind != loaded.card.kind:
            raise ValueError(
                f"{onnx_file} was exported from {model.card.source} ({model.card.kind}), not from "
                f"{loaded.card.source} as it is now (SHA-256 of its files differ)"
            )
        path = onnx_file
    else:
        path = str(workdir / f"{loaded.card.name}.onnx")
        export_onnx(loaded.card.source, path)
        model = load_onnx(path, threads)
    return model.run, path


def load_served(
    sources: Sequence[str],
    backend: str = "torch",
    device: str = "cpu",
    threads: int = 0,
    onnx: Sequence[str] = (),
    workdir: str | Path | None = None,
    precision: str = "run",
) -> dict[str, ServedModel]:
    """Load every run to serve, named after its folder (parent folder added when two names clash).

    Raises:
        ValueError / FileNotFoundError: a source that is not a run or weights file, an ONNX file of another run.
    """
    from ..distributed import resolve_device
    from ..features import resolve_precision

    dev = resolve_device(device)
    fixed = None if precision == "run" else resolve_precision(precision, torch.device(dev))
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="visionfm-serve-"))
    out: dict[str, ServedModel] = {}
    for i, src in enumerate(sources):
        loaded = load_model(src, dev if backend == "torch" else "cpu")
        name = loaded.card.name
        if name in out:
            name = f"{Path(src).resolve().parent.name}-{name}"
            loaded.card.name = name
        if name in out:
            raise ValueError(f"two runs are both named {name!r}: {out[name].card.source} and {src}")
        if backend == "onnxruntime":
            runner, path = _onnx_runner(loaded, onnx[i] if onnx else None, threads, work)
            out[name] = ServedModel(loaded, runner, backend, path)
        else:
            p = fixed or _run_precision(loaded.card)
            feats = feature_encoder(loaded, torch.device(dev), p)
            runner = _torch_runner(loaded, torch.device(dev), p, feats)
            out[name] = ServedModel(loaded, runner, backend, precision=p, features=feats)
        log.info("serving %s (%s, %s backend) from %s", name, loaded.card.kind, backend, src)
    if not out:
        raise ValueError("no runs to serve: pass --run RUN (a run folder or encoder weights file)")
    return out
