"""End-to-end fine-tuning: encoder + head trained together on images, with the same tasks, losses and metrics.

How is a recipe (:data:`~visionfm.recognition.recipes.RECIPES`, ``--recipe visionfm|retfound``): a registered
preset of this config's values (layer-wise lr decay, drop-path, learning rate and schedule, pooling, head,
augmentation, label smoothing, evaluation crop, selection metric), applied beneath the YAML file and the command
line. The encoder's groups decay layer by layer (:func:`~visionfm.recognition.recipes.layer_decay_groups`); the
fine-tuned encoder is saved in the run folder (``encoder.safetensors``) and the run's encoder reference points at
it, so ``predict`` and ``evaluate_run`` work as for heads on features.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..checkpoints import load_encoder, save_encoder
from ..config import load_config, read_yaml
from ..data.images import Preprocess, read_image
from ..engine.config import TrainConfig
from ..errors import ConfigError, UserError
from ..evaluation import write_results
from ..models import VisionTransformer, ViTConfig
from .api import carve_validation, fit_task, report_scores
from .config import RecognitionConfig
from .data import FEATURES, EncoderRef, FeatureTable, feature_width, file_sha256
from .heads import HEADS
from .kinds import task_class
from .labels import LabelSpec, LabelTable, read_labels
from .recipes import AUGMENTATIONS, MIXES, RECIPES, CropPreprocess, augment_batch, layer_decay_groups
from .runs import label_spec, new_task, prepare_run_folder, save_run

__all__ = [
    "FinetuneConfig",
    "ImageLabelDataset",
    "augment_batch",
    "finetune",
    "image_table",
    "layer_decay_groups",
    "load_finetune_config",
]

log = logging.getLogger(__name__)


def _h(text: str, **meta: Any) -> dict:
    return {"help": text, **meta}


def _finetune_train() -> TrainConfig:
    return TrainConfig(
        output_dir="", epochs=100, batch_size=256, lr=1e-3, weight_decay=1e-4, progress=False, clip_grad=3.0
    )


@dataclass
class FinetuneConfig(RecognitionConfig):
    """A fine-tuning run (``visionfm finetune``): the shared recognition settings plus the images and the recipe.

    Attributes:
        recipe: registered preset whose values are the defaults (``visionfm`` or ``retfound``).
        weights: encoder weights to start from.
        modality: modality of the images (normalisation unless the weights record it).
        data: dataset root (official ``vfm`` layout, ImageNet folder) or CSV manifest.
        split / val_split / test_split: ``vfm`` splits (``<split>_labels.txt``); without ``val_split`` a
            stratified validation split is carved from training.
        val_data / test_data: other roots or manifests for validation / test (default: ``data``).
        input_size: square input side.
        n_last_blocks: CLS tokens of this many last blocks feed the head (``feature cls``; official 4).
        feature: the pooled feature: ``cls`` (last-n CLS, VisionFM), ``patch`` (global average of the patch
            tokens, RETFound), ``last`` (last CLS), ``cls+patch``.
        encoder_lr_scale: encoder learning rate relative to the head's.
        layer_decay: layer-wise learning-rate decay factor.
        drop_path: stochastic-depth rate of the encoder.
        augment: batch augmentation of training images.
        augmentation: which registered augmentation.
        random_erasing: probability of random erasing per image (``retfound`` augmentation).
        mix: ``none``, ``mixup``, ``cutmix`` or ``both`` (half the batches each; classification only).
        eval_crop: validation/test images resized to ``input_size / eval_crop`` and centre-cropped (1: resized).
        init_head: start the head from the one saved in ``weights`` (a RETFound fine-tuned checkpoint).
        final_norm: keep the encoder's final LayerNorm. Default: dropped when a head with its own ``fc_norm``
            (``retfound``) pools the patch tokens, as RETFound's global pool does (``fc_norm`` replaces ``norm``).
    """

    recipe: str = field(default="visionfm", metadata=_h("fine-tuning preset", choices=RECIPES.names))
    weights: str = field(default="", metadata=_h("encoder weights to start from"))
    modality: str | None = field(default=None, metadata=_h("modality of the images"))
    data: str = field(default="", metadata=_h("dataset root (vfm layout or ImageNet folders) or CSV manifest"))
    split: str = field(default="training", metadata=_h("training split (vfm: <split>_labels.txt)"))
    val_split: str | None = field(default=None, metadata=_h("validation split (default: carve one from training)"))
    test_split: str | None = field(default=None, metadata=_h("test split, scored once with the selected model"))
    val_data: str | None = field(default=None, metadata=_h("other root/manifest for validation"))
    test_data: str | None = field(default=None, metadata=_h("other root/manifest for test"))
    input_size: int = field(default=224, metadata=_h("square input side"))
    n_last_blocks: int = field(default=4, metadata=_h("CLS tokens of this many last blocks (feature cls)"))
    feature: str = field(
        default="cls",
        metadata=_h("pooled feature: cls (last-n CLS), patch (patch-token mean), last, cls+patch", choices=FEATURES),
    )
    encoder_lr_scale: float = field(default=0.1, metadata=_h("encoder lr relative to the head's"))
    layer_decay: float = field(default=0.75, metadata=_h("layer-wise lr decay"))
    drop_path: float = field(default=0.1, metadata=_h("stochastic-depth rate"))
    augment: bool = field(default=True, metadata=_h("augment training batches"))
    augmentation: str = field(default="visionfm", metadata=_h("batch augmentation", choices=AUGMENTATIONS.names))
    random_erasing: float = field(default=0.0, metadata=_h("random-erasing probability (retfound augmentation)"))
    mix: str = field(default="none", metadata=_h("mixup / cutmix (classification)", choices=MIXES))
    eval_crop: float = field(default=1.0, metadata=_h("evaluation crop fraction (RETFound 0.875)"))
    init_head: bool = field(default=False, metadata=_h("start the head from the classifier saved in --weights"))
    final_norm: bool | None = field(
        default=None,
        metadata=_h("keep the encoder's final norm (default: not when the retfound head's fc_norm pools patch tokens)"),
    )
    train: TrainConfig = field(default_factory=_finetune_train)

    @classmethod
    def config_legacy(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Before the nesting a fine-tuning config carried unused feature lists ``train`` / ``val`` / ``test``."""
        for old in ("train", "val", "test"):
            if old in values and not isinstance(values[old], Mapping) and values.pop(old):
                raise ConfigError(f"fine-tuning reads images (data / split), not feature files ({old})")
        return values

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.input_size < 1 or self.n_last_blocks < 1:
            raise ConfigError(
                f"input_size and n_last_blocks must be positive, got {self.input_size}, {self.n_last_blocks}"
            )
        if not 0 < self.eval_crop <= 1 or not 0 <= self.random_erasing <= 1 or not 0 <= self.drop_path < 1:
            raise ConfigError(
                f"eval_crop must be in (0, 1], random_erasing in [0, 1] and drop_path in [0, 1); got "
                f"{self.eval_crop}, {self.random_erasing}, {self.drop_path}"
            )
        if self.mix != "none" and not getattr(task_class(self.task), "mixable", False):
            raise ConfigError(f"mix {self.mix!r}: mixing images needs a task that mixes labels; {self.task!r} does not")


def _dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """A YAML mapping with nested sections as dotted keys (``train: {lr: 1}`` -> ``train.lr``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "train" and isinstance(value, Mapping):
            out.update({f"train.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def load_finetune_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """Defaults < the recipe's preset < YAML file < non-None overrides (the command line).

    Raises:
        ConfigError: an unknown recipe, unknown keys or invalid values (the file is named when there is one).
    """
    data = read_yaml(path) if path is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of name: value settings, got {type(data).__name__}")
    given = {k: v for k, v in overrides.items() if v is not None}
    name = given.get("recipe") or data.get("recipe") or "visionfm"
    if name not in RECIPES:
        raise ConfigError(f"recipe: {name!r} is not one of {RECIPES.names()}")
    merged = {**RECIPES.get(name).defaults, **_dotted(data), **given}
    try:
        return load_config(FinetuneConfig, None, **merged)
    except ConfigError as e:
        raise ConfigError(f"{e} (settings from {path} and the command line)" if path else str(e)) from None


class ImageLabelDataset(Dataset):
    """Images with labels: ``{"image": [3, S, S], "y": [W]}`` (forecast: ``y`` = converts, plus ``"t"`` days).

    Args:
        paths: image files.
        y: label rows ``[N, W]``.
        preprocess: image array -> ``[3, S, S]``.
        kind: the task kind (its class splits the label rows into targets and an interval).
    """

    def __init__(
        self, paths: list[Path], y: np.ndarray, preprocess: Callable[[np.ndarray], Tensor], kind: str | type
    ) -> None:
        self.paths, self.preprocess = paths, preprocess
        rules = task_class(kind) if isinstance(kind, str) else kind
        self.y, self.t = rules.split_targets(torch.from_numpy(np.asarray(y, dtype=np.float32)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"image": self.preprocess(read_image(self.paths[i])), "y": self.y[i]}
        if self.t is not None:
            item["t"] = self.t[i]
        return item


def _label_source(data: str, split: str) -> Path:
    """The label source of one split: ``<root>/<split>_labels.txt`` (vfm), ``<root>/<split>/`` (ImageNet folders),
    the root itself (class folders) or a CSV manifest."""
    root = Path(data)
    if not root.is_dir():
        return root
    if (root / f"{split}_labels.txt").is_file():
        return root / f"{split}_labels.txt"
    if (root / split).is_dir():
        return root / split  # ImageNet layout: <root>/<split>/<class>/...
    splits = sorted(f.name[: -len("_labels.txt")] for f in root.glob("*_labels.txt"))
    if splits:  # a vfm root without this split: never read its split folders as classes
        raise UserError(f"{root}: no {split}_labels.txt for split {split!r}; splits here: {', '.join(splits)}")
    return root


def image_table(cfg: FinetuneConfig, spec: LabelSpec, data: str, split: str) -> tuple[FeatureTable, Path]:
    """Labels of one split as a table without features, and the folder its paths are relative to."""
    src = _label_source(data, split)
    table: LabelTable = read_labels(src, spec, cfg.label_columns, cfg.patient_column)
    rows = list(table.rows.values())
    y = np.array([r.values for r in rows], dtype=np.float64)
    spec.rules.finish_names(spec, y)
    pats = np.array([r.patient for r in rows], dtype=object) if any(r.patient for r in rows) else None
    n = len(rows)
    t = FeatureTable(
        np.zeros((n, 0), np.float32),
        y,
        [r.rel for r in rows],
        np.array([""] * n, dtype=object),
        pats,
        np.array([str(src)] * n, dtype=object),
        label_sources={f"{data}:{split}": str(src)},
    )
    return t, (src if src.is_dir() else src.parent)


def _head_pools(cfg: FinetuneConfig) -> bool:
    """The head normalises the pooled patch tokens itself (RETFound's global pool + ``fc_norm``)."""
    return (
        cfg.feature == "patch"
        and bool(getattr(HEADS.get(cfg.head), "has_fc_norm", False))
        and cfg.head_options.get("fc_norm", True)
    )


def _encoder(cfg: FinetuneConfig) -> tuple[VisionTransformer, EncoderRef]:
    base = load_encoder(cfg.weights, cfg.modality)
    keep_norm = (cfg.final_norm if cfg.final_norm is not None else not _head_pools(cfg)) and base.cfg.final_norm
    vit_cfg = ViTConfig(**{**base.cfg.to_dict(), "final_norm": keep_norm})
    enc = VisionTransformer(vit_cfg, drop_path_rate=cfg.drop_path)
    state = base.state_dict()
    enc.load_state_dict({k: v for k, v in state.items() if keep_norm or not k.startswith("norm.")}, strict=True)
    enc.set_info(base.info)
    enc.mask_token.requires_grad_(False)  # pretraining only
    i = base.info
    blocks = min(cfg.n_last_blocks, base.cfg.depth) if cfg.feature == "cls" else 1
    ref = EncoderRef(
        "", "", i.arch, vit_cfg.to_dict(), i.modality or "", list(i.mean), list(i.std), cfg.input_size, blocks
    )
    return enc, ref


_HEAD_KEYS = {
    "head.weight": "fc.weight",
    "head.bias": "fc.bias",
    "fc_norm.weight": "fc_norm.weight",
    "fc_norm.bias": "fc_norm.bias",
}


def _init_head(task: Any, cfg: FinetuneConfig) -> str:
    """Copy the classifier saved with the weights (RETFound fine-tuning) into the task's ``retfound`` head."""
    from ..checkpoints.loader import load_head

    saved = load_head(cfg.weights)
    own = task.head.state_dict()
    state = {_HEAD_KEYS[k]: v for k, v in saved.items() if k in _HEAD_KEYS and _HEAD_KEYS[k] in own}
    missing = sorted(k for k in own if k not in state)
    if missing or any(state[k].shape != own[k].shape for k in state):
        shapes = {k: tuple(v.shape) for k, v in saved.items()}
        raise UserError(
            f"--init-head: the head in {cfg.weights} {shapes} does not fit this run's "
            f"{cfg.head!r} head { ({k: tuple(v.shape) for k, v in own.items()}) }; use --head retfound, "
            f"--feature patch (fc_norm) or last, and the file's number of classes"
        )
    task.head.load_state_dict(state, strict=True)
    return f"head initialised from {cfg.weights} ({', '.join(sorted(saved))})"


def _splits(cfg: FinetuneConfig, spec: LabelSpec) -> tuple[tuple[FeatureTable, Path], tuple[FeatureTable, Path], str]:
    """(train, its root), (validation, its root) and how validation was made."""
    train, root = image_table(cfg, spec, cfg.data, cfg.split)
    if cfg.val_split or cfg.val_data:
        val, val_root = image_table(cfg, spec, cfg.val_data or cfg.data, cfg.val_split or cfg.split)
        return (train, root), (val, val_root), f"given ({cfg.val_data or cfg.data}: {cfg.val_split or cfg.split})"
    train, val, how = carve_validation(train, cfg.task, cfg.val_fraction, cfg.train.seed)
    return (train, root), (val, root), how


def _with_head_defaults(cfg: FinetuneConfig) -> FinetuneConfig:
    """RETFound: ``fc_norm`` with the global pool of patch tokens; its CLS variant uses the encoder's norm alone."""
    if getattr(HEADS.get(cfg.head), "has_fc_norm", False) and "fc_norm" not in cfg.head_options:
        return dataclasses.replace(cfg, head_options={**cfg.head_options, "fc_norm": cfg.feature == "patch"})
    return cfg


def _source_facts(weights: str) -> dict[str, str]:
    """Where fine-tuning started: the weights (an ``hf-hub:`` reference as given) and their file's SHA-256."""
    from ..checkpoints import is_hub_reference, resolve_weights_path  # an hf-hub: reference: hash its cached file

    src = resolve_weights_path(weights)
    return {"weights": weights if is_hub_reference(weights) else str(src.resolve()), "sha256": file_sha256(src)}


def _score_test(cfg: FinetuneConfig, spec: LabelSpec, task: Any, dataset: Callable, run: Path, metrics: dict) -> None:
    """Score the selected model once on the test split (if one is given) into ``metrics``."""
    if not (cfg.test_split or cfg.test_data):
        return
    test, test_root = image_table(cfg, spec, cfg.test_data or cfg.data, cfg.test_split or cfg.split)
    dev = next(task.parameters()).device
    loader = DataLoader(dataset(test, test_root), batch_size=cfg.train.batch_size, num_workers=cfg.train.num_workers)
    scores, y = task.to(dev).predict(loader, dev)
    metrics["n"]["test"] = len(test)
    metrics["labels"] = {**metrics["labels"], **test.label_sources}
    metrics["test"] = report_scores(task, y, scores, test.paths, run, cfg.n_boot, cfg.train.seed)


def finetune(cfg: FinetuneConfig) -> Path:
    """Fine-tune encoder + head on images; select on validation, score on test; returns the run folder."""
    if not cfg.train.output_dir or not cfg.weights or not cfg.data:
        raise UserError("fine-tuning needs --weights, --data and --output")
    recipe, cfg = RECIPES.get(cfg.recipe), _with_head_defaults(cfg)
    run, t0 = prepare_run_folder(cfg.train.output_dir, cfg.overwrite, cfg.resume), time.perf_counter()
    spec = label_spec(cfg)
    (train, root), (val, val_root), how = _splits(cfg, spec)
    enc, ref = _encoder(cfg)
    train.encoders = {ref.modality or "unknown": ref}
    train.label_sources.update(val.label_sources)
    augment = AUGMENTATIONS.get(cfg.augmentation)(cfg, ref.mean, ref.std) if cfg.augment else None
    task, info = new_task(
        cfg,
        train,
        spec,
        in_dim=feature_width(cfg.feature, ref.n_last_blocks, enc.cfg.embed_dim),
        encoder=enc,
        n_last_blocks=ref.n_last_blocks,
        augment=augment,
        feature=cfg.feature,
        param_groups_fn=lambda e: layer_decay_groups(e, cfg.encoder_lr_scale, cfg.layer_decay),
    )
    if cfg.init_head:
        info["head_init"] = _init_head(task, cfg)
    crop = cfg.eval_crop if cfg.input_size <= 224 else 1.0  # RETFound crops only up to 224 px (crop_pct 1 above)
    train_pre = Preprocess(cfg.input_size, ref.mean, ref.std)
    eval_pre = CropPreprocess(cfg.input_size, ref.mean, ref.std, crop) if crop < 1 else train_pre

    def dataset(t: FeatureTable, r: Path, pre: Callable = eval_pre) -> ImageLabelDataset:
        return ImageLabelDataset([r / p for p in t.paths], t.y, pre, type(task))

    loop = dataclasses.replace(cfg.train, select_metric=cfg.train.select_metric or recipe.select.get(cfg.task))
    sel = fit_task(task, dataset(train, root, train_pre), dataset(val, val_root), loop, cfg.val_every or 1, cfg.resume)
    enc_path = run / "encoder.safetensors"
    save_encoder(task.encoder.cpu(), enc_path, source=str(cfg.weights))
    ref.weights, ref.sha256 = str(enc_path.resolve()), file_sha256(enc_path)
    info.update(
        encoders={ref.modality or "unknown": ref.to_dict()},
        selection={**sel, "validation_split": how},
        finetuned_from=_source_facts(cfg.weights),
        recipe={"name": recipe.name, "eval_crop": crop},
    )
    save_run(run, task, info)
    metrics = {
        "task": cfg.task,
        "names": info["names"],
        "selection": info["selection"],
        "finetuned": True,
        "recipe": recipe.name,
        "labels": info["labels"],
        "n": {"train": len(train), "val": len(val), "test": 0},
        "encoders": {ref.modality: {"weights": ref.weights, "sha256": ref.sha256, "arch": ref.arch}},
        "finetuned_from": info["finetuned_from"],
    }
    _score_test(cfg, spec, task, dataset, run, metrics)
    metrics["train_seconds"] = time.perf_counter() - t0
    write_results(run, metrics)
    return run
