"""Training a diffusion generator (DDPM objective) on the shared engine: a :class:`GeneratorTask` for the Trainer.

The engine does the rest (resumable sampling, warm-up schedule, AMP, accumulation, clipping, DDP under torchrun,
atomic checkpoints with every RNG state, JSON-lines + TensorBoard logs). A run folder holds the engine's files
(``checkpoint_last.pth``, numbered checkpoints, ``log.jsonl``), the run's one resolved config ``generator.yaml``
(the loop's settings nested as ``train``) and ``generator.json`` (class facts), and after training the exported EMA
model ``generator/`` that
:func:`visionfm.synth.sample_images` reads.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import load_config
from ..engine import StepState, Task, Trainer
from ..errors import UserError
from ..fileio import prepare_run_folder
from .config import GeneratorConfig
from .data import GeneratorDataset, load_training_data, to_model_range
from .model import (
    EXPORT_DIR,
    RUN_CONFIG,
    GeneratorMeta,
    build_scheduler,
    build_unet,
    ema_update,
    export_generator,
    write_run_facts,
)

__all__ = ["MODEL_FIELDS", "GeneratorTask", "diffusion_loss", "train_generator"]

log = logging.getLogger(__name__)

# Fields that must match to resume a run (the rest, e.g. steps or lr, may change between sessions).
MODEL_FIELDS = (
    "data",
    "image_size",
    "crop",
    "block_out_channels",
    "attention_levels",
    "layers_per_block",
    "norm_num_groups",
    "num_train_timesteps",
    "beta_schedule",
    "prediction_type",
    "conditional",
    "num_classes",
    "label_column",
)


def diffusion_loss(
    model: nn.Module, scheduler: Any, x0: Tensor, class_labels: Tensor | None, generator: torch.Generator | None = None
) -> Tensor:
    """The DDPM training loss: MSE between the model's prediction and the noise (or velocity) target.

    Args:
        model: a ``UNet2DModel``.
        scheduler: the ``DDPMScheduler`` (noise schedule, prediction type).
        x0: clean images ``[B, 3, S, S]`` in [-1, 1].
        class_labels: ``[B]`` int64 or None (unconditional model).
        generator: random generator of the noise and timesteps (None: the global one).
    """
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    pred = model(noisy, t, class_labels=class_labels).sample
    return F.mse_loss(pred.float(), target.float())


class GeneratorTask(Task):
    """Online U-Net (trained) + EMA U-Net (sampled from), DDPM loss, flips and the "no class" dropout.

    Args:
        unet: the U-Net to train.
        scheduler: its ``DDPMScheduler``.
        num_classes: real classes (0 = unconditional); index ``num_classes`` is the "no class" token.
        p_uncond: share of conditional examples trained as "no class" (classifier-free guidance).
        hflip: random horizontal flips.
        ema_decay: final EMA decay (warmed up as ``min(decay, (1 + step) / (10 + step))``).
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        num_classes: int = 0,
        p_uncond: float = 0.1,
        hflip: bool = True,
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.ema = copy.deepcopy(unet).requires_grad_(False)
        self.scheduler = scheduler
        self.num_classes, self.p_uncond, self.hflip, self.ema_decay = num_classes, p_uncond, hflip, ema_decay

    def forward(self, batch: tuple[Tensor, Tensor], state: StepState) -> dict[str, Tensor]:
        """Loss of one batch: uint8 images ``[B, 3, S, S]`` and class indices ``[B]``."""
        x, y = batch
        if self.hflip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        labels = None
        if self.num_classes:
            drop = torch.rand(y.shape[0], device=y.device) < self.p_uncond  # trains the "no class" token too
            labels = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return {"loss": diffusion_loss(self.unet, self.scheduler, to_model_range(x), labels)}

    def on_after_step(self, state: StepState) -> None:
        step = state.step + 1  # early weights are noise, so the EMA averages over a short horizon first
        ema_update(self.ema, self.unet, min(self.ema_decay, (1 + step) / (10 + step)))


def _check_resumable(cfg: GeneratorConfig, run_dir: Path) -> None:
    saved_path = run_dir / RUN_CONFIG
    if not saved_path.is_file():
        raise UserError(f"cannot resume {run_dir}: {saved_path.name} is missing (not a generator run?)")
    saved = load_config(GeneratorConfig, saved_path)  # old flat files load too
    diff = [
        f"{k}: saved {getattr(saved, k)!r} != now {getattr(cfg, k)!r}"
        for k in MODEL_FIELDS
        if getattr(saved, k) != getattr(cfg, k)
    ]
    if diff:
        raise UserError(f"cannot resume {run_dir}: " + "; ".join(diff) + " (use a new --output)")


def train_generator(
    cfg: GeneratorConfig, resume: bool = False, progress: bool | None = None, overwrite: bool = False
) -> Path:
    """Train (or continue training) a generator until ``cfg.steps``; returns the exported ``generator/`` folder.

    With ``resume``, a run folder that holds ``checkpoint_last.pth`` is continued exactly (weights, EMA, optimizer,
    data order, RNG) after checking that the model settings match; a larger ``train.max_steps`` extends a finished
    run. With ``overwrite`` an existing generator run is replaced. Without either, an existing run is an error.
    Works under ``torchrun`` (DDP; rank 0 writes the files).
    """
    cfg.validate()
    progress = cfg.train.progress if progress is None else progress
    run_dir = Path(cfg.output)
    has_ckpt = prepare_run_folder(run_dir, "generator", (RUN_CONFIG,), resume, overwrite)
    if has_ckpt:
        _check_resumable(cfg, run_dir)
    data = load_training_data(
        cfg.data,
        cfg.layout,
        cfg.split,
        cfg.label_column,
        cfg.conditional,
        cfg.num_classes,
        cfg.image_size,
        cfg.crop,
        cfg.cache,
        progress,
    )
    with torch.random.fork_rng():  # the U-Net's initial weights follow the seed without touching the caller's RNG
        torch.manual_seed(cfg.train.seed)
        unet = build_unet(cfg, data.num_classes)
    task = GeneratorTask(unet, build_scheduler(cfg), data.num_classes, cfg.p_uncond, cfg.hflip, cfg.ema_decay)
    # list a small set several times per epoch: an epoch then lasts about ``save_every`` steps
    n = len(data.labels)
    tc = cfg.train
    every = tc.checkpoint_every or cfg.steps
    repeats = max(1, round(min(every, cfg.steps) * tc.batch_size * tc.accum_steps / n))
    dataset = GeneratorDataset(data, cfg.image_size, cfg.crop, repeats)
    # cached images need no decoding workers; the progress flag is the caller's, not a setting of the run
    loop = dataclasses.replace(tc, num_workers=0 if cfg.cache else tc.num_workers, progress=progress)
    trainer = Trainer(task, loop, dataset, run_config=(RUN_CONFIG, cfg))
    if trainer.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_facts(run_dir, cfg, GeneratorMeta(cfg.image_size, data.num_classes, data.label_names))
    log.info(
        "generator: %d images x %d per epoch, %.2f M parameters, %d steps",
        n,
        repeats,
        sum(p.numel() for p in task.unet.parameters()) / 1e6,
        cfg.steps,
    )
    trainer.fit(resume=has_ckpt)
    return export_generator(run_dir) if trainer.dist.is_main else run_dir / EXPORT_DIR
