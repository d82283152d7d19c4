"""Synthetic ophthalmic images: a diffusion generator, fidelity measures, a visual Turing test, ratio studies.

Example::

    cfg = resolve_config("tiny", overrides={"data": "images/", "output": "runs/gen"})
    train_generator(cfg)
    sample_images("runs/gen", "synthetic/", num=64)      # reads runs/gen/generator/ (the EMA model)
"""

from .config import PRESETS, GeneratorConfig, resolve_config
from .model import Generator, GeneratorMeta, build_unet, export_generator, load_generator
from .sample import ddim_sample, sample_images
from .train import GeneratorTask, diffusion_loss, train_generator

__all__ = [
    "PRESETS",
    "Generator",
    "GeneratorConfig",
    "GeneratorMeta",
    "GeneratorTask",
    "build_unet",
    "ddim_sample",
    "diffusion_loss",
    "export_generator",
    "load_generator",
    "resolve_config",
    "sample_images",
    "train_generator",
]
