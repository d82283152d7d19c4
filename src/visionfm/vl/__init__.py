"""Vision-language (FLAIR-style): text supervision with expert knowledge, zero-shot diagnosis, retrieval, adapters.

Train: :func:`train_vl` with a :class:`VLConfig` (``visionfm vl train``). Use: :func:`load` a run, then
``.encode_image``, ``.encode_text``, ``.zeroshot(images, classes)``; :func:`zeroshot_eval`, :func:`retrieve` and
:func:`adapt` write the results files the commands print.
"""

from .config import VLConfig
from .knowledge import KNOWLEDGE_VERSION, Category, Knowledge, default_knowledge, load_knowledge
from .losses import similarity_logits, soft_clip_loss, soft_targets
from .model import ProjectionHead, VLModel
from .runs import VLRun, load
from .text import TEXT_ENCODERS, TextEncoder, list_text_encoders, load_text_encoder
from .train import train_vl

__all__ = [
    "KNOWLEDGE_VERSION",
    "TEXT_ENCODERS",
    "Category",
    "Knowledge",
    "ProjectionHead",
    "TextEncoder",
    "VLConfig",
    "VLModel",
    "VLRun",
    "default_knowledge",
    "list_text_encoders",
    "load",
    "load_knowledge",
    "load_text_encoder",
    "similarity_logits",
    "soft_clip_loss",
    "soft_targets",
    "train_vl",
]
