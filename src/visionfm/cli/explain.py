"""``visionfm explain``: attention maps of images, and their evolution over pretraining checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..explain import MAP_KINDS
    from ..modalities import list_modalities

    p.add_argument(
        "--weights",
        required=True,
        nargs="+",
        help="weights file (any supported format, or a pretraining checkpoint); several files (in "
        "training order) or a pretraining run folder also draw the evolution of attention over "
        "those checkpoints (the last one is explained in full)",
    )
    p.add_argument("--modality", help=f"imaging modality ({', '.join(list_modalities())}) when the weights record none")
    p.add_argument("--arch", help="architecture name (default: inferred from the tensors)")
    p.add_argument("--images", required=True, nargs="+", help="image files or a folder")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--input-size", type=int, help="square input side (default: the encoder's training size)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default auto)")
    p.add_argument(
        "--no-heads",
        action="store_true",
        help="only the merged map and rollout, not every head (default: every head too)",
    )
    p.add_argument(
        "--evolution-map", default="mean", choices=MAP_KINDS, help="map drawn in the evolution figure (default mean)"
    )
    p.add_argument(
        "--labels",
        nargs="*",
        help="row titles of the evolution figure (one per checkpoint; default: "
        "'step N' for run checkpoints, else the file names)",
    )


@command("explain", "Draw the encoder's attention (per head, merged, rollout) over images as PNG grids.", _configure)
def run(a: argparse.Namespace) -> int:
    from ..explain import attention_evolution, expand_weights, explain

    images = a.images[0] if len(a.images) == 1 else a.images
    weights, labels = expand_weights(a.weights, a.labels)
    written = explain(
        weights[-1], images, a.output, a.modality, a.arch, a.input_size, a.batch_size, a.device, heads=not a.no_heads
    )
    if len(weights) > 1:
        written["attention_evolution.png"] = attention_evolution(
            weights,
            images,
            Path(a.output) / "attention_evolution.png",
            labels,
            a.modality,
            a.arch,
            a.input_size,
            a.device,
            a.evolution_map,
        )
    for path in written.values():
        print(f"wrote {path}")
    return 0
