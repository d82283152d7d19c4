"""Recognition decoders: heads on cached features (or fine-tuned end to end) for classification, the
modality-agnostic multi-label decoder, few-shot, biomarker regression and glaucoma forecasting."""
from .api import evaluate_run, train_head
from .config import HeadConfig, load_head_config
from .data import EncoderRef, FeatureTable, load_table
from .fewshot import fewshot, kfold
from .finetune import FinetuneConfig, finetune
from .heads import HEADS, TIME_ENCODINGS, build_head, list_heads
from .labels import KINDS, LabelSpec, read_labels
from .losses import (class_balanced_weights, cross_entropy, focal_bce, group_cross_entropy, inverse_frequency_weights,
                     masked_bce, multilabel_loss, standardised_regression_loss)
from .predict import predict
from .runs import load_run
from .schema import OFFICIAL_13, SCHEMAS, LabelSchema, get_schema, list_schemas, load_schema
from .tasks import TASKS

__all__ = [
    "EncoderRef", "FeatureTable", "FinetuneConfig", "HeadConfig", "TASKS", "evaluate_run", "fewshot", "finetune",
    "kfold", "load_head_config", "load_run", "load_table", "predict", "train_head",
    "HEADS", "KINDS", "LabelSchema", "LabelSpec", "OFFICIAL_13", "SCHEMAS", "TIME_ENCODINGS", "build_head",
    "class_balanced_weights", "cross_entropy", "focal_bce", "get_schema", "group_cross_entropy",
    "inverse_frequency_weights", "list_heads", "list_schemas", "load_schema", "masked_bce", "multilabel_loss",
    "read_labels", "standardised_regression_loss",
]
