"""Image reading, folder layouts and datasets."""
from .datasets import LAYOUTS, ImageCollection, ImageDataset, Sample, list_images, scan
from .medmnist import MEDMNIST_SPLITS, medmnist_to_folder
from .images import IMAGE_EXTENSIONS, ImageReadError, Preprocess, read_image, resize_image, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS", "MEDMNIST_SPLITS", "ImageCollection", "ImageDataset", "ImageReadError", "LAYOUTS",
    "Preprocess", "Sample", "list_images", "medmnist_to_folder", "read_image", "resize_image", "scan", "to_rgb",
]
