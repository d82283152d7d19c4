"""Explainability: what a VisionFM encoder attends to.

Per-head CLS attention maps of the last block, the merged map and attention rollout across blocks, drawn over the
images as PNG grids, for one image or a folder, and the evolution of attention over pretraining checkpoints::

    from visionfm.explain import explain, attention_evolution, attention_maps
    explain("encoder.safetensors", "images/", "attention/", modality="Fundus")
    attention_evolution(["ckpt_010.pth", "ckpt_100.pth"], "images/", "evolution.png", modality="Fundus")
"""
from .api import MAP_KINDS, Explanation, attention_evolution, collect_images, explain, explain_images
from .attention import (AttentionMaps, attention_maps, attention_rollout, cls_patch_attention, num_prefix_tokens,
                        upsample_maps)
from .render import overlay, save_grid

__all__ = ["AttentionMaps", "attention_maps", "attention_rollout", "cls_patch_attention", "num_prefix_tokens",
           "upsample_maps", "overlay", "save_grid", "Explanation", "collect_images", "explain_images", "explain",
           "attention_evolution", "MAP_KINDS"]
