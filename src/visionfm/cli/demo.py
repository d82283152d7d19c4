"""``visionfm demo``: the main job, from nothing to an HTML report."""
from __future__ import annotations

import argparse
import os

from ..demo import DEMO_STAGES, DemoConfig, run_demo
from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="outputs/demo", help="output folder (report.html inside)")
    p.add_argument("--fast", action="store_true", help="tiny sizes and few steps (CI smoke run, ~2 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", help="encoder weights to use instead of a random stand-in")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--data", default=os.environ.get("VISIONFM_DATA"),
                   help="shared real-data folder: adds a quick real-data benchmark stage (default $VISIONFM_DATA)")
    p.add_argument("--stages", nargs="+", choices=DEMO_STAGES.names(), help="run only these stages")


@command("demo", "Run the whole system on generated phantoms and write one HTML report.", _configure)
def run(a: argparse.Namespace) -> int:
    path = run_demo(DemoConfig(a.output, a.fast, a.seed, a.weights, a.device, a.stages, a.data))
    print(f"report: {path.resolve()}")
    return 0
