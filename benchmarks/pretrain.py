"""Throughput and peak memory of one pretraining step: this package's iBOT step against an official-style step, at
the default precision and at fixed ones, and MAE's step.

Settings are the official ones (two 224-px global views, no local crops, block masks with ratio 0 or U(0.1, 0.5),
shared head of 8192 prototypes with hidden 2048 and bottleneck 256, drop-path 0.1, AdamW, per-parameter clipping
at 3.0, EMA teacher). Each (architecture, precision, implementation) runs in its own process, so its peak memory is
its own: peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

* ``visionfm``: :class:`visionfm.pretrain.IBOTTask` as the trainer runs it: photometric augmentation of the uint8
  crops on the device (part of the timed step), fused attention, the student head on CLS + masked tokens only,
  multi-tensor clipping and EMA, fused AdamW on CUDA.
* ``official-style``: :mod:`visionfm.pretrain.reference`, the computation of the official ``main_pretrain.py`` on
  the same modules: pre-augmented float views (the official loader augments in worker processes, so augmentation is
  *not* in its timed step), explicit softmax attention, head over every token, per-parameter clipping with a host
  sync per tensor, a Python-loop EMA, ``torch.optim.AdamW`` defaults.
* ``mae``: :class:`visionfm.pretrain.MAETask` with RETFound's settings (one 224-px view, 75 % of the patches hidden,
  decoder 512 x 8 x 16, AdamW betas 0.9 / 0.95).

Precision ``auto`` is what ``visionfm pretrain`` uses by default: bf16 on CUDA and on CPUs with native bf16 (AMX,
AVX512-BF16), else fp32. The summary lines compare the default step (``visionfm``, ``auto``) with the official-style
fp32 step, per CPU-second on a CPU (fair on a shared machine) and per second on a GPU.

Images/s counts distinct images (an iBOT image gives two global views). MFU on CUDA is model FLOPs (counted with
``torch.utils.flop_counter`` on the implementation's own step) per second over the GPU's dense peak.

    python benchmarks/pretrain.py                       # ViT-S/16 and ViT-B/16: default vs official-style, and MAE
    python benchmarks/pretrain.py --archs vit_small_patch16 --precisions bf16 --batch-size 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from visionfm.engine import StepState
from visionfm.engine.precision import cpu_has_native_bf16, resolve_precision
from visionfm.pretrain import IBOTTask, PretrainConfig, build_encoders, build_task, pretrain_config
from visionfm.pretrain.masking import make_mask
from visionfm.pretrain.reference import official_style_clip, official_style_ema, official_style_losses

PEAK_TFLOPS = {
    ("H100", "bf16"): 989.4,
    ("H100", "fp32"): 66.9,
    ("H200", "bf16"): 989.4,
    ("H200", "fp32"): 66.9,
    ("A100", "bf16"): 312.0,
    ("A100", "fp32"): 19.5,
}
_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def _batch(cfg: PretrainConfig, b: int, patch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s, grid = cfg.global_size, cfg.global_size // patch
    rng = np.random.default_rng(0)
    masks = np.stack(
        [[make_mask(grid, grid, cfg.pred_ratio, cfg.pred_ratios_var(), rng) for _ in range(2)] for _ in range(b)]
    )
    return {
        "global": torch.randint(0, 256, (b, 2, 3, s, s), generator=g, dtype=torch.uint8),
        "local": torch.zeros(b, 0, 3, 8, 8, dtype=torch.uint8),
        "mask": torch.from_numpy(masks),
        "mean": torch.full((b, 3), 0.42),
        "std": torch.full((b, 3), 0.29),
        "bad": torch.zeros(b),
    }


def _mae_batch(cfg: PretrainConfig, b: int, patch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s, n = cfg.global_size, (cfg.global_size // patch) ** 2
    return {
        "global": torch.randint(0, 256, (b, 1, 3, s, s), generator=g, dtype=torch.uint8),
        "noise": torch.rand(b, n, generator=g),
        "mean": torch.full((b, 3), 0.45),
        "std": torch.full((b, 3), 0.23),
        "bad": torch.zeros(b),
    }


def _setup(
    arch: str, device: torch.device, impl: str, size: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer, PretrainConfig]:
    method = "mae" if impl == "mae" else "ibot"
    cfg = pretrain_config(method=method, data=["unused"], arch=arch, device=str(device), global_size=size)
    torch.manual_seed(0)
    task = (IBOTTask(*build_encoders(cfg), cfg) if method == "ibot" else build_task(cfg)).to(device)
    fused = device.type == "cuda" and impl != "official-style"
    betas = tuple(cfg.train.betas) if impl != "official-style" else (0.9, 0.999)
    opt = torch.optim.AdamW(task.param_groups(), lr=1e-4, betas=betas, fused=fused or None)
    return task, opt, cfg


def _step_fn(
    impl: str, task: IBOTTask, opt: torch.optim.Optimizer, batch: dict, device: torch.device, dtype: torch.dtype | None
):
    """A closure running one full training step (forward, backward, clip, optimizer, EMA)."""
    state = StepState(epoch=10, step=1, total_steps=1000)  # past the last-layer freeze, as most of a run
    batch = {k: v.to(device) for k, v in batch.items()}
    if impl == "mae":

        def mae_step() -> float:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = task(batch, state)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(out["loss"].detach())

        return mae_step
    b = batch["global"].shape[0]
    mask = batch["mask"].transpose(0, 1).reshape(2 * b, *batch["mask"].shape[-2:])
    views = task._views(batch)[0].detach() if impl == "official-style" else None

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if impl == "visionfm":
                out = task(batch, state)
            else:
                out = official_style_losses(task, views, None, mask, 2, state)
        out["loss"].backward()
        if impl == "visionfm":
            task.before_optimizer_step(state)
        else:
            official_style_clip(task.student, task.cfg.train.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if impl == "visionfm":
            task.on_after_step(state)
        else:
            official_style_ema(task, 0.9995)
        return float(out["loss"].detach())

    return step


def _flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def measure(arch: str, precision: str, impl: str, batch_size: int, steps: int, device: str, size: int = 224) -> dict:
    """One configuration in this process: images/s, seconds per step, peak memory, FLOPs, MFU."""
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    task, opt, cfg = _setup(arch, dev, impl, size)
    resolved = resolve_precision(precision, dev)
    if impl == "mae":
        batch = _mae_batch(cfg, batch_size, task.encoder.cfg.patch_size)
    else:
        batch = _batch(cfg, batch_size, task.student["backbone"].cfg.patch_size)
    step = _step_fn(impl, task, opt, batch, dev, _DTYPES[resolved])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step()  # warm-up
    flops = _flops(step)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for _ in range(steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec, cpu_sec = float(np.median(times)), float(np.median(cpu))
    peak = (
        torch.cuda.max_memory_allocated()
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    shown = precision if precision == resolved else f"{precision}={resolved}"
    row = {
        "arch": arch,
        "precision": shown,
        "impl": impl,
        "device": dev.type,
        "batch": batch_size,
        "size": size,
        "s_per_step": sec,
        "img_s": batch_size / sec,
        "cpu_s_per_step": cpu_sec,
        "img_per_cpu_s": batch_size / cpu_sec,
        "peak_gib": peak / 2**30,
        "tflop_per_step": flops / 1e12,
        "tflops": flops / sec / 1e12,
        "mfu": None,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        name = torch.cuda.get_device_name()
        peak_tf = next((v for (k, p), v in PEAK_TFLOPS.items() if k in name and p == resolved), None)
        row["gpu"] = name
        row["mfu"] = flops / sec / 1e12 / peak_tf if peak_tf else None
    return row


def _table(rows: list[dict]) -> str:
    head = (
        f"{'arch':<18} {'prec':<9} {'impl':<15} {'batch':>5} {'s/step':>8} {'img/s':>8} {'img/CPU-s':>9} "
        f"{'peak GiB':>9} {'TFLOP/step':>10} {'MFU':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
        lines.append(
            f"{r['arch']:<18} {r['precision']:<9} {r['impl']:<15} {r['batch']:>5} {r['s_per_step']:>8.2f} "
            f"{r['img_s']:>8.2f} {r['img_per_cpu_s']:>9.2f} {r['peak_gib']:>9.2f} "
            f"{r['tflop_per_step']:>10.3f} {mfu:>6}"
        )
    key = "img_s" if rows and rows[0]["device"] == "cuda" else "img_per_cpu_s"  # CPU time: fair on a shared CPU
    by = {(r["arch"], r["precision"].split("=")[0], r["impl"]): r[key] for r in rows}
    for arch, prec in sorted({(r["arch"], r["precision"].split("=")[0]) for r in rows}):
        if (arch, prec, "official-style") in by and (arch, prec, "visionfm") in by:
            lines.append(
                f"speed-up ({key}) {arch} {prec}: "
                f"{by[(arch, prec, 'visionfm')] / by[(arch, prec, 'official-style')]:.2f}x"
            )
    for arch in sorted({r["arch"] for r in rows}):
        official = by.get((arch, "fp32", "official-style"))
        for impl, name in (("visionfm", "default iBOT step"), ("mae", "MAE step")):
            if official and (arch, "auto", impl) in by:
                lines.append(
                    f"{name} (auto) / official-style fp32 step ({key}) {arch}: "
                    f"{by[(arch, 'auto', impl)] / official:.2f}x"
                )
    return "\n".join(lines)


def _machine() -> str:
    """The machine beside the numbers: CPU model, cores, native bf16, load."""
    import os
    import platform

    model = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"machine: {model}, {os.cpu_count()} cores, native bf16: {cpu_has_native_bf16()}, load average "
        f"(1/5/15 min) at the end: {load}{gpu}"
    )


def loss_check(
    data: list[str],
    out: str,
    method: str,
    steps: int,
    arch: str,
    size: int,
    batch: int,
    seed: int = 0,
    fixed_teacher: bool = False,
) -> dict:
    """Train the same short run at fp32 and at bf16 (same seed, data, order) and compare the loss curves.

    The verdict compares the mean |loss_bf16 - loss_fp32| over the run's second half with the curve's own noise:
    the standard deviation of its step-to-step changes there. Within noise: the gap is below that noise. The drop
    (mean of the first 10 losses minus mean of the last 10) says whether the run learned at all; ``fixed_teacher``
    (iBOT: teacher and centres frozen, a higher lr) makes the iBOT objective a fixed target whose loss must fall.
    """
    import shutil

    from visionfm.pretrain import pretrain

    curves = {}
    extra = {"lr": 1e-3 if method == "ibot" else 1.5e-3}
    if fixed_teacher:
        extra.update(momentum_teacher=1.0, center_momentum=1.0, lr=2e-2, warmup_teacher_temp=0.04, freeze_last_layer=0)
    for prec in ("fp32", "bf16"):
        run = f"{out}/{method}{'-fixed' if fixed_teacher else ''}-{prec}"
        shutil.rmtree(run, ignore_errors=True)
        cfg = pretrain_config(
            method=method,
            data=data,
            arch=arch,
            global_size=size,
            batch_size=batch,
            max_steps=steps,
            warmup_steps=steps // 5,
            precision=prec,
            device="cpu",
            num_workers=0,
            progress=False,
            log_every=1,
            seed=seed,
            output=run,
            out_dim=1024,
            patch_out_dim=1024,
            head_hidden_dim=512,
            decoder_embed_dim=128,
            decoder_depth=2,
            decoder_num_heads=4,
            load_size=max(size, 64),
            **extra,
        )
        t0 = time.process_time()
        pretrain(cfg)
        with open(f"{run}/log.jsonl") as f:
            rows = [json.loads(line) for line in f]
        curves[prec] = (np.array([r["loss"] for r in rows]), time.process_time() - t0)
    a, b = curves["fp32"][0], curves["bf16"][0]
    half = slice(len(a) // 2, None)
    gap = float(np.mean(np.abs(a[half] - b[half])))
    noise = float(np.std(np.diff(a[half])))
    return {
        "method": method + (" (fixed teacher)" if fixed_teacher else ""),
        "arch": arch,
        "steps": steps,
        "batch": batch,
        "size": size,
        "drop_fp32": float(a[:10].mean() - a[-10:].mean()),
        "drop_bf16": float(b[:10].mean() - b[-10:].mean()),
        "loss_fp32_first": float(a[0]),
        "loss_fp32_last": float(a[-5:].mean()),
        "loss_bf16_last": float(b[-5:].mean()),
        "mean_abs_gap_2nd_half": gap,
        "step_noise_2nd_half": noise,
        "within_noise": gap < noise,
        "cpu_s_fp32": curves["fp32"][1],
        "cpu_s_bf16": curves["bf16"][1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["vit_small_patch16", "vit_base_patch16"])
    p.add_argument("--precisions", nargs="+", default=["auto", "fp32", "bf16"], choices=["auto", *_DTYPES])
    p.add_argument(
        "--impls",
        nargs="+",
        default=["visionfm", "official-style", "mae"],
        choices=["visionfm", "official-style", "mae"],
    )
    p.add_argument("--batch-size", type=int, help="images per step (default 64 on CUDA, 4 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps after one warm-up (default 10 on CUDA, 2 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--global-size", type=int, default=224, help="global crop side (official: 224)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: 1 on CPU, where a busy machine makes more "
        "threads spin; 0 = torch's default, the default on CUDA)",
    )
    p.add_argument("--json", help="also write the rows here")
    p.add_argument(
        "--loss-check",
        nargs="+",
        metavar="IMAGES",
        help="instead of timing: train the same short run at fp32 and bf16 on these image folders and "
        "compare the loss curves (the check behind precision auto)",
    )
    p.add_argument("--loss-check-steps", type=int, default=60)
    p.add_argument(
        "--loss-check-methods",
        nargs="+",
        default=["ibot", "mae"],
        choices=["ibot", "ibot-fixed", "mae"],
        help="ibot-fixed: iBOT with a frozen teacher and centres (a fixed target whose loss must fall)",
    )
    p.add_argument("--loss-check-out", default="runs/bench-precision")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: one config, print JSON
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda") or (a.device == "auto" and torch.cuda.is_available())
    batch, steps = a.batch_size or (64 if cuda else 4), a.steps or (10 if cuda else 2)
    threads = a.threads if a.threads is not None else (0 if cuda else 1)
    if threads > 0:
        torch.set_num_threads(threads)
    if a.loss_check:
        rows = [
            loss_check(
                a.loss_check,
                a.loss_check_out,
                m.split("-")[0],
                a.loss_check_steps,
                a.archs[0],
                a.global_size,
                a.batch_size or 16,
                fixed_teacher=m.endswith("-fixed"),
            )
            for m in a.loss_check_methods
        ]
        for r in rows:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
        print(_machine())
        return 0
    if a.one:
        print(json.dumps(measure(a.archs[0], a.precisions[0], a.impls[0], batch, steps, a.device, a.global_size)))
        return 0
    rows = []
    for arch in a.archs:
        for prec in a.precisions:
            for impl in a.impls:
                if impl == "official-style" and prec == "auto":
                    continue  # the official code has no automatic precision: its step is measured at fp32 / bf16
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    "--archs",
                    arch,
                    "--precisions",
                    prec,
                    "--impls",
                    impl,
                    "--batch-size",
                    str(batch),
                    "--steps",
                    str(steps),
                    "--device",
                    a.device,
                    "--global-size",
                    str(a.global_size),
                    "--threads",
                    str(threads),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode:
                    print(f"{arch} {prec} {impl} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"measured {arch} {prec} {impl}: {rows[-1]['img_s']:.2f} img/s", file=sys.stderr, flush=True)
    print(_table(rows))
    print(_machine())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
