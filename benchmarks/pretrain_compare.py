"""iBOT against MAE at an equal CPU budget: same ViT, same real fundus images, same probes, paired over seeds.

For each seed ``s`` both methods pretrain through :func:`visionfm.pretrain.pretrain` from their config files
(``configs/pretrain/fundus-vit-tiny-cpu.yaml``: iBOT, the shipped recipe;
``configs/pretrain/fundus-vit-tiny-mae-cpu.yaml``: MAE with RETFound's recipe on the same images and ViT) with
``--seed s``, and each exported encoder is probed:

* **RetinaMNIST** with :mod:`visionfm.synth.probe` exactly as ``benchmarks/pretrain_probe.py`` does (CLS of the last
  4 blocks at the encoder's input size, C on val): the full probe (1080 training labels) and the few-shot probes
  (k per class, ``--draws`` seeded draws, the same draws for every encoder, so MAE - iBOT pairs draw by draw);
* **glaucoma** on ``ORIGA-subset`` (30 photographs, 21 glaucoma / 9 normal): the same features of the whole
  photograph and of a disc-centred crop (square of twice the optic-disc diameter, from the set's disc masks),
  standardised logistic regression with C chosen by an inner stratified 3-fold CV on AUROC, scored by the AUROC of
  the out-of-fold predictions of a stratified 5-fold CV, repeated ``--cv-repeats`` times with the same folds for
  every encoder (:func:`visionfm.evaluation.splits.stratified_kfold`, seed = repeat).

**Budget rule.** Each method gets ``--budget-cpu-s`` CPU-seconds of training steps: its CPU-seconds per step are
measured once (process CPU time of two short runs of ``n1`` and ``n2`` steps, ``(T2 - T1) / (n2 - n1)``, which
cancels start-up and export), and its run gets ``round(budget / per_step)`` steps. Data loading runs in the
process (``num_workers 0``), so decoding and cropping are counted; the CPU time of every real run is measured and
reported beside it. Random-init twins (:func:`visionfm.checkpoints.random_encoder`, the iBOT encoder's architecture
and seed, modality statistics) are probed too unless ``--no-random``.

Every run folder and probe result is cached under ``--work``: a second call with more ``--seeds`` reuses them, and
``--report`` prints the table from what exists; ``--steps IBOT MAE`` skips the calibration and runs the given
numbers of steps (CPU runs with the same seed are bitwise repeatable, so a documented run is reproduced exactly).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pretrain_compare.py --seeds 0 1 2 --budget-cpu-s 180
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import visionfm
from visionfm.checkpoints import random_encoder, save_encoder
from visionfm.data import medmnist_to_folder
from visionfm.evaluation.splits import stratified_kfold
from visionfm.features import extract_features, load_features
from visionfm.fileio import atomic_write
from visionfm.pretrain import pretrain, pretrain_config
from visionfm.synth.probe import C_GRID, fewshot_probe, linear_probe, probe_features

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ibot", "mae")


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def _timed_pretrain(config: Path, out: Path, overrides: dict, steps: int, seed: int) -> float:
    """Pretrain ``steps`` steps in this process (data loading included) and return its CPU seconds."""
    cfg = pretrain_config(
        config,
        **{**overrides, "max_steps": steps, "seed": seed, "output": str(out), "num_workers": 0, "progress": False},
    )
    t0 = time.process_time()
    pretrain(cfg)
    return time.process_time() - t0


def calibrate(method: str, config: Path, work: Path, overrides: dict, n: tuple[int, int]) -> dict:
    """CPU-seconds per step of ``method`` from two short runs (cached in ``work/calib.json`` per settings)."""
    cache = work / "calib.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    key = json.dumps([method, str(config), overrides, list(n)], sort_keys=True)
    if key not in known:
        t = [_timed_pretrain(config, work / "calib" / f"{method}-{k}-{time.time_ns()}", overrides, k, 0) for k in n]
        per_step = max((t[1] - t[0]) / (n[1] - n[0]), 1e-6)
        known[key] = {
            "method": method,
            "steps": list(n),
            "cpu_s": t,
            "cpu_s_per_step": per_step,
            "overhead_cpu_s": t[0] - n[0] * per_step,
        }
        _write_json(cache, known)
    return known[key]


def pretrain_seed(method: str, config: Path, work: Path, overrides: dict, steps: int, seed: int) -> dict:
    """The budgeted run of ``method`` with ``seed`` (reused when its encoder exists with the same steps)."""
    out = work / "runs" / f"{method}-s{seed}"
    info_path = out / "budget.json"
    if info_path.is_file() and json.loads(info_path.read_text())["steps"] == steps:
        return json.loads(info_path.read_text())
    if out.exists():
        raise SystemExit(f"{out} holds an unfinished run or another budget; delete it to rerun")
    cpu = _timed_pretrain(config, out, overrides, steps, seed)
    info = {"method": method, "seed": seed, "steps": steps, "cpu_s": cpu, "encoder": str(out / "encoder.safetensors")}
    _write_json(info_path, info)
    return info


def origa_manifests(origa: Path, work: Path, crop_px: int = 160) -> dict[str, Path]:
    """Manifests (absolute paths, label 1 = glaucoma) of the whole photographs and of disc-centred crops."""
    from PIL import Image

    rows = [line.split(",") for line in (origa / "manifest.csv").read_text().splitlines()]
    head, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(head)}
    whole, disc = ["path,label"], ["path,label"]
    (work / "origa_disc").mkdir(parents=True, exist_ok=True)
    for r in rows:
        img, label = origa / r[col["path"]], int(r[col["label"]] == "glaucoma")
        whole.append(f"{img.resolve()},{label}")
        crop = work / "origa_disc" / (Path(r[col["path"]]).stem + ".png")
        if not crop.is_file():
            mask = np.asarray(Image.open(origa / r[col["mask"]])) > 0  # 1 disc, 2 cup: the disc is both
            ys, xs = np.nonzero(mask)
            cy, cx, side = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2, 2 * max(np.ptp(ys), np.ptp(xs))
            box = tuple(int(np.rint(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
            with Image.open(img) as im:
                im.convert("RGB").crop(box).resize((crop_px, crop_px), Image.BICUBIC).save(crop)
        disc.append(f"{crop.resolve()},{label}")
    out = {}
    for name, lines in (("whole", whole), ("disc", disc)):
        out[name] = work / f"origa_{name}.csv"
        out[name].write_text("\n".join(lines) + "\n")
    return out


def cv_auroc(x: np.ndarray, y: np.ndarray, repeats: int, n_folds: int = 5) -> list[float]:
    """AUROC of out-of-fold probabilities of a stratified ``n_folds`` CV, per repeat (fold seed = repeat).

    Args:
        x: features ``[N, D]``; y: binary labels ``[N]``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    aucs = []
    for r in range(repeats):
        oof = np.zeros(len(y))
        for train, test in stratified_kfold(y, n_folds, seed=r):
            inner = StratifiedKFold(3, shuffle=True, random_state=r)  # C chosen inside the training fold only
            clf = GridSearchCV(
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                {"logisticregression__C": list(C_GRID)},
                scoring="roc_auc",
                cv=inner,
            )
            oof[test] = clf.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
        aucs.append(float(roc_auc_score(y, oof)))
    return aucs


def probe(weights: Path, work: Path, a: argparse.Namespace, retina: Path, origa: dict[str, Path]) -> dict:
    """Every probe of one encoder (cached in ``work/result.json``)."""
    cached = work / "result.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    enc = visionfm.load_encoder(weights)
    size, blocks = enc.cfg.img_size, min(4, enc.cfg.depth)
    feats = probe_features(weights, retina, work / "retinamnist", size, n_last_blocks=4, device="cpu")
    res = {
        "full": linear_probe(feats),
        "fewshot": {str(k): fewshot_probe(feats, k, a.draws) for k in a.shots},
        "glaucoma": {},
    }
    for name, manifest in origa.items():
        path = extract_features(
            weights,
            manifest,
            work / f"origa_{name}.safetensors",
            input_size=size,
            n_last_blocks=blocks,
            batch_size=32,
            num_workers=0,
            device="cpu",
            progress=False,
        )
        fs = load_features(path)
        res["glaucoma"][name] = cv_auroc(fs.cls, fs.labels[:, 0].astype(int), a.cv_repeats)
    _write_json(cached, res)
    return res


def metrics(res: dict) -> dict[str, tuple[float, list[float] | None]]:
    """Metric name -> (value, per-draw or per-repeat values for the within-seed pairing, or None)."""
    out = {
        "RetinaMNIST full probe, test AUC": (res["full"]["test_auc"], None),
        "RetinaMNIST full probe, test ACC": (res["full"]["test_acc"], None),
    }
    for k, r in res["fewshot"].items():
        out[f"RetinaMNIST {k}-shot, test AUC"] = (r["test_auc"], r["draws"])
    for name, aucs in res["glaucoma"].items():
        out[
            f"ORIGA glaucoma ({name} image), CV AUROC" if name == "whole" else f"ORIGA glaucoma ({name} crop), CV AUROC"
        ] = (float(np.mean(aucs)), aucs)
    return out


def t_interval(d: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of ``d`` (NaN bounds for fewer than two values)."""
    from scipy.stats import t as t_dist

    m = float(np.mean(d))
    if len(d) < 2:
        return m, float("nan"), float("nan")
    half = float(t_dist.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
    return m, m - half, m + half


def _ci(d: np.ndarray) -> str:
    m, lo, hi = t_interval(d)
    return f"{m:+.3f}" if np.isnan(lo) else f"{m:+.3f} ({lo:+.3f}, {hi:+.3f})"


def table(results: dict[str, dict[int, dict]], seeds: list[int]) -> tuple[list[str], list[dict]]:
    """Markdown lines and JSON rows: per-seed values, means, MAE - iBOT paired by seed (95% t-interval over
    seeds) and within each seed (over few-shot draws or CV repeats)."""
    per = {m: {s: metrics(results[m][s]) for s in seeds} for m in results}
    names = list(per["ibot"][seeds[0]])
    has_random = "random" in per
    head = (
        ["metric"]
        + [f"iBOT s{s}" for s in seeds]
        + ["iBOT mean"]
        + [f"MAE s{s}" for s in seeds]
        + ["MAE mean"]
        + (["random init mean"] if has_random else [])
        + ["MAE - iBOT, paired by seed (95% CI)"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for name in names:
        v = {m: np.array([per[m][s][name][0] for s in seeds]) for m in per}
        cells = (
            [f"{x:.3f}" for x in v["ibot"]]
            + [f"**{v['ibot'].mean():.3f}**"]
            + [f"{x:.3f}" for x in v["mae"]]
            + [f"**{v['mae'].mean():.3f}**"]
            + ([f"{v['random'].mean():.3f}"] if has_random else [])
            + [_ci(v["mae"] - v["ibot"])]
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        within = {
            s: _ci(np.array(per["mae"][s][name][1]) - np.array(per["ibot"][s][name][1]))
            for s in seeds
            if per["ibot"][s][name][1] is not None
        }
        rows.append(
            {
                "metric": name,
                **{m: v[m].tolist() for m in v},
                "mae_minus_ibot": t_interval(v["mae"] - v["ibot"]),
                "within_seed": within,
            }
        )
    lines += [
        "",
        "| metric | " + " | ".join(f"seed {s}: MAE - iBOT, paired within the seed (95% CI)" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    lines += [
        f"| {r['metric']} | " + " | ".join(r["within_seed"][s] for s in seeds) + " |" for r in rows if r["within_seed"]
    ]
    return lines, rows


def run_seed(seed: int, a: argparse.Namespace, steps: dict[str, int], retina: Path, origa: dict[str, Path]) -> tuple:
    """Both budgeted runs of one seed, then every probe of their encoders (and of the random twin)."""
    runs, res = {}, {}
    for m in METHODS:
        runs[m] = pretrain_seed(m, a.config[m], a.work, a.overrides, steps[m], seed)
        print(f"seed {seed} {m}: {runs[m]['steps']} steps, {runs[m]['cpu_s']:.0f} CPU-s", flush=True)
        res[m] = probe(Path(runs[m]["encoder"]), a.work / "probe" / f"{m}-s{seed}", a, retina, origa)
    if not a.no_random:
        ref = visionfm.load_encoder(runs["ibot"]["encoder"])
        twin = a.work / "probe" / f"random-s{seed}.safetensors"
        if not twin.is_file():
            save_encoder(random_encoder(ref.cfg, seed, ref.info.modality), twin)
        res["random"] = probe(twin, a.work / "probe" / f"random-s{seed}", a, retina, origa)
    return runs, res


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ibot-config", type=Path, default=ROOT / "configs/pretrain/fundus-vit-tiny-cpu.yaml")
    p.add_argument("--mae-config", type=Path, default=ROOT / "configs/pretrain/fundus-vit-tiny-mae-cpu.yaml")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for both methods (YAML values, e.g. data='[img/]' arch=vit_test)",
    )
    p.add_argument("--budget-cpu-s", type=float, default=180.0, help="CPU-seconds of training steps per run")
    p.add_argument("--calib-steps", type=int, nargs=2, default=[3, 13], help="n1 n2 of the calibration runs")
    p.add_argument(
        "--steps",
        type=int,
        nargs=2,
        metavar=("IBOT", "MAE"),
        help="steps of each run, no calibration (reproduces a documented run on another machine)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=Path("runs/pretrain_compare"))
    p.add_argument("--npz", type=Path, default=ROOT.parent / "shared/data/retinamnist/retinamnist.npz")
    p.add_argument(
        "--retinamnist",
        type=Path,
        default=Path("runs/retinamnist"),
        help="vfm-layout copy of --npz (written if absent; the configs pretrain on its train split)",
    )
    p.add_argument("--origa", type=Path, default=ROOT.parent / "shared/data/ORIGA-subset")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 5, 10, 20])
    p.add_argument("--draws", type=int, default=20, help="draws per few-shot probe")
    p.add_argument("--cv-repeats", type=int, default=10, help="repeats of the glaucoma 5-fold CV")
    p.add_argument("--no-random", action="store_true", help="skip the random-init twins")
    p.add_argument("--report", action="store_true", help="only print the table of the seeds already finished")
    p.add_argument("--json", type=Path, help="also write everything here (default WORK/compare.json)")
    a = p.parse_args(argv)
    bad = [s for s in a.set if "=" not in s]
    if bad:
        p.error(f"--set {bad[0]!r}: expected KEY=VALUE")
    for path, what in ((a.npz, "--npz"), (a.origa / "manifest.csv", "--origa")):
        if not path.is_file():
            p.error(f"{what}: {path} not found")
    if a.steps and min(a.steps) < 1:
        p.error(f"--steps {a.steps}: expected two positive step counts")
    if a.calib_steps[1] <= a.calib_steps[0] or a.calib_steps[0] < 1:
        p.error(f"--calib-steps {a.calib_steps}: expected 1 <= n1 < n2")
    a.overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    a.config = {"ibot": a.ibot_config, "mae": a.mae_config}
    return a


def _report(a: argparse.Namespace, calib: dict, steps: dict, runs: dict, results: dict, done: list[int]) -> None:
    """Print the budget and the two tables; write everything as JSON."""
    lines, rows = table(results, done)
    budget = "steps given" if a.steps else f"{a.budget_cpu_s:g} CPU-s of training steps each"
    print(f"\niBOT vs MAE, {budget}, seeds {done}\n")
    print("| method | seed | steps | CPU-s of the run | CPU-s per step (calibration) |\n|---|---|---|---|---|")
    for s in done:
        for m in METHODS:
            print(
                f"| {m} | {s} | {runs[s][m]['steps']} | {runs[s][m]['cpu_s']:.0f} | {calib[m]['cpu_s_per_step']:.2f} |"
            )
    print("\n" + "\n".join(lines))
    _write_json(
        a.json or a.work / "compare.json",
        {
            "budget_cpu_s": None if a.steps else a.budget_cpu_s,
            "calibration": None if a.steps else calib,
            "steps": steps,
            "seeds": done,
            "overrides": a.overrides,
            "runs": {str(s): r for s, r in runs.items()},
            "rows": rows,
            "results": {m: {str(s): v for s, v in r.items()} for m, r in results.items()},
        },
    )


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    retina = medmnist_to_folder(a.npz, a.retinamnist)  # before pretraining: the configs' data includes its train split
    if a.steps:
        calib = {m: {"cpu_s_per_step": float("nan")} for m in METHODS}  # not measured: steps given
        steps = dict(zip(METHODS, a.steps))
    else:
        calib = {m: calibrate(m, a.config[m], a.work, a.overrides, tuple(a.calib_steps)) for m in METHODS}
        steps = {m: max(1, round(a.budget_cpu_s / calib[m]["cpu_s_per_step"])) for m in METHODS}
    print(
        "budget: " + ", ".join(f"{m} {calib[m]['cpu_s_per_step']:.2f} CPU-s/step -> {steps[m]} steps" for m in METHODS),
        flush=True,
    )
    origa = origa_manifests(a.origa, a.work)
    runs, results, done = {}, {}, []
    for seed in a.seeds:
        if a.report and not all((a.work / "probe" / f"{m}-s{seed}" / "result.json").is_file() for m in METHODS):
            continue
        r, res = run_seed(seed, a, steps, retina, origa)
        runs[seed] = r
        for m, v in res.items():
            results.setdefault(m, {})[seed] = v
        done.append(seed)
    if not done:
        raise SystemExit("no seed has finished yet")
    _report(a, calib, steps, runs, results, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
