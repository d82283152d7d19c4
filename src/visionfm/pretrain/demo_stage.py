"""Demo hook: pretrain the demo's encoder briefly with iBOT on the fundus phantoms' training images.

Fast mode (CI) trains the test-sized ViT (depth 2, width 64, patch 8) at 64 px for a few epochs (seconds); normal
mode trains it at the demo's 128 px for longer. Several step checkpoints are kept so the explain stage can show how
attention evolves. Sets ``ctx.encoder_path`` to the exported teacher encoder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..report import Section
from .api import pretrain
from .config import PretrainConfig, pretrain_config
from .export import ENCODER_FILE
from .health import HEALTH_FILE

__all__ = ["demo_config", "demo_stage"]

log = logging.getLogger(__name__)
DEMO_STEPS = {True: 28, False: 372}  # optimizer steps of the demo's pretraining (fast mode, default)


def demo_config(
    folders: list[str], out: Path, fast: bool, size: int, seed: int, device: str, progress: bool = False
) -> PretrainConfig:
    """The demo's pretraining settings (test-sized model, small head, short schedule; the sharper teacher
    temperatures of ``configs/pretrain/fundus-vit-tiny-cpu.yaml``, which keep the teacher off the uniform
    distribution on look-alike images).

    Tuned on the phantoms (docs/readme/demo.md): with the official augmentations (strong colour jitter, grayscale,
    solarisation, blur on every first global view) the run ended at the uniform teacher (entropy 0.97 ln K) and
    its frozen features probed no better than a random encoder's; mild colour jitter, no grayscale / solarisation /
    blur (the phantoms' lesions are a few pixels of colour) and KoLeo 0.1 kept it healthy (entropy 0.55 ln K) and
    beat the random encoder on 4 of 5 phantom probes at 64 px. 256 prototypes (CLS and patch) instead of 1024 and
    bf16 cut a step from 0.60 to 0.39 CPU-s at 128 px with validation probes (seed-1 phantoms) level with the 1024-
    prototype fp32 run; pretraining on every modality's phantoms instead of the fundus ones did worse on the fundus
    and OCT probes at the same step budget (docs/readme/demo.md).
    """
    return pretrain_config(
        data=folders,
        modality="Fundus",
        arch="vit_test",
        output=str(out),
        global_size=size,
        local_crops=2,
        local_size=size // 2,
        out_dim=256,
        patch_out_dim=256,
        head_hidden_dim=256,
        head_bottleneck_dim=64,
        epochs=4 if fast else 12,
        batch_size=16,
        lr=5e-3,
        warmup_epochs=1,
        warmup_teacher_temp=0.02,
        teacher_temp=0.02,
        warmup_teacher_patch_temp=0.02,
        teacher_patch_temp=0.04,
        warmup_teacher_temp_epochs=2,
        momentum_teacher=0.98,
        freeze_last_layer=1,
        drop_path=0.0,
        seed=seed,
        color_jitter=[0.1, 0.1, 0.1, 0.0],
        grayscale_p=0.0,
        solarize_p=[0.0, 0.0, 0.0],
        blur_p=[0.0, 0.0, 0.0],
        koleo_weight=0.1,
        device=device,
        num_workers=0,
        progress=progress,
        log_every=1,
        keep_last=4,
        precision="auto",  # bf16 where the CPU/GPU computes it natively (AMX here: 1.26x per step at equal probes)
    )


def _loss_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = [r["step"] for r in rows]
    for key in ("cls_loss", "patch_loss", "teacher_entropy"):
        if key in rows[0]:
            ax.plot(steps, [r[key] for r in rows], label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title("iBOT pretraining on the fundus phantoms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _health_line(run: Path) -> str:
    """One sentence on the run's collapse indicators (``health.json``)."""
    health = json.loads((run / HEALTH_FILE).read_text())
    ind = health["indicators"]
    values = ", ".join(f"{k.replace('_', ' ')} {v['last']:.3g}" for k, v in ind.items())
    if health["healthy"]:
        return f"Training health: no sign of collapse at the end ({values})."
    return f"Training health: COLLAPSE SUSPECTED ({'; '.join(health['problems_at_end'])})."


def demo_stage(ctx: Any) -> Section:
    """Pretrain on the fundus phantoms; export the teacher to ``ctx.encoder_path``; report losses and a plot."""
    # the photographs only: segmentation sets keep their masks and label maps beside them (training/masks, ...)
    folders = [
        str(Path(d.root) / "training" / "images")
        if (Path(d.root) / "training" / "images").is_dir()
        else str(Path(d.root) / "training")
        for d in ctx.datasets.values()
        if d.modality == "Fundus" and (Path(d.root) / "training").is_dir()
    ]
    if not folders:
        raise ValueError("the pretraining demo needs the fundus phantoms: run the 'phantoms' stage first")
    out = ctx.out / "pretrain"
    cfg = demo_config(
        folders, out, ctx.cfg.fast, ctx.cfg.size, ctx.cfg.seed, ctx.cfg.device, getattr(ctx.cfg, "progress", False)
    )
    n_images = sum(len(list(Path(f).glob("*.png"))) for f in folders)
    # a fixed step budget whatever the number of phantoms: whole epochs closest to it
    per_epoch = max(1, n_images // cfg.train.batch_size)
    cfg.train.epochs = max(2, round(DEMO_STEPS[bool(ctx.cfg.fast)] / per_epoch))
    steps = cfg.train.epochs * per_epoch
    # the 4 quarter points only (explain draws the evolution from up to 5): no checkpoint at every epoch end
    cfg.train.checkpoint_every = max(1, steps // 4)
    cfg.train.checkpoint_epochs = cfg.train.epochs
    cfg.train.keep_last = 5
    if out.exists():  # a rerun of the demo starts a fresh run
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    run = pretrain(cfg)
    seconds = time.perf_counter() - t0
    ctx.encoder_path = run / ENCODER_FILE
    ctx.facts["pretrain_run"] = run
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    table = [
        {
            "": name,
            "step": r["step"],
            "CLS loss": round(r["cls_loss"], 3),
            "patch loss": round(r.get("patch_loss", float("nan")), 3),
            "teacher entropy": round(r["teacher_entropy"], 3),
            "lr": f"{r['lr']:.2e}",
        }
        for name, r in (("first step", first), ("last step", last))
    ]
    text = (
        f"iBOT self-distillation (CLS across views + masked-patch distillation, EMA teacher) of a {cfg.arch} "
        f"encoder at {cfg.global_size} px on {n_images} fundus phantom training images from {len(folders)} sets, "
        f"{last['step']} steps in {seconds:.0f} s; the exported teacher ({ENCODER_FILE}) is the encoder every "
        f"later stage uses. {_health_line(run)}"
    )
    return Section("Encoder pretraining (iBOT)", text, [("losses", table)], [_loss_plot(rows, out / "loss.png")])
