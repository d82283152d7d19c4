"""Image reading, folder layouts and datasets."""
from .datasets import LAYOUTS, ImageCollection, ImageDataset, Sample, list_images, scan
from .images import IMAGE_EXTENSIONS, ImageReadError, Preprocess, read_image, resize_image, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS", "ImageCollection", "ImageDataset", "ImageReadError", "LAYOUTS", "Preprocess", "Sample",
    "list_images", "read_image", "resize_image", "scan", "to_rgb",
]
