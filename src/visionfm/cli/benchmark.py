"""``visionfm benchmark``: the real-data suite, one results table (markdown + JSON) with published baselines."""

from __future__ import annotations

import argparse

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..benchmark import SUITES

    p.add_argument("--data", default="../shared/data", help="the shared real-data folder (default ../shared/data)")
    p.add_argument(
        "--output",
        default="outputs/benchmark",
        help="results folder (results.md, results.json; default outputs/benchmark)",
    )
    p.add_argument("--weights", help="encoder weights for every suite (default: each suite's documented stand-in)")
    p.add_argument("--quick", action="store_true", help="tiny versions of every experiment (smoke test; default: off)")
    p.add_argument("--suites", nargs="+", choices=SUITES.names(), help="run only these suites (default: all)")


@command(
    "benchmark", "Run the real-data benchmark suite and write one results table beside published numbers.", _configure
)
def run(a: argparse.Namespace) -> int:
    from ..benchmark import BenchmarkConfig, run_benchmark

    md, js = run_benchmark(BenchmarkConfig(a.data, a.output, a.weights, a.quick, a.suites or []))
    print(md.read_text())
    print(f"results: {md.resolve()} and {js.name}")
    return 0
