"""Head training speed: a head on cached features vs re-running the frozen encoder every epoch (the official scripts).

Both paths use the same engine, head (linear probe), data and batch size:

* **cached**: ``visionfm.extract_features`` once, then ``train_head`` for ``--epochs`` epochs on the cache;
* **re-run**: the frozen encoder is applied to every training image in every step, as the official decoder scripts
  do; measured for ``--rerun-epochs`` epochs and projected linearly to ``--epochs`` (each epoch costs the same).

Prints a markdown table (seconds, images/s) and writes it as JSON to ``--output``.

    python benchmarks/heads.py                                  # 200 phantoms, 112 px, ViT-S/16, 20 epochs
    python benchmarks/heads.py --images 400 --size 224 --epochs 50
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch


def _encoder(arch: str, path: Path) -> Path:
    from visionfm.checkpoints import random_encoder, save_encoder

    save_encoder(random_encoder(arch, seed=0, modality="Fundus", source=f"random init {arch} seed 0"), path)
    return path


def _cached(weights: Path, root: Path, work: Path, a: argparse.Namespace) -> dict:
    from visionfm import extract_features
    from visionfm.recognition import load_head_config, train_head

    t0 = time.perf_counter()
    feats = extract_features(
        weights,
        root,
        work / "train.safetensors",
        split="training",
        input_size=a.size,
        batch_size=a.batch_size,
        num_workers=0,
        progress=False,
        device=a.device,
    )
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_head(
        load_head_config(
            task="classify",
            train=[str(feats)],
            val=[str(feats)],
            epochs=a.epochs,
            batch_size=a.batch_size,
            n_boot=0,
            device=a.device,
            output_dir=str(work / "cached"),
        )
    )
    return {"extract_s": t_extract, "train_s": time.perf_counter() - t0}


def _rerun(weights: Path, root: Path, work: Path, a: argparse.Namespace) -> dict:
    from visionfm.checkpoints import load_encoder
    from visionfm.data.images import Preprocess
    from visionfm.engine import TrainConfig
    from visionfm.recognition.api import fit_task
    from visionfm.recognition.finetune import ImageLabelDataset, image_table, load_finetune_config
    from visionfm.recognition.heads import build_head
    from visionfm.recognition.runs import label_spec
    from visionfm.recognition.task_kinds import ClassifyTask

    cfg = load_finetune_config(task="classify", weights=str(weights), data=str(root))
    spec = label_spec(cfg)
    table, img_root = image_table(cfg, spec, str(root), "training")
    enc = load_encoder(weights).requires_grad_(False)
    n_blocks = min(4, enc.cfg.depth)
    head = build_head("linear", n_blocks * enc.cfg.embed_dim, len(spec.names))
    task = ClassifyTask(head, spec.names, encoder=enc, n_last_blocks=n_blocks, param_groups_fn=lambda e: [])
    data = ImageLabelDataset(
        [img_root / p for p in table.paths], table.y, Preprocess(a.size, enc.info.mean, enc.info.std), "classify"
    )
    t0 = time.perf_counter()
    fit_task(
        task,
        data,
        None,
        TrainConfig(
            output_dir=str(work / "rerun"),
            epochs=a.rerun_epochs,
            batch_size=a.batch_size,
            lr=1e-3,
            device=a.device,
            progress=False,
        ),
    )
    return {"train_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="training phantoms")
    p.add_argument("--size", type=int, default=112, help="input side in pixels")
    p.add_argument("--arch", default="vit_small_patch16")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--rerun-epochs", type=int, default=2, help="epochs actually run for the re-run path")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default="outputs/benchmarks/heads.json")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from visionfm.toydata import make_dataset

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # warm-up: the first optimizer imports torch._dynamo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = make_dataset(
            "fundus-dr", work / "data", n=int(a.images / 0.75) + 1, size=max(64, a.size), progress=False
        ).root
        weights = _encoder(a.arch, work / "encoder.safetensors")
        c = _cached(weights, root, work, a)
        r = _rerun(weights, root, work, a)
    per_epoch = r["train_s"] / a.rerun_epochs
    rows = [
        {
            "method": "cached features (extract once + head)",
            "epochs": a.epochs,
            "seconds": c["extract_s"] + c["train_s"],
            "detail": f"extract {c['extract_s']:.1f} s + head {c['train_s']:.1f} s",
        },
        {
            "method": "re-run frozen encoder every epoch",
            "epochs": a.epochs,
            "seconds": per_epoch * a.epochs,
            "detail": f"{per_epoch:.1f} s/epoch measured over {a.rerun_epochs} epochs, projected",
        },
    ]
    speedup = rows[1]["seconds"] / rows[0]["seconds"]
    print(
        f"{a.images} phantoms at {a.size} px, {a.arch}, linear head, batch {a.batch_size}, {a.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| method | epochs | seconds | detail |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['epochs']} | {row['seconds']:.1f} | {row['detail']} |")
    print(f"speed-up of the cache: {speedup:.1f}x")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "rows": rows, "speedup": speedup}, indent=1))


if __name__ == "__main__":
    main()
