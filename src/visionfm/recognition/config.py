"""Typed configuration of a recognition head run: defaults here < YAML file < command line.

The resolved configuration is saved in the run folder (``run.yaml``, beside ``metrics.json`` and the head weights)
together with everything prediction needs: the encoder reference, label names, preprocessing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data import FEATURES
from .labels import KINDS

__all__ = ["HeadConfig", "load_head_config", "BALANCE"]

BALANCE = ("none", "inverse", "effective", "focal")


@dataclass
class HeadConfig:
    """One head training run on cached features.

    Attributes:
        task: ``classify``, ``multilabel``, ``regress`` or ``forecast``.
        train / val / test: feature files (``visionfm extract``); several = several modalities. Without ``val``
            a stratified validation split is carved from ``train`` (grouped by patient when ids are known).
        labels / val_labels / test_labels: label files joined on image path (default: the labels stored with
            the features; a single ``labels`` file is used for every split that has none of its own).
        label_columns, patient_column, modality_column: CSV label options.
        classes: class names (classify; default the data's ImageNet folders or "0".."C-1").
        schema: multi-label schema name or YAML file (default ``official13``).
        targets: regression target names (CSV columns).
        ordinal: classes are ordered grades (adds quadratic kappa).
        feature: ``cls`` (last-n CLS concatenated, official), ``last`` or ``cls+patch``.
        head: ``linear``, ``mlp`` or ``forecast`` (forecasting always uses ``forecast``).
        head_options: extra keyword arguments of the head (e.g. ``{dropout: 0.2}``).
        time_encoding: forecast interval encoding: ``sinusoidal``, ``learned`` or ``none`` (ablation).
        balance: class imbalance: ``none``, ``inverse`` (weights n / (C n_c); forecast: positive weight
            n_neg / n_pos), ``effective`` (class-balanced, Cui et al., beta 0.999) or ``focal`` (forecast).
            Default: ``none`` for classification, ``inverse`` for forecasting.
        focal_gamma, label_smoothing, regression_loss: loss options.
        val_fraction: fraction of training carved for validation when no ``val`` is given.
        select_metric: validation metric for model selection (default per task: AUROC, or standardised MAE).
        val_every: validate, select and checkpoint every this many epochs (default: about 20 times per run).
        n_boot: bootstrap replicates for the 95% confidence intervals on test (0: none).
        output_dir ... progress: the shared engine's loop settings.
    """

    task: str = "classify"
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    val_labels: list[str] | None = None
    test_labels: list[str] | None = None
    label_columns: list[str] | None = None
    patient_column: str | None = None
    modality_column: str | None = None
    classes: list[str] | None = None
    schema: str | None = None
    targets: list[str] | None = None
    ordinal: bool = False
    feature: str = "cls"
    head: str = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)
    time_encoding: str = "sinusoidal"
    balance: str | None = None
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    regression_loss: str = "mse"
    val_fraction: float = 0.2
    select_metric: str | None = None
    val_every: int | None = None
    n_boot: int = 1000
    output_dir: str = ""
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.task not in KINDS:
            raise ValueError(f"task must be one of {', '.join(KINDS)}, got {self.task!r}")
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {self.feature!r}")
        if self.balance is not None and self.balance not in BALANCE:
            raise ValueError(f"balance must be one of {', '.join(BALANCE)}, got {self.balance!r}")
        if self.balance == "focal" and self.task != "forecast":
            raise ValueError("balance 'focal' is for forecasting; use 'inverse' or 'effective' for classification")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("train", "val", "test"):
            v = getattr(self, name)
            setattr(self, name, [v] if isinstance(v, str) else list(v or []))
        for name in ("labels", "val_labels", "test_labels"):
            v = getattr(self, name)
            setattr(self, name, [v] if isinstance(v, str) else (list(v) if v else None))
        if self.task == "forecast":
            self.head = "forecast"

    def resolved_val_every(self) -> int:
        """``val_every``, or about 20 validations over the run."""
        return int(self.val_every) if self.val_every else max(1, round(self.epochs / 20))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_head_config(path: str | Path | None = None, **overrides: Any) -> HeadConfig:
    """Defaults < YAML file < non-None keyword overrides (command-line values).

    Raises:
        FileNotFoundError: the YAML file is missing.
        ValueError: it has unknown keys (named) or invalid values.
    """
    from ..engine.trainer import load_config

    return load_config(HeadConfig, path, **overrides)
