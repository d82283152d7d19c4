"""Core commands: ``extract``, ``convert``, ``info``."""

from __future__ import annotations

import argparse

from . import command

# The library is imported inside configure/run (``visionfm --help`` must not import torch).


def _weights_args(p: argparse.ArgumentParser) -> None:
    from ..checkpoints import list_formats
    from ..modalities import list_modalities

    p.add_argument(
        "--weights",
        required=True,
        help="weights file (official VisionFM, RETFound-MAE/-DINOv2/-Green, "
        "RETFound fine-tuned, DINOv2, timm, state dict or visionfm .safetensors) or "
        "hf-hub:ORG/NAME[:FILE] (huggingface_hub cache; HF_TOKEN for gated repositories)",
    )
    p.add_argument("--modality", help=f"imaging modality ({', '.join(list_modalities())}; other spellings accepted)")
    p.add_argument(
        "--arch",
        help="architecture name, e.g. vit_base or vit_large_patch14 (default: inferred from the "
        "tensors; checked against the file when given)",
    )
    p.add_argument("--format", choices=list_formats(), help="checkpoint format (default: detected)")
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="load weights holding NaN or inf (refused by default, naming the tensors)",
    )


def _configure_extract(p: argparse.ArgumentParser) -> None:
    from ..data.datasets import LAYOUTS
    from ..data.images import INTERPOLATIONS
    from ..features import COMPILE_MODES, EXTRACT_PRECISIONS, TTA_MODES

    _weights_args(p)
    p.add_argument("--data", required=True, help="image folder or CSV manifest")
    p.add_argument("--output", required=True, help="output .safetensors file")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="data layout (default: auto)")
    p.add_argument("--split", help="split of the official vfm layout (default training); recorded with the features")
    p.add_argument("--label-columns", nargs="*", help="label columns of a CSV manifest")
    p.add_argument("--input-size", type=int, default=224, help="square input side in pixels")
    p.add_argument(
        "--n-last-blocks",
        type=int,
        help="concatenate the CLS tokens of the last n blocks (default 4, "
        "or the encoder's depth when smaller; above the depth: an error)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images per forward (default 64: 1.2-1.3x the images/s of 32 on the bf16/int8 paths of a 2-core AMX CPU)",
    )
    p.add_argument("--num-workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--tta", default="none", choices=TTA_MODES, help="flip test-time augmentation")
    p.add_argument(
        "--precision",
        default="auto",
        choices=EXTRACT_PRECISIONS,
        help="auto (default) = bf16 on CPUs with AMX/AVX512-BF16 (the fused oneDNN model) and on GPUs, fp32 elsewhere; "
        "fp32 = exact (the official pipeline's features to 1e-6); int8 = static int8 on oneDNN (CPU; calibrated "
        "on the first 8 images). The choice is recorded in the file and followed by 'classify predict'",
    )
    p.add_argument(
        "--interpolation",
        default="bilinear",
        choices=list(INTERPOLATIONS),
        help="resize filter (default bilinear, as the official extraction; bicubic as official fine-tuning)",
    )
    p.add_argument(
        "--volumes",
        action="store_true",
        help="each sample is an OCT volume (multi-frame DICOM, folder "
        "of B-scans, .vol/.e2e/.fda/.mat): features per B-scan",
    )
    p.add_argument(
        "--jpeg-draft",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode JPEGs at reduced size (faster, pixels differ slightly from a full decode); default: on unless "
        "--precision fp32, so that fp32 is the exact path",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument(
        "--compile",
        nargs="?",
        const="blocks",
        default="none",
        choices=COMPILE_MODES,
        help="torch.compile: 'blocks' (the bare flag: each block, one graph) or 'frozen' (whole encoder, weights "
        "frozen); compilation costs 10-30 s, so it only pays on large sets (default: none)",
    )


@command("extract", "Extract encoder features of a folder or manifest into one .safetensors file.", _configure_extract)
def run_extract(a: argparse.Namespace) -> int:
    from ..checkpoints import load_encoder
    from ..data.writer import check_output
    from ..features import extract_features

    check_output(a.output, ".safetensors")  # before loading weights or reading any image
    if a.volumes and (a.precision == "int8" or a.compile != "none"):
        from ..errors import UserError

        raise UserError("--volumes: --precision int8 and --compile apply to image extraction only; use bf16")
    enc = load_encoder(a.weights, a.modality, a.arch, format=a.format, allow_nonfinite=a.allow_nonfinite)
    if a.volumes:
        from ..volumes import extract_volume_features

        extract_volume_features(
            enc,
            a.data,
            a.output,
            layout=a.layout,
            label_columns=a.label_columns,
            split=a.split,
            input_size=a.input_size,
            n_last_blocks=a.n_last_blocks,
            batch_size=a.batch_size,
            num_workers=a.num_workers,
            precision=a.precision,
            device=a.device,
            interpolation=a.interpolation,
        )
        return 0
    extract_features(
        enc,
        a.data,
        a.output,
        layout=a.layout,
        split=a.split,
        label_columns=a.label_columns,
        input_size=a.input_size,
        n_last_blocks=a.n_last_blocks,
        batch_size=a.batch_size,
        num_workers=a.num_workers,
        tta=a.tta,
        precision=a.precision,
        device=a.device,
        compile=a.compile,
        interpolation=a.interpolation,
        jpeg_draft=a.precision != "fp32" if a.jpeg_draft is None else a.jpeg_draft,
    )
    return 0


def _configure_convert(p: argparse.ArgumentParser) -> None:
    _weights_args(p)
    p.add_argument("--output", required=True, help="output .safetensors file")


@command(
    "convert",
    "Convert any supported checkpoint to safetensors with metadata (no pickle to load it).",
    _configure_convert,
)
def run_convert(a: argparse.Namespace) -> int:
    from ..checkpoints import load_encoder, save_encoder

    if not a.output.endswith(".safetensors"):
        raise ValueError(f"--output {a.output}: must end in .safetensors")
    enc = load_encoder(a.weights, a.modality, a.arch, format=a.format, allow_nonfinite=a.allow_nonfinite)
    save_encoder(enc, a.output)
    print(enc.info.report)
    print(f"wrote {a.output}")
    return 0


def _configure_info(p: argparse.ArgumentParser) -> None:
    _weights_args(p)


@command(
    "info",
    "Load a weights file strictly and print what it holds: family, normalisation, input size, head.",
    _configure_info,
)
def run_info(a: argparse.Namespace) -> int:
    from ..checkpoints import describe_weights

    for line in describe_weights(a.weights, a.modality, a.arch, format=a.format, allow_nonfinite=a.allow_nonfinite):
        print(line)
    return 0
