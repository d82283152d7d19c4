"""Dense training step speed: frozen ViT + UNETR vs the U-Net at equal crop, and where the ViT step's time goes.

One optimizer step = forward, Dice + focal loss, backward and AdamW on a batch of ``--batch-size`` random crops of
``--crop`` px (the real :class:`~visionfm.dense.tasks.SegmentationTask`, not a mock). Rows:

* ``unet``: MONAI U-Net from scratch; ``unet bf16``: its whole step under bf16 autocast (``--precision bf16``, the
  long DRIVE recipe's setting); ``unet channels_last``: fp32 with NHWC weights and inputs;
* ``unetr fp32``: frozen ViT (no autograd graph through it: its forward runs under no_grad, so backward stops at
  the decoder) + UNETR decoder, the four feature levels computed once per crop in one encoder pass;
* ``unetr fp32, graph through encoder``: the same with autograd recording the frozen encoder (what a plain
  ``requires_grad_(False)`` on the weights still costs when the input needs gradients, e.g. the official code's
  ``torch.no_grad`` missing): shows what the no_grad path saves;
* ``unetr bf16 encoder``: the frozen encoder's forward under bf16 autocast (AMX on this Xeon), decoder in fp32;
* ``whole step bf16``: encoder and decoder under bf16 autocast (the engine's ``--precision bf16``);
* ``encoder forward only`` / ``decoder step only``: the split of the UNETR step.

Prints a markdown table (steps/s, s/step, ratio to the U-Net) with the machine's load average; the ratios are
measured in one run, in interleaved rounds (one step of every row per round), so a load change hits every row alike.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/dense.py --crop 192 --batch-size 4 --steps 5
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/dense.py --crop 128 --batch-size 8 --steps 10 --unet-only
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def _models(arch: str):
    from visionfm.checkpoints import random_encoder
    from visionfm.dense.decoders import build_dense_model

    unet = build_dense_model("unet", None, 1)
    vit = build_dense_model("unetr", random_encoder(arch, seed=0, modality="Fundus"), 1)
    unet_nhwc = build_dense_model("unet", None, 1).to(memory_format=torch.channels_last)
    return unet, vit, unet_nhwc


def _step_fn(model, name: str, batch: dict):
    from visionfm.dense.tasks import SegmentationTask

    task = SegmentationTask(model).train()
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    cached = [f.detach() for f in model.features(batch["image"])] if name == "decoder" else None
    if name == "nhwc":
        batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}

    def step() -> None:
        if name == "graph":  # autograd records the frozen encoder (weights frozen, but its graph kept)
            model.finetune = True  # features() then runs with grad enabled; the weights still need no grad
            try:
                x = batch["image"].clone().requires_grad_(True)
                loss = task({**batch, "image": x})["loss"]
            finally:
                model.finetune = False
        elif name == "amp":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = task(batch)["loss"]
        elif name == "encoder":
            with torch.no_grad():
                model.features(batch["image"])
            return
        elif name == "decoder":  # the features of this batch computed once, outside the timed step
            from visionfm.dense.losses import dice_focal_loss

            loss = dice_focal_loss(model.decoder(cached, batch["image"]), batch["target"])["loss"]
        else:
            loss = task(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(steps_fns: list, steps: int) -> list[float]:
    """Seconds per step of each function, timed in interleaved rounds (a load change hits every row alike)."""
    for step in steps_fns:
        step()  # warm-up (allocations, oneDNN kernels)
    total = [0.0] * len(steps_fns)
    for _ in range(steps):
        for i, step in enumerate(steps_fns):
            t0 = time.perf_counter()
            step()
            total[i] += time.perf_counter() - t0
    return [t / steps for t in total]


def _with_dtype(model, step, dtype):
    """``step`` run with the ViT model's encoder in ``dtype`` (None: fp32)."""

    def run() -> None:
        model.encoder_dtype = dtype
        try:
            step()
        finally:
            model.encoder_dtype = None

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--arch", default="vit_small_patch16")
    p.add_argument("--unet-only", action="store_true", help="only the U-Net rows (fp32, bf16, channels_last)")
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(a.batch_size, 3, a.crop, a.crop, generator=g),
        "target": (torch.rand(a.batch_size, 1, a.crop, a.crop, generator=g) > 0.9).float(),
    }
    unet, vit, unet_nhwc = _models(a.arch)
    rows = [
        ("unet (MONAI), from scratch", unet, "plain"),
        ("unet, whole step under bf16 autocast (--precision bf16)", unet, "amp"),
        ("unet, channels_last (NHWC) fp32", unet_nhwc, "nhwc"),
        (f"unetr fp32 (frozen {a.arch}, no graph through it)", vit, "plain"),
        ("unetr fp32, graph through the frozen encoder", vit, "graph"),
        ("unetr, bf16 autocast encoder (--encoder-precision bf16)", vit, "bf16"),
        ("unetr, whole step under bf16 autocast (--precision bf16)", vit, "amp"),
        ("  of which: encoder forward only (fp32)", vit, "encoder"),
        ("  of which: decoder forward + backward + AdamW", vit, "decoder"),
    ]
    if a.unet_only:
        rows = rows[:3]
    load0 = os.getloadavg()[0]
    fns = [
        _with_dtype(m, _step_fn(m, kind, batch), torch.bfloat16 if kind == "bf16" else None)
        if hasattr(m, "encoder_dtype")
        else _step_fn(m, kind, batch)
        for _, m, kind in rows
    ]
    out = list(zip([r[0] for r in rows], _time(fns, a.steps)))
    base = out[0][1]
    print(
        f"crop {a.crop} px, batch {a.batch_size}, {a.steps} timed steps each, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    print("| step | steps/s | s/step | x U-Net time |\n|---|---|---|---|")
    for label, s in out:
        print(f"| {label} | {1 / s:.3f} | {s:.3f} | {s / base:.2f} |")


if __name__ == "__main__":
    main()
