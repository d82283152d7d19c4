"""Recognition decoders: heads on cached features (or fine-tuned end to end) for classification, the
modality-agnostic multi-label decoder, few-shot, biomarker regression and glaucoma forecasting.

Task kinds are registered classes (:data:`TASKS`; the built-in four in :mod:`.task_kinds`), fine-tuning recipes are
registered presets (:data:`RECIPES`).
"""
from . import task_kinds  # noqa: F401  (registers the built-in task kinds before any config is built)
from .api import evaluate_run, train_head
from .config import HeadConfig, RecognitionConfig, load_head_config
from .data import EncoderRef, FeatureTable, load_table
from .fewshot import fewshot, kfold
from .finetune import FinetuneConfig, finetune, load_finetune_config
from .heads import HEADS, TIME_ENCODINGS, build_head, list_heads
from .kinds import TASKS
from .labels import LabelSpec, read_labels
from .losses import (class_balanced_weights, cross_entropy, focal_bce, group_cross_entropy, inverse_frequency_weights,
                     masked_bce, multilabel_loss, standardised_regression_loss)
from .predict import predict
from .recipes import RECIPES, Recipe
from .runs import load_run
from .schema import OFFICIAL_13, SCHEMAS, LabelSchema, get_schema, list_schemas, load_schema
from .tasks import HeadTask

__all__ = [
    "EncoderRef", "FeatureTable", "FinetuneConfig", "HeadConfig", "HeadTask", "RECIPES", "Recipe",
    "RecognitionConfig", "TASKS", "evaluate_run", "fewshot", "finetune", "kfold", "load_finetune_config",
    "load_head_config", "load_run", "load_table", "predict", "train_head",
    "HEADS", "LabelSchema", "LabelSpec", "OFFICIAL_13", "SCHEMAS", "TIME_ENCODINGS", "build_head",
    "class_balanced_weights", "cross_entropy", "focal_bce", "get_schema", "group_cross_entropy",
    "inverse_frequency_weights", "list_heads", "list_schemas", "load_schema", "masked_bce", "multilabel_loss",
    "read_labels", "standardised_regression_loss",
]
