"""``visionfm explain``: attention maps of images, and their evolution over pretraining checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..explain import MAP_KINDS, attention_evolution, explain
from ..modalities import list_modalities
from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, nargs="+",
                   help="weights file (any supported format); several files (in training order) also draw the "
                        "evolution of attention over those checkpoints")
    p.add_argument("--modality", help=f"imaging modality ({', '.join(list_modalities())}) when the weights "
                                      f"record none")
    p.add_argument("--arch", help="architecture name (default: inferred from the tensors)")
    p.add_argument("--images", required=True, nargs="+", help="image files or a folder")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--input-size", type=int, help="square input side (default: the encoder's training size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--no-heads", action="store_true", help="only the merged map and rollout, not every head")
    p.add_argument("--evolution-map", default="mean", choices=MAP_KINDS, help="map drawn in the evolution figure")
    p.add_argument("--labels", nargs="*", help="row titles of the evolution figure (one per weights file)")


@command("explain", "Draw the encoder's attention (per head, merged, rollout) over images as PNG grids.", _configure)
def run(a: argparse.Namespace) -> int:
    images = a.images[0] if len(a.images) == 1 else a.images
    written = explain(a.weights[-1], images, a.output, a.modality, a.arch, a.input_size, a.batch_size, a.device,
                      heads=not a.no_heads)
    if len(a.weights) > 1:
        written["attention_evolution.png"] = attention_evolution(
            a.weights, images, Path(a.output) / "attention_evolution.png", a.labels, a.modality, a.arch,
            a.input_size, a.device, a.evolution_map)
    for path in written.values():
        print(f"wrote {path}")
    return 0
