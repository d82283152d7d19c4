"""Optic disc + cup segmentation and cup-to-disc ratio on ORIGA-subset, k-fold cross-validated (30 images).

For each fold: train ``configs/dense/origa_cdr.yaml`` (validation carved from the fold's training images) with each
``--models`` on the other folds, predict the held-out images (``segment predict --cdr --expert-cdr``) and pool the
vertical CDR errors over all 30 images. Beside it, the same folds for: the CDR of the expert's own masks (how well
the masks agree with the expert CDR: the ceiling of any mask-based CDR), the training-fold mean (the floor), and,
with ``--regress-weights``, regressing CDR directly from encoder features (``visionfm extract`` + ``visionfm regress
train``: the recognition path). Finished runs are reused. Prints a markdown table; writes ``results.json``.

    nice -n 10 python benchmarks/dense_cdr.py --output runs/dense/origa_cv --models unet --steps 300
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def _link_fold(rows: list[dict], data: Path, out: Path) -> Path:
    """``out/{images,masks}`` of symlinks to the chosen rows (the layout ``segment train`` reads)."""
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for r in rows:
        for key, sub in (("path", "images"), ("mask", "masks")):
            dst = out / sub / Path(r[key]).name
            if not dst.exists():
                dst.symlink_to((data / r[key]).resolve())
    return out


def _segment(rows: list[dict], folds: list[np.ndarray], a: argparse.Namespace, model: str) -> dict:
    from visionfm.dense import load_config, predict_segmentation
    from visionfm.dense.fewshot import train_once

    errors, dice, secs, selected = [], {"disc": [], "cup": []}, 0.0, []
    for k, test_idx in enumerate(folds):
        fold = a.output / f"fold{k}"
        train = _link_fold([rows[i] for i in range(len(rows)) if i not in set(test_idx)], a.data, fold / "train")
        test = _link_fold([rows[i] for i in test_idx], a.data, fold / "test")
        cfg = load_config(
            ROOT / "configs/dense/origa_cdr.yaml",
            data=str(train),
            model=model,
            max_steps=a.steps,
            weights=None if model == "unet" else str(a.weights),
            device="cpu",
            output_dir=str(fold / model),
            progress=False,
            **dict(kv.split("=", 1) for kv in a.set),
        )
        t0 = time.perf_counter()
        run = train_once(cfg)
        secs += time.perf_counter() - t0
        pred = fold / model / "pred"
        m = predict_segmentation(
            run, test, pred, split="test", device="cpu", cdr=True, expert_cdr=str(a.data / "manifest.csv")
        )
        for c in dice:
            dice[c].append(m[c]["dice"])
        with open(pred / "cdr.csv") as f:
            errors += [float(r["abs_error"]) for r in csv.DictReader(f)]
        selected.append(json.loads((run / "train_metrics.json").read_text()).get("selected_step"))
    return {
        "method": f"{model} disc/cup segmentation -> vertical CDR",
        "mae": float(np.mean(errors)),
        "mae_sd": float(np.std(errors)),
        "disc_dice": float(np.mean(dice["disc"])),
        "cup_dice": float(np.mean(dice["cup"])),
        "train_minutes": secs / 60,
        "selected_steps": selected,
    }


def _truth_and_mean(rows: list[dict], folds: list[np.ndarray], data: Path) -> list[dict]:
    from visionfm.dense.cdr import vertical_cdr
    from visionfm.dense.data import read_mask

    expert = np.array([float(r["exp_cdr"]) for r in rows])
    truth = []
    for r in rows:
        m = read_mask(data / r["mask"])
        truth.append(vertical_cdr(m >= 1, m >= 2))
    mean_err = np.concatenate([np.abs(expert[t] - np.delete(expert, t).mean()) for t in folds])
    return [
        {"method": "vertical CDR of the expert's masks (ceiling)", "mae": float(np.mean(np.abs(truth - expert)))},
        {"method": "training-fold mean CDR (floor)", "mae": float(mean_err.mean())},
    ]


def _regress(rows: list[dict], folds: list[np.ndarray], a: argparse.Namespace) -> dict:
    """CDR regressed from encoder features through the CLI (extract + regress train), fold by fold."""
    errs = []
    for k, test_idx in enumerate(folds):
        fold = a.output / f"fold{k}" / "regress"
        fold.mkdir(parents=True, exist_ok=True)
        feats = {}
        for name, idx in (("train", [i for i in range(len(rows)) if i not in set(test_idx)]), ("test", test_idx)):
            manifest = fold / f"{name}.csv"
            with open(manifest, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "exp_cdr"])
                w.writerows([[str((a.data / rows[i]["path"]).resolve()), rows[i]["exp_cdr"]] for i in idx])
            feats[name] = fold / f"{name}.safetensors"
            if not feats[name].is_file():
                _cli(
                    "extract",
                    "--weights",
                    str(a.regress_weights),
                    "--data",
                    str(manifest),
                    "--label-columns",
                    "exp_cdr",
                    "--modality",
                    "Fundus",
                    "--output",
                    str(feats[name]),
                    "--device",
                    "cpu",
                )
        run = fold / "run"
        if not (run / "predictions.csv").is_file():
            _cli(
                "regress",
                "train",
                "--train",
                str(feats["train"]),
                "--test",
                str(feats["test"]),
                "--targets",
                "exp_cdr",
                "--output",
                str(run),
                "--overwrite",
            )
        with open(run / "predictions.csv") as f:
            for r in csv.DictReader(f):
                errs.append(abs(float(r["pred_exp_cdr"]) - float(r["true_exp_cdr"])))
    return {
        "method": f"CDR regressed from features ({a.regress_weights.name}; recognition regress)",
        "mae": float(np.mean(errs)),
        "mae_sd": float(np.std(errs)),
    }


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "visionfm", *args], check=True, cwd=ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ORIGA-subset")
    p.add_argument("--output", type=Path, default=Path("runs/dense/origa_cv"))
    p.add_argument("--models", nargs="*", default=["unet"], help="unet, unetr (needs --weights); none: skip")
    p.add_argument("--weights", type=Path, help="encoder of the ViT decoders")
    p.add_argument("--regress-weights", type=Path, help="encoder whose features regress CDR (omit to skip)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="other config overrides, e.g. crop=128 max_side=384 (smaller: a loaded CPU)",
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with open(a.data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    folds = _folds(len(rows), a.folds, a.seed)
    results = _truth_and_mean(rows, folds, a.data)
    results += [_segment(rows, folds, a, m) for m in a.models]
    if a.regress_weights:
        results.append(_regress(rows, folds, a))
    load = os.getloadavg()
    print(
        f"ORIGA-subset, {len(rows)} images, {a.folds}-fold CV (seed {a.seed}), {a.steps} steps per fold "
        f"{' '.join(a.set)}; "
        f"load average {load[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print("| method | vertical CDR MAE | disc Dice | cup Dice | train min (all folds) |\n|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['method']} | {r['mae']:.4f} | {r.get('disc_dice', float('nan')):.3f} | "
            f"{r.get('cup_dice', float('nan')):.3f} | {r.get('train_minutes', float('nan')):.1f} |"
        )
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "results.json").write_text(
        json.dumps({"folds": a.folds, "steps": a.steps, "set": a.set, "load": load, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
