"""A trained run as one inference module: normalised images in, the run's outputs out.

The same module is what ``visionfm serve`` runs with the torch backend and what ``visionfm export`` traces to ONNX,
so both backends compute the same thing. A run is loaded through the packages' own loaders (recognition
``load_run`` + the verified encoder, dense ``load_run``), and described by a :class:`ModelCard`: its identity
(files and SHA-256), task, output names and the preprocessing a client image must go through.

Pipelines (every input ``image`` is ``[B, 3, S, S]`` normalised):

- recognition: encoder -> the run's feature (``cls`` / ``last`` / ``cls+patch``, flip TTA as extracted) -> head ->
  scores ``[B, C]`` (probabilities, or values in target units); forecasting adds ``interval_days [B]``.
- dense (segmentation, landmarks): logits ``[B, K, S, S]`` (sigmoid / spatial softmax are applied by the caller at
  the original resolution, as ``segment predict`` and ``landmark predict`` do).
- encoder alone: (CLS of the last n blocks ``[B, n*D]``, patch-token mean ``[B, D]``), the feature file's layout.
- OCT volume classifiers (:mod:`visionfm.export.volume`): one volume's B-scans ``[N, 3, S, S]`` -> logits
  ``[1, C]`` and per-B-scan relevance ``[1, N]``; vision-language runs (:mod:`visionfm.export.vl`): unit image
  embeddings ``[B, E]``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..fileio import file_sha256

__all__ = [
    "RUN_KINDS",
    "DensePipeline",
    "EncoderPipeline",
    "LoadedModel",
    "ModelCard",
    "RecognitionPipeline",
    "load_model",
    "preprocess_image",
    "select_feature",
]

log = logging.getLogger(__name__)
RUN_KINDS = ("classify", "multilabel", "regress", "forecast", "segment", "landmark", "encoder", "volume", "vl")
_DRAFT_KINDS = ("classify", "multilabel", "regress", "forecast", "encoder")  # kinds whose features may be drafted


@dataclass
class ModelCard:
    """What a served or exported model is and what it expects.

    Attributes:
        name: short name (the run folder's name).
        kind: one of :data:`RUN_KINDS`.
        source: the run folder or weights file it was loaded from.
        files: SHA-256 of every file the model was built from (head / model weights, encoder weights).
        encoder_sha256: SHA-256 of the encoder weights (for dense runs: of the run's model file, which holds them).
        arch, modality: encoder architecture and modality ("" when none, e.g. a U-Net).
        input_size: square input side, or None for runs that predict at native resolution (``--crop``).
        max_side: native-resolution runs: images are first scaled down to this longer side.
        mean, std: normalisation after scaling to [0, 1].
        resize: interpolation filter of the square resize (recognition runs: the one their features were
            extracted with; dense runs: bicubic).
        names: output names (classes, targets, landmarks, or ``cls``/``patch_mean``).
        inputs: model inputs (``image``, plus ``interval_days`` for forecasting).
        feature, n_last_blocks, tta: recognition feature settings.
        fov: segmentation: ``estimate`` (fundus: background outside the estimated field of view) or ``none``.
        nested: segmentation: every class lies inside the one before it (disc > cup).
        fov_diameter, contrast: dense runs trained with ``--fov-diameter`` / ``--contrast``: the image is rescaled
            so its (estimated) field of view is this many pixels across and contrast-normalised, as in training.
        crop: fine-tuned runs with RETFound's evaluation transform: the centre-crop fraction (1: plain resize).
        precision: recognition runs: the numeric precision their training features were extracted with (``serve
            --precision run`` follows it).
        jpeg_draft: recognition runs whose features were extracted with JPEG draft decoding (a DCT-domain
            downscale to >= ``input_size``): ``serve`` and ``export predict`` decode JPEGs the same way, as
            ``predict`` does (:meth:`draft_side`). False for runs recorded before the field existed.
        thresholds: segmentation: per-class probability thresholds chosen on validation (``--tune-thresholds``);
            None: 0.5. A request's own threshold replaces them.
    """

    name: str
    kind: str
    source: str
    files: dict[str, str]
    encoder_sha256: str
    arch: str
    modality: str
    input_size: int | None
    mean: list[float]
    std: list[float]
    names: list[str]
    inputs: list[str] = field(default_factory=lambda: ["image"])
    max_side: int | None = None
    resize: str = "bicubic"
    feature: str = ""
    n_last_blocks: int = 1
    tta: str = "none"
    fov: str = ""
    nested: bool = False
    crop: float = 1.0
    precision: str = "fp32"
    fov_diameter: int | None = None
    contrast: str = "none"
    thresholds: list[float] | None = None
    jpeg_draft: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def draft_side(self) -> int | None:
        """The side a JPEG is draft-decoded to (at least) before this model's square resize, or None: decode
        fully. Only recognition / encoder cards of runs whose features were draft-decoded; fine-tuned runs'
        crop transform and dense, volume and vision-language runs always decode fully, as their training did."""
        if not self.jpeg_draft or not self.input_size or self.crop < 1:
            return None
        return int(self.input_size) if self.kind in _DRAFT_KINDS else None


@dataclass
class LoadedModel:
    """A run ready to run: its card, the inference module (eval) and its ViT encoder (None for a U-Net); for an OCT
    volume classifier the module is its encoder (per-B-scan features) and ``volume_head`` decides per volume."""

    card: ModelCard
    module: nn.Module
    encoder: nn.Module | None
    volume_head: Any = None  # volume runs: the :class:`visionfm.volumes.VolumeClassifier` applied to B-scan features
    vl: Any = None  # vision-language runs: the :class:`visionfm.vl.VLRun` (text encoder, knowledge, projections)


def _views(x: Tensor, tta: str) -> list[Tensor]:
    return [x] + ([x.flip(-1)] if tta != "none" else []) + ([x.flip(-2)] if tta == "hvflip" else [])


def _encode(encoder: nn.Module, x: Tensor, n_last_blocks: int, tta: str) -> tuple[Tensor, Tensor]:
    """(CLS of the last n blocks ``[B, n*D]``, patch mean ``[B, D]``) averaged over flips, as extraction does."""
    views = _views(x, tta)
    cls_sum, patch_sum = 0, 0
    for v in views:
        out = encoder(v, n_last_blocks=n_last_blocks)
        cls_sum = cls_sum + out.cls_concat().float()
        patch_sum = patch_sum + out.patch_tokens.float().mean(1)
    return cls_sum / len(views), patch_sum / len(views)


class EncoderPipeline(nn.Module):
    """Encoder alone: image -> (``cls [B, n*D]``, ``patch_mean [B, D]``)."""

    def __init__(self, encoder: nn.Module, n_last_blocks: int = 4, tta: str = "none") -> None:
        super().__init__()
        self.encoder, self.n_last_blocks, self.tta = encoder, min(n_last_blocks, encoder.cfg.depth), tta

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return _encode(self.encoder, image, self.n_last_blocks, self.tta)

    def with_encoder(self, encoder: nn.Module) -> EncoderPipeline:
        """The same pipeline on another encoder of the same weights (the fused bf16 copy a CPU service runs)."""
        return EncoderPipeline(encoder, self.n_last_blocks, self.tta)


class RecognitionPipeline(nn.Module):
    """Encoder + head of a recognition run: image ``[B, 3, S, S]`` (+ ``interval_days [B]``) -> scores ``[B, C]``."""

    def __init__(self, encoder: nn.Module, task: nn.Module, feature: str, n_last_blocks: int, tta: str) -> None:
        super().__init__()
        self.encoder, self.task, self.feature, self.tta = encoder, task, feature, tta
        self.n_last_blocks = min(n_last_blocks, encoder.cfg.depth)

    def forward(self, image: Tensor, interval_days: Tensor | None = None) -> Tensor:
        cls, patch = _encode(self.encoder, image, self.n_last_blocks, self.tta)
        x = select_feature(cls, patch, self.feature)
        return self.task.scores(self.task.head(x, interval_days).float())

    def with_encoder(self, encoder: nn.Module) -> RecognitionPipeline:
        """The same pipeline (the same head) on another encoder of the same weights (the fused bf16 copy)."""
        return RecognitionPipeline(encoder, self.task, self.feature, self.n_last_blocks, self.tta)


def select_feature(cls: Tensor, patch: Tensor, feature: str) -> Tensor:
    """A recognition run's feature from the encoder's outputs: ``cls [B, n*D]`` (last n CLS tokens), ``patch
    [B, D]`` (patch-token mean) -> ``[B, F]`` for ``cls`` / ``last`` (final CLS) / ``patch`` / ``cls+patch``."""
    d = patch.shape[1]
    if feature == "last":
        return cls[:, -d:]
    if feature == "cls+patch":
        return torch.cat([cls[:, -d:], patch], dim=1)
    if feature == "patch":  # global average of the patch tokens (RETFound's pool)
        return patch
    return cls


class DensePipeline(nn.Module):
    """A dense run's model: image ``[B, 3, H, W]`` -> logits ``[B, K, H, W]`` in float32 (inputs of any size are
    zero-padded to a multiple of 32 for the decoder and the logits cropped back, as the dense predictors do)."""

    def __init__(self, model: nn.Module, multiple: int = 32) -> None:
        super().__init__()
        self.model, self.multiple = model, multiple

    def forward(self, image: Tensor) -> Tensor:
        rows, cols = image.shape[-2:]
        x = nn.functional.pad(image, (0, -cols % self.multiple, 0, -rows % self.multiple))
        return self.model(x).float()[..., :rows, :cols]


def preprocess_image(card: ModelCard, img: np.ndarray) -> np.ndarray:
    """An RGB image ``[H, W, 3]`` (uint8, or float in [0, 1]) -> the model's input ``[C, S, S]`` float32 (C = 3, or
    the stacked contrast views of a dense run).

    Recognition runs use the extraction's :class:`~visionfm.data.Preprocess` (fine-tuned runs their evaluation
    transform, RETFound's centre crop included); dense runs the dense predictors'
    resize (native-resolution runs: kept whole, or scaled down to ``max_side``, as ``segment predict`` does).
    """
    if card.kind in ("segment", "landmark"):
        from ..dense.transforms import prepare_image

        fov = None
        if card.fov == "estimate" and (card.fov_diameter or card.contrast != "none"):
            from ..dense.fov import estimate_fov  # the scale and contrast training used are set by the FOV

            fov = estimate_fov(img)
        x = prepare_image(img, fov, card.input_size, card.max_side, card.fov_diameter, card.contrast)[0]
        x = (x - torch.tensor(card.mean).view(-1, 1, 1)) / torch.tensor(card.std).view(-1, 1, 1)  # stacked views
        return x.numpy().astype(np.float32, copy=False)
    if card.crop < 1:  # a fine-tuned run's evaluation transform: resize the short side, centre crop (RETFound)
        from ..recognition.recipes import CropPreprocess

        return CropPreprocess(int(card.input_size), card.mean, card.std, card.crop)(img).numpy()
    from ..data.images import Preprocess

    return Preprocess(int(card.input_size or 224), card.mean, card.std, card.resize)(img).numpy()


def _training_caches(info: dict[str, Any]) -> list[str]:
    """Feature files a run was trained on, wherever its description lists them."""
    cfg = info.get("config") or {}
    found: list[str] = []
    for value in (cfg.get("train_features"), cfg.get("train"), list(info.get("labels") or {})):
        if isinstance(value, (list, tuple)):
            found += [str(v) for v in value if str(v).endswith(".safetensors")]
    return list(dict.fromkeys(found))


def _interpolation(info: dict[str, Any], modality: str) -> str:
    """The resize filter the run's features were extracted with: recorded in the run's encoder reference, else in
    its training feature files' metadata, else ``bicubic`` (extractions that recorded none used it)."""
    ref = info["encoders"][modality]
    if ref.get("interpolation"):
        return str(ref["interpolation"])
    for cache in _training_caches(info):
        try:
            from safetensors import safe_open

            with safe_open(cache, "np") as f:
                meta = f.metadata() or {}
        except (OSError, ValueError, RuntimeError):  # moved or unreadable: try the next, then the old default
            continue
        if (meta.get("modality") or "unknown") in (modality, "unknown") and meta.get("interpolation"):
            return meta["interpolation"]
    log.warning("no resize filter recorded for the features of run %s; using bicubic", info.get("kind", ""))
    return "bicubic"


def _recognition(
    run: Path, device: torch.device, weights: str | None, modality: str | None, encoder_only: bool
) -> LoadedModel:
    from ..recognition.predict import pick_modality, resolve_encoder
    from ..recognition.runs import HEAD_FILE, load_run, run_encoders

    task, info = load_run(run, device)
    refs = run_encoders(info)
    mod = pick_modality(refs, modality, run)
    ref = refs[mod]
    enc = resolve_encoder(ref, weights, device, str(run)).eval()
    kind = "encoder" if encoder_only else info["kind"]
    enc_path = weights or ref.weights
    files = {str(Path(enc_path).resolve()): file_sha256(enc_path)}
    if not encoder_only:
        files[str((run / HEAD_FILE).resolve())] = file_sha256(run / HEAD_FILE)
    card = ModelCard(
        run.name,
        kind,
        str(run.resolve()),
        files,
        files[str(Path(enc_path).resolve())],
        ref.arch,
        mod,
        ref.input_size,
        list(ref.mean),
        list(ref.std),
        ["cls", "patch_mean"] if encoder_only else list(task.names),
        ["image", "interval_days"] if kind == "forecast" else ["image"],
        feature=info["feature"],
        n_last_blocks=ref.n_last_blocks,
        tta=ref.tta,
        resize=_interpolation(info, mod),
        crop=float((info.get("recipe") or {}).get("eval_crop", 1.0)),
        precision=getattr(ref, "precision", "fp32"),
        jpeg_draft=bool(getattr(ref, "jpeg_draft", False)),
    )
    module = (
        EncoderPipeline(enc, ref.n_last_blocks, ref.tta)
        if encoder_only
        else RecognitionPipeline(enc, task, info["feature"], ref.n_last_blocks, ref.tta)
    )
    return LoadedModel(card, module.eval(), enc)


def _dense_facts(cfg: Any) -> dict[str, Any]:
    """Names, normalisation and encoder of a dense run's config (``state``; ``extra`` in older runs)."""
    facts = getattr(cfg, "state", None)
    if facts is not None:
        return {k: getattr(facts, k) for k in ("names", "mean", "std", "encoder")}
    return {k: cfg.extra.get(k) for k in ("names", "mean", "std", "encoder")}


def _dense(run: Path, device: torch.device, encoder_only: bool) -> LoadedModel:
    from ..dense.models_io import load_run
    from ..models import arch_name

    model, cfg = load_run(run, device)
    facts = _dense_facts(cfg)
    enc = getattr(model, "encoder", None)
    if encoder_only and enc is None:
        raise ValueError(f"{run}: a U-Net run has no ViT encoder to export alone")
    model_file = run / "model.safetensors"
    sha = file_sha256(model_file)
    kind = "encoder" if encoder_only else ("landmark" if cfg.task == "landmark" else "segment")
    modality = cfg.modality or ""
    # segment predict estimates the field of view of fundus images without a mask and predicts background outside
    fov = "estimate" if modality.lower() == "fundus" and getattr(cfg, "fov", None) != "none" else "none"
    card = ModelCard(
        run.name,
        kind,
        str(run.resolve()),
        {str(model_file.resolve()): sha},
        sha,
        arch_name(enc.cfg) if enc is not None else "unet",
        modality,
        None if cfg.crop else cfg.input_size,
        list(facts["mean"]),
        list(facts["std"]),
        ["cls", "patch_mean"] if encoder_only else list(facts["names"]),
        max_side=cfg.max_side,
        n_last_blocks=4 if encoder_only else 1,
        fov=fov if kind == "segment" else "",
        nested=kind == "segment" and cfg.kind == "nested",
        fov_diameter=getattr(cfg, "fov_diameter", None),
        contrast=getattr(cfg, "contrast", "none"),
        thresholds=getattr(getattr(cfg, "state", None), "thresholds", None) if kind == "segment" else None,
    )
    if encoder_only:
        card.input_size = card.input_size or enc.cfg.img_size
        return LoadedModel(card, EncoderPipeline(enc, 4).eval(), enc)
    return LoadedModel(card, DensePipeline(model).eval(), enc)


def _encoder_file(path: Path, device: torch.device, modality: str | None, input_size: int | None) -> LoadedModel:
    from ..checkpoints import load_encoder

    enc = load_encoder(path, modality, device=device).eval()
    sha = file_sha256(path)
    info = enc.info
    card = ModelCard(
        path.stem,
        "encoder",
        str(path.resolve()),
        {str(path.resolve()): sha},
        sha,
        info.arch,
        info.modality or "",
        int(input_size or enc.cfg.img_size),
        list(info.mean),
        list(info.std),
        ["cls", "patch_mean"],
        n_last_blocks=min(4, enc.cfg.depth),
    )
    return LoadedModel(card, EncoderPipeline(enc, 4).eval(), enc)


def load_model(
    source: str | Path,
    device: str | torch.device = "cpu",
    weights: str | None = None,
    modality: str | None = None,
    encoder_only: bool = False,
    input_size: int | None = None,
) -> LoadedModel:
    """Load a recognition run, a dense run or an encoder weights file as one inference module.

    Args:
        source: a run folder (``run.yaml`` + ``head.safetensors``, ``dense.yaml`` + ``model.safetensors``, or a
            volume classifier's ``head.safetensors``) or an encoder weights file.
        weights: recognition and volume runs: the encoder weights when no longer where the run recorded them
            (recognition runs: verified by SHA-256).
        modality: recognition runs over several modalities: which encoder.
        encoder_only: the run's encoder alone (features instead of the run's outputs).
        input_size: encoder files: the square input side (default the encoder's training size).

    Raises:
        FileNotFoundError: nothing at ``source``; ValueError: not a run or weights file, wrong encoder.
    """
    src = Path(source)
    dev = torch.device(device)
    if src.is_dir():
        if (src / "run.yaml").is_file():
            return _recognition(src, dev, weights, modality, encoder_only)
        if (src / "dense.yaml").is_file():
            return _dense(src, dev, encoder_only)
        from .vl import is_vl_run, load_vl

        if is_vl_run(src):
            return load_vl(src, dev, encoder_only)
        if (src / "head.safetensors").is_file():
            from .volume import load_volume

            return load_volume(src, dev, encoder_only, weights)
        raise ValueError(
            f"{src}: not a run folder (no run.yaml of a recognition run, no dense.yaml of a segmentation / "
            f"landmark run, no head.safetensors of a volume classifier, no run.json of a vision-language run)"
        )
    if src.is_file():
        return _encoder_file(src, dev, modality, input_size)
    raise FileNotFoundError(f"run or weights not found: {src}")
