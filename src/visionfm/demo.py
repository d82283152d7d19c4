"""The main job: phantoms -> encoder -> every decoder -> attention maps -> one HTML report.

Each stage is a registered function that takes the shared :class:`DemoContext` and returns a report
:class:`~visionfm.report.Section`; a failing stage stops the demo with its error (a demo that hides failures would
show nothing true). ``fast=True`` shrinks sizes and steps so the whole job runs in CI in a couple of minutes.
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .registry import Registry
from .report import Report, Section

__all__ = ["DemoConfig", "DemoContext", "DEMO_STAGES", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Options of the demo.

    Attributes:
        output: folder for data, runs and ``report.html``.
        fast: tiny sizes and few steps (CI); the default sizes take about 10 minutes on 2 CPU cores.
        seed: seed of phantoms and training.
        weights: an encoder weights file to use instead of pretraining one.
        device: ``auto``, ``cpu`` or ``cuda``.
        stages: run only these stages (default: all, in order).
        data: the shared real-data folder; when given, a last stage runs the quick real-data benchmark on it.
    """

    output: str = "outputs/demo"
    fast: bool = False
    seed: int = 0
    weights: str | None = None
    device: str = "auto"
    stages: list[str] | None = None
    data: str | None = None

    @property
    def size(self) -> int:
        return 64 if self.fast else 128

    @property
    def n(self) -> int:
        return 24 if self.fast else 96


@dataclass
class DemoContext:
    cfg: DemoConfig
    out: Path
    datasets: dict[str, Any] = field(default_factory=dict)
    encoder_path: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)


DEMO_STAGES: Registry[Callable[[DemoContext], Section]] = Registry("demo stage")


@DEMO_STAGES.register("phantoms")
def _phantoms(ctx: DemoContext) -> Section:
    from .toydata import make_all

    ctx.datasets = make_all(ctx.out / "data", n=ctx.cfg.n, seed=ctx.cfg.seed, size=ctx.cfg.size,
                            overwrite=True, progress=False)
    rows = [{"data set": k, "task": d.task, "modality": d.modality, "images": d.n, "classes": ", ".join(d.classes)}
            for k, d in ctx.datasets.items()]
    previews = [Path(d.root) / "preview.png" for d in ctx.datasets.values()][:4]
    return Section("Phantom data", f"{len(ctx.datasets)} procedural data sets with ground truth "
                   f"({ctx.cfg.n} images each, {ctx.cfg.size} px).", [("data sets", rows)], previews)


def _hook(module: str) -> Callable[[DemoContext], Section]:
    """A stage implemented by a task package as ``<module>.demo_stage(ctx)`` (imported when it runs)."""

    def stage(ctx: DemoContext) -> Section:
        return importlib.import_module(module).demo_stage(ctx)

    return stage


@DEMO_STAGES.register("encoder")
def _encoder(ctx: DemoContext) -> Section:
    from .checkpoints import EncoderInfo, load_encoder, save_encoder
    from .models import create_encoder
    from .modalities import get_modality

    path = ctx.out / "encoder.safetensors"
    if ctx.cfg.weights:
        enc = load_encoder(ctx.cfg.weights)
        text = f"Loaded {ctx.cfg.weights}: {enc.info.report}"
    else:
        torch.manual_seed(ctx.cfg.seed)
        # patch 8 keeps an 8x8 (fast) or 16x16 token grid on the small phantoms, so attention maps mean something
        enc = create_encoder("vit_tiny_patch16", patch_size=8, depth=4 if ctx.cfg.fast else 6, img_size=ctx.cfg.size)
        m = get_modality("Fundus")
        enc.info = EncoderInfo(enc.cfg, m.name, m.mean, m.std, "random init (demo)", "random")
        text = ("No weights given: a randomly initialised ViT-tiny/8 stands in for a pretrained encoder "
                "(pass --weights to use released or pretrained weights).")
    save_encoder(enc, path)
    ctx.encoder_path = path
    return Section("Encoder", text, [("architecture", [enc.cfg.to_dict()])])


@DEMO_STAGES.register("explain")
def _explain(ctx: DemoContext) -> Section:
    from .explain import explain

    images = sorted((Path(ctx.datasets["fundus-dr"].root) / "test").rglob("*.png"))[:4]
    out = ctx.out / "explain"
    explain(ctx.encoder_path, images, out, input_size=ctx.cfg.size)
    return Section("Attention maps", "Per-head CLS attention of the last block, the mean map and attention "
                   "rollout across blocks.", [], sorted(out.glob("*.png"))[:2])


DEMO_STAGES.add("recognition", _hook("visionfm.recognition.demo_stage"))
DEMO_STAGES.add("dense", _hook("visionfm.dense.demo_stage"))
DEMO_STAGES.add("synthetic", _hook("visionfm.synth.demo_stage"))


@DEMO_STAGES.register("real-data")
def _real_data(ctx: DemoContext) -> Section:
    from .benchmark import BenchmarkConfig, run_benchmark

    if not ctx.cfg.data:
        return Section("Real data", "Skipped: pass --data ../shared/data (or set VISIONFM_DATA) to run the quick "
                       "real-data benchmark here; `visionfm benchmark` runs the full one.")
    md, js = run_benchmark(BenchmarkConfig(ctx.cfg.data, str(ctx.out / "benchmark"), quick=True))
    rows = json.loads(js.read_text())["rows"]
    return Section("Real data (quick benchmark)", f"Tiny versions of the real-data experiments on {ctx.cfg.data}; "
                   "the reported numbers come from the full `visionfm benchmark`.", [("results", rows)])


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage (or ``cfg.stages``) and write ``report.html``; returns its path."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(cfg, out)
    report = Report("VisionFM demo")
    names = cfg.stages or DEMO_STAGES.names()
    for name in names:
        fn = DEMO_STAGES.get(name)
        log.info("demo stage %s ...", name)
        t0 = time.perf_counter()
        section = fn(ctx)
        section.seconds = time.perf_counter() - t0
        report.add(section)
        log.info("demo stage %s done in %.1f s", name, section.seconds)
    return report.write(out / "report.html")
