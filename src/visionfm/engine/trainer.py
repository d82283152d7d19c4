"""The one training loop every task plugs into (pretraining, heads on features, fine-tuning, dense decoders).

It owns what every task needs and no task should repeat: the resumable sampler, per-iteration lr and weight-decay
schedules, autocast and gradient scaling, accumulation, clipping, DDP, atomic checkpoints with every RNG state,
JSON-lines + TensorBoard logs, progress, and model selection on validation data only.
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpoints.io import CheckpointError, atomic_torch_save, safe_torch_load
from ..config import load_config, save_config
from ..distributed import init_distributed, resolve_device
from ..fileio import atomic_write
from .config import TrainConfig
from .precision import resolve_precision
from .sampler import ResumableSampler
from .schedules import cosine_schedule
from .task import StepState, Task

__all__ = ["TrainConfig", "TrainResult", "Trainer", "load_config", "save_config", "trim_log"]

log = logging.getLogger(__name__)
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    best_metric: float | None = None
    best_epoch: int | None = None
    best_path: Path | None = None
    last_path: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _batch_size_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_size_of(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_size_of(batch[0])
    return 1


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Runs a :class:`Task` over a dataset.

    Resuming (``fit(resume=True)``) continues from ``checkpoint_last.pth``; when that file is unreadable the newest
    intact numbered checkpoint is used instead (said in a warning), and ``log.jsonl`` is trimmed to the resumed step
    so no step is logged twice. A larger ``max_steps`` (or ``epochs``) than the checkpoint's run extends it: the lr
    and weight-decay cosine schedules are recomputed over the new total (the warm-up keeps its length in steps; from
    the resumed step on, the rates follow the new, longer curve), the data order continues unchanged. The result is
    deterministic, but not identical to a run trained to the new total from the start.

    Args:
        task: the task (modules, loss, metrics).
        cfg: loop configuration.
        train_data: training dataset.
        val_data: validation dataset for ``task.evaluate`` and model selection (never the test set).
        collate_fn: batch collation for the loaders.
        run_config: (file name, config) of the task's whole resolved config, written into the run folder instead
            of the loop's own ``config.yaml`` (one resolved config per run).
    """

    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        train_data: Dataset,
        val_data: Dataset | None = None,
        collate_fn: Callable | None = None,
        run_config: tuple[str, Any] | None = None,
    ) -> None:
        self.task, self.cfg, self.train_data, self.val_data, self.collate_fn = (
            task,
            cfg,
            train_data,
            val_data,
            collate_fn,
        )
        self.run_config = run_config or ("config.yaml", cfg)
        self.out = Path(cfg.output_dir)
        self.dist = init_distributed(resolve_device(cfg.device))
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.sampler = ResumableSampler(len(train_data), cfg.seed, True, self.dist.rank, self.dist.world_size)
        self.batches_per_epoch = self.sampler.per_rank // cfg.batch_size
        if self.batches_per_epoch < cfg.accum_steps:
            raise ValueError(
                f"{len(train_data)} training samples give fewer than accum_steps={cfg.accum_steps} "
                f"full batches of {cfg.batch_size} per process; lower --batch-size"
            )
        self.steps_per_epoch = self.batches_per_epoch // cfg.accum_steps
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.lr = cfg.effective_lr(self.dist.world_size)
        warmup = min(cfg.warmup_in_steps(self.steps_per_epoch), self.total_steps)
        min_lr = self.lr if cfg.min_lr is None else cfg.min_lr  # None: constant after the warm-up
        self.lr_sched = cosine_schedule(self.lr, min_lr, self.total_steps, warmup)
        wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
        self.wd_sched = cosine_schedule(cfg.weight_decay, wd_end, self.total_steps)

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _rng_states(self) -> list[dict[str, Any]]:
        """Every process's RNG state (gathered under DDP: a collective, so all ranks call it)."""
        own = _rng_state()
        if self.dist.world_size == 1:
            return [own]
        buf = io.BytesIO()
        torch.save(own, buf)  # gathered as bytes: pickled tensors do not survive all_gather_object
        blobs: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(blobs, buf.getvalue())
        return [torch.load(io.BytesIO(b), weights_only=True) for b in blobs]

    def _checkpoint(self, step: int, epoch: int, batches_done: int, best: dict, history: list) -> None:
        """Write ``checkpoint_last.pth``; called on every rank (the RNG states are gathered), saved by the main one."""
        rngs = self._rng_states()
        if self.dist.is_main:
            self._save(
                {
                    "rng_ranks": rngs,
                    "task": self.task.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "batches_done": batches_done,
                    "best": best,
                    "history": history,
                    "config": asdict(self.cfg),
                    "total_steps": self.total_steps,
                },
                step,
            )

    def _save(self, state: dict[str, Any], step: int) -> Path:
        last = self.out / "checkpoint_last.pth"
        atomic_torch_save(state, last)
        self._save_run_config()
        if self.cfg.checkpoint_every and self.cfg.keep_last > 0:
            atomic_torch_save(state, self.out / f"checkpoint_{step:08d}.pth")
            for old in sorted(self.out.glob("checkpoint_0*.pth"))[: -self.cfg.keep_last]:
                old.unlink()
        return last

    def _save_run_config(self) -> None:
        name, cfg = self.run_config
        save_config(cfg, self.out / name)

    def _load_intact(self) -> tuple[Path, dict[str, Any]]:
        """``checkpoint_last.pth``, or (when it is unreadable) the newest intact numbered checkpoint."""
        last = self.out / "checkpoint_last.pth"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint_last.pth in {self.out}")
        problems = []
        for path in [last, *sorted(self.out.glob("checkpoint_0*.pth"), reverse=True)]:
            try:
                state = safe_torch_load(path)
                if not isinstance(state, dict) or not {"task", "optimizer", "step"} <= set(state):
                    raise CheckpointError(f"{path}: not a checkpoint of this training loop")
            except (CheckpointError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
                problems.append(f"{path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            if path != last:
                log.warning(
                    "%s is unreadable (%s); resuming from %s, the newest intact checkpoint",
                    last,
                    problems[0],
                    path.name,
                )
            return path, state
        raise CheckpointError(
            f"cannot resume {self.out}: no intact checkpoint ({'; '.join(problems)}); start "
            "again with a new output folder"
        )

    def _resume(self) -> dict[str, Any] | None:
        path, state = self._load_intact()
        try:
            self.task.load_state_dict(state["task"], strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"{path}: cannot resume, the run was made with a different model: {str(e).splitlines()[0]}"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("rng_ranks") or [state["rng"]]  # "rng": checkpoints written before per-rank states
        _set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world_size else ranks[0])
        log.info("resumed %s at step %d (epoch %d)", path, state["step"], state["epoch"])
        before = state.get("total_steps")
        if before is not None and before != self.total_steps:
            log.info(
                "the run had %d steps and now has %d: lr and weight-decay schedules recomputed over %d steps",
                before,
                self.total_steps,
                self.total_steps,
            )
        if state["step"] >= self.total_steps:
            log.warning(
                "%s is already at step %d >= %d steps: nothing to train (raise --max-steps or --epochs to extend it)",
                path,
                state["step"],
                self.total_steps,
            )
        return state

    # -- the loop -----------------------------------------------------------------------------------------------
    def _setup(self) -> torch.nn.Module:
        torch.manual_seed(self.cfg.seed + self.dist.rank)
        np.random.seed(self.cfg.seed + self.dist.rank)
        random.seed(self.cfg.seed + self.dist.rank)
        self.task.to(self.device)
        groups = self.task.param_groups()
        if not groups:
            raise ValueError(f"{type(self.task).__name__} has no trainable parameters")
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=tuple(self.cfg.betas), fused=fused or None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.precision == "fp16")
        model: torch.nn.Module = self.task
        if self.dist.world_size > 1:
            model = DistributedDataParallel(self.task, device_ids=[self.device.index] if fused else None)
        return torch.compile(model) if self.cfg.compile else model

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start_batch * self.cfg.batch_size)
        if hasattr(self.train_data, "set_epoch"):  # per-epoch data (augmentation seeds, synthetic draws)
            self.train_data.set_epoch(epoch)
        return DataLoader(
            self.train_data,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collate_fn,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch),
        )

    def _apply_schedules(self, step: int) -> tuple[float, float]:
        lr, wd = float(self.lr_sched[step]), float(self.wd_sched[step])
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
            g["weight_decay"] = wd if g.get("apply_wd", True) else 0.0
        return lr, wd

    def _optimizer_step(self, state: StepState) -> float | None:
        norm = None
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16; the task's hook sees true gradients
        self.task.before_optimizer_step(state)
        if self.cfg.clip_grad:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``total_steps``; with ``resume`` continue exactly where ``checkpoint_last.pth`` stopped.

        The loop seeds torch, numpy and ``random`` (``seed + rank``) so that a run is a function of its config; the
        caller's random states are put back when it returns, so training leaves the caller's RNG where it was.
        """
        np_state, py_state = np.random.get_state(), random.getstate()
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                return self._fit(resume)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)

    def _fit(self, resume: bool) -> TrainResult:
        model = self._setup()
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._save_run_config()
        step, epoch, batches_done, best, history = 0, 0, 0, {}, []
        if resume:
            st = self._resume()
            step, epoch, batches_done, best, history = (
                st["step"],
                st["epoch"],
                st["batches_done"],
                st["best"],
                st["history"],
            )
            history = [h for h in history if h.get("step", 0) <= step]
        logger = _Logger(self.out, main, resumed_at=step if resume else None)
        bar = tqdm(
            total=self.total_steps, initial=step, desc="train", unit="step", disable=not (self.cfg.progress and main)
        )
        dtype = _DTYPES[resolve_precision(self.cfg.precision, self.device)]
        while step < self.total_steps:
            model.train()
            micro, seen, t0 = 0, 0, time.perf_counter()
            for batch in self._loader(epoch, batches_done):
                state = StepState(
                    epoch,
                    step,
                    self.total_steps,
                    batches_done // self.cfg.accum_steps,
                    self.steps_per_epoch,
                    *self._apply_schedules(step),
                )
                with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                    out = model(_to_device(batch, self.device), state)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; stopping before it spreads")
                self.scaler.scale(loss / self.cfg.accum_steps).backward()
                micro, batches_done, seen = micro + 1, batches_done + 1, seen + _batch_size_of(batch)
                if micro % self.cfg.accum_steps:
                    continue
                grad_norm = self._optimizer_step(state)
                self.task.on_after_step(state)
                step += 1
                bar.update(1)
                rate = seen * self.dist.world_size / max(time.perf_counter() - t0, 1e-9)
                scalars = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()}
                scalars.update(lr=state.lr, wd=state.wd, img_s=rate, **({"grad_norm": grad_norm} if grad_norm else {}))
                bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{state.lr:.2e}", img_s=f"{rate:.1f}")
                if step % self.cfg.log_every == 0 or step == self.total_steps:
                    logger.log(step, epoch, scalars)
                if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
                    self._checkpoint(step, epoch, batches_done, best, history)
                if step >= self.total_steps or batches_done >= self.steps_per_epoch * self.cfg.accum_steps:
                    break
            epoch_done = batches_done >= self.steps_per_epoch * self.cfg.accum_steps
            if epoch_done:
                best = self._end_epoch(epoch, step, history, best, logger)
                epoch, batches_done = epoch + 1, 0
            if step >= self.total_steps or epoch % self.cfg.checkpoint_epochs == 0:
                self._checkpoint(step, epoch, batches_done, best, history)
        bar.close()
        logger.close()
        return TrainResult(
            best.get("metric"),
            best.get("epoch"),
            Path(best["path"]) if best.get("path") else None,
            self.out / "checkpoint_last.pth",
            history,
        )

    def _end_epoch(self, epoch: int, step: int, history: list, best: dict, logger: _Logger) -> dict:
        """Validate (main process), record, and keep ``best.pth`` when the selection metric improves."""
        if self.val_data is None or not self.dist.is_main:
            return best
        self.task.eval()
        loader = DataLoader(
            self.val_data,
            batch_size=self.cfg.batch_size,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collate_fn,
        )
        with torch.no_grad():
            metrics = self.task.evaluate(loader, self.device)
        history.append({"epoch": epoch, "step": step, **metrics})
        logger.log(step, epoch, {f"val/{k}": v for k, v in metrics.items()})
        key = self.cfg.select_metric
        if key is None:
            return best
        if key not in metrics:
            raise ValueError(f"select_metric {key!r} not among validation metrics {sorted(metrics)}")
        value = float(metrics[key])
        better = "metric" not in best or (
            value > best["metric"] if self.cfg.select_mode == "max" else value < best["metric"]
        )
        if better:
            path = self.out / "best.pth"
            atomic_torch_save(
                {"task": self.task.state_dict(), "epoch": epoch, "metrics": metrics, "config": asdict(self.cfg)}, path
            )
            best = {"metric": value, "epoch": epoch, "path": str(path)}
        return best


def trim_log(path: Path, step: int) -> int:
    """Drop the lines of a JSON-lines log after ``step`` (and a torn last line); returns how many were dropped.

    A run resumed from the checkpoint of ``step`` logs the later steps again; without trimming they would appear
    twice. The file is rewritten atomically.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash mid-write
            dropped += 1
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        with atomic_write(path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))
        log.info("%s: dropped %d lines logged after step %d", path, dropped, step)
    return dropped


class _Logger:
    """JSON lines + TensorBoard scalars, main process only."""

    def __init__(self, out: Path, main: bool, resumed_at: int | None = None) -> None:
        self.main, self.path, self.tb = main, out / "log.jsonl", None
        if main and resumed_at is not None:
            trim_log(self.path, resumed_at)
        if main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops the events a resumed run is about to write again
                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resumed_at + 1 if resumed_at else None)
            except ImportError:  # tensorboard is a dependency; tolerate slim installs without it
                log.warning("tensorboard not installed: logging to %s only", self.path)

    def log(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, **scalars}) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
