"""The real:synthetic ratio study (paper Fig. 5f): pretrain at several ratios on one budget, probe every encoder.

Every run gets the same number of optimizer steps (``steps``), batch, architecture, crops and schedules; only the
composition of the pretraining data changes. The pretraining data set of :mod:`visionfm.pretrain` holds the ratio
in every epoch (an epoch is every real image once plus ``ratio x n_real`` synthetic images), so epochs have
different lengths across ratios; the settings counted in epochs are therefore made equal in steps: the lr warm-up
is ``warmup_steps`` steps in every run, the teacher temperature starts at its final value and the last layer of the
head is never frozen. Each encoder then goes through the same linear probe (:mod:`visionfm.synth.probe`).

Writes to ``output``: ``ratio_study.yaml`` (the resolved settings), ``runs/<ratio>_seed<k>/`` (pretraining runs
with ``encoder.safetensors``, ``probe.json``), ``results.json``, ``results.md`` and ``ratio_curve.png``. A study
that was interrupted continues where it stopped: finished runs are reused, an unfinished one is resumed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints import atomic_write
from ..engine import save_config

__all__ = [
    "RatioStudyConfig",
    "epoch_length",
    "format_markdown",
    "parse_ratio",
    "ratio_pretrain_config",
    "run_ratio_study",
    "summarise",
]

log = logging.getLogger(__name__)


@dataclass
class RatioStudyConfig:
    """Settings of a ratio study (defaults < YAML < command line; saved as ``ratio_study.yaml``).

    Attributes:
        real: folders / manifests of real pretraining images (the generator's training images).
        synthetic: folders / manifests of synthetic images (the pool the pretraining data draws from).
        probe_data: a labelled ``vfm``-layout folder with train, val and test splits (e.g. ``visionfm medmnist``).
        probe_splits: its train, val and test split names.
        output: study folder.
        ratios: ``real:synthetic`` labels; ``1:0`` is real only, ``0:1`` synthetic only (every pool image once per
            epoch), ``a:b`` mixes ``b/a`` synthetic images per real image.
        seeds: pretraining seeds; every ratio runs once per seed.
        steps: optimizer steps of every run (the shared budget).
        warmup_steps: linear lr warm-up of every run, in steps.
        modality, arch, patch_size, global_size, local_crops, local_size, batch_size, lr, out_dim,
            head_hidden_dim, head_bottleneck_dim: the pretraining settings shared by every run (see
            :class:`visionfm.pretrain.PretrainConfig`).
        pretrain: any other :class:`~visionfm.pretrain.PretrainConfig` field, applied to every run.
        probe_input_size: encoder input side of the probe (default ``global_size``).
        probe_blocks: CLS tokens of this many last blocks are concatenated (at most the depth).
        random_baseline: also probe the architecture at random initialisation (same probe).
        device: ``auto``, ``cpu`` or ``cuda``.
        num_workers: image-decoding workers of pretraining.
    """

    real: list[str] = field(default_factory=list)
    synthetic: list[str] = field(default_factory=list)
    probe_data: str = ""
    probe_splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    output: str = "outputs/synth/ratio-study"
    ratios: list[str] = field(default_factory=lambda: ["1:0", "1:1", "1:5", "1:10", "0:1"])
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 300
    warmup_steps: int = 30
    modality: str = "Fundus"
    arch: str = "vit_test"
    patch_size: int | None = 4
    global_size: int = 32
    local_crops: int = 0
    local_size: int = 16
    batch_size: int = 32
    lr: float = 5e-3
    out_dim: int = 1024
    head_hidden_dim: int = 256
    head_bottleneck_dim: int = 64
    pretrain: dict[str, Any] = field(default_factory=dict)
    probe_input_size: int | None = None
    probe_blocks: int = 4
    random_baseline: bool = True
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        for r in self.ratios:
            parse_ratio(r)
        if not self.ratios or not self.seeds:
            raise ValueError("ratios and seeds must not be empty")
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"steps must be >= 1 and warmup_steps >= 0, got {self.steps}, {self.warmup_steps}")
        if len(self.probe_splits) != 3:
            raise ValueError(f"probe_splits must name train, val and test, got {self.probe_splits}")


def parse_ratio(label: str) -> tuple[float, float]:
    """``"1:5"`` -> ``(1.0, 5.0)``; raises ``ValueError`` naming the label when it is not ``a:b`` with a, b >= 0."""
    try:
        a, b = (float(v) for v in str(label).split(":"))
    except ValueError:
        raise ValueError(f"ratio {label!r} is not of the form real:synthetic, e.g. 1:5") from None
    if a < 0 or b < 0 or a + b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"ratio {label!r}: both parts must be >= 0 and not both 0")
    return a, b


def epoch_length(label: str, n_real: int, n_synthetic: int) -> int:
    """Images per pretraining epoch at ``label``: real only, synthetic only, or every real image once plus
    ``round(b / a * n_real)`` synthetic ones (the rule of :class:`visionfm.pretrain.PretrainDataset`)."""
    a, b = parse_ratio(label)
    if b == 0:
        return n_real
    if a == 0:
        return n_synthetic
    return n_real + int(round(b / a * n_real))


def ratio_pretrain_config(
    cfg: RatioStudyConfig, label: str, seed: int, n_real: int, n_synthetic: int, output: str | Path
):
    """The :class:`~visionfm.pretrain.PretrainConfig` of one run: shared settings, this ratio's data, equal steps."""
    from ..config import config_from_dict
    from ..pretrain import PretrainConfig

    a, b = parse_ratio(label)
    data = {
        "data": list(cfg.real) if a > 0 else [],
        "synthetic": list(cfg.synthetic) if b > 0 else None,
        "synthetic_ratio": b / a if a > 0 and b > 0 else None,
    }
    # equal in steps whatever the epoch length: warm-up and budget are given in steps, not epochs
    shared = {
        "modality": cfg.modality,
        "arch": cfg.arch,
        "patch_size": cfg.patch_size,
        "global_size": cfg.global_size,
        "local_crops": cfg.local_crops,
        "local_size": cfg.local_size,
        "out_dim": cfg.out_dim,
        "patch_out_dim": cfg.out_dim,
        "head_hidden_dim": cfg.head_hidden_dim,
        "head_bottleneck_dim": cfg.head_bottleneck_dim,
        "warmup_teacher_temp_epochs": 0,
        "freeze_last_layer": 0,
        "train.batch_size": cfg.batch_size,
        "train.lr": cfg.lr,
        "train.max_steps": cfg.steps,
        "train.warmup_steps": cfg.warmup_steps,
        "train.device": cfg.device,
        "train.num_workers": cfg.num_workers,
        "train.progress": False,
    }
    values = {**shared, **cfg.pretrain, **data, "train.seed": seed, "train.output_dir": str(output)}
    return config_from_dict(PretrainConfig, values, "ratio study")


def _count(sources: list[str], synthetic: bool) -> int:
    """Images the pretraining data will find in ``sources`` (its own folder / manifest reader)."""
    from ..pretrain.data import Source, collect_images

    return sum(len(collect_images(Source(Path(s), "", synthetic))) for s in sources)


def _run_one(cfg: RatioStudyConfig, label: str, seed: int, n_real: int, n_syn: int, out: Path) -> dict[str, Any]:
    """Pretrain (or reuse / resume) one run and probe its encoder; the row of the results table."""
    from ..pretrain import ENCODER_FILE, pretrain

    run = out / "runs" / f"{label.replace(':', '-')}_seed{seed}"
    enc = run / ENCODER_FILE
    timing = run / "pretrain_seconds.txt"
    if not enc.is_file():
        t0 = time.perf_counter()
        pcfg = ratio_pretrain_config(cfg, label, seed, n_real, n_syn, run)
        pretrain(pcfg, resume=(run / "checkpoint_last.pth").is_file())
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    result = _probe_once(cfg, enc)
    a, b = parse_ratio(label)
    return {
        "ratio": label,
        "seed": seed,
        "real_share": a / (a + b),
        "steps": cfg.steps,
        "epoch_images": epoch_length(label, n_real, n_syn),
        "seconds": float(timing.read_text()) if timing.is_file() else None,
        **result,
    }


def _probe_once(cfg: RatioStudyConfig, encoder: Path) -> dict[str, Any]:
    """The probe result of ``encoder``, cached as ``probe.json`` beside it."""
    from .probe import probe_encoder

    cached = encoder.parent / "probe.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    result = probe_encoder(
        encoder,
        cfg.probe_data,
        encoder.parent / "probe",
        cfg.probe_input_size or cfg.global_size,
        cfg.probe_blocks,
        cfg.probe_splits,
        device=cfg.device,
    )
    with atomic_write(cached) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def _random_baseline(cfg: RatioStudyConfig, seed: int, out: Path) -> dict[str, Any]:
    """The same architecture at random initialisation, through the same probe."""
    from ..checkpoints import EncoderInfo, save_encoder
    from ..modalities import get_modality
    from ..pretrain import build_encoders

    path = out / "runs" / f"random-init_seed{seed}" / "encoder.safetensors"
    if not path.is_file():
        import torch

        with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG is left alone
            torch.manual_seed(seed)
            _, enc = build_encoders(ratio_pretrain_config(cfg, "1:0", seed, 1, 0, path.parent), with_weights=False)
        m = get_modality(cfg.modality)
        enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, f"random init seed {seed}", "random", "random init")
        save_encoder(enc, path)
    return {"ratio": "random init", "seed": seed, "steps": 0, **_probe_once(cfg, path)}


def summarise(rows: list[dict[str, Any]], metric: str = "test_auc") -> list[dict[str, Any]]:
    """Per ratio (in first-seen order): number of seeds, mean and sample sd of ``metric`` and of test accuracy."""
    out = []
    for label in dict.fromkeys(r["ratio"] for r in rows):
        vals = np.array([r[metric] for r in rows if r["ratio"] == label], dtype=float)
        acc = np.array([r["test_acc"] for r in rows if r["ratio"] == label], dtype=float)
        sd = lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0  # noqa: E731
        out.append(
            {
                "ratio": label,
                "n_seeds": len(vals),
                f"{metric}_mean": float(vals.mean()),
                f"{metric}_sd": sd(vals),
                "test_acc_mean": float(acc.mean()),
                "test_acc_sd": sd(acc),
            }
        )
    return out


def format_markdown(summary: list[dict[str, Any]], rows: list[dict[str, Any]], title: str) -> str:
    """The results as markdown: the per-ratio summary, then every run."""
    lines = [
        f"# {title}",
        "",
        "| real:synthetic | seeds | test AUC (mean +- sd) | test accuracy (mean +- sd) |",
        "|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['ratio']} | {s['n_seeds']} | {s['test_auc_mean']:.3f} +- {s['test_auc_sd']:.3f} | "
            f"{s['test_acc_mean']:.3f} +- {s['test_acc_sd']:.3f} |"
        )
    lines += [
        "",
        "| run | seed | images/epoch | C | val AUC | test AUC | test acc | pretraining s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ratio']} | {r['seed']} | {r.get('epoch_images', '')} | {r['C']:g} | "
            f"{r['val_auc']:.3f} | {r['test_auc']:.3f} | {r['test_acc']:.3f} | {r.get('seconds') or ''} |"
        )
    return "\n".join(lines) + "\n"


def run_ratio_study(cfg: RatioStudyConfig) -> Path:
    """Pretrain at every ratio and seed, probe every encoder, write the table and the curve; returns the folder."""
    from .plots import plot_ratio_curve

    for name in ("real", "synthetic"):
        if not getattr(cfg, name):
            raise ValueError(f"the ratio study needs {name} image folders (--{name})")
    if not cfg.probe_data or not Path(cfg.probe_data).is_dir():
        raise FileNotFoundError(
            f"probe data folder not found: {cfg.probe_data!r} (a vfm layout with {'/'.join(cfg.probe_splits)} splits)"
        )
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "ratio_study.yaml")
    n_real, n_syn = _count(cfg.real, False), _count(cfg.synthetic, True)
    log.info(
        "ratio study: %d real and %d synthetic images, ratios %s, seeds %s, %d steps per run",
        n_real,
        n_syn,
        cfg.ratios,
        cfg.seeds,
        cfg.steps,
    )
    rows = [_run_one(cfg, label, seed, n_real, n_syn, out) for label in cfg.ratios for seed in cfg.seeds]
    summary = summarise(rows)
    baseline = [_random_baseline(cfg, seed, out) for seed in cfg.seeds] if cfg.random_baseline else []
    title = (
        f"Ratio study: {cfg.arch} (patch {cfg.patch_size}), {cfg.global_size} px, {cfg.steps} steps x "
        f"{cfg.batch_size} images per run; {n_real} real, {n_syn} synthetic images"
    )
    reference = ("random-init encoder", float(np.mean([r["test_auc"] for r in baseline]))) if baseline else None
    plot_ratio_curve(
        [s["ratio"] for s in summary],
        [[r["test_auc"] for r in rows if r["ratio"] == s["ratio"]] for s in summary],
        out / "ratio_curve.png",
        "linear-probe test AUC",
        title.split(";")[0],
        reference,
    )
    with atomic_write(out / "results.json") as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "config": asdict(cfg),
                    "n_real": n_real,
                    "n_synthetic": n_syn,
                    "summary": summary,
                    "runs": rows,
                    "random_baseline": baseline,
                },
                indent=1,
            )
        )
    md = format_markdown(summary + summarise(baseline), rows + baseline, title)
    with atomic_write(out / "results.md") as tmp:
        tmp.write_text(md)
    log.info("ratio study written to %s", out)
    return out
