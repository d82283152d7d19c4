"""The built-in recognition task kinds (registered in :data:`~visionfm.recognition.kinds.TASKS` on import):
classify and forecast (:mod:`.tasks_single`), multilabel and regress (:mod:`.tasks_multi`)."""

from __future__ import annotations

from .tasks_multi import MultilabelTask, RegressTask, multilabel_probs
from .tasks_single import ClassifyTask, ForecastTask, class_weights, cohen_kappa

__all__ = [
    "ClassifyTask",
    "ForecastTask",
    "MultilabelTask",
    "RegressTask",
    "class_weights",
    "cohen_kappa",
    "multilabel_probs",
]
