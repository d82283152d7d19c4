"""``visionfm medmnist``: a MedMNIST ``.npz`` archive (e.g. RetinaMNIST) as image folders in the vfm layout."""

from __future__ import annotations

import argparse

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--npz", required=True, help="MedMNIST archive, e.g. ../shared/data/retinamnist/retinamnist.npz")
    p.add_argument("--output", required=True, help="folder for <split>/<i>.png and <split>_labels.txt")
    p.add_argument("--overwrite", action="store_true", help="convert again even if already converted")


@command(
    "medmnist", "Write a MedMNIST .npz archive as PNG folders in the official vfm layout (train/val/test).", _configure
)
def run(a: argparse.Namespace) -> int:
    from ..data.medmnist import medmnist_to_folder
    from ..fileio import exclusive_output

    with exclusive_output(a.output):
        out = medmnist_to_folder(a.npz, a.output, overwrite=a.overwrite)
    print(f"{a.npz} -> {out} (splits train, val, test; read with --layout vfm --split <split>)")
    return 0
