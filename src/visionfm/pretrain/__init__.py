"""iBOT self-supervised pretraining (the VisionFM objective): config, masking, losses, head, task, data, export.

Public interface::

    from visionfm.pretrain import PretrainConfig, pretrain
    run_dir = pretrain(PretrainConfig(data=["fundus/"], modality="Fundus", arch="vit_small_patch16",
                                      output="runs/pretrain/fundus", epochs=10, batch_size=32))
    encoder = visionfm.load_encoder(run_dir / "encoder.safetensors")
"""
from .api import ENCODER_FILE, build_encoders, pretrain
from .config import PretrainConfig
from .data import PretrainDataset, build_dataset
from .export import export_encoder
from .heads import IBOTHead
from .task import IBOTTask

__all__ = ["ENCODER_FILE", "IBOTHead", "IBOTTask", "PretrainConfig", "PretrainDataset", "build_dataset",
           "build_encoders", "export_encoder", "pretrain"]
