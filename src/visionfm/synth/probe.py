"""The linear probe that compares encoders: features of a labelled train/val/test set, logistic regression.

Protocol (the same for every encoder; ``benchmarks/pretrain_probe.py`` uses it too): features extracted with
:func:`visionfm.extract_features` (CLS tokens of the last blocks, concatenated); standardised on train; multinomial
logistic regression fitted on train with C chosen on val by macro one-vs-rest AUC (never on test); test AUC (macro
one-vs-rest, as MedMNIST's ``getAUC``) and accuracy of the selected model. The few-shot variant
(:func:`fewshot_probe`) fits on k labelled training images per class (many seeded draws, the same draws for every
encoder), everything else unchanged: where labels are scarce, an encoder's features matter most.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["C_GRID", "ProbeSplits", "fewshot_probe", "linear_probe", "probe_encoder", "probe_features"]

log = logging.getLogger(__name__)
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
ProbeSplits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (features [N, D], integer labels [N])


def _auc(y: np.ndarray, probs: np.ndarray, classes: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(classes) == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=classes))


def linear_probe(splits: ProbeSplits, c_grid: Sequence[float] = C_GRID, seed: int = 0) -> dict[str, float]:
    """Logistic regression on ``train``, C selected on ``val`` macro AUC, scored on ``test``.

    Args:
        splits: ``train``, ``val`` and ``test`` -> (features ``[N, D]``, labels ``[N]`` in 0..K-1).
        c_grid: inverse regularisation strengths tried.
        seed: seed of the solver.

    Returns:
        ``C``, ``val_auc``, ``test_auc`` (macro one-vs-rest; plain AUC for two classes) and ``test_acc``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    missing = [s for s in ("train", "val", "test") if s not in splits]
    if missing:
        raise ValueError(f"linear_probe needs train, val and test splits; missing {missing}")
    classes = np.unique(splits["train"][1])
    for name in ("val", "test"):
        extra = sorted(set(np.unique(splits[name][1]).tolist()) - set(classes.tolist()))
        if extra:
            raise ValueError(f"{name} split has classes {extra} that train lacks")
    scaler = StandardScaler().fit(splits["train"][0])
    x = {k: scaler.transform(v[0]) for k, v in splits.items()}
    y = {k: np.asarray(v[1]) for k, v in splits.items()}
    best: tuple[float, float, object] | None = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x["train"], y["train"])
        auc = _auc(y["val"], clf.predict_proba(x["val"]), classes)
        if best is None or auc > best[0]:
            best = (auc, c, clf)
    val_auc, c, clf = best
    probs = clf.predict_proba(x["test"])
    return {
        "C": float(c),
        "val_auc": val_auc,
        "test_auc": _auc(y["test"], probs, classes),
        "test_acc": float((classes[probs.argmax(1)] == y["test"]).mean()),
    }


def fewshot_probe(
    splits: ProbeSplits, k: int, n_draws: int = 20, seed: int = 0, c_grid: Sequence[float] = C_GRID
) -> dict[str, float | list[float]]:
    """:func:`linear_probe` fitted on ``k`` training images per class, over ``n_draws`` seeded draws.

    Draw ``i`` depends only on the training labels, ``k``, ``seed`` and ``i``
    (:func:`visionfm.evaluation.kshot_draws`), so two encoders probed with the same arguments see the same images
    and their per-draw results can be compared pairwise.

    Returns:
        ``test_auc`` and ``val_auc`` (means over draws), ``test_auc_sd`` (over draws) and ``draws`` (test AUC of
        each draw, in draw order).
    """
    from ..evaluation.splits import kshot_draws

    x, y = splits["train"]
    runs = [
        linear_probe({**splits, "train": (x[idx], y[idx])}, c_grid, seed) for idx in kshot_draws(y, k, n_draws, seed)
    ]
    test = [r["test_auc"] for r in runs]
    return {
        "test_auc": float(np.mean(test)),
        "test_auc_sd": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
        "val_auc": float(np.mean([r["val_auc"] for r in runs])),
        "draws": test,
    }


def probe_features(
    weights: str | Path,
    data: str | Path,
    work: str | Path,
    input_size: int,
    n_last_blocks: int = 4,
    splits: Sequence[str] = ("train", "val", "test"),
    device: str = "auto",
) -> ProbeSplits:
    """Features (CLS tokens of the last ``n_last_blocks`` blocks) and class labels of the ``vfm``-layout ``data``
    splits, extracted with ``weights`` into ``work``; keyed ``train``, ``val``, ``test`` whatever the split names."""
    from ..checkpoints import load_encoder
    from ..features import extract_features, load_features

    if len(splits) != 3:
        raise ValueError(f"splits must name train, val and test, got {list(splits)}")
    enc = load_encoder(weights)
    blocks = min(n_last_blocks, enc.cfg.depth)
    feats: ProbeSplits = {}
    for role, split in zip(("train", "val", "test"), splits):
        path = Path(work) / f"features_{split}.safetensors"
        extract_features(
            enc,
            data,
            path,
            layout="vfm",
            split=split,
            input_size=input_size,
            n_last_blocks=blocks,
            batch_size=64,
            num_workers=0,
            device=device,
            progress=False,
        )
        fs = load_features(path)
        if fs.labels is None or fs.labels.shape[1] == 0 or np.isnan(fs.labels[:, 0]).any():
            raise ValueError(f"{data} split {split}: every image needs a class label for the probe")
        feats[role] = (fs.cls, fs.labels[:, 0].astype(int))
    return feats


def probe_encoder(
    weights: str | Path,
    data: str | Path,
    work: str | Path,
    input_size: int,
    n_last_blocks: int = 4,
    splits: Sequence[str] = ("train", "val", "test"),
    c_grid: Sequence[float] = C_GRID,
    device: str = "auto",
) -> dict[str, float]:
    """Extract features of the ``vfm``-layout ``data`` splits with ``weights`` into ``work`` and probe them.

    Args:
        splits: the data's train, val and test split names, in that order.
        n_last_blocks: CLS tokens of this many last blocks (at most the encoder's depth) are concatenated.
    """
    result = linear_probe(probe_features(weights, data, work, input_size, n_last_blocks, splits, device), c_grid)
    log.info(
        "probe %s: val AUC %.3f, test AUC %.3f, test acc %.3f (C=%g)",
        weights,
        result["val_auc"],
        result["test_auc"],
        result["test_acc"],
        result["C"],
    )
    return result
