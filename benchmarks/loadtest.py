"""Load test of ``visionfm serve``: throughput, latency percentiles, errors and server memory, with and without
dynamic batching, measured in one run on this machine.

For each ``--max-batch`` setting the real service is started as its own process on a free loopback port
(``python -m visionfm serve``), warmed up, then ``--clients`` concurrent clients (threads, one keep-alive connection
each) POST real fundus photographs to ``/v1/predict`` for ``--duration`` seconds (or ``--max-requests`` in all).
Reported per setting: requests/s, p50 / p95 / p99 latency, error count (any non-200), and the server process's peak
resident memory (``VmHWM``). The ratio of the batched to the one-at-a-time throughput is printed at the end.

Without ``--run`` a stand-in classification run is built once under ``--workdir``: a randomly initialised ViT
(``--arch``, default ViT-S/16 at 224 px, the project's documented stand-in) saved as an encoder, a linear head
trained briefly on its features of generated fundus phantoms. Throughput depends on the model, not the head.

    python benchmarks/loadtest.py                        # 8 clients, 20 s per setting, batch 1 vs 8, bf16 on AMX
    python benchmarks/loadtest.py --run runs/dr --clients 16 --duration 60 --max-batch 1 4 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ROOT.parent / "shared" / "data" / "DRIVE" / "test" / "images"


def _cli(*argv) -> None:
    from visionfm.cli import main

    rc = main([str(a) for a in argv])
    if rc:
        raise SystemExit(f"visionfm {' '.join(map(str, argv))} failed ({rc})")


def make_run(workdir: Path, arch: str, size: int) -> Path:
    """A stand-in classification run (random-init encoder + linear head on phantom features), built once."""
    run = workdir / f"run_{arch}_{size}"
    if (run / "run.yaml").is_file():
        return run
    from visionfm.checkpoints import random_encoder, save_encoder
    from visionfm.toydata import make_dataset

    weights = workdir / f"{arch}_random.safetensors"
    save_encoder(random_encoder(arch, 0, "Fundus"), weights)
    ds = make_dataset("fundus-dr", workdir / "phantoms", n=20, seed=0, size=size, overwrite=True, progress=False)
    for split in ("training", "test"):
        _cli(
            "extract",
            "--weights",
            weights,
            "--data",
            ds.root,
            "--split",
            split,
            "--input-size",
            size,
            "--output",
            workdir / f"features_{split}.safetensors",
            "--num-workers",
            0,
            "--device",
            "cpu",
        )
    _cli(
        "classify",
        "train",
        "--train",
        workdir / "features_training.safetensors",
        "--test",
        workdir / "features_test.safetensors",
        "--output",
        run,
        "--epochs",
        5,
        "--n-boot",
        0,
        "--device",
        "cpu",
    )
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (``VmHWM``), in MiB; NaN where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_service(run: Path, max_batch: int, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "visionfm",
        "serve",
        "--run",
        str(run),
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--batch-wait-ms",
        str(args.wait_ms),
        "--queue-size",
        str(max(64, 4 * args.clients)),
        "--threads",
        str(args.threads),
        "--backend",
        args.backend,
        "--precision",
        args.precision,
        "--timeout-s",
        "300",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the service did not start within 10 minutes")


def _client(
    url: str,
    images: list[tuple[str, bytes]],
    stop: threading.Event,
    budget: list[int],
    lock: threading.Lock,
    out: list[tuple[float, int]],
    seed: int,
) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=300) as c:
        while not stop.is_set():
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            name, data = images[int(rng.integers(len(images)))]
            t0 = time.perf_counter()
            try:
                status = c.post("v1/predict", files={"file": (name, data)}).status_code
            except httpx.HTTPError:
                status = -1
            out.append((time.perf_counter() - t0, status))


def drive_load(url: str, images: list[tuple[str, bytes]], clients: int, duration: float, max_requests: int) -> dict:
    """``clients`` threads sending requests until ``duration`` s pass or ``max_requests`` were sent."""
    stop, lock, budget = threading.Event(), threading.Lock(), [max_requests]
    results: list[tuple[float, int]] = []
    threads = [
        threading.Thread(target=_client, args=(url, images, stop, budget, lock, results, i)) for i in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while time.perf_counter() - t0 < duration and any(t.is_alive() for t in threads):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in results if r[1] == 200]) * 1000
    errors = sum(1 for r in results if r[1] != 200)
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    return {
        "requests": len(results),
        "ok": len(lat),
        "errors": errors,
        "seconds": wall,
        "throughput_rps": len(lat) / wall,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
    }


def _server_stats(url: str) -> tuple[float, float]:
    """(mean images per forward pass, forward-pass milliseconds per image), from the service's own metrics."""
    import httpx

    text = httpx.get(url + "metrics", timeout=10).text
    keys = ("visionfm_batch_size_sum{", "visionfm_batch_size_count{", "visionfm_inference_seconds_sum{")
    total = dict.fromkeys(keys, 0.0)
    for line in text.splitlines():
        for k in keys:
            if line.startswith(k):
                total[k] += float(line.rsplit(" ", 1)[1])
    images, passes, secs = (total[k] for k in keys)
    return (images / passes if passes else float("nan")), (1000 * secs / images if images else float("nan"))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/PID/stat``); NaN where /proc is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="run folder to serve (default: build the stand-in run)")
    p.add_argument("--arch", default="vit_small_patch16", help="stand-in encoder architecture")
    p.add_argument("--size", type=int, default=224, help="stand-in input size")
    p.add_argument("--images", help="folder of images to send (default: the DRIVE test photographs)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per setting")
    p.add_argument("--max-requests", type=int, default=2000, help="most requests per setting")
    p.add_argument("--warmup", type=int, default=8, help="requests before timing")
    p.add_argument("--max-batch", type=int, nargs="+", default=[1, 8], help="settings compared")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="cycle through the settings this many times (interleaved: load drifts hit each alike); "
        "the median throughput per setting is reported",
    )
    p.add_argument("--wait-ms", type=float, default=5.0, help="batch collection window")
    p.add_argument("--threads", type=int, default=0, help="server intra-op threads (0: default)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    p.add_argument(
        "--precision",
        default="auto",
        choices=("fp32", "bf16", "auto"),
        help="torch backend precision of every setting (auto: bf16 on AMX / AVX512-BF16 CPUs)",
    )
    p.add_argument("--workdir", default="outputs/loadtest", help="where the stand-in run is built")
    p.add_argument("--output", default="outputs/loadtest/loadtest.json", help="JSON results")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else make_run(workdir, args.arch, args.size)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would cost the clients CPU
    folder = Path(args.images) if args.images else DRIVE
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".dcm"))
    if not files:
        raise SystemExit(f"no images in {folder} (pass --images DIR)")
    images = [(f.name, f.read_bytes()) for f in files[:32]]
    rows = []
    for mb in [m for _ in range(args.repeats) for m in args.max_batch]:
        proc, url = start_service(run, mb, args)
        try:
            drive_load(url, images, min(args.clients, args.warmup), 600, args.warmup)  # warm-up
            load_before, cpu0 = _load_avg(), _cpu_seconds(proc.pid)
            res = drive_load(url, images, args.clients, args.duration, args.max_requests)
            cpu_ms = 1000 * (_cpu_seconds(proc.pid) - cpu0) / max(res["ok"], 1)
            mean_batch, fwd_ms = _server_stats(url)  # counts the warm-up too: a few requests among hundreds
            res.update(
                max_batch=mb,
                mean_batch=mean_batch,
                forward_ms_per_image=fwd_ms,
                server_cpu_ms_per_request=cpu_ms,
                server_peak_rss_mb=_peak_rss_mb(proc.pid),
                load_avg_before=load_before,
                load_avg_after=_load_avg(),
            )
        finally:
            proc.terminate()
            proc.wait(30)
        rows.append(res)
        print(json.dumps(res), flush=True)
    return _report(rows, args, run, folder, len(images))


def _medians(rows: list[dict]) -> list[dict]:
    """One row per setting: the repeat with the median throughput (all repeats kept under ``repeats``)."""
    out = []
    for mb in dict.fromkeys(r["max_batch"] for r in rows):
        reps = sorted((r for r in rows if r["max_batch"] == mb), key=lambda r: r["throughput_rps"])
        out.append(
            {
                **reps[(len(reps) - 1) // 2],
                "repeats": [r["throughput_rps"] for r in reps],
                "errors": sum(r["errors"] for r in reps),
            }
        )
    return out


def _report(rows: list[dict], args: argparse.Namespace, run: Path, folder: Path, n_images: int) -> dict:
    head = (
        f"{'max batch':>9} {'mean batch':>10} {'fwd ms/img':>10} {'CPU ms/req':>10} {'req/s':>7} {'p50 ms':>8} "
        f"{'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'requests':>8} {'peak RSS MiB':>12}"
    )
    print(
        f"\n{args.clients} clients, {args.duration:g} s per setting, {n_images} images from {folder}, run {run}, "
        f"{args.backend} backend, precision {args.precision}, {os.cpu_count()} CPUs; load average before/after each "
        f"setting below"
    )
    print(head)
    rows = _medians(rows)
    for r in rows:
        print(
            f"{r['max_batch']:>9} {r['mean_batch']:>10.2f} {r['forward_ms_per_image']:>10.1f} "
            f"{r['server_cpu_ms_per_request']:>10.1f} "
            f"{r['throughput_rps']:>7.2f} {r['p50_ms']:>8.0f} "
            f"{r['p95_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['errors']:>6} {r['requests']:>8} "
            f"{r['server_peak_rss_mb']:>12.0f}   load {r['load_avg_before']} -> {r['load_avg_after']}"
        )
    by = {r["max_batch"]: r for r in rows}
    ratio = None
    if 1 in by and len(by) > 1:
        best = max((r for r in rows if r["max_batch"] > 1), key=lambda r: r["throughput_rps"])
        ratio = best["throughput_rps"] / by[1]["throughput_rps"] if by[1]["throughput_rps"] else float("nan")
        met = ratio >= 1.5 and not sum(r["errors"] for r in rows)
        print(
            f"dynamic batching (max {best['max_batch']}) / one at a time: {ratio:.2f}x throughput "
            f"(target >= 1.5x at 8 clients, zero errors: {'met' if met else 'NOT met'})"
        )
    out = {
        "rows": rows,
        "ratio_batched_vs_single": ratio,
        "clients": args.clients,
        "duration_s": args.duration,
        "run": str(run),
        "images": str(folder),
        "backend": args.backend,
        "precision": args.precision,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()
