"""OCT volumes as one sample: reading (DICOM, B-scan folders, eyepy vendor files), per-B-scan features, and
volume-level decisions (mean / max / attention-MIL) with the B-scan that drove them."""

from .extract import VolumeFeatures, extract_volume_features, load_volume_features
from .io import EYEPY_READERS, Volume, list_volumes, read_volume, scan_volumes, volume_header
from .mil import POOLINGS, MILHead, pad_bags
from .train import MILTask, VolumeClassifier, VolumeTrainConfig, predict_volumes, train_volume_classifier

__all__ = [
    "EYEPY_READERS",
    "POOLINGS",
    "MILHead",
    "MILTask",
    "Volume",
    "VolumeClassifier",
    "VolumeFeatures",
    "VolumeTrainConfig",
    "extract_volume_features",
    "list_volumes",
    "load_volume_features",
    "pad_bags",
    "predict_volumes",
    "read_volume",
    "scan_volumes",
    "train_volume_classifier",
    "volume_header",
]
