"""``pretrain(cfg)``: iBOT self-supervised pretraining of a ViT encoder; returns the run folder.

The run folder holds ``pretrain.yaml`` (the resolved config), ``config.yaml`` (the loop's), ``checkpoint_last.pth``
(+ step checkpoints), ``log.jsonl``, ``tensorboard/``, ``bad_images.txt`` when images were skipped, and
``encoder.safetensors``: the teacher encoder, loadable with ``visionfm.load_encoder``.

The same call runs in one process or under ``torchrun`` (gloo on CPU, NCCL on GPU): the learning rate is scaled by
the global batch (``batch_size * accum_steps * world_size / 256``) and the centres are all-reduced.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch

from ..distributed import barrier, init_distributed, resolve_device
from ..engine.trainer import TrainConfig, Trainer, load_config, save_config
from .config import RUN_CONFIG, PretrainConfig
from .data import build_dataset
from .encoders import build_encoders
from .export import ENCODER_FILE, save_pretrained_encoder
from .task import IBOTTask

__all__ = ["pretrain", "build_encoders", "ENCODER_FILE", "RESUME_MAY_DIFFER"]

log = logging.getLogger(__name__)

# Settings a resumed run may change without changing its result.
RESUME_MAY_DIFFER = frozenset({"num_workers", "progress", "log_every", "checkpoint_every", "keep_last", "device",
                               "compile", "init_from", "output"})


def _check_resume(cfg: PretrainConfig, out: Path, resume: bool) -> None:
    saved = out / RUN_CONFIG
    if not resume:
        if (out / "checkpoint_last.pth").exists():
            raise ValueError(f"{out} already holds a pretraining run; resume it (--resume) or choose another output")
        return
    if not saved.is_file():
        raise FileNotFoundError(f"--resume: {out} holds no pretraining run (no pretrain.yaml)")
    old = asdict(load_config(PretrainConfig, saved))
    new = asdict(cfg)
    diff = sorted(k for k in new if k not in RESUME_MAY_DIFFER and old.get(k) != new[k])
    if diff:
        details = ", ".join(f"{k}: run {old.get(k)!r} vs now {new[k]!r}" for k in diff)
        raise ValueError(f"--resume: {saved} was made with other settings ({details}); resume with the same "
                         f"settings or start a new output")


def _check_world(out: Path, tc: TrainConfig, world: int) -> None:
    """A run resumes with the global batch it was made with (same processes x batch), else it would not be exact."""
    saved = out / "config.yaml"
    if not saved.is_file():
        return
    old = load_config(TrainConfig, saved)
    if abs(old.lr - tc.lr) > 1e-12 * max(old.lr, 1e-30):
        raise ValueError(f"--resume: {out} was trained with another global batch (lr {old.lr:.6g} vs now {tc.lr:.6g} "
                         f"with {world} process(es) x batch {tc.batch_size} x accum {tc.accum_steps}); resume with "
                         f"the same number of processes")


def _train_config(cfg: PretrainConfig, n_images: int, world: int, device: torch.device) -> tuple[TrainConfig, int]:
    """The loop's config (lr scaled by the global batch, warm-up capped) and the run's epoch count."""
    per_rank = math.ceil(n_images / world)
    steps_per_epoch = per_rank // cfg.batch_size // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ValueError(f"{n_images} images give no full batch of {cfg.batch_size} x {cfg.accum_steps} "
                         f"accumulation steps on each of {world} processes; lower batch_size")
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    run_epochs = math.ceil(total / steps_per_epoch)
    warmup = cfg.warmup_epochs
    if warmup > total / steps_per_epoch / 2:
        warmup = total / steps_per_epoch / 2
        log.warning("warmup_epochs %.3g is more than half of this %.3g-epoch run: warming up for %.3g epochs",
                    cfg.warmup_epochs, total / steps_per_epoch, warmup)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    global_batch = cfg.batch_size * cfg.accum_steps * world
    tc = TrainConfig(
        output_dir=cfg.output, epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
        lr=cfg.lr * global_batch / 256.0, min_lr=cfg.min_lr, warmup_epochs=warmup, weight_decay=cfg.weight_decay,
        weight_decay_end=cfg.weight_decay_end, clip_grad=None, accum_steps=cfg.accum_steps, precision=precision,
        device=cfg.device, seed=cfg.seed, num_workers=cfg.num_workers, checkpoint_every=cfg.checkpoint_every,
        keep_last=cfg.keep_last, compile=cfg.compile, progress=cfg.progress, log_every=cfg.log_every)
    return tc, run_epochs


def pretrain(cfg: PretrainConfig, resume: bool = False) -> Path:
    """Pretrain an encoder with iBOT (DINO when ``cfg.mim`` is False) and export the teacher.

    Args:
        cfg: the configuration (data, modality, architecture, crops, masking, optimisation, run folder).
        resume: continue the run in ``cfg.output`` exactly where its last checkpoint stopped.

    Returns:
        The run folder ``Path(cfg.output)``; ``<run>/encoder.safetensors`` is the exported teacher encoder.

    Raises:
        FileNotFoundError: a data folder, the init weights or (with ``resume``) the run is missing.
        ValueError: empty data, unknown modality or architecture, or a resume with different settings.
    """
    out = Path(cfg.output)
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    _check_resume(cfg, out, resume)
    torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed (same seed, same run)
    student, teacher = build_encoders(cfg, with_weights=not resume)
    dataset = build_dataset(cfg, student.cfg.patch_size, bad_log=out / "bad_images.txt")
    tc, run_epochs = _train_config(cfg, len(dataset), dist_info.world_size, device)
    if resume:
        _check_world(out, tc, dist_info.world_size)
    task = IBOTTask(student, teacher, cfg, run_epochs)
    trainer = Trainer(task, tc, dataset)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / RUN_CONFIG)
        log.info("iBOT pretraining %s on %d images/epoch, %d steps, global batch %d, lr %.3g", cfg.arch,
                 len(dataset), trainer.total_steps, tc.batch_size * tc.accum_steps * dist_info.world_size, tc.lr)
    trainer.fit(resume=resume)
    if dist_info.is_main:
        save_pretrained_encoder(task.teacher["backbone"], cfg, out / ENCODER_FILE, str(out))
        bad = out / "bad_images.txt"
        if bad.is_file():
            n = len(set(bad.read_text().splitlines()))
            log.warning("%d corrupt images were skipped; their paths are in %s", n, bad)
    barrier()
    return out
