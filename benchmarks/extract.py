"""Feature-extraction speed and fidelity, every path timed in one run on the same images and machine.

Rows (each in a fresh subprocess, so start-up, imports and peak memory are its own):

* ``official``: the official ``evaluation/extract_features.py`` loop made to run on CPU, reimplemented here (not
  copied): PIL ``open().convert('RGB')``, square **bilinear** resize, ``ToTensor``/``Normalize`` in numpy, a
  DataLoader at the script's defaults (``--batch_size_per_gpu 128``, ``--num_workers 4``; ``--official-batch`` and
  ``--official-workers`` change them; ``official-b8`` runs the same at batch 8 with one worker), the official ViT
  forward written out (explicit ``q @ k^T`` softmax attention,
  ``get_intermediate_layers``: the final norm on each of the last 4 blocks, CLS kept), fp32 under ``no_grad``, and one
  pickle file per image as the official script writes.
* ``fp32``: ``visionfm.extract_features`` in fp32 at ``--batch-size`` (the exact path: same preprocessing, fused
  SDPA).
* ``fast``: ``extract_features(precision="auto", jpeg_draft=True)``, ``extract``'s default, at ``--batch-size``
  (default 64; bf16 where the CPU has AMX/AVX512-BF16, through the fused oneDNN model
  ``visionfm.models.vit_fused.PackedBf16ViT``; JPEG decoded at reduced size, decoding overlapped with compute by
  worker processes).
* ``int8-static``: ``fast`` with ``precision="int8"``: every block ``Linear`` as a oneDNN int8 matmul (AMX-INT8),
  activations quantised with scales calibrated on the first 8 images (``visionfm.models.vit_int8``); the
  calibration and weight packing are inside the loop time.
* ``compile``: ``fast`` plus ``compile=True`` (each transformer block ``torch.compile``d by inductor: bias + GELU,
  residual adds and layer norms fused), with an empty compile cache, so the row pays the whole compilation.
* ``frozen`` / ``frozen-warm``: ``fast`` plus ``compile="frozen"`` (the whole encoder compiled with weight freezing),
  with an empty inductor cache / with the cache one earlier (untimed) process filled; compile seconds are reported
  and left out of the loop time, kept in the whole-process time.
* ``onnx``: ONNX Runtime (CPU) on the encoder exported by ``visionfm.export`` (or ``torch.onnx`` if that is absent),
  at ``--batch-size``, fed by the same decoding workers.
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``Linear`` (int8 weights, dynamic activations),
  at ``--batch-size``.

For each row: whole-process seconds (interpreter start to exit), images/s inside the loop, speed-up over
``official`` (both), the CPU seconds of the row's process and its decoding workers (user + system, spin-waiting
OpenMP threads included, so it grows on an idle machine; the whole-process time cannot fall below it / cores), peak
RSS, and the feature change against ``official`` (max |diff| / max |official|, min cosine) and, when the images
have labels, the AUROC of a 5-fold logistic-regression probe on the features (same folds for
every row) and its change. Default images: 504 = the 120 real OCT B-scans with DME labels from ../shared/data
(1408x573 JPEG), repeated (decoded again each time; the probe uses the first 120), else generated 584x565 PNGs
(no AUROC).

    nice -n 10 python benchmarks/extract.py                        # ViT-B/16 at 224, 504 images, all rows
    nice -n 10 python benchmarks/extract.py --rows official fp32 fast int8-static     # the main rows (~4 min idle)
    python benchmarks/extract.py --arch vit_small_patch16 --images 32 --rows official fp32 fast
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# benchmarks/onnx.py would shadow the onnx package for a script run from this folder: drop the folder from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROWS = ("official", "official-b8", "fp32", "fast", "int8-static", "compile", "frozen", "frozen-warm", "onnx", "int8")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "OCT-fundus-DME-DR"


# -- data ---------------------------------------------------------------------------------------------------------
def _default_images(tmp: Path, n: int) -> tuple[list[Path], np.ndarray | None]:
    """The real OCT B-scans (DME labels) when present, else ``n`` generated fundus-sized PNGs without labels."""
    manifest = SHARED / "manifest.csv"
    if manifest.is_file():
        oct_rows = [r for r in csv.DictReader(open(manifest)) if r["modality"] == "OCT"]
        by = [[r for r in oct_rows if r["DME"] == c] for c in ("0", "1")]
        rows = [r for pair in zip(*by) for r in pair]  # classes alternate: balanced for any n
        unique = len(rows)
        rows = (rows * (n // len(rows) + 1))[:n]  # more than 120: the files again (decoded again each time)
        # the probe uses the first (unique) images only: repeats would leak across folds
        y = np.array([float(r["DME"]) for r in rows[: min(n, unique)]])
        return [SHARED / r["path"] for r in rows], y
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(tmp / f"{i:04d}.png")
        Image.fromarray(rng.integers(0, 255, (584, 565, 3), dtype=np.uint8)).save(paths[-1])
    return paths, None


# -- the official-style path (reimplemented) -----------------------------------------------------------------------
class _OfficialDataset:
    """PIL loader + Resize((S, S), BILINEAR) + ToTensor + Normalize, as evaluation/transforms.py composes them."""

    def __init__(self, paths: list[str], size: int, mean, std) -> None:
        self.paths, self.size = paths, size
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        arr = np.asarray(img.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255.0
        x = torch.from_numpy(((arr - self.mean) / self.std).transpose(2, 0, 1).copy())
        return x, torch.zeros(1), {"img_path": self.paths[i]}


def official_forward(enc, x, n: int = 4):
    """The official ViT's ``get_intermediate_layers(x, n)`` written out with explicit attention -> last-n CLS."""
    import torch

    from visionfm.models.vit import interpolate_pos_embed  # the official bicubic scale-factor rule (tested)

    b = x.shape[0]
    grid = enc.patch_embed.proj(x)
    t = grid.flatten(2).transpose(1, 2)
    pos = enc.pos_embed
    if pos.shape[1] != t.shape[1] + 1:  # another input size than the weights': the official interpolation
        pos = interpolate_pos_embed(pos, grid.shape[-2], grid.shape[-1], mode=enc.cfg.pos_interp)
    t = torch.cat([enc.cls_token.expand(b, -1, -1), t], dim=1) + pos
    outs = []
    for i, blk in enumerate(enc.blocks):
        a = blk.attn
        y = blk.norm1(t)
        bsz, tok, d = y.shape
        h = a.num_heads
        q, k, v = a.qkv(y).reshape(bsz, tok, 3, h, d // h).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        t = t + a.proj((attn @ v).transpose(1, 2).reshape(bsz, tok, d))
        t = t + blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(blk.norm2(t))))
        if len(enc.blocks) - i <= n:
            outs.append(enc.norm(t)[:, 0])
    return torch.cat(outs, dim=-1)


def _run_official(enc, paths, args, tmp: Path, workers: int | None = None) -> np.ndarray:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _OfficialDataset([str(p) for p in paths], 224, enc.info.mean, enc.info.std),
        batch_size=args.official_batch,
        num_workers=args.official_workers if workers is None else workers,
    )
    nb = min(4, enc.cfg.depth)
    feats = np.zeros((len(paths), nb * enc.cfg.embed_dim), np.float32)
    row = 0
    with torch.no_grad():
        for x, labs, extras in loader:
            out = official_forward(enc, x, nb)
            for j in range(len(x)):  # the official script writes one pickle per image
                with open(tmp / f"{row + j}_0.pickle", "wb") as f:
                    pickle.dump(
                        {"feats": [out[j].numpy()], "labels": labs[j].numpy(), "img_path": extras["img_path"][j]}, f
                    )
            feats[row : row + len(x)] = out.numpy()
            row += len(x)
    return feats


# -- the visionfm paths -------------------------------------------------------------------------------------------
def _run_visionfm(
    enc, paths, args, tmp: Path, precision: str, batch: int, draft: bool, compile: bool | str = False
) -> np.ndarray:
    from visionfm import extract_features, load_features
    from visionfm.data import ImageCollection, Sample

    coll = ImageCollection(tmp, [Sample(Path(p), str(i)) for i, p in enumerate(paths)])
    out = extract_features(
        enc,
        coll,
        tmp / "f.safetensors",
        input_size=224,
        batch_size=batch,
        num_workers=args.num_workers,
        precision=precision,
        device="cpu",
        progress=False,
        jpeg_draft=draft,
        compile=compile,
    )
    return load_features(out).cls


def _onnx_session(enc, tmp: Path):
    """ONNX Runtime session on the encoder: the project's exporter when present, else torch.onnx directly."""
    import torch

    try:
        from visionfm.checkpoints import save_encoder
        from visionfm.export import export_onnx, load_onnx

        save_encoder(enc, tmp / "enc.safetensors")
        export_onnx(tmp / "enc.safetensors", tmp / "enc.onnx", input_size=224, n_check=1)
        model = load_onnx(tmp / "enc.onnx")
        return lambda x: model.run({"image": x})[0], "visionfm.export"
    except ImportError:
        import onnxruntime as ort

        class _Cls(torch.nn.Module):
            def forward(self, x):
                return enc(x, n_last_blocks=min(4, enc.cfg.depth)).cls_concat()

        torch.onnx.export(
            _Cls(),
            torch.zeros(1, 3, 224, 224),
            tmp / "enc.onnx",
            input_names=["image"],
            output_names=["cls"],
            dynamic_axes={"image": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
        sess = ort.InferenceSession(str(tmp / "enc.onnx"), providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"image": x})[0], "torch.onnx"


def _run_onnx(enc, paths, args, tmp: Path) -> tuple[np.ndarray, float]:
    from torch.utils.data import DataLoader

    from visionfm.data import ImageDataset, Preprocess, Sample

    t0 = time.perf_counter()
    run, how = _onnx_session(enc, tmp)
    export_s = time.perf_counter() - t0
    ds = ImageDataset(
        [Sample(Path(p), str(i)) for i, p in enumerate(paths)], Preprocess(224, enc.info.mean, enc.info.std, "bilinear")
    )
    rows = []
    t1 = time.perf_counter()
    for x, _ in DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers):
        rows.append(np.asarray(run(x.numpy()))[:, : min(4, enc.cfg.depth) * enc.cfg.embed_dim])
    print(json.dumps({"note": f"onnx via {how}: export {export_s:.1f} s (not in the loop time)"}), flush=True)
    return np.concatenate(rows), time.perf_counter() - t1


def _compile_warmup(enc, batch: int) -> float:
    """Seconds to compile the blocks (one batch through them); later compiles of the same blocks hit the
    in-process caches, so the extraction that follows runs compiled code from its first batch."""
    import torch

    from visionfm.features import compiled_blocks, encode_batch, resolve_precision

    t0 = time.perf_counter()
    x = torch.zeros(batch, 3, 224, 224)
    with compiled_blocks(enc):
        encode_batch(enc, x, min(4, enc.cfg.depth), "none", resolve_precision("auto", torch.device("cpu")))
    return time.perf_counter() - t0


def _compile_seconds() -> float:
    """Seconds this process spent compiling (dynamo + inductor), from torch's own compile-time records."""
    from torch._dynamo.utils import calculate_time_spent

    return float(calculate_time_spent().get("total_wall_time", 0.0))


def _frozen_warmup(enc, batch: int) -> None:
    """Compile the frozen encoder on one zero batch (fills the inductor cache of a warm row; not timed)."""
    import torch

    from visionfm.features import cast_encoder, encode_batch, frozen_features

    mod = frozen_features(cast_encoder(enc, "bf16"), min(4, enc.cfg.depth))
    encode_batch(mod, torch.zeros(batch, 3, 224, 224), min(4, enc.cfg.depth), "none", "bf16")


def _worker(args: argparse.Namespace) -> None:
    """Run one row; print a JSON line with its loop time and peak memory; save its features."""
    import torch

    from visionfm.checkpoints import random_encoder

    paths = [Path(p) for p in json.loads(Path(args.paths).read_text())]
    enc = random_encoder(args.arch, seed=0, modality="Fundus").eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        loop_s = None
        if args.worker == "official":
            feats = _run_official(enc, paths, args, tmp)
        elif args.worker == "official-b8":  # the same loop at batch 8 and one worker (the earlier setting)
            feats = _run_official(enc, paths, argparse.Namespace(**{**vars(args), "official_batch": 8}), tmp, 1)
        elif args.worker == "fp32":
            feats = _run_visionfm(enc, paths, args, tmp, "fp32", args.batch_size, False)
        elif args.worker == "fast":
            feats = _run_visionfm(enc, paths, args, tmp, "auto", args.batch_size, True)
        elif args.worker == "compile":  # cold: the row's own empty inductor cache (set by _run_row)
            compile_s = _compile_warmup(enc, args.batch_size)
            t0 = time.perf_counter()  # the loop time leaves the compilation out; the whole-process time keeps it
            feats = _run_visionfm(enc, paths, args, tmp, "auto", args.batch_size, True, compile=True)
            print(
                json.dumps(
                    {
                        "note": f"compile: {compile_s:.1f} s to compile (cold cache; in the whole-process "
                        "time, not in the loop time)"
                    }
                ),
                flush=True,
            )
        elif args.worker in ("frozen", "frozen-warm"):  # cold / warm: the row's own inductor cache (_run_row)
            if args.warmup_only:  # fill the cache: compile one batch, extract nothing
                return _frozen_warmup(enc, args.batch_size)
            feats = _run_visionfm(enc, paths, args, tmp, "auto", args.batch_size, True, compile="frozen")
            compile_s = _compile_seconds()
            loop_s = time.perf_counter() - t0 - compile_s
            print(
                json.dumps(
                    {
                        "note": f"{args.worker}: {compile_s:.1f} s compiling (in the whole-process time, "
                        "not in the loop time)"
                    }
                ),
                flush=True,
            )
        elif args.worker == "int8-static":
            feats = _run_visionfm(enc, paths, args, tmp, "int8", args.batch_size, True)
        elif args.worker == "int8":
            q = torch.ao.quantization.quantize_dynamic(enc, {torch.nn.Linear}, dtype=torch.qint8)
            feats = _run_visionfm(q, paths, args, tmp, "fp32", args.batch_size, False)
        else:
            feats, loop_s = _run_onnx(enc, paths, args, tmp)
        loop_s = loop_s or time.perf_counter() - t0
    np.save(args.out, feats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"loop_s": loop_s, "peak_mib": peak}), flush=True)


# -- comparison -----------------------------------------------------------------------------------------------------
def probe_auroc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Mean AUROC of a standardised logistic-regression probe over 5 stratified folds (fixed folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(x[tr], y[tr])
        scores.append(roc_auc_score(y[te], clf.predict_proba(x[te])[:, 1]))
    return float(np.mean(scores))


def _run_row(row: str, paths_file: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        row,
        "--paths",
        str(paths_file),
        "--out",
        str(out),
        "--arch",
        args.arch,
        "--num-workers",
        str(args.num_workers),
        "--batch-size",
        str(args.batch_size),
        "--official-batch",
        str(args.official_batch),
        "--official-workers",
        str(args.official_workers),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if row in ("compile", "frozen", "frozen-warm"):  # an empty compile cache: a first run's whole compilation
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="visionfm-inductor-", dir=paths_file.parent)
    if row == "frozen-warm":  # a second run: one untimed process fills the cache first
        subprocess.run([*cmd, "--warmup-only"], capture_output=True, text=True, env=env, check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    whole = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the row's process and its decoding workers
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if res.returncode:
        raise RuntimeError(f"row {row} failed:\n{res.stderr[-3000:]}")
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    info = {k: v for d in lines for k, v in d.items()}
    return {**info, "whole_s": whole, "cpu_s": cpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--images",
        type=int,
        default=504,
        help="number of images (the 120 OCT B-scans, repeated beyond 120; the probe AUROC uses the first 120)",
    )
    p.add_argument("--arch", default="vit_base_patch16")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--num-workers", type=int, default=1, help="decoding worker processes of every row")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="batch of every row but official (--official-batch); 64 = extract's default",
    )
    p.add_argument(
        "--official-batch",
        type=int,
        default=128,
        help="batch of the official-style row (128: extract_features.py's --batch_size_per_gpu default)",
    )
    p.add_argument(
        "--official-workers",
        type=int,
        default=4,
        help="decoding workers of the official-style row (4: extract_features.py's --num_workers default)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved rounds (odd rounds run the rows in reverse order); times are medians over rounds",
    )
    p.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    p.add_argument("--warmup-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, y = _default_images(tmp, args.images)
        (tmp / "paths.json").write_text(json.dumps([str(q) for q in paths]))
        kind = "DME labels" if y is not None else "no labels for the probe"
        print(
            f"{args.arch} at 224 px, {len(paths)} images ({kind}),"
            f" torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n"
        )
        order = ["official"] + [r for r in args.rows if r != "official"]
        runs: dict[str, list[dict]] = {r: [] for r in order}
        feats = {}
        for k in range(args.rounds):
            for row in order if k % 2 == 0 else order[::-1]:
                runs[row].append(_run_row(row, tmp / "paths.json", tmp / f"{row}.npy", args))
                feats[row] = np.load(tmp / f"{row}.npy")
                print(f"  round {k} {row}: {runs[row][-1]}", file=sys.stderr, flush=True)
        res = {
            r: {
                **v[-1],
                **{key: float(np.median([x[key] for x in v])) for key in ("loop_s", "whole_s", "cpu_s")},
                "peak_mib": max(x["peak_mib"] for x in v),
            }
            for r, v in runs.items()
        }
        _print_table(res, feats, y, len(paths))
        if args.rounds > 1:
            print(
                f"\nmedians over {args.rounds} interleaved rounds; per round (loop s): "
                + "; ".join(f"{r} " + ", ".join(f"{x['loop_s']:.0f}" for x in v) for r, v in runs.items())
            )
        print(f"\nload average at end {os.getloadavg()[0]:.1f}")


def _print_table(res: dict, feats: dict, y: np.ndarray | None, n: int) -> None:
    ref = feats["official"]
    auc_ref = probe_auroc(ref[: len(y)], y) if y is not None else None
    print(
        "| path | whole process (s) | x official | loop images/s | x official (loop) | CPU s (x official) | peak MiB | "
        "max rel. feature diff | min cosine | probe AUROC (change) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row, r in res.items():
        f = feats[row]
        diff = float(np.abs(f - ref).max() / np.abs(ref).max())
        cos = float(((f * ref).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(ref, axis=1))).min())
        auc = probe_auroc(f[: len(y)], y) if y is not None else None
        auc_txt = f"{auc:.4f} ({auc - auc_ref:+.4f})" if auc is not None else "n/a"
        loop = n / r["loop_s"]
        print(
            f"| {row} | {r['whole_s']:.1f} | {res['official']['whole_s'] / r['whole_s']:.2f}x | {loop:.2f} | "
            f"{loop / (n / res['official']['loop_s']):.2f}x | "
            f"{r['cpu_s']:.0f} ({res['official']['cpu_s'] / r['cpu_s']:.2f}x) | {r['peak_mib']:.0f} | "
            f"{diff:.2e} | {cos:.6f} | {auc_txt} |"
        )
    for r in res.values():
        if "note" in r:
            print(f"\n{r['note']}")


if __name__ == "__main__":
    main()
