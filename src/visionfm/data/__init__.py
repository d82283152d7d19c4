"""Image reading (files, bytes, DICOM), folder layouts and datasets."""

from .datasets import LAYOUTS, ImageCollection, ImageDataset, Sample, list_images, scan, walk_files
from .dicom import DicomImage, read_dicom
from .images import (
    IMAGE_EXTENSIONS,
    INTERPOLATIONS,
    ImageReadError,
    Preprocess,
    decode_image,
    pixel_limit,
    read_image,
    resize_image,
    to_rgb,
)
from .medmnist import MEDMNIST_SPLITS, medmnist_to_folder

__all__ = [
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "LAYOUTS",
    "MEDMNIST_SPLITS",
    "DicomImage",
    "ImageCollection",
    "ImageDataset",
    "ImageReadError",
    "Preprocess",
    "Sample",
    "decode_image",
    "list_images",
    "medmnist_to_folder",
    "pixel_limit",
    "read_dicom",
    "read_image",
    "resize_image",
    "scan",
    "to_rgb",
    "walk_files",
]
