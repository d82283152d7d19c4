"""Demo stage: train a tiny diffusion generator on the fundus phantoms, sample it, measure its fidelity."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

from ..report import Section

__all__ = ["demo_stage"]


def _first(source: str | Path, size: int, n: int = 8) -> Tensor:
    """The first ``n`` images of a folder or manifest, squared: uint8 ``[n, 3, size, size]``."""
    from .data import load_square_images, scan_sources

    return load_square_images([s.path for s in scan_sources(source).samples][:n], size, progress=False)


def _precision(device: str) -> str:
    """bf16 where the hardware computes it natively (AMX / AVX512-BF16 CPUs, CUDA), else fp32: on this project's
    AMX CPU bf16 trained the tiny U-Net 1.6x and sampled it 1.7x faster than fp32."""
    import torch

    from ..engine.precision import resolve_precision

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return resolve_precision("auto", torch.device("cuda" if cuda else "cpu"))


def demo_stage(ctx: Any) -> Section:
    """Generator on the ``fundus-dr`` phantoms' training split; fidelity against the held-out test split.

    Args:
        ctx: the demo's :class:`visionfm.demo.DemoContext` (needs ``datasets["fundus-dr"]`` and ``encoder_path``).

    Returns:
        a section with the fidelity table (synthetic set and a real reference set) and a real-vs-synthetic grid.
    """
    from .config import resolve_config
    from .fidelity import measure_fidelity
    from .plots import save_image_grid
    from .sample import sample_images
    from .train import train_generator

    fast = ctx.cfg.fast
    root = ctx.datasets["fundus-dr"].root
    out = ctx.out / "synthetic"
    if out.exists():
        shutil.rmtree(out)  # the demo's own folder: a rerun starts fresh instead of resuming
    steps, num = (80, 16) if fast else (600, 48)
    precision = _precision(ctx.cfg.device)
    # a high learning rate: the demo has seconds, not hours (the images are still far from real at this budget)
    cfg = resolve_config(
        "tiny",
        overrides=dict(
            data=str(root),
            layout="vfm",
            split="training",
            output=str(out / "generator"),
            steps=steps,
            batch_size=8,
            lr=1e-3,
            save_every=steps,
            warmup_steps=10,
            precision=precision,
            device=ctx.cfg.device,
            seed=ctx.cfg.seed,
        ),
    )
    exported = train_generator(cfg, progress=getattr(ctx.cfg, "progress", True))
    manifest = sample_images(
        exported,
        out / "samples",
        num=num,
        batch_size=16,
        steps=20 if fast else 50,
        seed=ctx.cfg.seed,
        device=ctx.cfg.device,
        precision=precision,
        progress=False,
    )
    train, test = (str(root / s) for s in ("training", "test"))
    common = dict(
        weights=ctx.encoder_path,
        train=train,
        resolution=cfg.image_size,
        input_size=ctx.cfg.size,
        k=3,
        device=ctx.cfg.device,
        progress=False,
    )
    rows = []
    for name, syn in (
        (f"generator ({steps} steps, {num} samples)", str(manifest)),
        ("reference: the real training images", train),
    ):
        r = measure_fidelity(test, syn, output=out / ("fidelity" if syn != train else "fidelity-reference"), **common)
        rows.append(
            {
                "set vs held-out real": name,
                "n": r.n_synthetic,
                "FD": r.frechet_distance,
                "precision": r.precision,
                "recall": r.recall,
                "copies (features)": r.memorised_fraction_features,
                "copies (pixels)": r.memorised_fraction_pixels,
            }
        )
    grid = save_image_grid(
        {"real (train)": _first(train, cfg.image_size), "synthetic": _first(manifest, cfg.image_size)},
        out / "samples_grid.png",
    )
    gen = rows[0]
    summary = [
        {
            "task": "fundus-dr phantoms (synthetic images)",
            "metric": m,
            "value": float(gen[m]),
            "random encoder": "n/a",
            "expectation": "> 0 (some samples look like real test phantoms)"
            if m == "precision"
            else "> 0 (some real test phantoms are covered)",
            "passed": float(gen[m]) > 0,
            "n": f"{gen['n']} samples vs held-out test phantoms, k=3",
        }
        for m in ("precision", "recall")
    ]
    text = (
        f"A {len(cfg.block_out_channels)}-level diffusers U-Net ({cfg.image_size} px) trained "
        f"{steps} steps on the {ctx.datasets['fundus-dr'].counts.get('training', '?')} training phantoms on the "
        "shared engine, sampled with DDIM; Frechet distance, precision/recall (k=3) and the nearest-neighbour "
        "copy check on the demo encoder's features, against the held-out test phantoms. The real training "
        "images are the reference row (their copy rate is 100% by construction). A generator this small and "
        "short is expected to be far from the real images."
    )
    figures = [
        (grid, f"top: real training phantoms; bottom: samples of the {steps}-step generator"),
        (
            out / "fidelity" / "nearest_pairs.png",
            "each synthetic image beside its nearest real training "
            "image in the encoder's feature space (the copy check)",
        ),
    ]
    return Section("Synthetic images", text, [("fidelity", rows)], figures, summary=summary)
