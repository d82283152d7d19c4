"""Recognition decoders: heads on cached features (or fine-tuned end to end) for classification, the
modality-agnostic multi-label decoder, few-shot, biomarker regression and glaucoma forecasting.

Task kinds are registered classes (:data:`TASKS`; the built-in four are declared in :mod:`.kinds` and defined in
:mod:`.task_kinds`), fine-tuning recipes are registered presets (:data:`RECIPES`). Names load on first use (PEP
562), so the command line can list the task kinds without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {
    "evaluate_run": "api",
    "train_head": "api",
    "HeadConfig": "config",
    "RecognitionConfig": "config",
    "load_head_config": "config",
    "EncoderRef": "data",
    "FeatureTable": "data",
    "load_table": "data",
    "fewshot": "fewshot",
    "kfold": "fewshot",
    "FinetuneConfig": "finetune",
    "finetune": "finetune",
    "load_finetune_config": "finetune",
    "HEADS": "heads",
    "TIME_ENCODINGS": "heads",
    "build_head": "heads",
    "list_heads": "heads",
    "TASKS": "kinds",
    "LabelSpec": "labels",
    "read_labels": "labels",
    "class_balanced_weights": "losses",
    "cross_entropy": "losses",
    "focal_bce": "losses",
    "group_cross_entropy": "losses",
    "inverse_frequency_weights": "losses",
    "masked_bce": "losses",
    "multilabel_loss": "losses",
    "standardised_regression_loss": "losses",
    "predict": "predict",
    "RECIPES": "recipes",
    "Recipe": "recipes",
    "load_run": "runs",
    "OFFICIAL_13": "schema",
    "SCHEMAS": "schema",
    "LabelSchema": "schema",
    "get_schema": "schema",
    "list_schemas": "schema",
    "load_schema": "schema",
    "HeadTask": "tasks",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(f"{__name__}.task_kinds")  # the built-in kinds, before any config is built
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``recognition.predict`` / ``.fewshot`` / ``.finetune`` the functions, as the eager package had them.

    Importing a submodule sets it as an attribute of its package; three submodules share their name with the
    public function they define, so that attribute would hide the function behind the lazy loader.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
