"""Explainability: what a VisionFM encoder attends to.

Per-head CLS attention maps of the last block, the merged map and attention rollout across blocks, drawn over the
images as PNG grids, for one image or a folder, and the evolution of attention over pretraining checkpoints::

    from visionfm.explain import explain, attention_evolution, attention_maps
    explain("encoder.safetensors", "images/", "attention/", modality="Fundus")
    attention_evolution(["ckpt_010.pth", "ckpt_100.pth"], "images/", "evolution.png", modality="Fundus")
    attention_evolution("runs/pretrain/fundus", "images/", "evolution.png")  # every checkpoint of a pretraining run
"""

from .api import MAP_KINDS, Explanation, attention_evolution, collect_images, explain, explain_images
from .attention import (
    ATTENTION_SOURCES,
    AttentionMaps,
    attention_maps,
    attention_rollout,
    capture_attention,
    cls_patch_attention,
    num_prefix_tokens,
    upsample_maps,
)
from .render import overlay, save_grid
from .runs import (
    RunCheckpoint,
    expand_weights,
    is_pretraining_checkpoint,
    load_pretraining_checkpoint,
    load_weights,
    pretraining_checkpoints,
)

__all__ = [
    "ATTENTION_SOURCES",
    "MAP_KINDS",
    "AttentionMaps",
    "Explanation",
    "RunCheckpoint",
    "attention_evolution",
    "attention_maps",
    "attention_rollout",
    "capture_attention",
    "cls_patch_attention",
    "collect_images",
    "expand_weights",
    "explain",
    "explain_images",
    "is_pretraining_checkpoint",
    "load_pretraining_checkpoint",
    "load_weights",
    "num_prefix_tokens",
    "overlay",
    "pretraining_checkpoints",
    "save_grid",
    "upsample_maps",
]
