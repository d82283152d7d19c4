"""``visionfm pretrain``: iBOT self-supervised pretraining, alone or under ``torchrun``."""
from __future__ import annotations

import argparse

from ..distributed import is_main
from ..engine.trainer import load_config
from ..models import list_archs
from ..pretrain import ENCODER_FILE, PretrainConfig, pretrain
from ..pretrain.config import CLIP_MODES, PRECISIONS
from . import command

_BOOL = argparse.BooleanOptionalAction

# (flag, type, nargs, help); the config field is the flag without dashes, '-' -> '_'.
_OPTIONS: list[tuple[str, type | None, str | None, str]] = [
    ("--synthetic", str, "+", "folders of synthetic images mixed in at --synthetic-ratio"),
    ("--synthetic-ratio", float, None, "synthetic images per real image in every epoch (5 = 1:5); synthetic only: "
                                       "give --synthetic without --data"),
    ("--init-from", str, None, "continue from these encoder weights (official VisionFM, RETFound, DINOv2, "
                               "safetensors)"),
    ("--epochs", int, None, "training epochs (default 100)"),
    ("--max-steps", int, None, "stop after this many optimizer steps (overrides --epochs)"),
    ("--batch-size", int, None, "images per process per step (default 128)"),
    ("--accum-steps", int, None, "micro-batches per optimizer step"),
    ("--lr", float, None, "peak learning rate per 256 images (default 7.5e-5)"),
    ("--min-lr", float, None, "final learning rate (default 2e-6)"),
    ("--warmup-epochs", float, None, "linear lr warm-up epochs (default 50, capped at half the run)"),
    ("--weight-decay", float, None, "initial weight decay (default 0.04)"),
    ("--weight-decay-end", float, None, "final weight decay (default 0.4)"),
    ("--clip-grad", float, None, "gradient clipping threshold, 0 = off (default 3.0)"),
    ("--drop-path", float, None, "student drop-path rate (default 0.1)"),
    ("--momentum-teacher", float, None, "teacher EMA momentum at step 0 (default 0.996, cosine to 1)"),
    ("--global-size", int, None, "global crop side (default 224)"),
    ("--global-scale", float, 2, "global crop area range (default 0.32 1.0)"),
    ("--local-crops", int, None, "local crops per image (default 0)"),
    ("--local-size", int, None, "local crop side (default 96)"),
    ("--local-scale", float, 2, "local crop area range (default 0.05 0.4)"),
    ("--color-jitter", float, 4, "colour-jitter strengths: brightness contrast saturation hue (default 0.4 0.4 0.2 "
                                 "0.1; 0 0 0 0 = none)"),
    ("--color-jitter-p", float, None, "probability of colour jitter (default 0.8)"),
    ("--grayscale-p", float, None, "probability of grayscale (default 0.2)"),
    ("--blur-p", float, 3, "blur probability of global view 1, other global views, local views (default 1 0.1 0.5)"),
    ("--solarize-p", float, 3, "solarisation probability of the same three views (default 0 0.2 0)"),
    ("--load-size", int, None, "decode images at about this shorter side first (faster on large photos)"),
    ("--patch-size", int, None, "override the architecture's patch size"),
    ("--pred-ratio", float, "+", "mask ratio(s) (default 0 0.3)"),
    ("--pred-ratio-var", float, "+", "jitter of each mask ratio (default 0 0.2)"),
    ("--pred-shape", str, None, "block or rand masking"),
    ("--out-dim", int, None, "prototypes of the head (default 8192)"),
    ("--patch-out-dim", int, None, "patch prototypes of a separate patch head (default 8192)"),
    ("--head-hidden-dim", int, None, "head MLP width (default 2048)"),
    ("--head-bottleneck-dim", int, None, "head bottleneck (default 256)"),
    ("--freeze-last-layer", int, None, "epochs with a frozen last layer (default 3)"),
    ("--warmup-teacher-temp", float, None, "CLS teacher temperature at epoch 0 (default 0.07)"),
    ("--teacher-temp", float, None, "CLS teacher temperature after warm-up (default 0.04)"),
    ("--warmup-teacher-patch-temp", float, None, "patch teacher temperature at epoch 0 (default 0.04)"),
    ("--teacher-patch-temp", float, None, "patch teacher temperature after warm-up (default 0.07)"),
    ("--warmup-teacher-temp-epochs", int, None, "teacher temperature warm-up epochs (default 30)"),
    ("--koleo-weight", float, None, "weight of DINOv2's KoLeo regulariser on student CLS tokens (default 0: off)"),
    ("--center-momentum", float, None, "momentum of the CLS and patch centres (default 0.9)"),
    ("--on-bad-image", str, None, "skip (default; logged in bad_images.txt) or fail"),
    ("--device", str, None, "auto, cpu or cuda"),
    ("--seed", int, None, "random seed"),
    ("--num-workers", int, None, "image-decoding processes per training process (default 4)"),
    ("--checkpoint-every", int, None, "also checkpoint every N steps (0 = at epoch ends)"),
    ("--keep-last", int, None, "step checkpoints to keep"),
    ("--log-every", int, None, "steps between log lines"),
]
_FLAGS = ["mim", "shared_head", "shared_head_teacher", "norm_last_layer", "grad_checkpointing", "compile",
          "progress"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", help="image folders or CSV manifests of real images (recursive, mixed "
                                             "extensions); 'Modality=DIR' for another modality than --modality")
    p.add_argument("--modality", help="modality of the images (normalisation; default Fundus)")
    p.add_argument("--arch", help=f"encoder architecture (default vit_base_patch16): {', '.join(list_archs())}")
    p.add_argument("--output", help=f"run folder; the teacher encoder is exported as RUN_DIR/{ENCODER_FILE}")
    p.add_argument("--config", help="YAML of PretrainConfig settings (command-line values override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output exactly where it stopped")
    p.add_argument("--precision", choices=PRECISIONS, help="autocast precision (default auto: bf16 on CUDA)")
    p.add_argument("--clip-mode", choices=CLIP_MODES, help="per_param (official) or global clipping")
    for flag, typ, nargs, text in _OPTIONS:
        p.add_argument(flag, type=typ, nargs=nargs, help=text)
    for name in _FLAGS:
        p.add_argument("--" + name.replace("_", "-"), action=_BOOL, default=None,
                       help=f"{name.replace('_', ' ')} (see PretrainConfig)")


def config_from_args(a: argparse.Namespace) -> PretrainConfig:
    """Defaults < ``--config`` YAML < command-line values."""
    names = ["data", "modality", "arch", "output", "precision", "clip_mode", *_FLAGS]
    names += [flag[2:].replace("-", "_") for flag, *_ in _OPTIONS]
    return load_config(PretrainConfig, a.config, **{n: getattr(a, n) for n in names})


@command("pretrain", "Self-supervised iBOT pretraining of an encoder on your images (CPU or GPUs, torchrun).",
         _configure)
def run_pretrain(a: argparse.Namespace) -> int:
    cfg = config_from_args(a)
    run_dir = pretrain(cfg, resume=a.resume)
    if is_main():
        print(f"encoder: {run_dir / ENCODER_FILE}")
    return 0
