"""visionfm: a multi-modal, multi-task vision foundation model toolkit for ophthalmic images.

Public interface::

    encoder = visionfm.load_encoder("VFM_Fundus_weights.pth", modality="Fundus")
    out = encoder(x, n_last_blocks=4, return_attention=True)   # out.cls, out.patch_tokens, out.layers, out.attention
    visionfm.extract_features("weights.pth", "images/", "features.safetensors", modality="Fundus")
"""

from __future__ import annotations

import importlib
from typing import Any

# Names load on first use (PEP 562): importing ``visionfm`` (e.g. for ``visionfm --help``) does not import torch.
_LAZY = {
    "load_encoder": "checkpoints",
    "save_encoder": "checkpoints",
    "extract_features": "features",
    "load_features": "features",
    "canonical_modality": "modalities",
    "get_modality": "modalities",
    "list_modalities": "modalities",
    "EncoderOutput": "models",
    "VisionTransformer": "models",
    "ViTConfig": "models",
    "create_encoder": "models",
    "list_archs": "models",
}

__version__ = "0.1.0"

__all__ = [
    "EncoderOutput",
    "ViTConfig",
    "VisionTransformer",
    "canonical_modality",
    "create_encoder",
    "extract_features",
    "get_modality",
    "list_archs",
    "list_modalities",
    "load_encoder",
    "load_features",
    "save_encoder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
