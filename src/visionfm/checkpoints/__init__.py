"""Reading released checkpoints of every supported format, and writing visionfm's own."""
from .converters import CONVERTERS, Converted, Converter, detect_format, list_formats
from .io import CheckpointError, atomic_torch_save, atomic_write, safe_torch_load, save_safetensors
from .loader import EncoderInfo, infer_config, load_encoder, random_encoder, read_weights, save_encoder

__all__ = [
    "CONVERTERS", "Converted", "Converter", "CheckpointError", "EncoderInfo", "atomic_torch_save", "atomic_write",
    "detect_format", "infer_config", "list_formats", "load_encoder", "random_encoder", "read_weights",
    "safe_torch_load", "save_encoder", "save_safetensors",
]
