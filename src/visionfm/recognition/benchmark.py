"""Real-data recognition benchmark (``visionfm benchmark --suites recognition``), fixed seeds and splits.

* RetinaMNIST (DR grade 0-4, official MedMNIST splits): linear probe, official MLP head, end-to-end fine-tuning
  and 1/5/10-shot linear probes (5 draws), beside the MedMNIST v2 baselines.
* OCT DME (OCT-fundus-DME-DR, OCT B-scans): linear probe and MLP head with a patient-level split.
* One multi-label decoder over OCT + fundus features (each modality through its own encoder): DR grade as a
  softmax group (no DR / NPDR / PDR) plus DME, missing DR grades masked.

Without ``weights`` the encoder is a documented stand-in: a randomly initialised ViT-S/16 (seed 0), so the numbers
measure the pipeline, not pretraining. Everything is small enough for a 2-core CPU (64 px RetinaMNIST, 224 px OCT
and fundus, a few fine-tuning epochs).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from ..checkpoints import load_encoder, random_encoder, save_encoder
from ..features import extract_features
from .api import evaluate_run, train_head
from .config import load_head_config
from .fewshot import fewshot
from .finetune import finetune, load_finetune_config
from .manifests import split_manifest

__all__ = ["RETINA_PUBLISHED", "benchmark", "standin_encoder"]

log = logging.getLogger(__name__)
RETINA_PUBLISHED = (
    "MedMNIST v2 test AUC/ACC: ResNet-18 (28) .717/.524, ResNet-18 (224) .710/.493, ResNet-50 (28) "
    ".726/.528, ResNet-50 (224) .716/.511, auto-sklearn .690/.515, AutoKeras .719/.503, "
    "Google AutoML Vision .750/.531"
)
MM_SCHEMA = "name: oct-fundus-dme-dr\noutputs: [no DR, NPDR, PDR, DME]\ngroups: {DR: [no DR, NPDR, PDR]}\n"


def standin_encoder(path: Path, arch: str = "vit_small_patch16") -> Path:
    """The documented stand-in encoder: ``arch`` randomly initialised with seed 0 (no modality recorded)."""
    if not path.is_file():
        save_encoder(random_encoder(arch, seed=0), path, source=f"random init {arch} seed 0")
    return path


@functools.lru_cache(maxsize=4)
def _encoder(weights: Path, modality: str) -> Any:
    return load_encoder(weights, modality)  # loaded once per modality: building a ViT costs seconds on CPU


def _extract(weights: Path, data: Any, out: Path, modality: str, size: int, split: str = "training") -> str:
    if not out.is_file():
        extract_features(
            _encoder(weights, modality),
            data,
            out,
            split=split,
            input_size=size,
            num_workers=0,
            batch_size=32,
            progress=False,
        )
    return str(out)


def _row(
    task: str, dataset: str, method: str, encoder: str, metric: str, value: float, published: str = "", notes: str = ""
) -> dict[str, Any]:
    return {
        "task": task,
        "dataset": dataset,
        "method": method,
        "encoder": encoder,
        "metric": metric,
        "value": float(value),
        "published": published,
        "notes": notes,
    }


def _retina_subset(root: Path, quick: bool) -> dict[str, str]:
    """Split names to use; quick mode writes short label files (first lines of each official split)."""
    if not quick:
        return {"train": "train", "val": "val", "test": "test"}
    sizes = {"train": 100, "val": 30, "test": 60}
    for s, n in sizes.items():
        lines = (root / f"{s}_labels.txt").read_text().splitlines()[:n]
        (root / f"q{s}_labels.txt").write_text("\n".join(lines) + "\n")
    return {s: f"q{s}" for s in sizes}


def _retina(data_root: Path, out: Path, weights: Path, enc: str, quick: bool) -> list[dict]:
    from ..data.medmnist import medmnist_to_folder

    npz = data_root / "retinamnist" / "retinamnist.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"RetinaMNIST not found: {npz}")
    root = medmnist_to_folder(npz, out / "data" / "retinamnist")
    splits, size = _retina_subset(root, quick), (32 if quick else 64)
    feats = {
        s: _extract(weights, root, out / "features" / f"retina_{s}_{size}.safetensors", "Fundus", size, name)
        for s, name in splits.items()
    }
    n_boot, epochs = (20, 3) if quick else (1000, 100)
    rows = []
    base = dict(
        task="classify",
        train=[feats["train"]],
        val=[feats["val"]],
        test=[feats["test"]],
        ordinal=True,
        overwrite=True,
        n_boot=n_boot,
        epochs=epochs,
        batch_size=256,
        lr=1e-3,
        device="cpu",
    )
    for head in ("linear", "mlp"):
        m = _metrics(train_head(load_head_config(head=head, output_dir=str(out / f"retina_{head}"), **base)))
        rows += _cls_rows("RetinaMNIST", f"{head} head on frozen features ({size} px)", enc, m, RETINA_PUBLISHED)
    ft = load_finetune_config(
        overwrite=True,
        task="classify",
        weights=str(weights),
        modality="Fundus",
        data=str(root),
        split=splits["train"],
        val_split=splits["val"],
        test_split=splits["test"],
        input_size=size,
        ordinal=True,
        epochs=1 if quick else 4,
        max_steps=2 if quick else None,
        batch_size=16 if quick else 64,
        lr=1e-3,
        n_boot=n_boot,
        output_dir=str(out / "retina_finetune"),
        device="cpu",
    )
    m = _metrics(finetune(ft))
    rows += _cls_rows(
        "RetinaMNIST",
        f"fine-tune encoder + linear head ({size} px, {ft.train.epochs} epochs)",
        enc,
        m,
        RETINA_PUBLISHED,
    )
    shots, draws, steps = ((1,), 2, 10) if quick else ((1, 5, 10), 5, 200)
    fs = fewshot(
        load_head_config(
            overwrite=True,
            task="classify",
            train=[feats["train"]],
            test=[feats["test"]],
            lr=1e-2,
            device="cpu",
            output_dir=str(out / "retina_fewshot"),
        ),
        shots,
        draws,
        steps,
    )
    for k in shots:
        s = fs["summary"][str(k)]
        for key in ("auroc.macro", "accuracy"):
            rows.append(
                _row(
                    "few-shot classification",
                    "RetinaMNIST",
                    f"{k}-shot linear probe",
                    enc,
                    f"{key} mean",
                    s[key]["mean"],
                    "",
                    f"sd {s[key]['sd']:.4f} over {draws} draws",
                )
            )
    return rows


def _metrics(run: Path) -> dict:
    import json

    return json.loads((run / "metrics.json").read_text())


def _cls_rows(
    dataset: str,
    method: str,
    enc: str,
    m: dict,
    published: str = "",
    task: str = "classification",
    keys: tuple[str, ...] = ("auroc.macro", "accuracy", "kappa_quadratic"),
) -> list[dict]:
    t, rows = m["test"], []
    for key in keys:
        v = t
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is None:
            continue
        ci = t.get("ci95", {}).get(key)
        note = f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]; " if ci and ci[0] is not None else ""
        rows.append(
            _row(
                task, dataset, method, enc, key, v, published, note + f"n_test {m['n']['test']}, selected on validation"
            )
        )
    return rows


def _oct_and_multimodal(data_root: Path, out: Path, weights: Path, enc: str, quick: bool) -> list[dict]:
    manifest = data_root / "OCT-fundus-DME-DR" / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"OCT-fundus-DME-DR not found: {manifest.parent}")
    size, n_boot, epochs = (32, 20, 3) if quick else (224, 1000, 100)
    if quick:  # every 4th row: 30 OCT B-scans and 20 fundus photographs
        lines = manifest.read_text().splitlines()
        manifest = out / "splits" / "quick_manifest.csv"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        root = (data_root / "OCT-fundus-DME-DR").resolve()
        manifest.write_text("\n".join([lines[0]] + [f"{root}/{ln}" for ln in lines[1::4]]) + "\n")
    oct_train, oct_test = split_manifest(
        manifest, out / "splits" / "oct", 0.3, 0, "patient", "DME", {"modality": "OCT"}
    )
    f = {
        s: _extract(weights, p, out / "features" / f"oct_{s}_{size}.safetensors", "OCT", size)
        for s, p in (("train", oct_train), ("test", oct_test))
    }
    rows = []
    base = dict(
        task="classify",
        train=[f["train"]],
        test=[f["test"]],
        labels=[str(oct_train)],
        overwrite=True,
        test_labels=[str(oct_test)],
        label_columns=["DME"],
        patient_column="patient",
        classes=["no DME", "DME"],
        n_boot=n_boot,
        epochs=epochs,
        batch_size=64,
        lr=1e-3,
        device="cpu",
    )
    for head in ("linear", "mlp"):
        m = _metrics(train_head(load_head_config(head=head, output_dir=str(out / f"oct_dme_{head}"), **base)))
        rows += _cls_rows(
            "OCT-fundus-DME-DR (OCT)",
            f"{head} head, patient-level split",
            enc,
            m,
            keys=("auroc.macro", "ap.macro", "accuracy", "balanced_accuracy"),
        )
    split_manifest(manifest, out / "splits" / "mm", 0.3, 0, "patient", "DME", None, by="modality")
    feats = {
        (s, mod): _extract(
            weights,
            out / "splits" / f"mm_{s}_{mod}.csv",
            out / "features" / f"mm_{s}_{mod}_{size}.safetensors",
            mod,
            size,
        )
        for s in ("train", "test")
        for mod in ("OCT", "Fundus")
    }
    schema = out / "splits" / "oct_fundus_schema.yaml"
    schema.write_text(MM_SCHEMA)
    lab = {s: str(out / "splits" / f"mm_{s}.csv") for s in ("train", "test")}
    run = train_head(
        load_head_config(
            overwrite=True,
            task="multilabel",
            schema=str(schema),
            head="linear",
            train=[feats["train", "OCT"], feats["train", "Fundus"]],
            test=[feats["test", "OCT"], feats["test", "Fundus"]],
            labels=[lab["train"]],
            test_labels=[lab["test"]],
            patient_column="patient",
            n_boot=n_boot,
            epochs=epochs,
            batch_size=64,
            lr=1e-3,
            device="cpu",
            output_dir=str(out / "multilabel"),
        )
    )
    m = _metrics(run)
    for name in ("DME", "NPDR", "PDR", "no DR", "macro"):
        rows.append(
            _row(
                "multi-label (one decoder, OCT + fundus)",
                "OCT-fundus-DME-DR",
                "linear decoder",
                enc,
                f"auroc {name}",
                m["test"]["auroc"][name],
                "",
                f"n labelled {m['test']['n_labelled'].get(name, m['n']['test'])}; DR grade missing "
                f"for some images (masked)",
            )
        )
    for mod in ("OCT", "Fundus"):
        e = evaluate_run(run, [feats["test", mod]], [lab["test"]], out / f"multilabel_eval_{mod}", n_boot=0)
        rows.append(
            _row(
                "multi-label (one decoder, OCT + fundus)",
                "OCT-fundus-DME-DR",
                f"same decoder, {mod} test images only",
                enc,
                "auroc DME",
                e["test"]["auroc"]["DME"],
                "",
                f"n {e['n']}",
            )
        )
    return rows


def benchmark(data_root: Path, out: Path, weights: Path | None, quick: bool) -> list[dict]:
    """Run the recognition experiments; returns result rows (see :mod:`visionfm.benchmark`).

    Raises:
        FileNotFoundError: a data folder is absent (named).
    """
    data_root, out = Path(data_root), Path(out)
    for sub in ("retinamnist", "OCT-fundus-DME-DR"):
        if not (data_root / sub).is_dir():
            raise FileNotFoundError(f"recognition benchmark needs {data_root / sub}")
    arch = "vit_tiny_patch16" if quick else "vit_small_patch16"
    w = Path(weights) if weights else standin_encoder(out / f"standin_{arch}_seed0.safetensors", arch)
    enc = str(weights) if weights else f"stand-in: random-init {arch.replace('_patch', '/')} seed 0"
    rows = _retina(data_root, out, w, enc, quick)
    rows += _oct_and_multimodal(data_root, out, w, enc, quick)
    return rows
