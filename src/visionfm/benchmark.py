"""``visionfm benchmark``: the real-data suite over ``../shared/data``, one results table beside published numbers.

Each suite is a module with ``benchmark(data_root, out, weights, quick) -> list[dict]`` (rows with the keys of
:data:`COLUMNS`), registered by name in :data:`SUITES`; suites run in order with fixed seeds and splits, each in its
own sub-folder of the output, and the rows of all of them are written as ``results.md`` and ``results.json``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoints.io import atomic_write
from .registry import Registry

__all__ = ["COLUMNS", "SUITES", "BenchmarkConfig", "rows_to_markdown", "run_benchmark"]

log = logging.getLogger(__name__)
COLUMNS = ("task", "dataset", "method", "encoder", "metric", "value", "published", "notes")
BenchFn = Callable[[Path, Path, "Path | None", bool], list[dict[str, Any]]]

SUITES: Registry[str] = Registry("benchmark suite")
SUITES.add("recognition", "visionfm.recognition.benchmark")  # RetinaMNIST, OCT DME, OCT + fundus multi-label
SUITES.add("dense", "visionfm.dense.benchmark")  # DRIVE, DRIVE->CHASE_DB1, IDRiD, optic-disc landmark, OCTA
SUITES.add("synth", "visionfm.synth.benchmark")  # generator fidelity, RetinaMNIST train -> test


@dataclass
class BenchmarkConfig:
    """Options of a benchmark run (recorded under ``config`` in ``results.json``).

    Attributes:
        data: the shared data folder (``../shared/data``).
        output: results folder.
        weights: encoder weights every suite uses (default: each suite's documented stand-in).
        quick: tiny versions of every experiment (a smoke test, not the reported numbers).
        suites: run only these suites (default: all, in order).
    """

    data: str = "../shared/data"
    output: str = "outputs/benchmark"
    weights: str | None = None
    quick: bool = False
    suites: list[str] = field(default_factory=list)


def _load_suite(name: str) -> BenchFn:
    return importlib.import_module(SUITES.get(name)).benchmark


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v).replace("|", "/").replace("\n", " ")


def rows_to_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows, columns in :data:`COLUMNS` order."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _check_rows(name: str, rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"benchmark suite {name!r} must return a list of dicts, got {type(rows).__name__}")
    for r in rows:
        missing = [c for c in ("task", "dataset", "method", "metric", "value") if c not in r]
        if missing:
            raise ValueError(f"benchmark suite {name!r} returned a row without {missing}: {r}")
    return rows


def run_benchmark(cfg: BenchmarkConfig) -> tuple[Path, Path]:
    """Run the suites and write ``results.md`` / ``results.json``; returns their paths.

    Raises:
        FileNotFoundError: ``cfg.data`` (or a data set a suite needs) is absent.
        KeyError: an unknown suite name (the valid ones are listed).
    """
    data, out = Path(cfg.data), Path(cfg.output)
    if not data.is_dir():
        raise FileNotFoundError(f"shared data folder not found: {data} (pass --data)")
    weights = Path(cfg.weights) if cfg.weights else None
    if weights is not None and not weights.is_file():
        raise FileNotFoundError(f"--weights: file not found: {weights}")
    names = cfg.suites or SUITES.names()
    suites = {n: _load_suite(n) for n in names}  # unknown names fail before any work starts
    rows, timing = [], {}
    for name, fn in suites.items():
        log.info("benchmark suite %s ...", name)
        t0 = time.perf_counter()
        rows += [{**r, "suite": name} for r in _check_rows(name, fn(data, out / name, weights, cfg.quick))]
        timing[name] = round(time.perf_counter() - t0, 1)
        log.info("benchmark suite %s done in %.0f s", name, timing[name])
    meta = {
        "config": asdict(cfg),
        "seconds": timing,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    md, js = out / "results.md", out / "results.json"
    with atomic_write(md) as tmp:
        tmp.write_text(rows_to_markdown(rows) + f"\nSeconds per suite: {timing}\n")
    with atomic_write(js) as tmp:
        tmp.write_text(json.dumps({"rows": _nan_to_none(rows), **meta}, indent=1, default=str))
    return md, js


def _nan_to_none(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON has no NaN: an undefined metric (e.g. AUC with one class present) is written as null."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
