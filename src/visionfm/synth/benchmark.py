"""Benchmark hook: fidelity of a generator trained on real fundus photographs (RetinaMNIST train -> test).

The full run is the measured run of docs/readme/synth.md: the 0.65 M-parameter 32-px U-Net trained 2000 steps of
16 images on the 1080 RetinaMNIST *train* images, 400 samples (DDIM 50 steps, eta 1), compared with the 400
held-out *test* images (Frechet distance, precision / recall) and checked for copies of the training images. The
ratio study is not part of it (it needs the pretraining of :mod:`visionfm.pretrain`; run ``visionfm synth
ratio-study``).
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["benchmark"]

log = logging.getLogger(__name__)


def _encoder(out: Path, weights: Path | None) -> tuple[Path, str]:
    """The feature encoder: ``weights``, or a seeded random-init ``vit_test`` (patch 4) stand-in."""
    if weights:
        return Path(weights), str(weights)
    from ..checkpoints import random_encoder, save_encoder

    path = out / "random_vit_test_p4.safetensors"
    save_encoder(random_encoder("vit_test", seed=0, modality="Fundus", patch_size=4), path)
    return path, "random-init vit_test/4 (seed 0)"


def benchmark(data_root: Path, out: Path, weights: Path | None, quick: bool) -> list[dict]:
    """Train, sample and measure; rows ``{task, dataset, method, encoder, metric, value, published, notes}``.

    Args:
        data_root: the shared data folder (needs ``retinamnist/retinamnist.npz``).
        out: results folder (the RetinaMNIST conversion, the generator run, the samples, the fidelity report).
        weights: encoder of the fidelity features (None: a random-init ``vit_test`` stand-in).
        quick: 30 training steps and 32 samples with 10 DDIM steps (a test of the pipeline, not the numbers).

    Raises:
        FileNotFoundError: the RetinaMNIST archive is missing (named).
    """
    from ..data import medmnist_to_folder
    from .config import resolve_config
    from .fidelity import measure_fidelity
    from .sample import sample_images
    from .train import train_generator

    npz = Path(data_root) / "retinamnist" / "retinamnist.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"synth benchmark data not found: {npz}")
    out = Path(out)
    folder = medmnist_to_folder(npz, out / "retinamnist")
    steps, num, ddim = (30, 32, 10) if quick else (2000, 400, 50)
    cfg = resolve_config(
        "tiny",
        overrides=dict(
            data=str(folder),
            layout="vfm",
            split="train",
            steps=steps,
            ema_decay=0.995,
            save_every=min(500, steps),
            device="cpu",
            output=str(out / f"generator-{steps}"),
        ),
    )
    resume = (Path(cfg.output) / "checkpoint_last.pth").is_file()  # a rerun reuses (or finishes) the run
    exported = train_generator(cfg, resume=resume, progress=False)
    manifest = sample_images(
        exported, out / f"samples-{steps}", num=num, batch_size=50, steps=ddim, device="cpu", progress=False
    )
    enc_path, enc_name = _encoder(out, weights)
    rep = measure_fidelity(
        folder / "test",
        manifest,
        enc_path,
        out / f"fidelity-{steps}",
        train=folder / "train",
        input_size=32,
        device="cpu",
        progress=False,
    )
    method = f"DDPM U-Net 0.65M, 32 px, {steps} steps x 16; DDIM {ddim} steps, eta 1"
    notes = f"{rep.n_synthetic} samples vs {rep.n_real} held-out test images; copies vs {rep.n_train} train images"
    if quick:
        notes += "; quick pipeline check, not the reported numbers"
    metrics = (
        ("frechet_distance", rep.frechet_distance),
        ("precision", rep.precision),
        ("recall", rep.recall),
        ("copies_features", rep.memorised_fraction_features),
        ("copies_pixels", rep.memorised_fraction_pixels),
    )
    return [
        {
            "task": "synthetic images (fidelity)",
            "dataset": "RetinaMNIST train -> test",
            "method": method,
            "encoder": enc_name,
            "metric": m,
            "value": float(v),
            "published": "",
            "notes": notes,
        }
        for m, v in metrics
    ]
