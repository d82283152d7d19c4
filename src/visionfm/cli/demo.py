"""``visionfm demo``: the main job, from nothing to an HTML report."""
from __future__ import annotations

import argparse
import os

from ..demo import DEMO_STAGES, DemoConfig, run_demo
from ..engine.trainer import load_config
from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", help="output folder, report.html inside (default outputs/demo)")
    p.add_argument("--fast", action="store_true", default=None,
                   help="tiny sizes and few steps (the CI smoke run, about 2 minutes on 2 cores)")
    p.add_argument("--seed", type=int)
    p.add_argument("--weights", help="encoder weights (any supported format) to use instead of pretraining one")
    p.add_argument("--device", help="cpu, cuda or auto (default auto)")
    p.add_argument("--data", default=os.environ.get("VISIONFM_DATA"),
                   help="shared real-data folder: adds a quick real-data benchmark stage (default $VISIONFM_DATA)")
    p.add_argument("--stages", nargs="+", choices=DEMO_STAGES.names(), help="run only these stages, in this order")
    p.add_argument("--heartbeat", type=float, help="seconds between 'still running' lines (default 20; 0 = off)")
    p.add_argument("--config", help="YAML file of these options (command-line values win)")


@command("demo", "Run the whole system on generated phantoms and write one HTML report.", _configure)
def run(a: argparse.Namespace) -> int:
    cfg = load_config(DemoConfig, a.config, output=a.output, fast=a.fast, seed=a.seed, weights=a.weights,
                      device=a.device, data=a.data, stages=a.stages, heartbeat=a.heartbeat)
    path = run_demo(cfg)
    print(f"report: {path.resolve()}")
    return 0
