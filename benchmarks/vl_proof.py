"""Real-data proof of the vision-language package (docs/readme/vl.md), small enough for a CPU.

Trains FLAIR-style runs on RetinaMNIST grades (train split), CSDI reports (80% of patients), external-eye cataract and
slit-lamp keratitis samples, leaving the whole OCT-fundus-DME-DR dataset out, then reports:

1. zero-shot on the left-out dataset (fundus DR: none / NPDR / PDR; OCT: DME yes / no), with and without domain
   knowledge, and on RetinaMNIST test (in-domain reference), with bootstrap 95% CIs;
2. text->image and image->text recall@k on CSDI's held-out reports;
3. few-shot linear probes initialised from the class texts vs randomly (k = 1, 5, 10; seeded draws; t-intervals over
   draws), plus CLIP-Adapter and TIP-Adapter, on cached features.

Usage::

    nice -n 10 python benchmarks/vl_proof.py --work /tmp/vl_proof --modes frozen full --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from visionfm.checkpoints import random_encoder, save_encoder
from visionfm.data.medmnist import medmnist_to_folder
from visionfm.engine import TrainConfig
from visionfm.features import extract_features, load_features
from visionfm.vl import VLConfig, load, train_vl
from visionfm.vl.evaluate import ZS_KEYS, retrieve, zeroshot_eval
from visionfm.vl.transfer import adapt

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DR = [
    "no diabetic retinopathy",
    "mild diabetic retinopathy",
    "moderate diabetic retinopathy",
    "severe diabetic retinopathy",
    "proliferative diabetic retinopathy",
]
LEFT_DR = ["no diabetic retinopathy", "non-proliferative diabetic retinopathy", "proliferative diabetic retinopathy"]
LEFT_DME = ["no diabetic macular edema", "diabetic macular edema"]


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _groups_split(groups: list[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded held-out share of groups (patients)."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(uniq, size=max(1, round(fraction * len(uniq))), replace=False).tolist())
    return np.array([g in held for g in groups])


def prepare(work: Path) -> dict[str, Path]:
    """Manifests of every source (absolute paths), the splits fixed by seed 0."""
    m: dict[str, Path] = {}
    rm = medmnist_to_folder(DATA / "retinamnist" / "retinamnist.npz", work / "retinamnist")
    for split in ("train", "val", "test"):
        rows = [
            [str(rm / line.split(";")[0]), DR[int(line.split(";")[1])], line.split(";")[1]]
            for line in (rm / f"{split}_labels.txt").read_text().split()
        ]
        m[f"rm_{split}"] = _write(work / f"rm_{split}.csv", ["path", "label", "grade"], rows)
    csdi = _rows(DATA / "CSDI-cataract-reports" / "manifest.csv")
    groups = [r["patient_guess"] or r["path"] for r in csdi]
    held = _groups_split(groups, 0.2, 0)
    root = DATA / "CSDI-cataract-reports"
    for name, keep in (("csdi_train", ~held), ("csdi_held", held)):
        m[name] = _write(
            work / f"{name}.csv",
            ["path", "report"],
            [[str(root / r["path"]), r["caption_en"]] for r, k in zip(csdi, keep) if k],
        )
    cat = DATA / "external-eye-cataract-samples"
    m["cataract"] = _write(
        work / "cataract.csv",
        ["path", "label", "modality"],
        [
            [str(p), f"{d} cataract", "External"]
            for d in ("immature", "mature")
            for p in sorted((cat / d).glob("*.png"))
        ],
    )
    oct_rows = _rows(DATA / "OCT-fundus-DME-DR" / "manifest.csv")
    root = DATA / "OCT-fundus-DME-DR"
    dr = [r for r in oct_rows if r["modality"] == "Fundus" and r["DR"] in ("0", "NPDR", "PDR")]
    dme = [r for r in oct_rows if r["modality"] == "OCT"]
    for name, rows, col, names in (
        ("left_dr", dr, "DR", {"0": 0, "NPDR": 1, "PDR": 2}),
        ("left_dme", dme, "DME", {"0": 0, "1": 1}),
    ):
        classes = LEFT_DR if name == "left_dr" else LEFT_DME
        full = [[str(root / r["path"]), classes[names[r[col]]], names[r[col]], r["patient"]] for r in rows]
        m[name] = _write(work / f"{name}.csv", ["path", "label", "y", "patient"], full)
        pool = _groups_split([r["patient"] for r in rows], 0.5, 0)  # few-shot pool vs test, by patient
        for part, keep in (("pool", pool), ("test", ~pool)):
            m[f"{name}_{part}"] = _write(
                work / f"{name}_{part}.csv", ["path", "label", "y", "patient"], [f for f, k in zip(full, keep) if k]
            )
    return m


def train_sources(m: dict[str, Path]) -> list[str]:
    return [
        f"Fundus={m['rm_train']}",
        f"Fundus={m['csdi_train']}",
        f"External={m['cataract']}",
        f"SlitLamp={DATA / 'slit-lamp-keratitis-samples'}",
    ]


def features(weights: Path, manifest: Path, out: Path, size: int) -> Path:
    if out.exists():  # extracted by an earlier, interrupted evaluation of this run
        return out
    return extract_features(
        weights,
        manifest,
        out,
        label_columns=["y" if "left" in manifest.name else "grade"],
        input_size=size,
        n_last_blocks=1,
        num_workers=0,
        progress=False,
        device="cpu",
    )


def evaluate_run(run_dir: Path, m: dict[str, Path], out: Path, shots: list[int], draws: int) -> dict:
    """Zero-shot, retrieval and few-shot numbers of one run (images encoded once, as cached features)."""
    vl = load(run_dir)
    weights = Path(vl.info["image_encoder"]["weights"])
    weights = weights if weights.is_absolute() else run_dir / weights
    feat = {
        name: features(weights, m[name], out / f"feat_{name}.safetensors", vl.input_size)
        for name in (
            "left_dr",
            "left_dme",
            "rm_test",
            "rm_val",
            "left_dr_pool",
            "left_dr_test",
            "left_dme_pool",
            "left_dme_test",
        )
    }
    res: dict = {"zeroshot": {}, "retrieval": retrieve(vl, m["csdi_held"], out / "retrieval", [], 5), "fewshot": {}}
    for name, classes, mod in (
        ("left_dr", LEFT_DR, "Fundus"),
        ("left_dme", LEFT_DME, "OCT"),
        ("rm_test", DR, "Fundus"),
    ):
        for dk in (False, True):
            z = zeroshot_eval(vl, feat[name], classes, out / f"zs_{name}_{int(dk)}", dk, mod, name == "rm_test", 1000)
            res["zeroshot"][f"{name}{'_dk' if dk else ''}"] = {
                k: (z[k.split(".")[0]][k.split(".")[1]] if "." in k else z[k]) for k in ZS_KEYS
            } | {"ci95": z["ci95"]}
    for task, pool, test, classes in (
        ("rm", "rm_val", "rm_test", DR),
        ("left_dr", "left_dr_pool", "left_dr_test", LEFT_DR),
        ("left_dme", "left_dme_pool", "left_dme_test", LEFT_DME),
    ):
        counts = np.bincount(np.asarray(load_features(feat[pool]).labels[:, 0], dtype=int))
        ks = [k for k in shots if k <= counts.min()]  # a pool cannot give more shots than its rarest class
        for label, adapter, init in (
            ("linear_text", "linear", "text"),
            ("linear_random", "linear", "random"),
            ("clip", "clip", "text"),
            ("tip", "tip", "text"),
            ("zeroshot", "zeroshot", "text"),
        ):
            r = adapt(
                vl,
                feat[pool],
                feat[test],
                out / f"fs_{task}_{label}",
                adapter,
                ks,
                draws if adapter != "zeroshot" else 1,
                classes,
                True,
                init,
            )
            res["fewshot"][f"{task}/{label}"] = {k: v["summary"] for k, v in r["shots"].items()}
    return res


def _fmt(v: float, ci: list | None = None) -> str:
    txt = f"{v:.3f}"
    return txt + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "")


def report(res: dict) -> str:
    """Markdown tables of a results.json (every run: setting_seed)."""
    lines = [
        "| run | zero-shot task | prompts | balanced acc. [95% CI] | kappa | macro-F1 | AUROC [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, r in res.items():
        for task, z in r["zeroshot"].items():
            ci = z.get("ci95") or {}
            lines.append(
                f"| {run} | {task.replace('_dk', '')} | {'+ knowledge' if task.endswith('_dk') else 'name'}"
                f" | {_fmt(z['balanced_accuracy'], ci.get('balanced_accuracy'))} | {z['kappa']:.3f} | "
                f"{z['f1.macro']:.3f} | {_fmt(z['auroc.macro'], ci.get('auroc.macro'))} |"
            )
    lines += ["", "| run | direction | R@1 | R@5 | R@10 | chance R@1/5/10 |", "|---|---|---|---|---|---|"]
    for run, r in res.items():
        ret = r["retrieval"]
        for way in ("text_to_image", "image_to_text"):
            w = ret[way]
            cells = " | ".join(_fmt(w[f"R@{k}"], w.get("ci95", {}).get(f"R@{k}")) for k in (1, 5, 10))
            chance = " / ".join(f"{ret['chance'][f'R@{k}']:.3f}" for k in (1, 5, 10))
            lines.append(f"| {run} | {way} | {cells} | {chance} |")
    lines += [
        "",
        "| run | task | k | linear, text init | linear, random init | CLIP-Adapter | TIP-Adapter | zero-shot |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, r in res.items():
        fs = r["fewshot"]
        for task in ("rm", "left_dr", "left_dme"):
            for k in fs[f"{task}/linear_text"]:
                cell = []
                for lab in ("linear_text", "linear_random", "clip", "tip", "zeroshot"):
                    s = fs[f"{task}/{lab}"].get(k) or next(iter(fs[f"{task}/{lab}"].values()))
                    b = s["balanced_accuracy"]
                    cell.append(f"{b['mean']:.3f} ± {b['sd']:.3f}" if lab != "zeroshot" else f"{b['mean']:.3f}")
                lines.append(f"| {run} | {task} | {k} | " + " | ".join(cell) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/vl_proof"))
    ap.add_argument("--modes", nargs="+", default=["frozen"], choices=["frozen", "partial", "full"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--report", type=Path, nargs="+", help="print the tables of these results.json files and stop")
    a = ap.parse_args()
    if a.report:
        print(report({k: v for f in a.report for k, v in json.loads(f.read_text()).items()}))
        return
    logging.basicConfig(level=logging.WARNING)
    m = prepare(a.work)
    weights = a.work / "vit_tiny_random64.safetensors"
    save_encoder(random_encoder("vit_tiny_patch16", 0, "Fundus", img_size=a.size), weights)
    results = a.work / "results.json"
    all_res = json.loads(results.read_text()) if results.exists() else {}  # runs of earlier calls are kept
    for mode in a.modes:
        for seed in a.seeds:
            t0 = time.time()
            run = a.work / f"run_{mode}_s{seed}"
            lr = 1e-3 if mode == "frozen" else 5e-4
            cfg = VLConfig(
                weights=str(weights),
                data=train_sources(m),
                image_training=mode,
                unfreeze_blocks=4,
                train=TrainConfig(
                    output_dir=str(run),
                    epochs=a.epochs,
                    batch_size=64,
                    lr=lr,
                    weight_decay=1e-5,
                    warmup_epochs=1,
                    clip_grad=1.0,
                    seed=seed,
                    progress=False,
                    device="cpu",
                ),
            )
            if not (run / "run.json").exists():
                train_vl(cfg)
            t1 = time.time()
            res = evaluate_run(run, m, a.work / f"eval_{mode}_s{seed}", a.shots, a.draws)
            res["train_seconds"], res["eval_seconds"] = t1 - t0, time.time() - t1
            all_res[f"{mode}_s{seed}"] = res
            results.write_text(json.dumps(all_res, indent=1, default=float))
            print(f"{mode} seed {seed}: train {t1 - t0:.0f} s, eval {time.time() - t1:.0f} s", flush=True)


if __name__ == "__main__":
    main()
