"""Deployment exports: a trained run as one inference module, and that module as a checked ONNX file.

::

    from visionfm.export import export_onnx, load_onnx, load_model
    result = export_onnx("runs/dr", "dr.onnx")            # encoder + head, parity-checked against PyTorch
    model = load_onnx("dr.onnx")                           # ONNX Runtime, with the model card from the sidecar
    scores, = model.run({"image": x})                      # x: [B, 3, S, S] normalised as the card says
"""

from .onnx import MIN_OPSET, ExportResult, OnnxModel, check_images, export_onnx, load_onnx, sidecar_path
from .pipelines import (
    RUN_KINDS,
    DensePipeline,
    EncoderPipeline,
    LoadedModel,
    ModelCard,
    RecognitionPipeline,
    load_model,
    preprocess_image,
)
from .predict import predict_onnx, predict_volume_run, predict_volumes_onnx
from .volume import VolumePipeline

__all__ = [
    "MIN_OPSET",
    "RUN_KINDS",
    "DensePipeline",
    "EncoderPipeline",
    "ExportResult",
    "LoadedModel",
    "ModelCard",
    "OnnxModel",
    "RecognitionPipeline",
    "VolumePipeline",
    "check_images",
    "export_onnx",
    "load_model",
    "load_onnx",
    "predict_onnx",
    "predict_volume_run",
    "predict_volumes_onnx",
    "preprocess_image",
    "sidecar_path",
]
