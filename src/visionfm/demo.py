"""The main job: phantoms -> encoder -> every decoder -> attention maps -> one HTML report.

Each stage is a registered function that takes the shared :class:`DemoContext` and returns a report
:class:`~visionfm.report.Section`; a failing stage stops the demo with its error (a demo that hides failures would
show nothing true). Stages in order:

* ``phantoms``: one procedural data set with ground truth per task (:func:`visionfm.toydata.make_all`).
* ``encoder``: pretrain a small encoder briefly on the fundus phantoms (``visionfm.pretrain.demo_stage``), or load
  ``--weights``; either way it is also written to ``<output>/encoder.safetensors`` (the README's quick start).
* ``explain``: attention maps of the encoder, and their evolution over the demo's pretraining checkpoints.
* ``probe``: frozen features of the encoder vs a random encoder of the same shape on every labelled phantom set,
  and the collapse checks (:mod:`visionfm.demo_probe`): the report's health section and summary table.
* ``recognition``, ``dense``, ``synthetic``: hooks implemented by the task packages as
  ``visionfm.<package>.demo_stage.demo_stage(ctx)``: train and evaluate their decoders on the phantoms.
* ``real-data``: the quick real-data benchmark, when ``--data`` is given.

``fast=True`` shrinks sizes and steps so the whole job runs in CI in a couple of minutes. Training stages show
progress bars (steps, loss, ETA); stage starts and ends are logged, and every ``heartbeat`` seconds while a stage
runs (through tqdm, so a log line never cuts a bar). A stage with nothing to do says "skipped".
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import check_choices, save_config
from .errors import ConfigError
from .fileio import atomic_write
from .registry import Registry
from .report import Report, Section

__all__ = ["DEMO_STAGES", "ENCODER_COPY", "DemoConfig", "DemoContext", "dense_summary", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Options of the demo (saved as ``demo.yaml`` in the output folder).

    Attributes:
        output: folder for data, runs and ``report.html``.
        fast: tiny sizes and few steps (CI); the default sizes take about 6 CPU-minutes (370 CPU-s measured).
        seed: seed of phantoms and training.
        weights: an encoder weights file to use instead of pretraining one.
        device: ``auto``, ``cpu`` or ``cuda``.
        stages: run only these stages, in this order (none: all).
        data: the shared real-data folder (the command line's default: $VISIONFM_DATA); when given, a last stage
            runs the quick real-data benchmark on it.
        heartbeat: seconds between "still running" log lines while a stage works (0: none); they never cut a
            progress bar (the CLI logs through tqdm).
        progress: progress bars (steps, loss, ETA) for every training stage.
    """

    output: str = "outputs/demo"
    fast: bool = False
    seed: int = 0
    weights: str | None = None
    device: str = "auto"
    stages: list[str] | None = field(default=None, metadata={"choices": lambda: DEMO_STAGES.names()})
    data: str | None = None
    heartbeat: float = 60.0
    progress: bool = True

    def __post_init__(self) -> None:
        check_choices(self)
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be >= 0, got {self.heartbeat}")

    @property
    def size(self) -> int:
        return 64 if self.fast else 128

    @property
    def n(self) -> int:
        # 160 phantoms per set (40 held out): with 96 (24 test) one swapped pair moved an AUROC by 0.01 and the
        # demo-vs-random comparison was noise; images are cheap, the training stages have fixed step budgets
        return 24 if self.fast else 160


@dataclass
class DemoContext:
    """What stages share: the config, the output folder, the phantom data sets and the encoder.

    Attributes:
        cfg: the demo's options.
        out: output folder.
        datasets: kind name -> :class:`visionfm.toydata.ToyDataset` (set by the ``phantoms`` stage).
        encoder_path: the encoder every decoder uses (set by the ``encoder`` stage).
        facts: free-form values stages pass on (e.g. ``pretrain_run``: the demo's pretraining run folder).
    """

    cfg: DemoConfig
    out: Path
    datasets: dict[str, Any] = field(default_factory=dict)
    encoder_path: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)


DEMO_STAGES: Registry[Callable[[DemoContext], Section]] = Registry("demo stage")
ENCODER_COPY = "encoder.safetensors"  # <output>/encoder.safetensors: the encoder every stage used


@DEMO_STAGES.register("phantoms")
def _phantoms(ctx: DemoContext) -> Section:
    from .toydata import make_all

    ctx.datasets = make_all(
        ctx.out / "data", n=ctx.cfg.n, seed=ctx.cfg.seed, size=ctx.cfg.size, overwrite=True, progress=True
    )
    rows = [
        {"data set": k, "task": d.task, "modality": d.modality, "images": d.n, "classes": ", ".join(d.classes)}
        for k, d in ctx.datasets.items()
    ]
    previews = [
        (
            Path(d.root) / "preview.png",
            f"{k}: the first 8 {d.modality} phantoms ({d.task}"
            f"{': ' + ', '.join(d.classes[:5]) + (' ...' if len(d.classes) > 5 else '') if d.classes else ''})",
        )
        for k, d in ctx.datasets.items()
    ]
    return Section(
        "Phantom data",
        f"{len(ctx.datasets)} procedural data sets with exact ground truth "
        f"({ctx.cfg.n} images each, {ctx.cfg.size} px, seed {ctx.cfg.seed}; 25% held out as test). "
        "Previews: the first 8 images of each set, with masks or landmarks drawn below where the task "
        "has them.",
        [("data sets", rows)],
        previews,
    )


def _hook(module: str) -> Callable[[DemoContext], Section]:
    """A stage implemented by a task package as ``<module>.demo_stage(ctx)`` (imported when it runs)."""

    def stage(ctx: DemoContext) -> Section:
        return importlib.import_module(module).demo_stage(ctx)

    return stage


@DEMO_STAGES.register("encoder")
def _encoder(ctx: DemoContext) -> Section:
    from .checkpoints import load_encoder, save_encoder
    from .pretrain.config import RUN_CONFIG

    if not ctx.cfg.weights:
        section = _hook("visionfm.pretrain.demo_stage")(ctx)
        if ctx.encoder_path is None or not Path(ctx.encoder_path).is_file():
            raise ValueError("the pretraining demo stage wrote no encoder (ctx.encoder_path)")
        if (Path(ctx.encoder_path).parent / RUN_CONFIG).is_file():
            ctx.facts.setdefault("pretrain_run", Path(ctx.encoder_path).parent)
        with atomic_write(ctx.out / ENCODER_COPY) as tmp:  # one documented place for the README's quick start
            shutil.copyfile(ctx.encoder_path, tmp)
        return section
    enc = load_encoder(ctx.cfg.weights)
    path = ctx.out / ENCODER_COPY
    save_encoder(enc, path)
    ctx.encoder_path = path
    return Section("Encoder", f"Loaded {ctx.cfg.weights}: {enc.info.report}", [("architecture", [enc.cfg.to_dict()])])


DEMO_STAGES.add("probe", lambda ctx: importlib.import_module("visionfm.demo_probe").probe_stage(ctx))


def _spread(items: list, k: int) -> list:
    """At most ``k`` items evenly spaced from first to last."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


@DEMO_STAGES.register("explain")
def _explain(ctx: DemoContext) -> Section:
    from .explain import attention_evolution, explain, pretraining_checkpoints

    if ctx.encoder_path is None:
        raise ValueError("the explain stage needs an encoder: run the 'encoder' stage first")
    test = Path(ctx.datasets["fundus-dr"].root) / "test"
    images = sorted(test.glob("*.png"), key=lambda p: int(p.stem))[:4]
    out = ctx.out / "explain"
    written = explain(ctx.encoder_path, images, out, input_size=ctx.cfg.size)
    pngs: list = [
        (
            p,
            f"where the demo encoder looks on {len(images)} held-out fundus phantoms: each head's CLS "
            "attention, their mean and the rollout across blocks (one image per row)",
        )
        for p in written.values()
        if p.suffix == ".png"
    ]
    text = (
        "CLS attention of the encoder's last block per head, the merged map (mean over heads) and attention "
        "rollout across blocks, on held-out fundus phantoms (red: most attention)."
    )
    run = ctx.facts.get("pretrain_run")
    if run is not None:
        ckpts = _spread(pretraining_checkpoints(run), 5)
        pngs.append(
            (
                attention_evolution(
                    [c.path for c in ckpts],
                    images,
                    out / "attention_evolution.png",
                    labels=[c.label for c in ckpts],
                    device="cpu",
                ),
                "how the merged attention map changes over the demo's pretraining (one row per checkpoint)",
            )
        )
        text += (
            f" The evolution figure (as the paper's Figure 6b) shows the merged map at {len(ckpts)} "
            f"checkpoints of the demo's pretraining ({', '.join(c.label for c in ckpts)})."
        )
    return Section("Attention maps", text, [], pngs)


def _dense(ctx: DemoContext) -> Section:
    """The dense package's stage; its vessel and landmark scores also go to the summary."""
    section = _hook("visionfm.dense.demo_stage")(ctx)
    section.summary += dense_summary(section)
    return section


def dense_summary(section: Section) -> list[dict[str, Any]]:
    """Summary rows from the dense stage's tables: vessel Dice of the frozen ViT (U-Net beside it), landmark MRE."""
    rows: list[dict[str, Any]] = []
    for _caption, table in section.tables:
        by_model = {str(r.get("model", "")): r for r in table}
        vit = next((r for m, r in by_model.items() if "ViT" in m), None)
        unet = next((r for m, r in by_model.items() if "U-Net" in m), None)
        if vit is not None and "dice" in vit:
            rows.append(
                {
                    "task": "fundus-vessels (segmentation)",
                    "metric": "Dice",
                    "value": float(vit["dice"]),
                    "random encoder": "not run"
                    + (
                        f" (U-Net from scratch: {float(unet['dice']):.3f})"
                        if unet is not None and "dice" in unet
                        else ""
                    ),
                    "expectation": "aim Dice >= 0.80",
                    "passed": float(vit["dice"]) >= 0.80,
                    "n": "test split, pixels inside the field of view",
                }
            )
        elif vit is not None and "MRE (px)" in vit:
            rows.append(
                {
                    "task": "ubm-landmarks (landmarks)",
                    "metric": "mean radial error (px)",
                    "value": float(vit["MRE (px)"]),
                    "random encoder": "not run",
                    "expectation": "none set",
                    "passed": None,
                    "n": f"test split, {vit.get('image side (px)', '?')} px images",
                }
            )
    return rows


DEMO_STAGES.add("recognition", _hook("visionfm.recognition.demo_stage"))
DEMO_STAGES.add("dense", _dense)
DEMO_STAGES.add("synthetic", _hook("visionfm.synth.demo_stage"))


@DEMO_STAGES.register("real-data")
def _real_data(ctx: DemoContext) -> Section:
    from .benchmark import BenchmarkConfig, run_benchmark

    if not ctx.cfg.data:
        return Section(
            "Real data",
            "Skipped: pass --data ../shared/data (or set VISIONFM_DATA) to run the quick "
            "real-data benchmark here; `visionfm benchmark` runs the full one.",
            skipped=True,
        )
    weights = str(ctx.encoder_path) if ctx.cfg.weights else None
    md, js = run_benchmark(BenchmarkConfig(ctx.cfg.data, str(ctx.out / "benchmark"), weights=weights, quick=True))
    rows = json.loads(js.read_text())["rows"]
    return Section(
        "Real data (quick benchmark)",
        f"Tiny versions of the real-data experiments on {ctx.cfg.data}, "
        f"with {'the given encoder' if weights else 'each suite’s documented encoder'}; the reported "
        "numbers come from the full `visionfm benchmark`.",
        [("results", rows)],
    )


# What each stage's figures show (keyed by "<folder>/<file>"), for stages that hand over bare paths.
CAPTIONS = {
    "pretrain/loss.png": "pretraining losses and teacher entropy per optimizer step",
    "dr_linear/roc.png": "ROC curves of the DR-grade linear head on the test phantoms, one per grade",
    "dr_linear/confusion.png": "confusion matrix of the DR-grade linear head (rows: true grade, columns: predicted)",
    "multilabel/roc.png": "ROC curves of the multi-label decoder's outputs on the test phantoms",
    "fewshot/fewshot.png": "few-shot DR-grade AUROC against labelled images per class (mean and spread over draws)",
    "biomarkers/scatter.png": "predicted against true biomarker values on the test phantoms",
    "dense/vessels_sheet.png": "vessel segmentation, one test phantom per row: image, ground truth, frozen ViT + "
    "UNETR, U-Net from scratch",
    "dense/ubm_landmarks_sheet.png": "UBM landmarks on test phantoms: predicted (green circles) and true (red crosses)",
}


def _captioned(images: list) -> list:
    """Bare figure paths -> (path, caption) where :data:`CAPTIONS` knows what they show."""
    out = []
    for item in images:
        if isinstance(item, tuple):
            out.append(item)
            continue
        p = Path(item)
        out.append((p, CAPTIONS.get(f"{p.parent.name}/{p.name}", "")) if f"{p.parent.name}/{p.name}" in CAPTIONS else p)
    return out


@contextmanager
def _heartbeat(name: str, every: float, started: float) -> Iterator[None]:
    """Log "still running" every ``every`` seconds until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        t0 = time.perf_counter()
        while not stop.wait(every):
            log.info(
                "demo stage %s still running (%.0f s; demo %.0f s)",
                name,
                time.perf_counter() - t0,
                time.perf_counter() - started,
            )

    thread = threading.Thread(target=beat, daemon=True, name=f"demo-heartbeat-{name}")
    if every > 0:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def _machine(cfg: DemoConfig) -> dict[str, Any]:
    """What the timings were measured on, and the options, for the top of the report."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "options": ", ".join(f"{k}={v}" for k, v in asdict(cfg).items() if v not in (None, [])),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (load {load:.1f} at start), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage (or ``cfg.stages``) and write ``report.html``; returns its path.

    Raises:
        ValueError: an unknown stage name (listing the valid ones), or a stage's own error.
    """
    names = cfg.stages or DEMO_STAGES.names()
    unknown = [n for n in names if n not in DEMO_STAGES.names()]
    if unknown:  # before any work
        raise ValueError(f"unknown demo stage(s) {unknown}; valid: {', '.join(DEMO_STAGES.names())}")
    stages = [(name, DEMO_STAGES.get(name)) for name in names]
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo.yaml")
    ctx = DemoContext(cfg, out)
    report = Report(
        "VisionFM demo" + (" (fast mode)" if cfg.fast else ""), _machine(cfg), health_check="probe" in names
    )
    started = time.perf_counter()
    for i, (name, fn) in enumerate(stages, start=1):
        log.info("demo stage %d/%d: %s ...", i, len(stages), name)
        t0, c0 = time.perf_counter(), time.process_time()
        with _heartbeat(name, cfg.heartbeat, started):
            section = fn(ctx)
        section.seconds, section.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        section.anchor = name
        section.images = _captioned(section.images)
        report.add(section)
        if section.skipped:
            log.info(
                "demo stage %d/%d: %s skipped (%s)",
                i,
                len(stages),
                name,
                section.text.split(":")[1].strip() if ":" in section.text else section.text,
            )
        else:
            log.info(
                "demo stage %d/%d: %s done in %.1f s, CPU %.1f s (demo %.0f s)",
                i,
                len(stages),
                name,
                section.seconds,
                section.cpu_seconds,
                time.perf_counter() - started,
            )
    path = report.write(out / "report.html")
    log.info("demo done in %.0f s: %s", time.perf_counter() - started, path)
    return path
