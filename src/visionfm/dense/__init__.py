"""Dense decoders for VisionFM: segmentation and landmark detection on multi-level ViT features, and a U-Net baseline.

Training runs on the shared engine (:mod:`visionfm.engine`); everything else here (decoders, losses, metrics, joint
transforms, label parsing) is plain torch / numpy.
"""

from .backbone import OFFICIAL_BLOCKS, block_indices, multilevel_features
from .cdr import area_cdr, cdr_from_label_maps, vertical_cdr
from .config import (
    DenseConfig,
    DenseState,
    LandmarkPredictConfig,
    SegmentPredictConfig,
    contrast_channels,
    load_config,
    save_config,
)
from .data import MASK_KINDS, DenseSpec, SegItem, item_fov, load_target, pair_files, read_mask, resolve_spec
from .datasets import hard_negatives
from .decoders import DENSE_MODELS, EncoderDense, LinearDecoder, MonaiUNet, UNETRDecoder, build_dense_model
from .fewshot import run_fewshot
from .fov import estimate_fov
from .landmark import landmarks_from_masks, predict_landmark, train_landmark
from .landmarks import argmax_subpixel, gaussian_heatmaps, read_landmarks, scale_points, soft_argmax
from .losses import dice_focal_loss, focal_loss, heatmap_kl, soft_dice_loss, tversky_focal_loss, tversky_loss
from .metrics import SegmentationMeter, auc_from_histograms, confusion, hd95, radial_errors, scores_from_confusion
from .postprocess import drop_elongated, elongation
from .predict import predict_segmentation
from .segment import train_segmentation
from .transforms import JointAugment, affine_matrix, warp

__all__ = [
    "DENSE_MODELS",
    "MASK_KINDS",
    "OFFICIAL_BLOCKS",
    "DenseConfig",
    "DenseSpec",
    "DenseState",
    "EncoderDense",
    "JointAugment",
    "LandmarkPredictConfig",
    "LinearDecoder",
    "MonaiUNet",
    "SegItem",
    "SegmentPredictConfig",
    "SegmentationMeter",
    "UNETRDecoder",
    "affine_matrix",
    "area_cdr",
    "argmax_subpixel",
    "auc_from_histograms",
    "block_indices",
    "build_dense_model",
    "cdr_from_label_maps",
    "confusion",
    "contrast_channels",
    "dice_focal_loss",
    "drop_elongated",
    "elongation",
    "estimate_fov",
    "focal_loss",
    "gaussian_heatmaps",
    "hard_negatives",
    "hd95",
    "heatmap_kl",
    "item_fov",
    "landmarks_from_masks",
    "load_config",
    "load_target",
    "multilevel_features",
    "pair_files",
    "predict_landmark",
    "predict_segmentation",
    "radial_errors",
    "read_landmarks",
    "read_mask",
    "resolve_spec",
    "run_fewshot",
    "save_config",
    "scale_points",
    "scores_from_confusion",
    "soft_argmax",
    "soft_dice_loss",
    "train_landmark",
    "train_segmentation",
    "tversky_focal_loss",
    "tversky_loss",
    "vertical_cdr",
    "warp",
]
