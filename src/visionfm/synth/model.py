"""The diffusion generator: a ``diffusers`` U-Net plus its noise schedule, and the folder a sampler reads.

Training runs on the shared engine (:mod:`visionfm.synth.train`), whose checkpoints (``checkpoint_last.pth`` and
numbered ones) hold the online and EMA U-Nets, optimizer and RNG state. At the end of training the EMA weights are
exported to ``<run>/generator/``, built under a hidden temporary name and then renamed into place::

    unet/             EMA weights as a diffusers model (config.json + safetensors; the model sampled from)
    scheduler/        the DDPM noise schedule (scheduler_config.json)
    generator.json    class conditioning facts and the step
    config.yaml       the resolved generator config

:func:`load_generator` reads that folder, a run folder (its export, or its ``checkpoint_last.pth`` when the run was
interrupted before exporting) or any engine checkpoint of a run. Nothing is unpickled freely: safetensors, JSON
and ``safe_torch_load``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import atomic_write, safe_torch_load
from ..config import load_config, save_config
from .config import GeneratorConfig

__all__ = [
    "EXPORT_DIR",
    "LAST_CHECKPOINT",
    "META_NAME",
    "RUN_CONFIG",
    "Generator",
    "GeneratorMeta",
    "build_scheduler",
    "build_unet",
    "ema_update",
    "export_generator",
    "load_generator",
    "write_run_facts",
]

log = logging.getLogger(__name__)
EXPORT_DIR = "generator"  # the exported EMA model inside a run folder
LAST_CHECKPOINT = "checkpoint_last.pth"  # written by the engine's Trainer
RUN_CONFIG = "generator.yaml"  # the run's one resolved config (the loop's settings nested as ``train``)
META_NAME = "generator.json"


@dataclass
class GeneratorMeta:
    """Facts a sampler needs besides the weights.

    Attributes:
        image_size: side of the generated images.
        num_classes: real classes (0 = unconditional); class index ``num_classes`` is the "no class" token.
        label_names: names of the classes when the data had them.
        step: optimizer steps done.
    """

    image_size: int
    num_classes: int = 0
    label_names: list[str] = field(default_factory=list)
    step: int = 0

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


@dataclass
class Generator:
    """A loaded generator: EMA U-Net, DDPM schedule config, facts and the folder it came from."""

    unet: nn.Module
    scheduler_config: dict[str, Any]
    meta: GeneratorMeta
    path: Path


def build_unet(cfg: GeneratorConfig, num_classes: int = 0) -> nn.Module:
    """A ``diffusers.UNet2DModel`` for ``cfg``; with ``num_classes`` > 0 it takes ``class_labels`` [B] in 0..K.

    One extra class embedding (index K) stands for "no class", used for classifier-free guidance.
    """
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    att = set(cfg.attention_levels)
    down = tuple("AttnDownBlock2D" if i in att else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in att else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=min(64, cfg.block_out_channels[-1]),
        num_class_embeds=num_classes + 1 if num_classes > 0 else None,
    )


def build_scheduler(cfg: GeneratorConfig):
    """The DDPM training schedule (``diffusers.DDPMScheduler``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,
    )


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def _load_unet(path: Path) -> nn.Module:
    from diffusers import UNet2DModel

    # safetensors only; low_cpu_mem_usage=False avoids diffusers' optional ``accelerate`` dependency.
    return UNet2DModel.from_pretrained(str(path), use_safetensors=True, low_cpu_mem_usage=False)


def write_run_facts(run_dir: str | Path, cfg: GeneratorConfig, meta: GeneratorMeta) -> None:
    """Write ``generator.yaml`` (the resolved config) and ``generator.json`` (class facts) into a run folder."""
    run_dir = Path(run_dir)
    save_config(cfg, run_dir / RUN_CONFIG)
    with atomic_write(run_dir / META_NAME) as tmp:
        tmp.write_text(json.dumps(asdict(meta), indent=1))


def _read_run_facts(run_dir: Path) -> tuple[GeneratorConfig, GeneratorMeta]:
    cfg_path, meta_path = run_dir / RUN_CONFIG, run_dir / META_NAME
    for p in (cfg_path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: {run_dir} is not a generator run folder")
    cfg = load_config(GeneratorConfig, cfg_path)  # generator.yaml files of every version (flat or nested)
    return cfg, GeneratorMeta(**json.loads(meta_path.read_text()))


def _from_engine_checkpoint(path: Path) -> Generator:
    """The EMA U-Net of an engine checkpoint (``checkpoint_last.pth`` or a numbered one) of a generator run."""
    cfg, meta = _read_run_facts(path.parent)
    state = safe_torch_load(path)
    ema = {k[len("ema.") :]: v for k, v in state["task"].items() if k.startswith("ema.")}
    unet = build_unet(cfg, meta.num_classes)
    unet.load_state_dict(ema, strict=True)
    meta.step = int(state["step"])
    return Generator(unet, dict(build_scheduler(cfg).config), meta, path)


def export_generator(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Write ``<run_dir>/generator/`` (EMA U-Net, schedule, facts, config) from an engine checkpoint.

    The folder is built under a hidden temporary name and renamed into place; until then a sampler falls back to
    ``checkpoint_last.pth``.

    Args:
        checkpoint: engine checkpoint to export (default: ``<run_dir>/checkpoint_last.pth``).

    Returns:
        the exported folder.
    """
    run_dir = Path(run_dir)
    gen = _from_engine_checkpoint(Path(checkpoint) if checkpoint else run_dir / LAST_CHECKPOINT)
    final = run_dir / EXPORT_DIR
    tmp = run_dir / f".{EXPORT_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    gen.unet.save_pretrained(tmp / "unet", safe_serialization=True)
    with atomic_write(tmp / "scheduler" / "scheduler_config.json") as t:
        t.write_text(json.dumps(gen.scheduler_config, indent=1))
    with atomic_write(tmp / META_NAME) as t:
        t.write_text(json.dumps(asdict(gen.meta), indent=1))
    shutil.copy2(run_dir / RUN_CONFIG, tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    log.info("exported the EMA generator at step %d to %s", gen.meta.step, final)
    return final


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a generator's EMA U-Net in eval mode.

    Args:
        path: an exported ``generator/`` folder, a run folder (its export, else its ``checkpoint_last.pth``) or an
            engine checkpoint file of a run (``checkpoint_00000500.pth``: sample an intermediate step).

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
    """
    path = Path(path)
    if path.is_dir() and (path / EXPORT_DIR / META_NAME).is_file():
        path = path / EXPORT_DIR
    if path.is_dir() and (path / "unet").is_dir() and (path / META_NAME).is_file():
        unet = _load_unet(path / "unet")
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        meta = GeneratorMeta(**json.loads((path / META_NAME).read_text()))
        gen = Generator(unet, sched, meta, path)
    elif path.is_dir() and (path / LAST_CHECKPOINT).is_file():
        gen = _from_engine_checkpoint(path / LAST_CHECKPOINT)
    elif path.is_file() and path.suffix == ".pth":
        gen = _from_engine_checkpoint(path)
    else:
        raise FileNotFoundError(
            f"no generator at {path} (expected a run folder, its {EXPORT_DIR}/ folder or a checkpoint_*.pth of a run)"
        )
    gen.unet.to(device).eval()
    return gen
