"""visionfm: a multi-modal, multi-task vision foundation model toolkit for ophthalmic images.

Public interface::

    encoder = visionfm.load_encoder("VFM_Fundus_weights.pth", modality="Fundus")
    out = encoder(x, n_last_blocks=4, return_attention=True)   # out.cls, out.patch_tokens, out.layers, out.attention
    visionfm.extract_features("weights.pth", "images/", "features.safetensors", modality="Fundus")
"""
from .checkpoints import load_encoder, save_encoder
from .features import extract_features, load_features
from .modalities import canonical_modality, get_modality, list_modalities
from .models import EncoderOutput, VisionTransformer, ViTConfig, create_encoder, list_archs

__version__ = "0.1.0"

__all__ = [
    "EncoderOutput", "VisionTransformer", "ViTConfig", "canonical_modality", "create_encoder", "extract_features",
    "get_modality", "list_archs", "list_modalities", "load_encoder", "load_features", "save_encoder",
]
