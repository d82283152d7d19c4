"""``visionfm serve``: trained runs behind an HTTP API and a web page (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args
    from ..serve.config import ServeConfig

    p.add_argument(
        "--run",
        dest="runs",
        action="extend",
        nargs="+",
        required=True,
        metavar="RUN",
        help="run folder (recognition, dense, OCT volume or vision-language) or encoder weights file to serve; "
        "repeat or list several",
    )
    p.add_argument("--config", help="YAML file with serve settings (command-line flags override it)")
    add_config_args(p, ServeConfig)


@command(
    "serve",
    "Serve trained runs over HTTP: /v1/predict, /v1/segment, /v1/explain, /v1/embed, /v1/retrieve, a web page "
    "at /, metrics at /metrics, docs at /docs.",
    _configure,
)
def run(a: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..serve import ServeConfig, serve

    cfg = config_from_args(ServeConfig, a, a.config, runs=a.runs)
    serve(cfg)
    return 0
