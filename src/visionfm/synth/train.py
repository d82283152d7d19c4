"""Training a diffusion generator (DDPM objective) on a folder or manifest of images, resumably."""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..distributed import resolve_device
from ..features import autocast_context
from .config import GeneratorConfig, save_config
from .data import TrainingData, load_training_data, square_image, to_model_range
from .model import (GeneratorMeta, build_scheduler, build_unet, ema_update, latest_checkpoint, load_training_state,
                    save_checkpoint)

__all__ = ["train_generator", "diffusion_loss", "MODEL_FIELDS"]

log = logging.getLogger(__name__)

# Fields that must match to resume a run (the rest, e.g. steps or lr, may change between sessions).
MODEL_FIELDS = ("data", "image_size", "crop", "block_out_channels", "attention_levels", "layers_per_block",
                "norm_num_groups", "num_train_timesteps", "beta_schedule", "prediction_type", "conditional",
                "num_classes", "label_column")


def diffusion_loss(model: torch.nn.Module, scheduler, x0: Tensor, class_labels: Tensor | None,
                   generator: torch.Generator | None = None) -> Tensor:
    """The DDPM training loss: MSE between the model's prediction and the noise (or velocity) target.

    Args:
        x0: clean images ``[B, 3, S, S]`` in [-1, 1].
        class_labels: ``[B]`` int64 or None (unconditional model).
    """
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    pred = model(noisy, t, class_labels=class_labels).sample
    return F.mse_loss(pred.float(), target.float())


def _batches(data: TrainingData, cfg: GeneratorConfig, gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless random batches: uint8 images ``[B, 3, S, S]`` and labels ``[B]``."""
    n = len(data.labels)
    if data.images is not None:
        while True:
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
            yield data.images[idx], data.labels[idx]

    def transform(img):
        arr = square_image(img, cfg.image_size, cfg.crop)
        return torch.from_numpy((arr * 255.0).round().astype("uint8")).permute(2, 0, 1)

    loader = DataLoader(ImageDataset(data.collection.samples, transform), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=len(data.labels) >= cfg.batch_size, num_workers=cfg.num_workers, generator=gen,
                        persistent_workers=cfg.num_workers > 0)
    while True:
        for x, idx in loader:
            yield x, data.labels[idx]


def _augment(x: Tensor, cfg: GeneratorConfig, gen: torch.Generator) -> Tensor:
    if cfg.hflip:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


def _check_resumable(cfg: GeneratorConfig, step_dir: Path) -> None:
    import yaml

    saved = yaml.safe_load((step_dir / "config.yaml").read_text())
    diff = [f"{k}: saved {saved.get(k)!r} != now {getattr(cfg, k)!r}" for k in MODEL_FIELDS
            if saved.get(k) != getattr(cfg, k)]
    if diff:
        raise ValueError(f"cannot resume {step_dir}: " + "; ".join(diff) + " (use a new --output)")


def train_generator(cfg: GeneratorConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train (or continue training) a generator until ``cfg.steps``; returns the last checkpoint folder.

    A run folder that already holds a checkpoint is resumed (weights, EMA, optimizer, step and RNG state) when
    ``resume`` is true; otherwise it is an error, so a run is never overwritten by accident.
    """
    cfg.validate()
    dev = resolve_device(cfg.device)
    run_dir = Path(cfg.output)
    prev = latest_checkpoint(run_dir) if run_dir.exists() else None
    if prev is not None and not resume:
        raise ValueError(f"{run_dir} already holds a checkpoint ({prev.name}); resume it or use a new --output")
    if prev is not None:
        _check_resumable(cfg, prev)
    torch.manual_seed(cfg.seed)
    data = load_training_data(cfg.data, cfg.layout, cfg.split, cfg.label_column, cfg.conditional, cfg.num_classes,
                              cfg.image_size, cfg.crop, cfg.cache, progress)
    model = build_unet(cfg, data.num_classes)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    scheduler = build_scheduler(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = GeneratorMeta(cfg.image_size, data.num_classes, data.label_names, 0)
    if prev is not None:
        state = load_training_state(prev, model, ema)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(state["rng"])
        meta.step = int(state["step"])
        log.info("resumed %s at step %d", prev, meta.step)
    model.to(dev).train()
    ema.to(dev)
    for s in opt.state.values():  # optimizer moments follow the model's device
        for k, v in s.items():
            if isinstance(v, Tensor) and k != "step":
                s[k] = v.to(dev)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if meta.step >= cfg.steps:
        log.info("%s is already at step %d >= steps %d; nothing to do", run_dir, meta.step, cfg.steps)
        return prev
    return _loop(cfg, data, model, ema, scheduler, opt, gen, meta, dev, progress)


def _loop(cfg: GeneratorConfig, data: TrainingData, model, ema, scheduler, opt, gen: torch.Generator,
          meta: GeneratorMeta, dev: torch.device, progress: bool) -> Path:
    run_dir = Path(cfg.output)
    batches = _batches(data, cfg, gen)
    bar = tqdm(total=cfg.steps, initial=meta.step, desc="synth train", unit="step", disable=not progress)
    last, t0, running = None, time.time(), None
    with open(run_dir / "log.jsonl", "a") as logf:
        while meta.step < cfg.steps:
            x, y = next(batches)
            x = to_model_range(_augment(x, cfg, gen)).to(dev, non_blocking=True)
            labels = None
            if data.num_classes:
                drop = torch.rand(len(y), generator=gen) < cfg.p_uncond  # train the "no class" token too
                labels = torch.where(drop, torch.full_like(y, data.num_classes), y).to(dev)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (meta.step + 1) / max(1, cfg.warmup_steps))
            with autocast_context(dev, cfg.precision):
                loss = diffusion_loss(model, scheduler, x, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            meta.step += 1
            # EMA warm-up: early weights are noise, so average over a short horizon first.
            ema_update(ema, model, min(cfg.ema_decay, (1 + meta.step) / (10 + meta.step)))
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if meta.step % 10 == 0 or meta.step == cfg.steps:
                logf.write(json.dumps({"step": meta.step, "loss": loss.item(), "loss_ema": running,
                                       "lr": opt.param_groups[0]["lr"], "time": time.time() - t0}) + "\n")
                logf.flush()
            if meta.step % cfg.save_every == 0 or meta.step == cfg.steps:
                state = {"optimizer": opt.state_dict(), "step": meta.step, "rng": torch.get_rng_state(),
                         "data_rng": gen.get_state()}
                last = save_checkpoint(run_dir, cfg, meta, model, ema, scheduler, state)
    bar.close()
    return last
