"""Train a volume classifier on cached B-scan features (one engine, one Task) and predict per volume.

A run folder holds ``config.yaml`` (the resolved :class:`VolumeTrainConfig`), ``head.safetensors`` (the MIL head
with its classes, pooling and the encoder/preprocessing the features came from in the metadata), the engine's
checkpoints and log, and ``metrics.json`` (validation metrics of the selected model).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..config import check_choices, save_config
from ..engine.config import TrainConfig
from ..engine.task import StepState, Task
from ..errors import ConfigError, UserError
from ..fileio import atomic_write, prepare_run_folder
from .extract import VolumeFeatures, load_volume_features
from .mil import POOLINGS, MILHead, pad_bags

__all__ = [
    "MILTask",
    "VolumeClassifier",
    "VolumeTrainConfig",
    "predict_volumes",
    "train_volume_classifier",
    "volume_row",
    "write_volume_csv",
]


def _default_train() -> TrainConfig:
    return TrainConfig(output_dir="runs/volumes", epochs=30, batch_size=8, lr=1e-3, weight_decay=1e-4)


@dataclass
class VolumeTrainConfig:
    """A volume classifier on cached B-scan features.

    Attributes:
        features: training features written by ``visionfm extract --volumes`` (with per-volume labels).
        val_features: validation features (model selection); none: the last weights are kept.
        pooling: how B-scans become one decision.
        feature: which B-scan feature to use: ``cls`` (last-n CLS tokens) or ``patch_mean``.
        label_index: which label column holds the class index.
        hidden: attention width.
        dropout: dropout on the standardised features in training.
        overwrite: replace an existing run folder.
        train: the training loop's settings.
    """

    features: str = field(
        default="", metadata={"help": "training volume features (.safetensors from 'visionfm extract --volumes')"}
    )
    val_features: str | None = None
    pooling: str = field(default="attention", metadata={"choices": POOLINGS.names})
    feature: str = field(default="cls", metadata={"choices": ("cls", "patch_mean")})
    label_index: int = 0
    hidden: int = 128
    dropout: float = 0.1
    overwrite: bool = False
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        check_choices(self)
        if self.hidden < 1 or not 0 <= self.dropout < 1 or self.label_index < 0:
            raise ConfigError("hidden must be >= 1, dropout in [0, 1), label_index >= 0")


class _Bags(Dataset):
    """Item v -> {"x": [N_v, F], "y": class index}."""

    def __init__(self, fs: VolumeFeatures, feature: str, y: np.ndarray) -> None:
        self.bags = [torch.from_numpy(b.astype(np.float32)) for b in fs.bags(feature)]
        self.y = torch.as_tensor(y, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, v: int) -> dict[str, Any]:
        return {"x": self.bags[v], "y": self.y[v]}


def collate_bags(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    x, mask = pad_bags([it["x"] for it in items])
    return {"x": x, "mask": mask, "y": torch.stack([it["y"] for it in items])}


class MILTask(Task):
    """Cross-entropy on volume logits; validation metrics from :func:`visionfm.evaluation.classification_metrics`."""

    def __init__(self, head: MILHead, classes: list[str]) -> None:
        super().__init__()
        self.head, self.classes = head, classes

    def forward(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        logits, _ = self.head(batch["x"], batch["mask"])
        return {"loss": torch.nn.functional.cross_entropy(logits, batch["y"])}

    @torch.no_grad()
    def evaluate(self, loader: Any, device: Any) -> dict[str, float]:
        from ..evaluation import classification_metrics  # lazily: it imports matplotlib and scipy

        self.eval()
        probs, ys = [], []
        for b in loader:
            logits, _ = self.head(b["x"].to(device), b["mask"].to(device))
            probs.append(logits.softmax(-1).cpu())
            ys.append(b["y"])
        p, y = torch.cat(probs).numpy(), torch.cat(ys).numpy()
        m = classification_metrics(y, p, self.classes)
        return {
            "auroc": float(m["auroc"]["macro"]),
            "accuracy": float(m["accuracy"]),
            "loss": float(torch.nn.functional.cross_entropy(torch.from_numpy(np.log(p + 1e-12)), torch.from_numpy(y))),
        }


def _labels(fs: VolumeFeatures, index: int, where: str, n_classes: int | None = None) -> np.ndarray:
    if fs.labels is None or fs.labels.shape[1] <= index:
        raise UserError(
            f"{where}: no label column {index} stored with the volume features (extract from a "
            f"labelled layout: imagenet folders or a CSV with --label-columns)"
        )
    y = fs.labels[:, index]
    bad = [fs.volumes[i] for i in np.flatnonzero(~np.isfinite(y) | (y < 0) | (y != np.round(y)))]
    if bad:
        raise UserError(f"{where}: volume labels must be class indices 0, 1, ...; not for {bad[:3]}")
    if n_classes is not None and y.max() >= n_classes:
        raise UserError(f"{where}: label {int(y.max())} outside the training classes 0..{n_classes - 1}")
    return y.astype(np.int64)


def _class_names(fs: VolumeFeatures, y: np.ndarray) -> list[str]:
    names = json.loads(fs.meta.get("label_names", "[]"))
    n = int(y.max()) + 1
    return names if fs.meta.get("layout") == "imagenet" and len(names) >= n else [str(c) for c in range(n)]


def train_volume_classifier(cfg: VolumeTrainConfig) -> Path:
    """Train and save a volume classifier; returns the run folder."""
    from ..checkpoints.io import safe_torch_load
    from ..engine import Trainer

    out = Path(cfg.train.output_dir)
    prepare_run_folder(out, "volume", ("config.yaml",), overwrite=cfg.overwrite)
    fs = load_volume_features(cfg.features)
    y = _labels(fs, cfg.label_index, cfg.features)
    classes = _class_names(fs, y)
    x_all = torch.from_numpy((fs.cls if cfg.feature == "cls" else fs.patch_mean).astype(np.float32))
    with torch.random.fork_rng():  # the head's initialisation follows the run's seed, not whatever ran before
        torch.manual_seed(cfg.train.seed)
        head = MILHead(x_all.shape[1], len(classes), cfg.pooling, cfg.hidden, cfg.dropout)
    head.fit_inputs(x_all)
    task = MILTask(head, classes)
    val = None
    if cfg.val_features:
        vfs = load_volume_features(cfg.val_features)
        val = _Bags(vfs, cfg.feature, _labels(vfs, cfg.label_index, cfg.val_features, len(classes)))
    train = _Bags(fs, cfg.feature, y)
    loop = cfg.train
    loop.batch_size = min(loop.batch_size, len(train))
    if val is not None:
        loop.select_metric, loop.select_mode = loop.select_metric or "auroc", loop.select_mode
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    result = Trainer(task, loop, train, val, collate_fn=collate_bags).fit()
    if result.best_path is not None and result.best_path.is_file():
        task.load_state_dict(safe_torch_load(result.best_path)["task"], strict=True)
    VolumeClassifier(head.eval(), classes, cfg.feature, fs.meta).save(out / "head.safetensors")
    metrics = {
        "selected_epoch": result.best_epoch,
        "selection": loop.select_metric,
        "validation": task.evaluate(torch.utils.data.DataLoader(val, 64, collate_fn=collate_bags), "cpu")
        if val is not None
        else None,
    }
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=float))
    return out


@dataclass
class VolumeClassifier:
    """A trained MIL head with what it needs to be applied: classes, feature kind, and the features' provenance."""

    head: MILHead
    classes: list[str]
    feature: str
    source_meta: dict[str, str]

    def save(self, path: Path) -> None:
        from ..checkpoints.io import save_safetensors

        cfg = {"in_dim": self.head.fc.in_features, "pooling": _pool_name(self.head), "hidden": _hidden(self.head)}
        keep = (
            "arch",
            "config",
            "weights",
            "modality",
            "mean",
            "std",
            "n_last_blocks",
            "input_size",
            "interpolation",
            "precision",
        )
        meta = {
            "classes": json.dumps(self.classes),
            "feature": self.feature,
            "head": json.dumps(cfg),
            "features_meta": json.dumps({k: self.source_meta.get(k, "") for k in keep}),
        }
        save_safetensors({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, path, meta)

    @classmethod
    def load(cls, run: str | Path) -> VolumeClassifier:
        from safetensors import safe_open

        path = Path(run) / "head.safetensors" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(f"volume classifier not found: {path} (train one with 'visionfm volumes train')")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if "head" not in meta:
            raise UserError(f"{path}: not a volume classifier")
        h = json.loads(meta["head"])
        classes = json.loads(meta["classes"])
        head = MILHead(h["in_dim"], len(classes), h["pooling"], h["hidden"])
        head.load_state_dict(state, strict=True)
        return cls(head.eval(), classes, meta["feature"], json.loads(meta["features_meta"]))

    @torch.no_grad()
    def predict_bag(self, x: np.ndarray) -> dict[str, Any]:
        """One volume's B-scan features ``[N, F]`` -> probabilities, prediction, relevance and driving B-scan."""
        t = torch.from_numpy(x.astype(np.float32))[None]
        logits, rel = self.head(t, torch.ones(1, len(x), dtype=torch.bool))
        return self.decide(logits[0].numpy(), rel[0].numpy())

    def decide(self, logits: np.ndarray, relevance: np.ndarray) -> dict[str, Any]:
        """The head's outputs for one volume (logits ``[C]``, relevance ``[N]``; from PyTorch or from its ONNX
        export) -> probabilities, prediction, relevance and the driving B-scan (the most relevant one)."""
        p = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(-1).numpy()
        rel = np.asarray(relevance, dtype=np.float32)
        return {
            "probs": dict(zip(self.classes, p.tolist())),
            "prediction": self.classes[int(p.argmax())],
            "relevance": rel.tolist(),
            "driving_bscan": int(rel.argmax()),
        }


def _pool_name(head: MILHead) -> str:
    return next(n for n in POOLINGS.names() if isinstance(head.pool, POOLINGS.get(n)))


def _hidden(head: MILHead) -> int:
    return int(head.pool.v.out_features) if hasattr(head.pool, "v") else 128


def predict_volumes(
    run: str | Path,
    output_csv: str | Path,
    features: str | Path | None = None,
    data: str | Path | None = None,
    weights: str | Path | None = None,
    layout: str = "auto",
    device: str = "auto",
    num_workers: int = 0,
) -> Path:
    """Apply a volume classifier to volumes: one CSV row per volume.

    Give either ``features`` (from ``extract --volumes``) or ``data`` (+ ``weights``, default the encoder the
    training features recorded): the volumes are then extracted with the preprocessing those features recorded
    (input size, blocks, interpolation).
    ONNX Runtime instead of PyTorch: :func:`visionfm.export.predict_volumes_onnx` (the CLI's ``--backend``).

    Columns: ``volume``, ``prob_<class>``..., ``prediction``, ``driving_bscan`` (index), ``driving_bscan_name``,
    ``laterality``, ``n_bscans``.
    """
    clf = VolumeClassifier.load(run)
    if features is None:
        weights = weights or clf.source_meta.get("weights") or None  # default: the encoder the features came from
        if data is None or weights is None:
            raise UserError("give --features, or --data with the encoder --weights")
        import tempfile

        from .extract import extract_volume_features

        sm = clf.source_meta
        with tempfile.TemporaryDirectory() as tmp:
            path = extract_volume_features(
                weights,
                data,
                Path(tmp) / "volumes.safetensors",
                layout=layout,
                input_size=int(sm["input_size"]),
                n_last_blocks=int(sm["n_last_blocks"]),
                interpolation=sm["interpolation"] or "bilinear",
                precision=sm.get("precision") or "fp32",  # as the training features were extracted
                device=device,
                num_workers=num_workers,
                progress=False,
            )
            return predict_volumes(run, output_csv, features=path)
    fs = load_volume_features(features)
    for key in ("config", "n_last_blocks", "input_size", "interpolation"):
        want, got = clf.source_meta.get(key, ""), fs.meta.get(key, "")
        if want and got and want != got:
            raise UserError(
                f"{features}: {key} {got!r} differs from the features the classifier was trained on "
                f"({want!r}); extract with the same encoder and preprocessing"
            )
    rows = []
    for v, bag in enumerate(fs.bags(clf.feature)):
        names = [n for n, i in zip(fs.bscan_names, fs.volume_index) if i == v]
        rows.append(volume_row(fs.volumes[v], clf.predict_bag(bag), names, fs.volume_meta[v].get("laterality", "")))
    return write_volume_csv(rows, output_csv)


def volume_row(volume: str, decision: dict[str, Any], bscan_names: list[str], laterality: str) -> dict[str, Any]:
    """One CSV row of ``volumes predict`` from :meth:`VolumeClassifier.decide`'s answer (any backend)."""
    return {
        "volume": volume,
        **{f"prob_{c}": f"{p:.6f}" for c, p in decision["probs"].items()},
        "prediction": decision["prediction"],
        "driving_bscan": decision["driving_bscan"],
        "driving_bscan_name": bscan_names[decision["driving_bscan"]],
        "laterality": laterality,
        "n_bscans": len(bscan_names),
    }


def write_volume_csv(rows: list[dict[str, Any]], output_csv: str | Path) -> Path:
    """The rows of :func:`volume_row`, written atomically."""
    with atomic_write(output_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return Path(output_csv)
