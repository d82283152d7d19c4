"""The diffusion generator: a ``diffusers`` U-Net plus its noise schedule, and its checkpoints.

A run folder holds step folders written atomically (built under a hidden temporary name, then renamed) and a
``latest`` file naming the newest complete one (replaced atomically after the rename), so a crash at any moment
leaves a loadable run. Each step folder::

    unet/                      EMA weights as a diffusers model (config.json + safetensors; the model sampled from)
    scheduler/                 the DDPM noise schedule (scheduler_config.json)
    train_model.safetensors    online (non-EMA) weights, for resuming
    train_state.pt             optimizer state, step, RNG state (tensors and numbers only: loaded weights_only)
    generator.json             class conditioning facts and the step
    config.yaml                the resolved training config

Nothing is unpickled freely: safetensors, JSON and ``safe_torch_load``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoints import atomic_write, safe_torch_load
from .config import GeneratorConfig, save_config

__all__ = ["Generator", "GeneratorMeta", "build_unet", "build_scheduler", "save_checkpoint", "load_generator",
           "latest_checkpoint", "load_training_state", "ema_update"]

log = logging.getLogger(__name__)


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
        sample_size=cfg.image_size, in_channels=3, out_channels=3, block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down, up_block_types=up, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, attention_head_dim=min(64, cfg.block_out_channels[-1]),
        num_class_embeds=num_classes + 1 if num_classes > 0 else None,
    )


def build_scheduler(cfg: GeneratorConfig):
    """The DDPM training schedule (``diffusers.DDPMScheduler``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=True)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def _step_name(step: int) -> str:
    return f"step-{step:07d}"


def save_checkpoint(run_dir: str | Path, cfg: GeneratorConfig, meta: GeneratorMeta, model: nn.Module,
                    ema: nn.Module, scheduler, state: dict[str, Any]) -> Path:
    """Write ``<run_dir>/step-XXXXXXX`` atomically, point ``latest`` at it and prune old step folders.

    Args:
        state: ``optimizer`` state dict, ``rng`` (CPU RNG state tensor) and anything else made of tensors/numbers.
    """
    run_dir = Path(run_dir)
    final = run_dir / _step_name(meta.step)
    tmp = run_dir / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ema.save_pretrained(tmp / "unet", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp / "train_model.safetensors"))
    torch.save(state, tmp / "train_state.pt")
    (tmp / "generator.json").write_text(json.dumps(meta.__dict__, indent=1))
    save_config(cfg, tmp / "config.yaml")
    if final.exists():  # a crash after a rename but before ``latest`` moved: that folder is not referenced
        shutil.rmtree(final)
    os.replace(tmp, final)
    with atomic_write(run_dir / "latest") as t:
        t.write_text(final.name + "\n")
    steps = sorted(p for p in run_dir.glob("step-*") if p.is_dir())
    for old in steps[: -cfg.keep_checkpoints]:
        shutil.rmtree(old)
    log.info("checkpoint %s", final)
    return final


def latest_checkpoint(path: str | Path) -> Path | None:
    """The step folder ``path`` means: itself if it is one, else the run's ``latest``; None for a fresh run."""
    path = Path(path)
    if (path / "generator.json").is_file():
        return path
    pointer = path / "latest"
    if not pointer.is_file():
        return None
    step_dir = path / pointer.read_text().strip()
    if not (step_dir / "generator.json").is_file():
        raise FileNotFoundError(f"{pointer} names {step_dir}, which is not a complete checkpoint")
    return step_dir


def _load_unet(path: Path) -> nn.Module:
    from diffusers import UNet2DModel

    # safetensors only; low_cpu_mem_usage=False avoids diffusers' optional ``accelerate`` dependency.
    return UNet2DModel.from_pretrained(str(path), use_safetensors=True, low_cpu_mem_usage=False)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load the EMA U-Net of a run folder (its latest step) or of one step folder, in eval mode.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
    """
    step_dir = latest_checkpoint(path)
    if step_dir is None:
        raise FileNotFoundError(f"no generator checkpoint in {path} (expected a run folder with 'latest' or a "
                                "step-XXXXXXX folder)")
    unet = _load_unet(step_dir / "unet").to(device).eval()
    sched = json.loads((step_dir / "scheduler" / "scheduler_config.json").read_text())
    meta = GeneratorMeta(**json.loads((step_dir / "generator.json").read_text()))
    return Generator(unet, sched, meta, step_dir)


def load_training_state(step_dir: Path, model: nn.Module, ema: nn.Module) -> dict[str, Any]:
    """Restore online and EMA weights from ``step_dir``; returns the saved training state (optimizer, rng...)."""
    model.load_state_dict(load_file(str(step_dir / "train_model.safetensors")), strict=True)
    ema_src = _load_unet(step_dir / "unet")
    ema.load_state_dict(ema_src.state_dict(), strict=True)
    return safe_torch_load(step_dir / "train_state.pt")
