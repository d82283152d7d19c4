"""The one training loop (:class:`Trainer`) and the contract every task implements (:class:`Task`)."""
from .sampler import ResumableSampler
from .schedules import cosine_schedule, linear_warmup_then_constant
from .task import StepState, Task, param_groups_for
from ..config import load_config, save_config
from .config import TrainConfig
from .trainer import Trainer, TrainResult

__all__ = [
    "ResumableSampler", "StepState", "Task", "TrainConfig", "TrainResult", "Trainer", "cosine_schedule",
    "linear_warmup_then_constant", "load_config", "param_groups_for", "save_config",
]
