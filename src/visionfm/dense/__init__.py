"""Dense decoders for VisionFM: segmentation and landmark detection on multi-level ViT features, and a U-Net baseline.

Training runs on the shared engine (:mod:`visionfm.engine`); everything else here (decoders, losses, metrics, joint
transforms, label parsing) is plain torch / numpy.
"""
from .backbone import OFFICIAL_BLOCKS, block_indices, multilevel_features
from .cdr import area_cdr, cdr_from_label_maps, vertical_cdr
from .config import DenseConfig, DenseState, LandmarkPredictConfig, SegmentPredictConfig, load_config, save_config
from .data import MASK_KINDS, DenseSpec, SegItem, item_fov, load_target, pair_files, read_mask, resolve_spec
from .fov import estimate_fov
from .fewshot import run_fewshot
from .decoders import DENSE_MODELS, EncoderDense, LinearDecoder, MonaiUNet, UNETRDecoder, build_dense_model
from .landmark import landmarks_from_masks, predict_landmark, train_landmark
from .landmarks import argmax_subpixel, gaussian_heatmaps, read_landmarks, scale_points, soft_argmax
from .losses import dice_focal_loss, focal_loss, heatmap_kl, soft_dice_loss, tversky_focal_loss, tversky_loss
from .metrics import SegmentationMeter, auc_from_histograms, confusion, hd95, radial_errors, scores_from_confusion
from .predict import predict_segmentation
from .segment import train_segmentation
from .transforms import JointAugment, affine_matrix, warp

__all__ = [
    "OFFICIAL_BLOCKS", "block_indices", "multilevel_features", "DenseConfig", "DenseState", "SegmentPredictConfig",
    "LandmarkPredictConfig", "load_config", "save_config", "area_cdr", "vertical_cdr", "cdr_from_label_maps",
    "item_fov", "estimate_fov", "tversky_loss", "tversky_focal_loss",
    "MASK_KINDS", "DenseSpec", "SegItem", "load_target", "pair_files", "read_mask", "resolve_spec",
    "DENSE_MODELS", "EncoderDense", "LinearDecoder", "MonaiUNet", "UNETRDecoder", "build_dense_model",
    "landmarks_from_masks", "predict_landmark", "train_landmark", "argmax_subpixel", "gaussian_heatmaps",
    "read_landmarks", "scale_points", "soft_argmax", "dice_focal_loss", "focal_loss", "heatmap_kl",
    "soft_dice_loss", "SegmentationMeter", "auc_from_histograms", "confusion", "hd95", "radial_errors",
    "scores_from_confusion", "run_fewshot", "predict_segmentation", "train_segmentation", "JointAugment", "affine_matrix", "warp",
]
