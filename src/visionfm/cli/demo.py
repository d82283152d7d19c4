"""``visionfm demo``: the main job, from nothing to an HTML report."""

from __future__ import annotations

import argparse
import os

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args
    from ..demo import DemoConfig

    p.add_argument("--config", help="YAML file of these options (command-line values win; default: none)")
    add_config_args(p, DemoConfig, defaults=DemoConfig(data=os.environ.get("VISIONFM_DATA")))


@command("demo", "Run the whole system on generated phantoms and write one HTML report.", _configure)
def run(a: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..demo import DemoConfig, run_demo

    cfg = config_from_args(
        DemoConfig, a, a.config, data=None if a.data or a.config else os.environ.get("VISIONFM_DATA")
    )
    from ..fileio import exclusive_output

    with exclusive_output(cfg.output):  # two demos into one folder would overwrite each other's stages
        path = run_demo(cfg)
    print(f"report: {path.resolve()}")
    return 0
