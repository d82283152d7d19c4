"""``load_encoder``: any supported weights file -> a strictly loaded encoder in eval mode, with its facts.

Loading is strict: every encoder tensor of the model must come from the file and every tensor of the file must be
used (projection heads and decoders are dropped by the converters and reported). The one tensor allowed to be
absent is the iBOT ``mask_token``, which exists only for pretraining.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..modalities import canonical_modality, get_modality
from ..models import ARCHS, VisionTransformer, ViTConfig, arch_name, create_encoder
from .converters import CONVERTERS, Converted, detect_format
from .io import CheckpointError, safe_torch_load, save_safetensors

__all__ = ["EncoderInfo", "load_encoder", "infer_config", "random_encoder", "read_weights", "save_encoder",
           "OPTIONAL_KEYS"]

log = logging.getLogger(__name__)

OPTIONAL_KEYS = frozenset({"mask_token"})
SAFETENSORS_FORMAT_VERSION = "1"


@dataclass
class EncoderInfo:
    """What is known about a loaded encoder; stored as safetensors metadata by :func:`save_encoder`.

    Attributes:
        config: the architecture.
        modality: canonical modality name, or None when unknown.
        mean: input normalisation mean (RGB).
        std: input normalisation std.
        source: the file the weights came from.
        format: the checkpoint format they were read as.
        report: one line saying what was loaded.
        not_loaded: optional tensors the file did not hold (left at initialisation, never exported).
    """

    config: ViTConfig
    modality: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    format: str = ""
    report: str = ""
    not_loaded: tuple[str, ...] = ()

    @property
    def arch(self) -> str:
        return arch_name(self.config)


def infer_config(sd: dict[str, Tensor], arch: str | None = None) -> ViTConfig:
    """Read the architecture off the tensors: width, depth, patch, grid, MLP width, biases, layer scale, registers.

    Heads are width / 64 (every released ViT) unless ``arch`` names a registered architecture.

    Raises:
        CheckpointError: an essential tensor is missing or the shapes are inconsistent with ``arch``.
    """
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise CheckpointError(f"not a ViT encoder state dict: missing tensor {key!r}")
    dim = sd["cls_token"].shape[-1]
    patch_w = sd["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    found = dict(
        embed_dim=dim, depth=depth, patch_size=patch_w.shape[-1], in_chans=patch_w.shape[1],
        img_size=grid * patch_w.shape[-1], mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, layer_scale="blocks.0.ls1.gamma" in sd,
        num_register_tokens=sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
    )
    if arch is None:
        if dim % 64:
            raise CheckpointError(f"width {dim} is not a multiple of 64; name the architecture with arch=...")
        return ViTConfig(num_heads=dim // 64, **found)
    ref = ARCHS.get(arch)()
    for name in ("embed_dim", "depth", "patch_size"):
        if getattr(ref, name) != found[name]:
            raise CheckpointError(f"arch {arch!r} has {name}={getattr(ref, name)}, the weights have {found[name]}")
    return ViTConfig(num_heads=ref.num_heads, **found)


def _strict_load(model: VisionTransformer, sd: dict[str, Tensor], source: str) -> list[str]:
    """Put ``sd`` into ``model`` (built on any device, ``meta`` included: tensors are assigned, not copied); returns
    the optional keys that were absent, which get the ViT's own initial value (zeros). Errors name every mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    absent_ok = [k for k in missing if k in OPTIONAL_KEYS]
    missing = [k for k in missing if k not in OPTIONAL_KEYS]
    bad_shape = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shape mismatch {bad_shape}" if bad_shape else ""]
        raise CheckpointError(f"{source}: encoder weights do not fit: " + "; ".join(p for p in parts if p))
    full = {k: torch.zeros(own[k].shape, dtype=own[k].dtype) for k in absent_ok}  # mask_token starts at zero
    full.update({k: v.to(own[k].dtype).contiguous() for k, v in sd.items()})
    model.load_state_dict(full, strict=True, assign=True)
    return absent_ok


def read_weights(path: str | Path, format: str | None = None) -> tuple[Converted, dict[str, str]]:
    """Read a weights file into visionfm naming; returns the conversion and any safetensors metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors" or format == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        mean = tuple(json.loads(meta["mean"])) if "mean" in meta else None
        std = tuple(json.loads(meta["std"])) if "std" in meta else None
        return Converted(sd, "safetensors", [], meta.get("modality") or None, mean, std), meta
    obj = safe_torch_load(path)
    fmt = format or detect_format(obj, str(path))
    return CONVERTERS.get(fmt).convert(obj), {}


def _resolve_modality(requested: str | None, recorded: str | None, source: str) -> str | None:
    recorded = canonical_modality(recorded) if recorded else None
    if requested is None:
        return recorded
    requested = canonical_modality(requested)
    if recorded and recorded != requested:
        log.warning("%s was trained on %s; using it for %s as requested", source, recorded, requested)
    return requested


def load_encoder(weights: str | Path, modality: str | None = None, arch: str | None = None,
                 device: str | torch.device = "cpu", format: str | None = None,
                 dtype: torch.dtype | None = None) -> VisionTransformer:
    """Load an encoder from a file in any supported format, strictly, in eval mode.

    Args:
        weights: official VisionFM checkpoint, teacher-only/plain state dict, RETFound/MAE, DINOv2-style, or a
            visionfm ``.safetensors`` export.
        modality: any spelling of a modality; sets the input normalisation unless the weights fix it.
        arch: registered architecture name; inferred from the tensors when None.
        device: where to put the encoder.
        format: force a checkpoint format instead of detecting it.
        dtype: cast the parameters (e.g. ``torch.bfloat16``); default float32. Autocast needs no cast.

    Returns:
        The encoder; ``encoder.info`` is an :class:`EncoderInfo` (modality, normalisation, one-line report).
    """
    conv, meta = read_weights(weights, format)
    cfg = ViTConfig(**json.loads(meta["config"])) if "config" in meta else infer_config(conv.state_dict, arch)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced (ViT-L: ~10 s)
        model = VisionTransformer(cfg)
    absent = _strict_load(model, conv.state_dict, str(weights))
    mod = _resolve_modality(modality, conv.modality, str(weights))
    mean, std = conv.mean, conv.std
    if mean is None:
        if mod is None:
            raise ValueError(f"{weights} records no modality and no normalisation: pass modality=... "
                             f"(one of the eight modalities) so inputs are normalised as in pretraining")
        mean, std = get_modality(mod).mean, get_modality(mod).std
    n_params = sum(v.numel() for v in conv.state_dict.values())
    report = (f"loaded {arch_name(cfg)} (D={cfg.embed_dim}, depth={cfg.depth}, heads={cfg.num_heads}, "
              f"patch={cfg.patch_size}, img={cfg.img_size}) from {weights} [{conv.format}]: "
              f"{len(conv.state_dict)} tensors, {n_params / 1e6:.2f}M params; dropped {len(conv.dropped)} "
              f"non-encoder tensors; modality {mod}; not in file: {absent or 'none'}")
    log.info(report)
    model.info = EncoderInfo(cfg, mod, tuple(mean), tuple(std), str(weights), conv.format, report, tuple(absent))
    return model.to(device=device, dtype=dtype).eval()


def random_encoder(arch: str | ViTConfig, seed: int = 0, modality: str | None = None, source: str | None = None,
                   **overrides) -> VisionTransformer:
    """``arch`` (a registered name with ``overrides``, or a config) randomly initialised from ``seed``, in eval mode.

    The stand-in and baseline of every comparison with pretrained weights: the same seed gives the same weights,
    and for a pretraining run with ``--seed s`` it is exactly the run's starting point. With ``modality`` its
    normalisation is recorded (``info``), so it saves and extracts features like a loaded encoder.
    """
    torch.manual_seed(seed)
    enc = create_encoder(arch, **overrides).eval()
    if modality:
        m = get_modality(modality)
        enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, source or f"random init seed {seed}", "random",
                               "random init")
    return enc


def save_encoder(model: VisionTransformer, path: str | Path, source: str = "", source_format: str = "") -> None:
    """Write ``model`` as safetensors with its metadata (config, arch, modality, normalisation, source), atomically.

    The file loads back with :func:`load_encoder` without any pickle; the same weights and metadata give the same
    bytes (so the SHA-256 that runs record for their encoder survives a re-save).
    """
    info: EncoderInfo | None = getattr(model, "info", None)
    meta = {
        "visionfm_format": SAFETENSORS_FORMAT_VERSION,
        "config": json.dumps(model.cfg.to_dict()),
        "arch": arch_name(model.cfg),
        "modality": (info.modality or "") if info else "",
        "source": source or (info.source if info else ""),
        "source_format": source_format or (info.format if info else ""),
    }
    if info is not None:
        meta["mean"], meta["std"] = json.dumps(list(info.mean)), json.dumps(list(info.std))
    skip = set(info.not_loaded) if info else set()
    save_safetensors({k: v for k, v in model.state_dict().items() if k not in skip}, path, meta)
