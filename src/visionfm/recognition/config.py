"""Typed configuration of recognition runs: defaults here < YAML file < command line.

The loop's settings are not copied: every config holds ``train:`` (:class:`~visionfm.engine.TrainConfig`, with the
recognition defaults), so ``train.lr`` in YAML or ``--lr`` on the command line reach the one training loop. Files
written before the nesting still load: their flat loop keys (``epochs``, ``lr``, ``output_dir``, ...) are moved into
``train`` and the feature lists ``train`` / ``val`` / ``test`` become ``train_features`` / ``val_features`` /
``test_features`` (see :meth:`RecognitionConfig.config_legacy`). The resolved configuration is saved in the run
folder (``run.yaml``), beside ``metrics.json`` and the head weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import check_choices, config_to_dict, load_config
from ..engine.config import TrainConfig
from ..errors import ConfigError
from .data import FEATURES
from .heads import HEADS, TIME_ENCODINGS
from .kinds import TASKS, task_class

__all__ = ["BALANCE", "REGRESSION_LOSSES", "HeadConfig", "RecognitionConfig", "load_head_config"]

BALANCE = ("none", "inverse", "effective", "focal")
REGRESSION_LOSSES = ("mse", "l1", "smooth_l1")


def _h(text: str, **meta: Any) -> dict:
    return {"help": text, **meta}


def _head_train() -> TrainConfig:
    """The loop defaults of a head on cached features (cheap steps: large batches, many epochs, no progress bar)."""
    return TrainConfig(output_dir="", epochs=100, batch_size=256, lr=1e-3, weight_decay=1e-4, progress=False)


@dataclass
class RecognitionConfig:
    """What every recognition run shares: the task kind, its labels, head, loss, selection and reporting.

    Attributes:
        task: a registered task kind (``classify``, ``multilabel``, ``regress``, ``forecast``, ...).
        label_columns, patient_column: CSV label options (patient ids group the validation split).
        classes: class names (classify; default the data's ImageNet folders or "0".."C-1").
        schema: multi-label schema name or YAML file (default ``official13``).
        targets: regression target names (CSV columns).
        ordinal: classes are ordered grades (adds quadratic kappa).
        head: a registered head (forecasting always uses ``forecast``).
        head_options: extra keyword arguments of the head (e.g. ``{dropout: 0.2}``).
        time_encoding: forecast interval encoding (``sinusoidal``, ``learned``, ``none`` for an ablation).
        balance: class imbalance: ``none``, ``inverse`` (weights n / (C n_c); forecast: positive weight
            n_neg / n_pos), ``effective`` (class-balanced, Cui et al., beta 0.999) or ``focal`` (forecast).
            Default: ``none`` for classification, ``inverse`` for forecasting.
        focal_gamma, label_smoothing, regression_loss: loss options.
        val_fraction: fraction of training carved for validation when no validation split is given.
        val_every: validate, select and checkpoint every this many epochs (default: about 20 times per run).
        n_boot: bootstrap replicates for the 95% confidence intervals on test (0: none).
        overwrite: replace an existing run folder (default: refuse it).
        resume: continue the interrupted run in the output folder from its last checkpoint.
        train: the training loop's settings (``train.select_metric`` defaults to the task's own).
    """

    task: str = field(default="classify", metadata=_h("task kind", choices=TASKS.names))
    label_columns: list[str] | None = field(default=None, metadata=_h("CSV label columns"))
    patient_column: str | None = field(
        default=None, metadata=_h("CSV column of patient ids (validation split grouped by patient)")
    )
    classes: list[str] | None = field(
        default=None, metadata=_h("class names (CSV labels may use them); labels outside them are an error")
    )
    schema: str | None = field(default=None, metadata=_h("multi-label schema: 'official13' (default) or a YAML file"))
    targets: list[str] | None = field(default=None, metadata=_h("regression target names (CSV columns)"))
    ordinal: bool = field(default=False, metadata=_h("ordered grades: report quadratic kappa"))
    head: str = field(default="linear", metadata=_h("head on the features", choices=HEADS.names))
    head_options: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})
    time_encoding: str = field(
        default="sinusoidal", metadata=_h("forecast interval encoding", choices=TIME_ENCODINGS.names)
    )
    balance: str | None = field(default=None, metadata=_h("class imbalance handling", choices=BALANCE))
    focal_gamma: float = field(default=2.0, metadata=_h("focal loss gamma (forecast, --balance focal)"))
    label_smoothing: float = field(default=0.0, metadata=_h("label smoothing of the cross-entropy"))
    regression_loss: str = field(
        default="mse", metadata=_h("regression loss", choices=REGRESSION_LOSSES, flag=("--loss",))
    )
    val_fraction: float = field(default=0.2, metadata=_h("fraction carved for validation"))
    val_every: int | None = field(
        default=None, metadata=_h("validate/select every n epochs (default: ~20 times per run)")
    )
    n_boot: int = field(default=1000, metadata=_h("bootstrap replicates for 95% CIs (0: none)"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing run folder"))
    resume: bool = field(default=False, metadata=_h("continue the run in --output from its last checkpoint"))
    train: TrainConfig = field(default_factory=_head_train)

    config_aliases: ClassVar[dict[str, str]] = {"output": "train.output_dir"}

    @classmethod
    def config_legacy(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Rewrite what a key alias cannot: subclasses rename their feature lists (see :class:`HeadConfig`)."""
        return values

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(
                f"train: expected the loop's settings (TrainConfig), got {self.train!r}; feature files "
                f"go in train_features (load_head_config(train=[...]) still reads the old spelling)"
            )
        check_choices(self)
        task_class(self.task).check_config(self)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.n_boot < 0:
            raise ConfigError(f"n_boot must be >= 0, got {self.n_boot}")
        if self.val_every is not None and self.val_every < 1:
            raise ConfigError(f"val_every must be >= 1, got {self.val_every}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues a run and --overwrite replaces it: give one")

    def resolved_val_every(self) -> int:
        """``val_every``, or about 20 validations over the run."""
        return int(self.val_every) if self.val_every else max(1, round(self.train.epochs / 20))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


_FEATURE_LISTS = {"train": "train_features", "val": "val_features", "test": "test_features"}


@dataclass
class HeadConfig(RecognitionConfig):
    """One head training run on cached features (``visionfm classify|multilabel|regress|forecast train``).

    Attributes:
        train_features / val_features / test_features: feature files (``visionfm extract``); several = several
            modalities. Without validation features a stratified validation split is carved from training
            (grouped by patient when ids are known).
        labels / val_labels / test_labels: label files joined on image path (default: the label file of the split
            the features were extracted from, else the labels stored with them; a single ``labels`` file is used
            for every split that has none of its own).
        modality_column: CSV column of modality (rows of another modality are skipped).
        feature: ``cls`` (last-n CLS concatenated, official), ``last``, ``cls+patch`` or ``patch``.
    """

    train_features: list[str] = field(
        default_factory=list,
        metadata=_h(
            "training feature files (.safetensors from 'visionfm extract'); several = one per modality",
            flag=("--train",),
        ),
    )
    val_features: list[str] = field(
        default_factory=list,
        metadata=_h("validation feature files (default: carve a stratified split)", flag=("--val",)),
    )
    test_features: list[str] = field(
        default_factory=list, metadata=_h("test feature files, scored once with the selected model", flag=("--test",))
    )
    labels: list[str | None] | None = field(
        default=None,
        metadata=_h(
            "label file(s) joined on image path: vfm *_labels.txt, CSV or ImageNet folder (default: the features' own "
            "split)"
        ),
    )
    val_labels: list[str | None] | None = field(default=None, metadata=_h("label file(s) of the validation features"))
    test_labels: list[str | None] | None = field(default=None, metadata=_h("label file(s) of the test features"))
    modality_column: str | None = field(
        default=None, metadata=_h("CSV column of modality (rows of another modality are skipped)")
    )
    feature: str = field(default="cls", metadata=_h("cls = CLS of the last n blocks concatenated", choices=FEATURES))

    @classmethod
    def config_legacy(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Files before the nesting named the feature lists ``train`` / ``val`` / ``test``."""
        for old, new in _FEATURE_LISTS.items():
            if old in values and not isinstance(values[old], Mapping):
                values[new] = values.pop(old)
        return values


def load_head_config(path: str | Path | None = None, **overrides: Any) -> HeadConfig:
    """Defaults < YAML file < non-None keyword overrides (flat loop keys such as ``lr=`` reach ``train``).

    Raises:
        FileNotFoundError: the YAML file is missing.
        ConfigError: it has unknown keys (named) or invalid values.
    """
    return load_config(HeadConfig, path, **overrides)
