"""``visionfm classify|multilabel|regress|forecast train|eval``, ``fewshot``, ``finetune``, ``predict``, ``split``.

Features come from ``visionfm extract``; each ``train`` writes a run folder (head, run.yaml, metrics.json,
predictions.csv, figures), ``eval`` scores a run on other labelled features, ``predict`` applies a run to images.
The training options are derived from the config dataclasses (:class:`~visionfm.recognition.HeadConfig`,
:class:`~visionfm.recognition.FinetuneConfig`; ``visionfm.config.add_config_args``), their choices and the headline
numbers come from the registries (task kinds, heads, recipes), so a new field or kind needs no edit here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import add_config_args, config_from_args
from . import command

__all__ = ["register_kind_commands", "summary"]


def _get(m: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(m, dict) or part not in m:
            return None
        m = m[part]
    return m


def summary(kind: str, m: dict) -> str:
    """Headline test numbers (the task kind's ``headline``) with their 95% intervals, one per line."""
    from ..recognition import TASKS

    lines = []
    for key in TASKS.get(kind).headline:
        v = _get(m, key)
        if v is None:
            continue
        ci = m.get("ci95", {}).get(key)
        ci_txt = f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and ci[0] is not None else ""
        lines.append(f"  {key:<22} {v:.4f}{ci_txt}" if isinstance(v, float) else f"  {key:<22} {v}")
    return "\n".join(lines)


def _config_args(p: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """``--config`` plus one option per field of ``cls``; remembers which options are config values."""
    p.add_argument("--config", help="YAML file of settings (command-line values override it)")
    before = {a.dest for a in p._actions}
    add_config_args(p, cls, exclude=exclude)
    p.set_defaults(_config_dests=sorted({a.dest for a in p._actions} - before))


def _given(a: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config values given on the command line."""
    return {k: getattr(a, k) for k in a._config_dests if k not in skip and getattr(a, k) is not None}


def _train_args(p: argparse.ArgumentParser) -> None:
    from ..recognition import HeadConfig

    _config_args(p, HeadConfig, exclude=("task",))


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a run folder from '<task> train'")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--features", nargs="+", help="labelled feature files")
    g.add_argument(
        "--data",
        help="or labelled images (vfm root with --split, ImageNet folder, CSV manifest): "
        "features are extracted with the run's verified encoder",
    )
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
        _train_args(
            sub.add_parser("train", help=f"train a {kind} head on features; select on validation, score on test")
        )
        _eval_args(sub.add_parser("eval", help="score a trained run on labelled features"))

    return configure


def _run(kind: str, a: argparse.Namespace) -> int:
    from ..recognition import HeadConfig
    from ..recognition.api import evaluate_run, train_head

    if a.action == "eval":
        m = evaluate_run(
            a.run,
            a.features,
            a.labels,
            a.output,
            a.n_boot,
            a.seed,
            a.label_columns,
            data=a.data,
            split=a.split,
            weights=a.weights,
            modality=a.modality,
        )
        print(f"{a.run} on {a.data or ', '.join(a.features)}, n={m['n']}:\n{summary(kind, m['test'])}")
        return 0
    cfg = config_from_args(HeadConfig, a, a.config, task=kind)
    return _print_run(train_head(cfg), kind)


def _print_run(run: Path, kind: str) -> int:
    """The selection and the headline test numbers of a finished run (its ``metrics.json``)."""
    m = json.loads((run / "metrics.json").read_text())
    sel = m["selection"]
    print(
        f"run: {run}\nselected on validation {sel.get('metric')} (epoch {sel.get('best_epoch')}); "
        f"validation: {sel.get('validation_split')}"
    )
    if "test" in m:
        print(f"test (n={m['n']['test']}):\n{summary(kind, m['test'])}")
    return 0


_KIND_HELP = {
    "classify": "Single-label classification heads (linear probe / official MLP) on features.",
    "multilabel": "The modality-agnostic multi-label decoder (official 13 outputs or a schema).",
    "regress": "Biomarker regression heads (any number of targets) on features.",
    "forecast": "Glaucoma forecasting: features + interval to the next visit -> converts.",
}


def register_kind_commands() -> None:
    """One command per registered task kind (help: its docstring's first line unless given here). Runs when the
    CLI loads; a kind registered later (a plugin) gets its command by calling this again."""
    from ..recognition.kinds import TASKS  # torch-free: built-in kinds are declared by name
    from . import COMMANDS

    for kind in TASKS.names():
        if kind not in COMMANDS:
            text = _KIND_HELP.get(kind) or (TASKS.get(kind).__doc__ or kind).strip().splitlines()[0]
            command(kind, text, _configure(kind))(lambda a, _k=kind: _run(_k, a))


register_kind_commands()


def _configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a run folder (any task, or a fine-tuned run)")
    p.add_argument("--images", required=True, help="image folder or CSV manifest (path column)")
    p.add_argument("--output", required=True, help="CSV file to write")
    p.add_argument("--weights", help="the encoder weights, if moved since training (checked by SHA-256)")
    p.add_argument("--modality", help="modality of the images (required for multi-modality runs)")
    p.add_argument("--interval-column", default="interval_days", help="forecasting: manifest column of days")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="onnxruntime: run the encoder + head from --onnx (default: exported now, parity-checked)",
    )
    p.add_argument("--onnx", help="with --backend onnxruntime: the run's file from 'visionfm export'")


@command(
    "predict",
    "Apply a trained run to new images: CSV of probabilities per class (encoder verified).",
    _configure_predict,
)
def run_predict(a: argparse.Namespace) -> int:
    from pathlib import Path

    from ..recognition.predict import predict

    if (Path(a.run) / "head.safetensors").is_file() and not (Path(a.run) / "run.yaml").is_file():
        from ..export.predict import predict_volume_run  # an OCT volume classifier: --images are volumes

        out = predict_volume_run(a.run, a.output, a.backend, a.onnx, data=a.images, weights=a.weights, device=a.device)
        print(f"predictions -> {out}")
        return 0
    if a.backend == "onnxruntime":
        from ..export.predict import predict_onnx

        out = predict_onnx(
            a.run,
            a.images,
            a.output,
            a.onnx,
            a.modality,
            interval_column=a.interval_column,
            batch_size=a.batch_size,
            weights=a.weights,
        )
        print(f"predictions -> {out}")
        return 0
    out = predict(
        a.run,
        a.images,
        a.output,
        a.weights,
        a.modality,
        interval_column=a.interval_column,
        device=a.device,
        batch_size=a.batch_size,
    )
    print(f"predictions -> {out}")
    return 0


def _configure_fewshot(p: argparse.ArgumentParser) -> None:
    from ..recognition import TASKS

    _train_args(p)
    studied = [k for k in TASKS.names() if TASKS.get(k).study_keys is not None]
    p.add_argument("--task", choices=studied, default="classify", help="task kind (default classify)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="images per class (k)")
    p.add_argument("--draws", type=int, default=5, help="random draws per k")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per k-shot head")
    p.add_argument("--kfold", type=int, metavar="K", help="instead: stratified K-fold cross-validation over --train")


@command(
    "fewshot", "Few-shot heads: k-shot with repeated draws (mean +- sd), or stratified k-fold CV.", _configure_fewshot
)
def run_fewshot(a: argparse.Namespace) -> int:
    from ..recognition import HeadConfig
    from ..recognition.fewshot import fewshot, kfold

    cfg = config_from_args(HeadConfig, a, a.config, task=a.task)
    out = cfg.train.output_dir
    if a.kfold:
        r = kfold(cfg, a.kfold)
        print(f"{a.kfold}-fold cross-validation, n={r['n']} -> {out}")
        for key, s in r["summary"].items():
            print(f"  {key:<22} {s['mean']:.4f} +- {s['sd']:.4f}")
        print(f"pooled out-of-fold:\n{summary(a.task, r['pooled_out_of_fold'])}")
        return 0
    r = fewshot(cfg, a.shots, a.draws, a.steps)
    key = next(iter(r["summary"][str(a.shots[0])]))
    print(f"k-shot {key} on {r['n_test']} test images ({a.draws} draws each) -> {out}")
    for k in a.shots:
        s = r["summary"][str(k)]
        print("  " + f"{k:>3}-shot  " + "  ".join(f"{n} {v['mean']:.4f} +- {v['sd']:.4f}" for n, v in s.items()))
    return 0


def _configure_finetune(p: argparse.ArgumentParser) -> None:
    from ..recognition import RECIPES, FinetuneConfig

    _config_args(p, FinetuneConfig)
    p.epilog = "recipes (presets of the defaults above; any option overrides them): " + "; ".join(
        f"{n}: {RECIPES.get(n).description}" for n in RECIPES.names()
    )


@command(
    "finetune", "End-to-end fine-tuning of encoder + head on images (--recipe visionfm|retfound).", _configure_finetune
)
def run_finetune(a: argparse.Namespace) -> int:
    from ..recognition.finetune import finetune, load_finetune_config

    cfg = load_finetune_config(a.config, **_given(a))
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


@command(
    "split", "Patient-level stratified train/test split of a CSV manifest (absolute paths kept).", _configure_split
)
def run_split(a: argparse.Namespace) -> int:
    from ..recognition.manifests import parse_where, split_manifest

    train, test = split_manifest(
        a.manifest, a.output, a.test_fraction, a.seed, a.group_column, a.stratify_column, parse_where(a.where), a.by
    )
    print(f"{train}\n{test}")
    return 0
