"""ONNX Runtime against eager PyTorch on the same exported model: images/s and the largest output difference.

(Not named ``onnx.py``: run as a script, that name would shadow the ``onnx`` package torch imports.)

The model is exported with ``visionfm.export.export_onnx`` (the path ``visionfm export`` runs, parity-checked at
export) from a run folder (``--run``) or from a randomly initialised encoder (``--arch``, default ViT-S/16 at 224
px, the project's stand-in). Both backends get the same preprocessed real fundus photographs (DRIVE test images,
or ``--images``), the same thread count, and are timed in interleaved rounds in one process (so machine load hits
both alike); the median round is reported. Preprocessing (decode, resize) is outside the timed region: this
compares the backends, not the image pipeline.

    python benchmarks/onnx_speed.py                                  # ViT-S/16 encoder, batch 1 and 8, 3 rounds
    python benchmarks/onnx_speed.py --run runs/dr --batch-sizes 1 16 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ROOT.parent / "shared" / "data" / "DRIVE" / "test" / "images"


def _inputs(card, folder: Path, n: int) -> np.ndarray:
    from visionfm.data import read_image
    from visionfm.export import preprocess_image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif"))[:n]
    if not files:
        raise SystemExit(f"no images in {folder}")
    return np.stack([preprocess_image(card, read_image(f)) for f in files]).astype(np.float32)


def _time(fn, x: np.ndarray, batch: int) -> float:
    """Images per second of ``fn`` over ``x`` in batches of ``batch``."""
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i : i + batch])
    return len(x) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="run folder or encoder weights to export (default: a random-init --arch encoder)")
    p.add_argument("--arch", default="vit_small_patch16")
    p.add_argument("--images", help="image folder (default: DRIVE test photographs)")
    p.add_argument("--n", type=int, default=16, help="images per round")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of both backends")
    p.add_argument("--output", default="outputs/benchmarks/onnx.json")
    args = p.parse_args(argv)
    import torch

    from visionfm.checkpoints import random_encoder, save_encoder
    from visionfm.export import export_onnx, load_model, load_onnx

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.run) if args.run else Path(tmp) / f"{args.arch}.safetensors"
        if not args.run:
            save_encoder(random_encoder(args.arch, 0, "Fundus"), source)
        t0 = time.perf_counter()
        res = export_onnx(source, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t0
        model = load_model(source)
        ort_model = load_onnx(res.path, threads=args.threads)
        x = _inputs(model.card, Path(args.images) if args.images else DRIVE, args.n)

        def run_torch(b: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                out = model.module(torch.from_numpy(b))
            return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

        def run_ort(b: np.ndarray) -> list[np.ndarray]:
            return ort_model.run({"image": b})

        diff = max(float(np.abs(a - b).max()) for a, b in zip(run_torch(x), run_ort(x)))
        rows = []
        for bs in args.batch_sizes:
            run_torch(x[:bs]), run_ort(x[:bs])  # warm-up
            rates = {"torch": [], "onnxruntime": []}
            for _ in range(args.rounds):  # interleaved: load changes hit both backends alike
                rates["torch"].append(_time(run_torch, x, bs))
                rates["onnxruntime"].append(_time(run_ort, x, bs))
            for name, r in rates.items():
                rows.append({"backend": name, "batch": bs, "img_s": float(np.median(r)), "rounds": r})
    return _report(rows, diff, export_s, res.max_abs_error, model.card, args)


def _report(rows, diff, export_s, export_err, card, args) -> dict:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\n{card.arch} ({card.kind}), input {card.input_size} px, {args.n} images x {args.rounds} rounds, "
        f"{args.threads} threads, {os.cpu_count()} CPUs, load average {load}"
    )
    print(f"{'backend':>12} {'batch':>5} {'img/s':>8} {'vs torch':>8} {'max |diff|':>11}")
    torch_rate = {r["batch"]: r["img_s"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        print(
            f"{r['backend']:>12} {r['batch']:>5} {r['img_s']:>8.2f} {r['img_s'] / torch_rate[r['batch']]:>7.2f}x "
            f"{(diff if r['backend'] == 'onnxruntime' else 0.0):>11.2e}"
        )
    print(f"export + parity check {export_s:.1f} s (max error at export {export_err:.2e})")
    out = {
        "rows": rows,
        "max_abs_diff": diff,
        "export_seconds": export_s,
        "export_max_abs_error": export_err,
        "model": card.to_dict(),
        "threads": args.threads,
        "load_average": load,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()
