"""``load_encoder``: any supported weights file -> a strictly loaded encoder in eval mode, with its facts.

Loading is strict: every encoder tensor of the model must come from the file and every tensor of the file must be
used (projection heads and decoders are dropped by the converters and reported). The one tensor allowed to be
absent is the iBOT ``mask_token``, which exists only for pretraining. Non-finite weights are refused unless asked
for, and a named architecture must agree with the file.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..modalities import canonical_modality, get_modality
from ..models import ARCHS, EncoderInfo, VisionTransformer, ViTConfig, arch_name, create_encoder
from .converters import CONVERTERS, Converted, detect_format
from .hub import resolve_weights_path
from .io import CheckpointError, safe_torch_load, save_safetensors

__all__ = [
    "OPTIONAL_KEYS",
    "EncoderInfo",
    "infer_config",
    "load_encoder",
    "load_head",
    "random_encoder",
    "read_weights",
    "save_encoder",
]

log = logging.getLogger(__name__)

OPTIONAL_KEYS = frozenset({"mask_token"})
SAFETENSORS_FORMAT_VERSION = "1"


def _vote(values: list[int]) -> int:
    """The most common value: one tensor of a wrong shape must not make every other tensor look wrong."""
    return Counter(values).most_common(1)[0][0]


_WIDTH_VECTORS = ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.bias", "mlp.fc2.bias")


def infer_config(sd: dict[str, Tensor], arch: str | None = None) -> ViTConfig:
    """Read the architecture off the tensors: width, depth, patch, grid, MLP width, biases, layer scale, registers,
    final norm. Width and MLP width are voted over every tensor that shows them, so a single tensor of a wrong shape
    is the one reported by the strict load.

    Heads are width / 64 (every released ViT) unless ``arch`` names a registered architecture.

    Raises:
        CheckpointError: an essential tensor is missing or the shapes are inconsistent with ``arch``.
    """
    essential = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    absent = [k for k in essential if k not in sd]
    if len(absent) == len(essential):
        raise CheckpointError(
            f"not a ViT encoder: none of {list(essential)}; it holds {len(sd)} tensors such as {sorted(sd)[:4]}"
        )
    if absent:
        raise CheckpointError(f"not a complete ViT encoder state dict: missing tensor {absent[0]!r}")
    widths = [sd["cls_token"].shape[-1], sd["patch_embed.proj.weight"].shape[0], sd["pos_embed"].shape[-1]]
    widths += [v.shape[0] for k, v in sd.items() if k.endswith(_WIDTH_VECTORS) and v.ndim == 1]
    dim = _vote(widths)
    patch_w = sd["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = _vote(
        [v.shape[0] for k, v in sd.items() if k.endswith(("mlp.fc1.weight", "mlp.fc1.bias"))]
        + [v.shape[-1] for k, v in sd.items() if k.endswith("mlp.fc2.weight")]
    )
    grid = math.isqrt(max(sd["pos_embed"].shape[1] - 1, 1))
    found = {
        "embed_dim": dim,
        "depth": depth,
        "patch_size": patch_w.shape[-1],
        "in_chans": patch_w.shape[1],
        "img_size": grid * patch_w.shape[-1],
        "mlp_ratio": hidden / dim,
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "layer_scale": "blocks.0.ls1.gamma" in sd,
        "num_register_tokens": sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
        "final_norm": "norm.weight" in sd,
    }
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
    bad_shape = [
        f"tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(own[k].shape)}"
        for k in sorted(set(sd) & set(own))
        if sd[k].shape != own[k].shape
    ]
    if missing or unexpected or bad_shape:
        parts = [
            f"missing {missing}" if missing else "",
            f"unexpected {unexpected}" if unexpected else "",
            "; ".join(bad_shape),
        ]
        raise CheckpointError(f"{source}: encoder weights do not fit: " + "; ".join(p for p in parts if p))
    full = {k: torch.zeros(own[k].shape, dtype=own[k].dtype) for k in absent_ok}  # mask_token starts at zero
    full.update({k: v.to(own[k].dtype).contiguous() for k, v in sd.items()})
    model.load_state_dict(full, strict=True, assign=True)
    return absent_ok


def _read_safetensors(path: Path) -> tuple[Converted, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        mean = tuple(json.loads(meta["mean"])) if "mean" in meta else None
        std = tuple(json.loads(meta["std"])) if "std" in meta else None
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable normalisation in its metadata ({e})") from None
    conv = Converted(sd, "safetensors", [], meta.get("modality") or None, mean, std, family=meta.get("family", ""))
    return conv, meta


def read_weights(path: str | Path, format: str | None = None) -> tuple[Converted, dict[str, str]]:
    """Read a weights file (or ``hf-hub:`` reference) into visionfm naming; returns the conversion and any
    safetensors metadata.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a folder, or not a checkpoint of any known format (the message names the file).
    """
    path = resolve_weights_path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors" or format == "safetensors":
        return _read_safetensors(path)
    obj = safe_torch_load(path)
    fmt = CONVERTERS.canonical(format) if format else detect_format(obj, str(path))
    try:
        return CONVERTERS.get(fmt).convert(obj), {}
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise CheckpointError(f"{path}: {e}") from None
        raise CheckpointError(f"{path}: not a {fmt!r} checkpoint ({type(e).__name__}: {e})") from None


def _check_finite(sd: dict[str, Tensor], source: str) -> None:
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise CheckpointError(
            f"{source}: non-finite values (NaN or inf) in {len(bad)} tensor(s): {shown}; "
            "pass allow_nonfinite=True (--allow-nonfinite) to load them anyway"
        )


def _config_from_meta(meta: dict[str, str], arch: str | None, source: str) -> ViTConfig:
    """The architecture a visionfm safetensors file records; a named ``arch`` must be registered and agree."""
    try:
        cfg = ViTConfig(**json.loads(meta["config"]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: unreadable architecture in its metadata ({e})") from None
    if arch is not None:
        ref = ARCHS.get(arch)()  # an unknown name is an error listing the known ones
        key = ("embed_dim", "depth", "num_heads", "patch_size")
        if tuple(getattr(ref, k) for k in key) != tuple(getattr(cfg, k) for k in key):
            raise CheckpointError(
                f"{source}: --arch {arch} ({ARCHS.canonical(arch)}: D={ref.embed_dim}, depth={ref.depth}, "
                f"heads={ref.num_heads}, patch={ref.patch_size}) does not match the file's architecture "
                f"{arch_name(cfg)} (D={cfg.embed_dim}, depth={cfg.depth}, heads={cfg.num_heads}, "
                f"patch={cfg.patch_size})"
            )
    return cfg


def _head_summary(head: dict[str, Tensor]) -> str:
    if not head:
        return ""
    w = head.get("head.weight")
    outputs = f"{w.shape[0]} outputs" if w is not None and w.ndim == 2 else "head"
    pool = "global average pooling + fc_norm" if "fc_norm.weight" in head else "CLS token"
    return f"; classification head kept apart ({outputs}, {pool}: {', '.join(sorted(head))})"


def _normalisation(
    conv: Converted, mod: str | None, given: str | None, source: str, required: bool
) -> tuple[tuple, tuple, str]:
    """(mean, std, where they come from): the file or its family fixes them, else the modality's statistics."""
    if conv.mean is not None:
        origin = "recorded in the file" if conv.format == "safetensors" else f"{conv.family or conv.format} default"
        return tuple(conv.mean), tuple(conv.std), origin
    if mod is None and not required:
        return (), (), ""
    if mod is None:
        raise CheckpointError(
            f"{source} records no modality and no normalisation: pass modality=... "
            f"(--modality; one of the eight modalities) so inputs are normalised as in pretraining"
        )
    how = "as requested" if given else "recorded in the checkpoint"
    return get_modality(mod).mean, get_modality(mod).std, f"{mod} statistics, {how}"


def load_encoder(
    weights: str | Path,
    modality: str | None = None,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    format: str | None = None,
    dtype: torch.dtype | None = None,
    allow_nonfinite: bool = False,
    pos_interp: str | None = None,
    require_normalisation: bool = True,
) -> VisionTransformer:
    """Load an encoder from a file in any supported format, strictly, in eval mode.

    Args:
        weights: a file (official VisionFM, RETFound-MAE / -DINOv2 / -Green, a RETFound fine-tuned classifier,
            DINOv2, timm, plain state dict, visionfm ``.safetensors``) or ``hf-hub:ORG/NAME[@REV][:FILE]``.
        modality: any spelling of a modality; sets the input normalisation unless the weights fix it.
        arch: registered architecture name (aliases such as ``vit_base`` accepted); inferred when None, and checked
            against the file when given.
        device: where to put the encoder.
        format: force a checkpoint format instead of detecting it.
        dtype: cast the parameters (e.g. ``torch.bfloat16``); default float32. Autocast needs no cast.
        allow_nonfinite: load weights holding NaN or inf (refused by default, naming the tensors).
        pos_interp: override the position-embedding resizing (``visionfm.models.POS_INTERP``); default the one
            the family's own code uses.
        require_normalisation: False loads weights that record no normalisation without a modality (``info.mean``
            and ``info.std`` empty), for inspection only.

    Returns:
        The encoder; ``encoder.info`` is its :class:`EncoderInfo` (modality, normalisation, family, report, head).
    """
    conv, meta = read_weights(weights, format)
    if "config" in meta:
        cfg = _config_from_meta(meta, arch, str(weights))
    else:
        try:
            cfg = infer_config(conv.state_dict, arch)
        except CheckpointError as e:
            raise CheckpointError(f"{weights} [{conv.format}]: {e}") from None
    if not allow_nonfinite:
        _check_finite({**conv.state_dict, **conv.head}, str(weights))
    if pos_interp or ("config" not in meta and conv.pos_interp):
        cfg = ViTConfig(**{**cfg.to_dict(), "pos_interp": pos_interp or conv.pos_interp})
    with torch.device("meta"):  # no random initialisation of weights about to be replaced (ViT-L: ~10 s)
        model = VisionTransformer(cfg)
    absent = _strict_load(model, conv.state_dict, str(weights))
    mod = _resolve_modality(modality, conv.modality, str(weights))
    mean, std, origin = _normalisation(conv, mod, modality, str(weights), require_normalisation)
    n_params = sum(v.numel() for v in conv.state_dict.values())
    family = f" ({conv.family})" if conv.family else ""
    report = (
        f"loaded {arch_name(cfg)} (D={cfg.embed_dim}, depth={cfg.depth}, heads={cfg.num_heads}, "
        f"patch={cfg.patch_size}, img={cfg.img_size}) from {weights} [{conv.format}]{family}: "
        f"{len(conv.state_dict)} tensors, {n_params / 1e6:.2f}M params; dropped {len(conv.dropped)} "
        f"non-encoder tensors; modality {mod}; not in file: {absent or 'none'}{_head_summary(conv.head)}"
    )
    log.info(report)
    model.set_info(
        EncoderInfo(
            cfg, mod, mean, std, str(weights), conv.format, report, tuple(absent), conv.family, dict(conv.head), origin
        )
    )
    return model.to(device=device, dtype=dtype).eval()


def load_head(weights: str | Path, format: str | None = None) -> dict[str, Tensor]:
    """The classification head saved with an encoder (RETFound fine-tuning: ``head.weight`` ``[C, D]``,
    ``head.bias`` ``[C]``, and ``fc_norm.weight`` / ``fc_norm.bias`` ``[D]`` when pooled by global average).

    Raises:
        CheckpointError: the file holds no head.
    """
    conv, _ = read_weights(weights, format)
    if not conv.head:
        raise CheckpointError(f"{weights}: holds no classification head (format {conv.format})")
    return dict(conv.head)


def _resolve_modality(requested: str | None, recorded: str | None, source: str) -> str | None:
    recorded = canonical_modality(recorded) if recorded else None
    if requested is None:
        return recorded
    requested = canonical_modality(requested)
    if recorded and recorded != requested:
        log.warning("%s was trained on %s; using it for %s as requested", source, recorded, requested)
    return requested


def random_encoder(
    arch: str | ViTConfig, seed: int = 0, modality: str | None = None, source: str | None = None, **overrides
) -> VisionTransformer:
    """``arch`` (a registered name with ``overrides``, or a config) randomly initialised from ``seed``, in eval mode.

    The stand-in and baseline of every comparison with pretrained weights: the same seed gives the same weights,
    and for a pretraining run with ``--seed s`` it is exactly the run's starting point. With ``modality`` its
    normalisation is recorded (``info``), so it saves and extracts features like a loaded encoder. The caller's
    random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = create_encoder(arch, **overrides).eval()
    if modality:
        m = get_modality(modality)
        enc.set_info(
            EncoderInfo(enc.cfg, m.name, m.mean, m.std, source or f"random init seed {seed}", "random", "random init")
        )
    return enc


def save_encoder(model: VisionTransformer, path: str | Path, source: str = "", source_format: str = "") -> None:
    """Write ``model`` as safetensors with its metadata (config, arch, modality, normalisation, family, source),
    atomically. A head kept apart (``info.head_tensors``) is not written: the file is the encoder.

    The file loads back with :func:`load_encoder` without any pickle; the same weights and metadata give the same
    bytes (so the SHA-256 that runs record for their encoder survives a re-save).
    """
    info: EncoderInfo | None = getattr(model, "info", None)  # any nn.Module with a .cfg may be saved
    meta = {
        "visionfm_format": SAFETENSORS_FORMAT_VERSION,
        "config": json.dumps(model.cfg.to_dict()),
        "arch": arch_name(model.cfg),
        "modality": (info.modality or "") if info else "",
        "source": source or (info.source if info else ""),
        "source_format": source_format or (info.format if info else ""),
    }
    if info is not None and info.mean:  # loaded for inspection only (no normalisation known): none recorded
        meta["mean"], meta["std"] = json.dumps(list(info.mean)), json.dumps(list(info.std))
        if info.family:
            meta["family"] = info.family
    skip = set(info.not_loaded) if info else set()
    save_safetensors({k: v for k, v in model.state_dict().items() if k not in skip}, path, meta)
