"""Reading released checkpoints of every supported format (files or ``hf-hub:`` references), and writing visionfm's."""

from .converters import CONVERTERS, Converted, Converter, detect_format, list_formats
from .describe import describe_weights
from .hub import HF_PREFIX, is_hub_reference, parse_hub_reference, resolve_weights_path
from .io import CheckpointError, atomic_torch_save, atomic_write, safe_torch_load, save_safetensors
from .loader import EncoderInfo, infer_config, load_encoder, load_head, random_encoder, read_weights, save_encoder
from .resolve import resolve_encoder

__all__ = [
    "CONVERTERS",
    "HF_PREFIX",
    "CheckpointError",
    "Converted",
    "Converter",
    "EncoderInfo",
    "atomic_torch_save",
    "atomic_write",
    "describe_weights",
    "detect_format",
    "infer_config",
    "is_hub_reference",
    "list_formats",
    "load_encoder",
    "load_head",
    "parse_hub_reference",
    "random_encoder",
    "read_weights",
    "resolve_encoder",
    "resolve_weights_path",
    "safe_torch_load",
    "save_encoder",
    "save_safetensors",
]
