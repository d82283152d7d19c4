"""``TrainConfig``: every knob of the one training loop, nested as ``train:`` in every task's config (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_choices
from ..errors import ConfigError

__all__ = ["PRECISIONS", "TrainConfig"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _h(text: str, **meta) -> dict:
    return {"help": text, **meta}


@dataclass
class TrainConfig:
    """Every knob of the loop, with its default; saved in the run's resolved config.

    ``batch_size`` is per process; an optimizer step sees ``batch_size * accum_steps * world_size`` samples (the
    global batch). The learning-rate rule is one: with ``lr_base_batch`` set, ``lr`` is the rate per
    ``lr_base_batch`` images and the loop uses ``lr * global_batch / lr_base_batch``; without it ``lr`` is used as
    given. Warm-up is ``warmup_steps`` when given, else ``warmup_epochs`` (fractional) converted to steps.
    """

    output_dir: str = field(default="runs/train", metadata=_h("run folder", flag=("--output",)))
    epochs: int = field(default=10, metadata=_h("training epochs"))
    max_steps: int | None = field(
        default=None, metadata=_h("stop after this many optimizer steps (overrides --epochs)")
    )
    batch_size: int = field(default=32, metadata=_h("samples per process per micro-batch"))
    lr: float = field(default=1e-3, metadata=_h("peak learning rate (per --lr-base-batch samples when that is set)"))
    lr_base_batch: int | None = field(
        default=None, metadata=_h("scale --lr by global batch / this (e.g. 256); none: --lr as given")
    )
    min_lr: float | None = field(
        default=0.0, metadata=_h("final learning rate of the cosine schedule (none: constant after the warm-up)")
    )
    warmup_epochs: float = field(default=0.0, metadata=_h("linear lr warm-up in epochs (may be fractional)"))
    warmup_steps: int | None = field(
        default=None, metadata=_h("linear lr warm-up in optimizer steps (overrides --warmup-epochs)")
    )
    weight_decay: float = field(default=0.0, metadata=_h("initial AdamW weight decay"))
    weight_decay_end: float | None = field(default=None, metadata=_h("final weight decay (cosine; none: constant)"))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_h("AdamW betas (MAE: 0.9 0.95)"))
    clip_grad: float | None = field(default=None, metadata=_h("clip the global gradient norm at this value"))
    accum_steps: int = field(default=1, metadata=_h("micro-batches per optimizer step"))
    precision: str = field(
        default="fp32",
        metadata=_h(
            "autocast precision; auto: bf16 on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16), else fp32",
            choices=PRECISIONS,
        ),
    )
    device: str = field(default="auto", metadata=_h("cpu, cuda, cuda:1 or auto"))
    seed: int = field(default=0, metadata=_h("random seed"))
    num_workers: int = field(default=0, metadata=_h("data-loading worker processes"))
    checkpoint_every: int = field(default=0, metadata=_h("also checkpoint every N optimizer steps (0: at epoch ends)"))
    checkpoint_epochs: int = field(default=1, metadata=_h("write checkpoint_last.pth every N epochs (and at the end)"))
    keep_last: int = field(default=2, metadata=_h("step checkpoints to keep"))
    select_metric: str | None = field(default=None, metadata=_h("validation metric that selects best.pth"))
    select_mode: str = field(
        default="max", metadata=_h("whether the selection metric is maximised or minimised", choices=("max", "min"))
    )
    compile: bool = field(default=False, metadata=_h("torch.compile the model"))
    progress: bool = field(default=True, metadata=_h("show a progress bar with loss and ETA"))
    log_every: int = field(default=10, metadata=_h("optimizer steps between log lines"))

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("epochs", "batch_size", "accum_steps", "checkpoint_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "lr_base_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_lr is not None and self.min_lr < 0:
            raise ConfigError(f"min_lr must be >= 0, got {self.min_lr}")
        for name in ("lr", "warmup_epochs", "weight_decay", "num_workers", "checkpoint_every", "keep_last"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be in [0, 1), got {self.betas}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def effective_lr(self, world_size: int = 1) -> float:
        """The peak lr the loop uses: ``lr``, scaled by the global batch when ``lr_base_batch`` is set."""
        if self.lr_base_batch is None:
            return self.lr
        return self.lr * self.batch_size * self.accum_steps * world_size / self.lr_base_batch

    def warmup_in_steps(self, steps_per_epoch: int) -> int:
        """Warm-up length in optimizer steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(self.warmup_epochs * steps_per_epoch + 1e-9)  # floor; the epsilon keeps 0.1 * 30 at 3
