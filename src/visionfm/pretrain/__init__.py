"""Self-supervised pretraining of a ViT encoder: iBOT (the VisionFM objective, default) or MAE (RETFound's).

Public interface::

    from visionfm.pretrain import pretrain, pretrain_config
    cfg = pretrain_config(method="mae", data=["fundus/"], modality="Fundus", arch="vit_small_patch16",
                          output="runs/pretrain/fundus-mae", epochs=10, batch_size=32)
    run_dir = pretrain(cfg)
    encoder = visionfm.load_encoder(run_dir / "encoder.safetensors")

Names load on first use (PEP 562): ``visionfm.pretrain.config`` (the settings, for ``--help``) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ENCODER_FILE": "export",
    "build_encoders": "encoders",
    "build_task": "encoders",
    "pretrain": "api",
    "PretrainConfig": "config",
    "pretrain_config": "config",
    "METHODS": "config",
    "PretrainDataset": "data",
    "build_dataset": "data",
    "export_encoder": "export",
    "run_encoder": "export",
    "encoder_state": "checkpoint",
    "IBOTHead": "heads",
    "IBOTTask": "task",
    "MAETask": "mae",
    "MAEDecoder": "mae",
}

__all__ = [
    "ENCODER_FILE",
    "METHODS",
    "IBOTHead",
    "IBOTTask",
    "MAEDecoder",
    "MAETask",
    "PretrainConfig",
    "PretrainDataset",
    "build_dataset",
    "build_encoders",
    "build_task",
    "encoder_state",
    "export_encoder",
    "pretrain",
    "pretrain_config",
    "run_encoder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
