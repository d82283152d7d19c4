"""Few-shot segmentation: the same recipe trained on the first 1, 5, 10 ... images, ViT decoders beside the U-Net.

The paper's claim to test is that a pretrained encoder with a one-shot decoder beats a U-Net trained on ten images.
Every (model, shots) cell is one ordinary run of :func:`train_segmentation` (same engine, loss, schedule and number
of optimizer steps) evaluated by :func:`predict_segmentation` on a fixed test split. Finished runs are reused when
their saved configuration is the one asked for, so a table can be rebuilt or extended without retraining.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..config import config_to_dict
from ..errors import UserError
from .config import DenseConfig, DenseState, load_config, save_config
from .segment import predict_segmentation, train_segmentation

__all__ = ["FEWSHOT_METRICS", "cached_metrics", "predict_once", "run_fewshot", "train_once"]

log = logging.getLogger(__name__)
FEWSHOT_METRICS = ("dice", "iou", "sensitivity", "specificity", "auc", "hd95")
_VOLATILE = ("state",)  # sections that do not change what a run learns
_VOLATILE_TRAIN = ("device", "num_workers", "output_dir", "progress", "log_every")


def _same_run(saved: DenseConfig, cfg: DenseConfig) -> bool:
    """Same settings, where a None request (e.g. ``kind``, resolved by training) matches what was resolved."""
    a, b = config_to_dict(saved), config_to_dict(cfg)
    ta, tb = a.pop("train"), b.pop("train")
    same = all(a[k] == b[k] for k in a if k not in _VOLATILE and b[k] is not None)
    return same and all(ta[k] == tb[k] for k in ta if k not in _VOLATILE_TRAIN and tb[k] is not None)


def train_once(cfg: DenseConfig, train_fn=train_segmentation) -> Path:
    """Train ``cfg`` unless ``cfg.train.output_dir`` already holds a finished run with the same settings.

    An unfinished run in that folder is resumed from its last checkpoint (or restarted when it has none).

    Returns:
        the run folder.
    """
    run = Path(cfg.output_dir)
    if (run / "model.safetensors").is_file() and (run / "dense.yaml").is_file():
        if _same_run(load_config(run / "dense.yaml"), cfg):
            log.info("reusing finished run %s", run)
            return run
        raise UserError(f"{run} holds a finished run with other settings; choose another --output or remove it")
    if (run / "checkpoint_last.pth").is_file():
        return train_fn(cfg, resume=True)
    return train_fn(cfg, overwrite=run.is_dir() and any(run.iterdir()))


def cached_metrics(run: Path, out: Path, **expect) -> dict | None:
    """The metrics in ``out/metrics.json`` if it is newer than the run's weights and records ``expect``; else None."""
    done = out / "metrics.json"
    if not done.is_file() or done.stat().st_mtime < (run / "model.safetensors").stat().st_mtime:
        return None
    saved = json.loads(done.read_text())
    return saved["metrics"] if all(saved.get(k) == v for k, v in expect.items()) else None


def predict_once(
    run: Path, data: str | Path, out: Path, split: str, subset: str | None = None, device: str = "auto"
) -> dict:
    """:func:`predict_segmentation` unless :func:`cached_metrics` has its result; returns the metrics."""
    m = cached_metrics(run, out, data=str(data), split=split, subset=subset)
    if m is not None:
        return m
    if out.is_dir():  # a stale prediction folder: replace it whole (names of old images must not linger)
        shutil.rmtree(out)
    return predict_segmentation(run, data, out, split, subset, device)


def run_fewshot(
    base: DenseConfig,
    shots: Sequence[int],
    models: Sequence[str],
    test_data: str | Path,
    test_split: str,
    output: str | Path,
    test_subset: str | None = None,
) -> list[dict]:
    """Train every model on the first ``n`` images for each ``n`` in ``shots``; evaluate each on the test split.

    Args:
        base: the recipe (data, crop/size, steps, weights for the ViT decoders); ``model``, ``subset`` and
            ``train.output_dir`` are set per cell (no validation: the first n images are all trained on), and
            ``weights`` is dropped for ``"unet"``.
        shots: training set sizes, e.g. (1, 5, 10).
        models: registered dense models, e.g. ("unetr", "unet").
        test_data / test_split / test_subset: the evaluation images.
        output: folder of the runs (``<model>_<n>shot/``) and of ``fewshot.json``.

    Returns:
        one row per cell: ``{'model', 'shots', 'encoder', <metric>: value ...}`` (foreground-class mean).
    """
    if not shots or any(int(n) < 1 for n in shots):
        raise ValueError(f"shots must be positive image counts, got {list(shots)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in models:
        for n in shots:
            cfg = dataclasses.replace(
                base,
                model=model,
                subset=str(int(n)),
                state=DenseState(),
                val_fraction=0.0,
                val_data=None,
                weights=None if model == "unet" else base.weights,
                train=dataclasses.replace(base.train, output_dir=str(out / f"{model}_{int(n)}shot")),
            )
            run = train_once(cfg)
            m = predict_once(run, test_data, run / f"pred_{test_split}", test_split, test_subset, base.train.device)
            rows.append(
                {
                    "model": model,
                    "shots": int(n),
                    "encoder": cfg.weights or "none (from scratch)",
                    **{k: m["mean"][k] for k in FEWSHOT_METRICS},
                }
            )
            log.info("few-shot %s, %d image(s): Dice %.4f", model, n, m["mean"]["dice"])
    (out / "fewshot.json").write_text(
        json.dumps({"test_data": str(test_data), "split": test_split, "rows": rows}, indent=2)
    )
    save_config(base, out / "base.yaml")
    return rows
