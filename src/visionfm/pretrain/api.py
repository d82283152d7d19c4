"""``pretrain(cfg)``: self-supervised pretraining of a ViT encoder (iBOT or MAE); returns the run folder.

The run folder holds ``pretrain.yaml`` (the resolved config, the run's only one), ``checkpoint_last.pth`` (+ step
checkpoints), ``log.jsonl``, ``tensorboard/``, ``health.json`` (collapse indicators), ``bad_images.txt`` when images
were skipped, ``encoder.safetensors`` (the iBOT teacher or the MAE encoder, loadable with
``visionfm.load_encoder``) and, for MAE, ``reconstruction.png``.

The same call runs in one process or under ``torchrun`` (gloo on CPU, NCCL on GPU): the learning rate is per
``train.lr_base_batch`` (256) images of the global batch (``batch_size * accum_steps * world_size``), as officially.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..checkpoints.io import SAFE_GLOBALS
from ..config import config_to_dict
from ..distributed import barrier, init_distributed, resolve_device
from ..engine.config import TrainConfig
from ..engine.precision import resolve_precision
from ..engine.trainer import Trainer
from ..fileio import prepare_run_folder
from .config import RUN_CONFIG, PretrainConfig, pretrain_config
from .data import PretrainDataset, build_dataset
from .encoders import arch_config, build_encoders, build_task
from .export import ENCODER_FILE, save_pretrained_encoder
from .health import HEALTH_FILE, write_health

__all__ = ["ENCODER_FILE", "RESUME_MAY_DIFFER", "build_encoders", "pretrain"]

log = logging.getLogger(__name__)

# Settings a resumed run may change without changing its result.
RESUME_MAY_DIFFER = frozenset(
    {
        "num_workers",
        "progress",
        "log_every",
        "checkpoint_every",
        "keep_last",
        "device",
        "compile",
        "init_from",
        "output_dir",
        "checkpoint_epochs",
    }
)


def _flat(cfg: PretrainConfig) -> dict:
    d = config_to_dict(cfg)
    return {**{k: v for k, v in d.items() if k != "train"}, **{f"train.{k}": v for k, v in d["train"].items()}}


def _check_resume(cfg: PretrainConfig, out: Path, resume: bool) -> None:
    saved = out / RUN_CONFIG
    if resume and not saved.is_file():
        raise FileNotFoundError(f"--resume: {out} holds no pretraining run (no {RUN_CONFIG})")
    if not prepare_run_folder(out, "pretraining", (RUN_CONFIG,), resume):
        return
    old, new = _flat(pretrain_config(saved)), _flat(cfg)
    diff = sorted(k for k in new if k.split(".")[-1] not in RESUME_MAY_DIFFER and old.get(k) != new[k])
    if diff:
        details = ", ".join(f"{k.removeprefix('train.')}: run {old.get(k)!r} vs now {new[k]!r}" for k in diff)
        raise ValueError(
            f"--resume: {saved} was made with other settings ({details}); resume with the same "
            f"settings or start a new output"
        )


def _check_world(out: Path, world: int) -> None:
    """A run resumes with the processes it was made with (one RNG state per process in the checkpoint), else the
    global batch, the learning rate and the data order would differ and the resume would not be exact."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):  # mmap: reads the small RNG states, not the weights
        state = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True, mmap=True)
    made = len(state.get("rng_ranks") or [None])
    if made != world:
        raise ValueError(
            f"--resume: {out} was trained by {made} process(es), now {world}; resume with the same "
            f"number of processes (the global batch and the data order depend on it)"
        )


def _loop_config(cfg: PretrainConfig) -> TrainConfig:
    """The loop's settings: ``cfg.train`` as given, except that iBOT clips its own gradients (per parameter, as
    officially, or globally: :meth:`IBOTTask.before_optimizer_step`), so the loop is given no clipping."""
    return dataclasses.replace(cfg.train, clip_grad=None) if cfg.method == "ibot" else cfg.train


def _trainer(task: torch.nn.Module, cfg: PretrainConfig, dataset: PretrainDataset) -> Trainer:
    """The loop, with the one warm-up rule of pretraining: at most half the run (short runs would otherwise never
    leave the warm-up, e.g. the official 50 warm-up epochs in a 10-epoch run)."""
    tc = _loop_config(cfg)
    trainer = Trainer(task, tc, dataset, run_config=(RUN_CONFIG, cfg))  # one resolved config per run
    half = trainer.total_steps // 2
    if tc.warmup_in_steps(trainer.steps_per_epoch) > half:
        log.warning(
            "warm-up of %s is more than half of this %d-step run: warming up for %d steps",
            f"{tc.warmup_steps} steps" if tc.warmup_steps is not None else f"{tc.warmup_epochs:g} epochs",
            trainer.total_steps,
            half,
        )
        trainer = Trainer(task, dataclasses.replace(tc, warmup_steps=half), dataset, run_config=(RUN_CONFIG, cfg))
    return trainer


def pretrain(cfg: PretrainConfig, resume: bool = False) -> Path:
    """Pretrain an encoder with iBOT (DINO when ``cfg.mim`` is False) or MAE and export it.

    Args:
        cfg: the configuration (method, data, modality, architecture, crops, masking, ``train`` loop settings).
        resume: continue the run in ``cfg.train.output_dir`` exactly where its last checkpoint stopped.

    Returns:
        The run folder; ``<run>/encoder.safetensors`` is the exported encoder (iBOT teacher, MAE encoder).

    Raises:
        FileNotFoundError: a data folder, the init weights or (with ``resume``) the run is missing.
        ValueError: empty data, unknown modality or architecture, or a resume with different settings.
    """
    out = Path(cfg.train.output_dir)
    dist_info = init_distributed(resolve_device(cfg.train.device))
    _check_resume(cfg, out, resume)
    if resume:
        _check_world(out, dist_info.world_size)
    dataset = build_dataset(cfg, _patch_size(cfg), bad_log=out / "bad_images.txt")
    with torch.random.fork_rng(devices=[]):  # the initial weights are a function of the seed; the caller's RNG kept
        torch.manual_seed(cfg.train.seed)
        task = build_task(cfg, with_weights=not resume, main=dist_info.is_main, modalities=dataset.modalities)
    trainer = _trainer(task, cfg, dataset)
    if dist_info.is_main:
        log.info(
            "%s pretraining %s on %d images/epoch, %d steps, global batch %d, lr %.3g, precision %s (%s)",
            cfg.method,
            cfg.arch,
            len(dataset),
            trainer.total_steps,
            cfg.train.batch_size * cfg.train.accum_steps * dist_info.world_size,
            trainer.lr,
            resolve_precision(cfg.train.precision, trainer.device),
            cfg.train.precision,
        )
    trainer.fit(resume=resume)
    if dist_info.is_main:
        _finish(task, cfg, dataset, out)
    barrier()
    return out


def _patch_size(cfg: PretrainConfig) -> int:
    return arch_config(cfg).patch_size


def _finish(task: torch.nn.Module, cfg: PretrainConfig, dataset: PretrainDataset, out: Path) -> None:
    """Export the encoder, write ``health.json`` (and MAE's reconstruction figure), report skipped images."""
    save_pretrained_encoder(task.exported_encoder(), cfg, out / ENCODER_FILE, str(out))
    health = write_health(out)
    log.info("health: %s (%s)", "ok" if health["healthy"] else "COLLAPSE SUSPECTED", out / HEALTH_FILE)
    if cfg.method == "mae":
        from .figures import reconstruction_figure

        reconstruction_figure(task, dataset, out / "reconstruction.png")
    bad = out / "bad_images.txt"
    if bad.is_file():
        n = len(set(bad.read_text().splitlines()))
        log.warning("%d corrupt images were skipped; their paths are in %s", n, bad)
