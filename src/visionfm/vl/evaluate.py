"""Zero-shot classification and image-text retrieval with a trained run, written as CSV + ``metrics.json``.

Zero-shot metrics are FLAIR's (balanced accuracy, Cohen's kappa, macro-F1) plus AUROC, each with a stratified
bootstrap 95% interval (``visionfm.evaluation``). Retrieval reports recall@k both ways when images and texts are
paired (a report manifest).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from ..data.datasets import MISSING, scan
from ..data.images import IMAGE_EXTENSIONS
from ..errors import UserError
from ..evaluation import classification_metrics, resample_indices, with_ci, write_predictions, write_results
from ..fileio import atomic_write
from .data import TEXT_COLUMNS
from .runs import VLRun

__all__ = ["ZS_KEYS", "cosine_ranking", "first_hit_rank", "read_images", "recall_at_k", "retrieve", "zeroshot_eval"]

log = logging.getLogger(__name__)
ZS_KEYS = ("balanced_accuracy", "kappa", "f1.macro", "auroc.macro")


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def read_images(source: str | Path) -> tuple[list[Path], list[str], list[str | None], list[str | None]]:
    """(paths, relative names, label strings, texts) of an image, a folder, a class folder or a manifest.

    Labels come from a manifest's ``label`` column or, for a folder of class sub-folders, the sub-folder names;
    texts from a manifest's text column (``report``, ``caption_en``, ...).
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in IMAGE_EXTENSIONS:  # one image
        return [source], [source.name], [None], [None]
    is_classes = source.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in source.iterdir())
    coll = scan(source, "imagenet" if is_classes else "auto", label_columns=[] if source.is_file() else None)
    paths = [s.path for s in coll.samples]
    names = [s.rel for s in coll.samples]
    if coll.layout == "imagenet":
        labels = [coll.label_names[int(s.label[0])] for s in coll.samples]
    else:
        labels = [s.extra.get("label") for s in coll.samples]
    text_col = next((c for c in TEXT_COLUMNS if coll.samples[0].extra.get(c) is not None), None)
    texts = [s.extra.get(text_col) if text_col else None for s in coll.samples]
    return paths, names, labels, texts


def _label_index(label: str | None, classes: Sequence[str], run: VLRun) -> float:
    """Index of ``label`` among ``classes``: the same name (folded), the same dictionary category, or an integer."""
    if label is None or label.strip() in MISSING:
        return np.nan
    folded = [_fold(c) for c in classes]
    if _fold(label) in folded:
        return float(folded.index(_fold(label)))
    cat = run.knowledge.find(label)
    for i, c in enumerate(classes):
        if cat is not None and run.knowledge.find(c) is cat:
            return float(i)
    if label.strip().isdigit() and int(label) < len(classes):
        return float(int(label))
    raise UserError(
        f"label {label!r} matches none of --classes {list(classes)} (by name, dictionary category or index)"
    )


def _metrics(y: np.ndarray, p: np.ndarray, classes: Sequence[str], ordinal: bool) -> dict:
    m = classification_metrics(y, p, classes, ordinal=ordinal)
    pred = p.argmax(1)
    both = np.unique(np.concatenate([y, pred]))
    m["kappa"] = float(cohen_kappa_score(y, pred, labels=list(range(len(classes))))) if len(both) > 1 else np.nan
    return m


def _zeroshot_inputs(
    run: VLRun, images: str | Path, classes: Sequence[str], domain_knowledge: bool, modality: str | None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, probabilities ``[N, C]``, labels ``[N]`` as class indices with NaN) of images or a features file."""
    if Path(images).suffix == ".safetensors":  # cached features: labels are class indices already
        from .transfer import run_features

        f, y, _, meta = run_features(run, images)
        with torch.no_grad():
            probs = run.model.logits(f, run.class_embeddings(classes, domain_knowledge, modality)).softmax(-1).numpy()
        if y is not None and np.nanmax(y) >= len(classes):
            raise UserError(f"{images}: labels reach {int(np.nanmax(y))}, more than the {len(classes)} --classes")
        return json.loads(meta["paths"]), probs, (y if y is not None else np.full(len(f), np.nan))
    paths, names, labels, _ = read_images(images)
    folders = Path(images).is_dir() and any(lab is not None for lab in labels)
    if folders and not any(_matches(lab, classes, run) for lab in set(labels)):
        # sub-folders that name no class are a folder tree, not class folders (e.g. images/ and masks/)
        log.warning("%s: no sub-folder names a class of --classes; images scored without labels", images)
        labels = [None] * len(labels)
    probs = run.zeroshot(paths, classes, domain_knowledge, modality)
    return names, probs, np.array([_label_index(lab, classes, run) for lab in labels])


def _matches(label: str, classes: Sequence[str], run: VLRun) -> bool:
    try:
        return not np.isnan(_label_index(label, classes, run))
    except UserError:
        return False


def zeroshot_eval(
    run: VLRun,
    images: str | Path,
    classes: Sequence[str],
    output: str | Path,
    domain_knowledge: bool = False,
    modality: str | None = None,
    ordinal: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Zero-shot probabilities of every image (``predictions.csv``) and, with labels, metrics with 95% CIs.

    Args:
        images: a folder, class folder or manifest, or a features file of the run's image encoder
            (``visionfm extract``; its labels are indices into ``classes``).

    Returns:
        the metrics dict written to ``output/metrics.json`` (``{"n": N}`` only when no image has a label).
    """
    if len(classes) < 2:
        raise UserError("--classes needs at least two class names")
    names, probs, y = _zeroshot_inputs(run, images, classes, domain_knowledge, modality)
    out = Path(output)
    known = ~np.isnan(y)
    write_predictions(
        out / "predictions.csv", names, probs, list(classes), y_true=y.astype(int) if known.all() else None
    )
    metrics: dict = {
        "n": len(names),
        "classes": list(classes),
        "domain_knowledge": domain_knowledge,
        "prompts": {c: run.knowledge.prompts(c, modality or run.modality, domain_knowledge) for c in classes},
    }
    if known.sum() >= 2:
        yk, pk = y[known].astype(int), probs[known]
        metrics.update(_metrics(yk, pk, classes, ordinal))
        if n_boot:
            metrics["ci95"] = with_ci(lambda a, b: _metrics(a, b, classes, ordinal), yk, pk, ZS_KEYS, n_boot, seed)
    write_results(out, metrics)
    return metrics


def cosine_ranking(
    queries: torch.Tensor | np.ndarray, candidates: torch.Tensor | np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of unit embeddings ``queries [Q, E]`` x ``candidates [M, E]`` -> ``[Q, M]``, and per query
    the indices of its ``k`` (default all) most similar candidates, best first, ties in candidate order ``[Q, k]``."""
    sim = (torch.as_tensor(queries) @ torch.as_tensor(candidates).t()).numpy()
    return sim, np.argsort(-sim, axis=1, kind="stable")[:, : (k or sim.shape[1])]


def first_hit_rank(sim: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """0-based rank of the first positive candidate of each query ``[Q]`` (similarities ``[Q, M]``, positives bool)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    ranked = np.take_along_axis(positives, order, axis=1)
    return np.where(ranked.any(1), ranked.argmax(1), sim.shape[1])


def recall_at_k(
    sim: np.ndarray, positives: np.ndarray, ks: Sequence[int] = (1, 5, 10), n_boot: int = 0, seed: int = 0
) -> dict:
    """Recall@k of a query x candidate similarity matrix ``[Q, M]`` with boolean positives ``[Q, M]``: the share of
    queries with a positive among their k most similar candidates; with ``n_boot``, percentile 95% intervals from
    resampling the queries (``"ci95": {"R@k": [lo, hi]}``)."""
    rank = first_hit_rank(sim, positives)
    out: dict = {f"R@{k}": float((rank < k).mean()) for k in ks}
    if n_boot:
        reps = np.array([[(rank[idx] < k).mean() for k in ks] for idx in resample_indices(len(rank), n_boot, seed)])
        out["ci95"] = {
            f"R@{k}": [float(np.percentile(reps[:, j], 2.5)), float(np.percentile(reps[:, j], 97.5))]
            for j, k in enumerate(ks)
        }
    return out


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def retrieve(
    run: VLRun,
    images: str | Path,
    output: str | Path,
    queries: Sequence[str] = (),
    k: int = 5,
    ks: Sequence[int] = (1, 5, 10),
    n_boot: int = 1000,
) -> dict:
    """Text->image top-k for each query, image->text top-k over the queries (and a manifest's texts), and recall@k
    both ways when the manifest pairs every image with a text."""
    paths, names, _, texts = read_images(images)
    paired = [t for t in texts if t]
    if not queries and not paired:
        raise UserError("give --query texts, or a manifest with a text column (report, caption_en, ...)")
    with torch.no_grad():
        img = run.encode_image(paths)
        cands = list(dict.fromkeys([*queries, *paired]))
        txt = run.encode_text(cands)
    sim, t2i = cosine_ranking(txt, img, k)  # [T, N], [T, k]
    out = Path(output)
    rows = [
        [q, r + 1, names[j], f"{sim[i, j]:.6f}"]
        for i, q in enumerate(cands[: len(queries)])
        for r, j in enumerate(t2i[i])
    ]
    _write_rows(out / "text_to_image.csv", ["query", "rank", "image", "cosine"], rows)
    i2t = cosine_ranking(img, txt, k)[1]  # [N, k]
    rows = [[names[j], r + 1, cands[i], f"{sim[i, j]:.6f}"] for j in range(len(paths)) for r, i in enumerate(i2t[j])]
    _write_rows(out / "image_to_text.csv", ["image", "rank", "text", "cosine"], rows)
    result: dict = {"images": len(paths), "texts": len(cands), "queries": list(queries)}
    if len(paired) == len(paths):
        pos = np.array([[c == t for t in texts] for c in cands])  # [T, N]: text i is image j's own text
        rows_q = pos.any(1)
        result["text_to_image"] = recall_at_k(sim[rows_q], pos[rows_q], ks, n_boot)
        result["image_to_text"] = recall_at_k(sim.T, pos.T, ks, n_boot)
        result["chance"] = {f"R@{k}": min(1.0, k / len(paths)) for k in ks}
    write_results(out, result)
    return result
