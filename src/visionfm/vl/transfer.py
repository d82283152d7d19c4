"""``adapt``: k-shot transfer of a run with one adapter on cached features, over seeded draws, scored on a test set."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from ..errors import UserError
from ..evaluation import kshot_draws, write_results
from ..features import load_features
from ..fileio import file_sha256
from .adapters import ADAPTERS, fit_adapter, predict
from .evaluate import ZS_KEYS, _metrics
from .runs import VLRun

__all__ = ["adapt", "run_features", "summarise"]

log = logging.getLogger(__name__)


def run_features(run: VLRun, path: str | Path) -> tuple[torch.Tensor, np.ndarray | None, list[str], dict]:
    """Unit image embeddings ``[N, E]``, labels ``[N]`` (or None), class names and metadata of a features file made
    with the run's image encoder (checked by SHA-256 when the file's weights can be found, else by architecture)."""
    fs = load_features(path)
    enc = run.model.image_encoder
    d = enc.cfg.embed_dim
    if fs.cls.shape[1] % d or json.loads(fs.meta.get("config", "{}")) != enc.cfg.to_dict():
        raise UserError(f"{path}: features were extracted with another architecture than the run's image encoder")
    if int(fs.meta.get("input_size", 0)) != run.input_size:
        raise UserError(
            f"{path}: features were extracted at {fs.meta.get('input_size')} px, the run works at "
            f"{run.input_size} px; extract with --input-size {run.input_size}"
        )
    weights = Path(fs.meta.get("weights", ""))
    sha = run.info["image_encoder"]["sha256"]
    if weights.is_file() and sha and file_sha256(weights) != sha:
        raise UserError(f"{path}: extracted with {weights}, which is not the run's image encoder (SHA-256 differs)")
    f = run.encode_image_features(fs.cls[:, -d:])  # final-block CLS: the last D columns
    y = None
    if fs.labels is not None and fs.labels.shape[1] >= 1 and not np.isnan(fs.labels[:, 0]).all():
        y = fs.labels[:, 0]
    return f, y, json.loads(fs.meta.get("label_names", "[]")), fs.meta


def _labelled(f: torch.Tensor, y: np.ndarray, where: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    """The rows with a label (NaN = unlabelled), the labels as integers."""
    keep = ~np.isnan(y)
    if not keep.any():
        raise UserError(f"{where}: no labelled rows")
    return f[torch.from_numpy(keep)], y[keep].astype(int)


def summarise(rows: Sequence[dict], keys: Sequence[str] = ZS_KEYS) -> dict:
    """Mean, sd and a t-based 95% interval of the mean over draws, per metric."""
    out = {}
    for key in keys:
        vals = np.array([r[key] for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            continue
        mean, sd = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        half = float(stats.t.ppf(0.975, len(vals) - 1) * sd / np.sqrt(len(vals))) if len(vals) > 1 else 0.0
        out[key] = {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": len(vals)}
    return out


def _flat(m: dict) -> dict:
    return {k: (m[k.split(".")[0]][k.split(".")[1]] if "." in k else m[k]) for k in ZS_KEYS}


def adapt(
    run: VLRun,
    train: str | Path,
    test: str | Path,
    output: str | Path,
    adapter: str = "linear",
    shots: Sequence[int] = (1, 5, 10),
    n_draws: int = 5,
    classes: Sequence[str] | None = None,
    domain_knowledge: bool = True,
    init: str = "text",
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """k-shot draws from ``train``, one adapter per draw, metrics on the whole of ``test``; ``output/metrics.json``."""
    if adapter not in ADAPTERS:
        raise UserError(f"--adapter {adapter!r} is not one of {list(ADAPTERS)}")
    f_tr, y_tr, names, meta = run_features(run, train)
    f_te, y_te, _, _ = run_features(run, test)
    if y_tr is None or y_te is None:
        raise UserError("--train and --test features need class labels (extract from a labelled folder/manifest)")
    (f_tr, y_tr), (f_te, y_te) = _labelled(f_tr, y_tr, train), _labelled(f_te, y_te, test)
    classes = list(classes or names)
    n_cls = int(max(y_tr.max(), y_te.max())) + 1
    if len(classes) != n_cls:
        raise UserError(f"the features have {n_cls} classes; give that many names with --classes (got {classes})")
    text = run.class_embeddings(classes, domain_knowledge, meta.get("modality") or None)
    scale = run.model.logit_scale
    out, results = (
        Path(output),
        {
            "adapter": adapter,
            "init": init,
            "classes": classes,
            "n_test": len(y_te),
            "domain_knowledge": domain_knowledge,
            "steps": steps,
            "shots": {},
        },
    )
    for k in shots:
        rows = []
        for d, idx in enumerate(kshot_draws(y_tr, k, n_draws, seed, n_cls)):
            head = fit_adapter(
                adapter,
                f_tr[idx],
                torch.as_tensor(y_tr[idx], dtype=torch.long),
                text,
                scale,
                out / f".work_k{k}_d{d}",
                init,
                steps,
                lr,
                seed + d,
            )
            rows.append(_flat(_metrics(y_te, predict(head, f_te), classes, False)))
        results["shots"][str(k)] = {"draws": rows, "summary": summarise(rows)}
        log.info(
            "%s k=%d: balanced accuracy %.4f",
            adapter,
            k,
            results["shots"][str(k)]["summary"].get("balanced_accuracy", {}).get("mean", float("nan")),
        )
    write_results(out, results)
    return results
