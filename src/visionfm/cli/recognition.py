"""``visionfm classify|multilabel|regress|forecast train|eval`` and ``visionfm predict``: heads on cached features.

Features come from ``visionfm extract``; each ``train`` writes a run folder (head, run.yaml, metrics.json,
predictions.csv, figures), ``eval`` scores a run on other labelled features, ``predict`` applies a run to images.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..recognition.config import BALANCE, load_head_config
from ..recognition.data import FEATURES
from ..recognition.heads import TIME_ENCODINGS
from . import command

__all__ = ["summary"]

_HEADLINE = {"classify": ["auroc.macro", "ap.macro", "accuracy", "balanced_accuracy", "f1.macro", "kappa_quadratic",
                          "ece"],
             "forecast": ["auroc.macro", "ap.macro", "f1.converts", "balanced_accuracy", "accuracy"],
             "multilabel": ["auroc.macro", "ap.macro", "f1.macro"],
             "regress": ["mae_std", "mae.macro", "relative_error.macro", "accuracy.macro", "r2.macro"]}


def _get(m: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(m, dict) or part not in m:
            return None
        m = m[part]
    return m


def summary(kind: str, m: dict) -> str:
    """Headline test numbers with their 95% intervals, one per line."""
    lines = []
    for key in _HEADLINE[kind]:
        v = _get(m, key)
        if v is None:
            continue
        ci = m.get("ci95", {}).get(key)
        ci_txt = f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and ci[0] is not None else ""
        lines.append(f"  {key:<22} {v:.4f}{ci_txt}" if isinstance(v, float) else f"  {key:<22} {v}")
    return "\n".join(lines)


def _train_args(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--config", help="YAML file of settings (command-line values override it)")
    p.add_argument("--train", nargs="+", help="training feature files (.safetensors from 'visionfm extract'); "
                                              "several = one per modality")
    p.add_argument("--val", nargs="+", help="validation feature files (default: carve a stratified split)")
    p.add_argument("--test", nargs="+", help="test feature files, scored once with the selected model")
    p.add_argument("--labels", nargs="+", help="label file(s) joined on image path: vfm *_labels.txt, CSV or "
                                               "ImageNet folder (default: the labels stored with the features)")
    p.add_argument("--val-labels", nargs="+")
    p.add_argument("--test-labels", nargs="+")
    p.add_argument("--label-columns", nargs="+", help="CSV label columns")
    p.add_argument("--patient-column", help="CSV column of patient ids (validation split grouped by patient)")
    p.add_argument("--modality-column", help="CSV column of modality (rows of another modality are skipped)")
    if kind != "forecast":
        p.add_argument("--head", choices=("linear", "mlp"), help="linear probe or the official MLP head")
    p.add_argument("--feature", choices=FEATURES, help="cls = CLS of the last n blocks concatenated (default)")
    p.add_argument("--output", help="run folder to create")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--val-fraction", type=float, help="fraction carved for validation (default 0.2)")
    p.add_argument("--select-metric", help="validation metric for model selection")
    p.add_argument("--val-every", type=int, help="validate/select every n epochs (default: ~20 times per run)")
    p.add_argument("--n-boot", type=int, help="bootstrap replicates for 95%% CIs (default 1000; 0: none)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda or auto")
    if kind == "classify":
        p.add_argument("--classes", nargs="+", help="class names (CSV labels may use them)")
        p.add_argument("--ordinal", action="store_true", default=None, help="ordered grades: report quadratic kappa")
        p.add_argument("--balance", choices=BALANCE[:3], help="class weights (default none)")
        p.add_argument("--label-smoothing", type=float)
    if kind == "multilabel":
        p.add_argument("--schema", help="label schema: 'official13' (default) or a YAML file")
    if kind == "regress":
        p.add_argument("--targets", nargs="+", help="target names (CSV columns)")
        p.add_argument("--loss", dest="regression_loss", choices=("mse", "l1", "smooth_l1"))
    if kind == "forecast":
        p.add_argument("--time-encoding", choices=TIME_ENCODINGS.names(), help="interval encoding (default "
                                                                               "sinusoidal)")
        p.add_argument("--balance", choices=BALANCE, help="imbalance handling (default inverse)")
        p.add_argument("--focal-gamma", type=float)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a run folder from '<task> train'")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--features", nargs="+", help="labelled feature files")
    g.add_argument("--data", help="or labelled images (vfm root with --split, ImageNet folder, CSV manifest): "
                                  "features are extracted with the run's verified encoder")
    p.add_argument("--split", default="test", help="vfm split of --data (default test)")
    p.add_argument("--weights", help="the run's encoder weights, if moved since training (checked by SHA-256)")
    p.add_argument("--modality", help="modality of --data (multi-modality runs)")
    p.add_argument("--labels", nargs="+", help="label file(s) (default: stored with the features)")
    p.add_argument("--label-columns", nargs="+")
    p.add_argument("--output", help="results folder (default <run>/eval)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)


def _configure(kind: str):
    def configure(p: argparse.ArgumentParser) -> None:
        sub = p.add_subparsers(dest="action", required=True, metavar="<action>")
        _train_args(sub.add_parser("train", help=f"train a {kind} head on features; select on validation, "
                                                 f"score on test"), kind)
        _eval_args(sub.add_parser("eval", help="score a trained run on labelled features"))

    return configure


_NON_CONFIG = {"command", "action", "verbose", "config", "output"}


def _run(kind: str, a: argparse.Namespace) -> int:
    from ..recognition.api import evaluate_run, train_head

    if a.action == "eval":
        m = evaluate_run(a.run, a.features, a.labels, a.output, a.n_boot, a.seed, a.label_columns, data=a.data,
                         split=a.split, weights=a.weights, modality=a.modality)
        print(f"{a.run} on {a.data or ', '.join(a.features)}, n={m['n']}:\n{summary(kind, m['test'])}")
        return 0
    values = {k: v for k, v in vars(a).items() if k not in _NON_CONFIG}
    cfg = load_head_config(a.config, task=kind, output_dir=a.output, **values)
    return _print_run(train_head(cfg), kind)


def _print_run(run: Path, kind: str) -> int:
    """The selection and the headline test numbers of a finished run (its ``metrics.json``)."""
    m = json.loads((run / "metrics.json").read_text())
    sel = m["selection"]
    print(f"run: {run}\nselected on validation {sel.get('metric')} (epoch {sel.get('best_epoch')}); "
          f"validation: {sel.get('validation_split')}")
    if "test" in m:
        print(f"test (n={m['n']['test']}):\n{summary(kind, m['test'])}")
    return 0


for _kind, _help in (("classify", "Single-label classification heads (linear probe / official MLP) on features."),
                     ("multilabel", "The modality-agnostic multi-label decoder (official 13 outputs or a schema)."),
                     ("regress", "Biomarker regression heads (any number of targets) on features."),
                     ("forecast", "Glaucoma forecasting: features + interval to the next visit -> converts.")):
    command(_kind, _help, _configure(_kind))(lambda a, _k=_kind: _run(_k, a))


def _configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a run folder (any task, or a fine-tuned run)")
    p.add_argument("--images", required=True, help="image folder or CSV manifest (path column)")
    p.add_argument("--output", required=True, help="CSV file to write")
    p.add_argument("--weights", help="the encoder weights, if moved since training (checked by SHA-256)")
    p.add_argument("--modality", help="modality of the images (required for multi-modality runs)")
    p.add_argument("--interval-column", default="interval_days", help="forecasting: manifest column of days")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")


@command("predict", "Apply a trained run to new images: CSV of probabilities per class (encoder verified).",
         _configure_predict)
def run_predict(a: argparse.Namespace) -> int:
    from ..recognition.predict import predict

    out = predict(a.run, a.images, a.output, a.weights, a.modality, interval_column=a.interval_column,
                  device=a.device, batch_size=a.batch_size)
    print(f"predictions -> {out}")
    return 0


def _configure_fewshot(p: argparse.ArgumentParser) -> None:
    _train_args(p, "classify")
    p.add_argument("--task", choices=("classify", "forecast"), default="classify")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="images per class (k)")
    p.add_argument("--draws", type=int, default=5, help="random draws per k")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per k-shot head")
    p.add_argument("--kfold", type=int, metavar="K", help="instead: stratified K-fold cross-validation over --train")


@command("fewshot", "Few-shot heads: k-shot with repeated draws (mean +- sd), or stratified k-fold CV.",
         _configure_fewshot)
def run_fewshot(a: argparse.Namespace) -> int:
    from ..recognition.fewshot import fewshot, kfold

    skip = _NON_CONFIG | {"task", "shots", "draws", "steps", "kfold"}
    cfg = load_head_config(a.config, task=a.task, output_dir=a.output,
                           **{k: v for k, v in vars(a).items() if k not in skip})
    if a.kfold:
        r = kfold(cfg, a.kfold)
        print(f"{a.kfold}-fold cross-validation, n={r['n']} -> {cfg.output_dir}")
        for key, s in r["summary"].items():
            print(f"  {key:<22} {s['mean']:.4f} +- {s['sd']:.4f}")
        print(f"pooled out-of-fold:\n{summary(a.task, r['pooled_out_of_fold'])}")
        return 0
    r = fewshot(cfg, a.shots, a.draws, a.steps)
    key = next(iter(r["summary"][str(a.shots[0])]))
    print(f"k-shot {key} on {r['n_test']} test images ({a.draws} draws each) -> {cfg.output_dir}")
    for k in a.shots:
        s = r["summary"][str(k)]
        print("  " + f"{k:>3}-shot  " + "  ".join(f"{n} {v['mean']:.4f} +- {v['sd']:.4f}" for n, v in s.items()))
    return 0


def _configure_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (command-line values override it)")
    p.add_argument("--task", choices=("classify", "multilabel", "regress", "forecast"), help="default classify")
    p.add_argument("--weights", help="encoder weights to start from")
    p.add_argument("--modality", help="modality of the images")
    p.add_argument("--data", help="dataset root (vfm layout or ImageNet folders) or CSV manifest")
    p.add_argument("--split", help="training split (vfm: <split>_labels.txt; default training)")
    p.add_argument("--val-split", help="validation split (default: carve one from training)")
    p.add_argument("--test-split", help="test split, scored once with the selected model")
    p.add_argument("--val-data", help="other root/manifest for validation")
    p.add_argument("--test-data", help="other root/manifest for test")
    p.add_argument("--label-columns", nargs="+")
    p.add_argument("--patient-column")
    p.add_argument("--classes", nargs="+")
    p.add_argument("--ordinal", action="store_true", default=None)
    p.add_argument("--schema")
    p.add_argument("--targets", nargs="+")
    p.add_argument("--head", choices=("linear", "mlp"))
    p.add_argument("--input-size", type=int, help="square input side (default 224)")
    p.add_argument("--n-last-blocks", type=int)
    p.add_argument("--encoder-lr-scale", type=float, help="encoder lr relative to the head's (default 0.1)")
    p.add_argument("--layer-decay", type=float, help="layer-wise lr decay (default 0.75)")
    p.add_argument("--drop-path", type=float)
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    p.add_argument("--output", help="run folder to create")
    for name, typ in (("epochs", int), ("max-steps", int), ("batch-size", int), ("lr", float),
                      ("weight-decay", float), ("warmup-epochs", float), ("seed", int), ("n-boot", int),
                      ("num-workers", int)):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", help="cpu, cuda or auto")


@command("finetune", "End-to-end fine-tuning of encoder + head on images (layer-wise lr decay, augmentation).",
         _configure_finetune)
def run_finetune(a: argparse.Namespace) -> int:
    from ..engine import load_config
    from ..recognition.finetune import FinetuneConfig, finetune

    values = {k: v for k, v in vars(a).items() if k not in _NON_CONFIG}
    cfg = load_config(FinetuneConfig, a.config, output_dir=a.output, **values)
    return _print_run(finetune(cfg), cfg.task)


def _configure_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="CSV with a path column")
    p.add_argument("--output", required=True, help="prefix: writes <prefix>_train.csv and <prefix>_test.csv")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--group-column", help="patient id column: no patient on both sides")
    p.add_argument("--stratify-column", help="keep this column's values in proportion")
    p.add_argument("--where", nargs="+", metavar="COLUMN=VALUE", help="keep only matching rows")
    p.add_argument("--by", help="also write one manifest per value of this column (e.g. modality)")
    p.add_argument("--seed", type=int, default=0)


@command("split", "Patient-level stratified train/test split of a CSV manifest (absolute paths kept).",
         _configure_split)
def run_split(a: argparse.Namespace) -> int:
    from ..recognition.manifests import parse_where, split_manifest

    train, test = split_manifest(a.manifest, a.output, a.test_fraction, a.seed, a.group_column, a.stratify_column,
                                 parse_where(a.where), a.by)
    print(f"{train}\n{test}")
    return 0
