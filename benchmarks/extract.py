"""Feature-extraction speed: images/s and peak memory for ViT-B/16 at 224 on CPU (fp32, bf16) and CUDA if present.

Each configuration runs in a fresh subprocess so its peak resident memory is its own. The timed path is the real
one users run (``visionfm.extract_features``: decode, resize, normalise, encode, write), on a folder of generated
fundus-sized images (or ``--data DIR``). Also prints the bf16 feature error against fp32 on the same images.

    python benchmarks/extract.py                      # default: 64 images, batch 8 and 32
    python benchmarks/extract.py --images 256 --batch-sizes 8 32 64 --arch vit_base_patch16
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OFFICIAL_CPU_IMG_S = 1.47  # official VisionFM code made to run on CPU: fp32, batch 8, 2-core machine (issue #2)


def _make_images(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (584, 565, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def _worker(args: argparse.Namespace) -> None:
    """Run one configuration and print a JSON line (executed in a subprocess)."""
    import torch

    from visionfm import extract_features, load_features
    from visionfm.checkpoints import random_encoder

    enc = random_encoder(args.arch, seed=0, modality="Fundus")
    out = Path(args.out)
    kw = dict(input_size=224, n_last_blocks=4, batch_size=args.batch_size, num_workers=args.num_workers,
              precision=args.precision, device=args.device, compile=args.compile, progress=False)
    extract_features(enc, args.data, out, **kw)  # warm-up pass (allocator, kernels, page cache)
    start = time.perf_counter()
    extract_features(enc, args.data, out, **kw)
    seconds = time.perf_counter() - start
    n = len(load_features(out).paths)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"img_s": n / seconds, "peak_mib": peak}))


def _run(cfg: dict, data: Path, out: Path, arch: str, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--data", str(data), "--out", str(out), "--arch", arch,
           "--batch-size", str(cfg["batch"]), "--precision", cfg["precision"], "--device", cfg["device"],
           "--num-workers", str(workers)] + (["--compile"] if cfg["compile"] else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _bf16_error(data: Path, arch: str) -> float:
    import torch

    from visionfm.checkpoints import random_encoder
    from visionfm.data import Preprocess, list_images, read_image
    from visionfm.features import encode_batch

    enc = random_encoder(arch, seed=0, modality="Fundus")
    info = enc.info
    x = torch.stack([Preprocess(224, info.mean, info.std)(read_image(p)) for p in list_images(data)[:8]])
    a, _ = encode_batch(enc, x, n_last_blocks=4)
    b, _ = encode_batch(enc, x, n_last_blocks=4, precision="bf16")
    return float((a - b).abs().max() / a.abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="image folder (default: generated 584x565 PNGs)")
    p.add_argument("--images", type=int, default=64, help="number of generated images")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    p.add_argument("--arch", default="vit_base_patch16")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (they compile for minutes)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "images"
        if not args.data:
            _make_images(data, args.images)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        print(f"{args.arch} at 224 px, {len(list(data.iterdir()))} images, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads\n")
        print("| device | precision | compiled | batch | images/s | x official CPU (1.47) | peak memory (MiB) |")
        print("|---|---|---|---|---|---|---|")
        for dev in devices:
            for precision in ("fp32", "bf16"):
                for compiled in (False,) if args.no_compile else (False, True):
                    for batch in args.batch_sizes:
                        cfg = {"batch": batch, "precision": precision, "device": dev, "compile": compiled}
                        r = _run(cfg, data, Path(tmp) / "f.safetensors", args.arch, args.num_workers)
                        print(f"| {dev} | {precision} | {'yes' if compiled else 'no'} | {batch} | {r['img_s']:.2f} | "
                              f"{r['img_s'] / OFFICIAL_CPU_IMG_S:.1f}x | {r['peak_mib']:.0f} |", flush=True)
        print(f"\nbf16 vs fp32 feature error (max |diff| / max |fp32|, last-4 CLS): {_bf16_error(data, args.arch):.2e}")


if __name__ == "__main__":
    main()
