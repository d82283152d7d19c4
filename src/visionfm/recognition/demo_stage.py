"""Demo stage of the recognition decoders on the phantoms: every task from one feature extraction per data set.

With the demo encoder (``ctx.encoder_path``) frozen: DR grading with a linear probe and the official MLP head, the
13-output multi-label decoder over fundus + OCT phantoms (OCT images have only their own labels: the rest are
masked), 1/k-shot probes with repeated draws, biomarker regression, and glaucoma forecasting with and without the
interval encoding; the DR run is then applied to the test images with ``predict``. Fast mode (24 phantoms per data
set at 64 px, 10 epochs) takes about 30 s on an idle 2-core CPU; normal mode (96 at 128 px) about 2 minutes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..features import extract_features
from ..report import Section
from .api import train_head
from .config import load_head_config
from .fewshot import fewshot
from .predict import predict

__all__ = ["demo_stage"]


def _features(ctx: Any, kind: str, out: Path, modality: str | None = None) -> dict[str, str]:
    root = Path(ctx.datasets[kind].root)
    feats = {}
    for split in ("training", "test"):
        path = out / "features" / f"{kind}_{split}.safetensors"
        extract_features(
            ctx.encoder_path,
            root,
            path,
            modality=modality,
            split=split,
            input_size=ctx.cfg.size,
            num_workers=0,
            progress=False,
            device=ctx.cfg.device,
        )
        feats[split] = str(path)
    return feats


def _run(ctx: Any, out: Path, name: str, **kw: Any) -> dict:
    fast = ctx.cfg.fast
    base = dict(
        output_dir=str(out / name),
        epochs=10 if fast else 60,
        batch_size=32,
        lr=1e-2 if fast else 3e-3,
        n_boot=20 if fast else 200,
        seed=ctx.cfg.seed,
        device=ctx.cfg.device,
    )
    cfg = load_head_config(overwrite=True, **{**base, **kw})
    return json.loads((train_head(cfg) / "metrics.json").read_text())


def _cls_row(what: str, m: dict) -> dict:
    t = m["test"]
    lo, hi = t.get("ci95", {}).get("auroc.macro", [None, None])
    return {
        "model": what,
        "test AUROC (macro)": t["auroc"]["macro"],
        "95% CI": f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "",
        "accuracy": t["accuracy"],
        "kappa": t.get("kappa_quadratic", ""),
        "n test": m["n"]["test"],
        "selected at epoch": m["selection"].get("best_epoch"),
    }


def _oct_labels(ctx: Any, out: Path) -> Path:
    """OCT phantoms as 13-output rows: normal = Healthy and nothing else; AMD = AMD; DME (not an output) = not
    healthy and not AMD; every other output of a diseased B-scan is unknown (masked)."""
    from .schema import OFFICIAL_13

    names = OFFICIAL_13.outputs
    with open(Path(ctx.datasets["oct-dme"].root) / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    classes = ctx.datasets["oct-dme"].classes  # normal, DME, AMD
    lines = []
    for r in rows:
        c = classes[int(r["label"])]
        known = {n: int(n == "Healthy") for n in names} if c == "normal" else {"Healthy": 0, "AMD": int(c == "AMD")}
        lines.append(",".join([r["path"]] + [str(known[n]) if n in known else "" for n in names]))
    path = out / "oct_multilabel.csv"
    path.write_text(",".join(["path"] + names) + "\n" + "\n".join(lines) + "\n")
    return path


def demo_stage(ctx: Any) -> Section:
    """Train and evaluate every recognition task on the phantoms; returns tables and figures."""
    out = Path(ctx.out) / "recognition"
    out.mkdir(parents=True, exist_ok=True)
    # one encoder for every phantom set, with its own normalisation (asking for OCT would only warn that a Fundus
    # encoder is used for OCT, twice, in every demo run)
    f = {
        k: _features(ctx, k, out)
        for k in ("fundus-dr", "oct-dme", "fundus-multilabel", "fundus-biomarkers", "glaucoma-forecast")
    }
    dr = dict(
        task="classify",
        train=[f["fundus-dr"]["training"]],
        test=[f["fundus-dr"]["test"]],
        ordinal=True,
        classes=list(ctx.datasets["fundus-dr"].classes),
    )  # grade names on the confusion matrix's axes
    cls = [_cls_row(f"{h} head", _run(ctx, out, f"dr_{h}", head=h, **dr)) for h in ("linear", "mlp")]
    oct_csv = _oct_labels(ctx, out)
    ml = _run(
        ctx,
        out,
        "multilabel",
        task="multilabel",
        head="linear",
        train=[f["fundus-multilabel"]["training"], f["oct-dme"]["training"]],
        test=[f["fundus-multilabel"]["test"], f["oct-dme"]["test"]],
        labels=[str(Path(ctx.datasets["fundus-multilabel"].root) / "training_labels.txt"), str(oct_csv)],
        test_labels=[str(Path(ctx.datasets["fundus-multilabel"].root) / "test_labels.txt"), str(oct_csv)],
    )
    mlt = ml["test"]
    ml_rows = [
        {"output": n, "AUROC": mlt["auroc"][n], "AP": mlt["ap"][n], "labelled test images": mlt["n_labelled"][n]}
        for n in mlt["n_labelled"]
    ]
    shots = (1, 2) if ctx.cfg.fast else (1, 5)
    fs = fewshot(
        load_head_config(
            overwrite=True,
            task="classify",
            train=[f["fundus-dr"]["training"]],
            test=[f["fundus-dr"]["test"]],
            lr=1e-2,
            seed=ctx.cfg.seed,
            device=ctx.cfg.device,
            output_dir=str(out / "fewshot"),
        ),
        shots,
        n_draws=2 if ctx.cfg.fast else 3,
        steps=20 if ctx.cfg.fast else 100,
    )
    fs_rows = [
        {
            "k (images per class)": k,
            "AUROC mean": s["auroc.macro"]["mean"],
            "AUROC sd": s["auroc.macro"]["sd"],
            "draws": s["auroc.macro"]["n"],
        }
        for k, s in ((k, fs["summary"][str(k)]) for k in shots)
    ]
    bio = _run(
        ctx,
        out,
        "biomarkers",
        task="regress",
        train=[f["fundus-biomarkers"]["training"]],
        test=[f["fundus-biomarkers"]["test"]],
        targets=["cup_disc_ratio", "vessel_density", "lesion_count"],
    )
    reg_rows = [
        {
            "target": n,
            "MAE": bio["test"]["mae"][n],
            "accuracy (1 - MAE/|mean|)": bio["test"]["accuracy"][n],
            "R2": bio["test"]["r2"][n],
        }
        for n in ("cup_disc_ratio", "vessel_density", "lesion_count")
    ]
    fc_rows = []
    for enc in ("sinusoidal", "none") if ctx.cfg.fast else ("sinusoidal", "learned", "none"):
        m = _run(
            ctx,
            out,
            f"forecast_{enc}",
            task="forecast",
            time_encoding=enc,
            lr=1e-2,
            train=[f["glaucoma-forecast"]["training"]],
            test=[f["glaucoma-forecast"]["test"]],
        )
        fc_rows.append(
            {
                "interval encoding": enc,
                "AUROC": m["test"]["auroc"]["macro"],
                "F1 (converts)": m["test"]["f1"]["converts"],
                "n test": m["n"]["test"],
            }
        )
    pred = predict(
        out / "dr_linear",
        Path(ctx.datasets["fundus-dr"].root) / "test",
        out / "dr_predictions.csv",
        device=ctx.cfg.device,
    )
    n_pred = sum(1 for _ in open(pred)) - 1
    text = (
        f"Heads on frozen features of the demo encoder ({ctx.cfg.size}-px phantoms), selected on a validation "
        f"split carved from training, scored once on test with 95% bootstrap CIs. The multi-label decoder is "
        f"one head over fundus and OCT features with the official 13 outputs (DR grade as one softmax group); "
        f"OCT B-scans carry only what they show (normal = Healthy; AMD; DME = neither), their other labels are "
        f"masked. 'predict' re-extracted features of "
        f"{n_pred} test images with the verified encoder -> {pred.name}."
    )
    figs = [
        out / "dr_linear" / "roc.png",
        out / "dr_linear" / "confusion.png",
        out / "multilabel" / "roc.png",
        out / "fewshot" / "fewshot.png",
        out / "biomarkers" / "scatter.png",
    ]
    return Section(
        "Recognition decoders",
        text,
        [
            ("DR grading (fundus-dr)", cls),
            ("multi-label decoder, fundus + OCT", ml_rows),
            ("few-shot linear probe (fundus-dr)", fs_rows),
            ("biomarker regression", reg_rows),
            ("glaucoma forecasting", fc_rows),
        ],
        [p for p in figs if p.is_file()],
    )
