"""``visionfm toy-data``: procedural phantoms with ground truth for every task."""

from __future__ import annotations

import argparse

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..toydata import KINDS

    kinds = "; ".join(f"{k}: {KINDS.get(k).description}" for k in KINDS.names())
    p.add_argument(
        "--kind", required=True, help=f"'all' (one data set per kind, in <output>/<kind>) or one of: {kinds}"
    )
    p.add_argument("--output", required=True, help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--n", type=int, default=64, help="images per data set (default 64)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--size", type=int, default=128, help="square image side in pixels (default 128)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier toy data set in --output")


@command(
    "toy-data",
    "Generate procedural eye-image phantoms with ground truth (labels, masks, landmarks, targets).",
    _configure,
)
def run(a: argparse.Namespace) -> int:
    from ..fileio import exclusive_output
    from ..toydata import make_all, make_dataset

    with exclusive_output(a.output):  # a second writer to the same folder is refused, not mixed in
        if a.kind == "all":
            made = make_all(a.output, n=a.n, seed=a.seed, size=a.size, overwrite=a.overwrite)
        else:
            made = {a.kind: make_dataset(a.kind, a.output, n=a.n, seed=a.seed, size=a.size, overwrite=a.overwrite)}
    for info in made.values():
        counts = ", ".join(f"{s} {c}" for s, c in info.counts.items())
        print(f"{info.kind:18s} {info.task:14s} {info.modality:9s} {counts} -> {info.root}")
    return 0
