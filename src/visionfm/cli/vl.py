"""``visionfm vl train|adapt``, ``visionfm zeroshot`` and ``visionfm retrieve``: vision-language (FLAIR-style)."""

from __future__ import annotations

import argparse
import json

from . import command, command_group

command_group("vl", "Vision-language (FLAIR-style): train image-text alignment, adapt it few-shot.")


def _train_args(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args
    from ..vl.config import VLConfig

    p.add_argument("--config", help="YAML of VLConfig settings (command-line values override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --output")
    add_config_args(p, VLConfig)


@command(
    "vl train",
    "Align an image encoder with text: categorical manifests (expert-knowledge prompts) and/or "
    "report manifests, FLAIR's soft-target CLIP loss; CPU or GPUs (torchrun).",
    _train_args,
)
def run_train(a: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..distributed import is_main
    from ..vl import VLConfig, train_vl

    run = train_vl(config_from_args(VLConfig, a, a.config), resume=a.resume, overwrite=a.overwrite)
    if is_main():
        print(f"vision-language run: {run}")
    return 0


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder from 'visionfm vl train'")
    p.add_argument("--knowledge", help="YAML extending the category dictionary and prompt templates")
    p.add_argument("--output", required=True, help="results folder")


def _adapt_args(p: argparse.ArgumentParser) -> None:
    _run_arg(p)
    p.add_argument(
        "--train",
        required=True,
        help="training features (.safetensors from 'visionfm extract' with the run's image encoder, labelled)",
    )
    p.add_argument("--test", required=True, help="test features, scored with every draw's adapter")
    p.add_argument(
        "--adapter",
        choices=("linear", "clip", "tip", "zeroshot"),
        default="linear",
        help="linear probe (text-initialised), CLIP-Adapter, TIP-Adapter, or zero-shot for reference",
    )
    p.add_argument("--init", choices=("text", "random"), default="text", help="linear probe initialisation")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="images per class (k)")
    p.add_argument("--draws", type=int, default=5, help="seeded k-shot draws per k")
    p.add_argument("--classes", nargs="+", help="class names in label order (default: the features' class names)")
    p.add_argument(
        "--no-domain-knowledge",
        dest="domain_knowledge",
        action="store_false",
        help="class texts from the names only (default: names + expert descriptions)",
    )
    p.add_argument("--steps", type=int, default=300, help="optimizer steps of trainable adapters")
    p.add_argument("--lr", type=float, default=1e-3, help="adapter learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and initialisations")


@command(
    "vl adapt",
    "Few-shot transfer on cached features: text-initialised linear probe, CLIP-Adapter or "
    "TIP-Adapter; k-shot draws, metrics with 95% intervals over draws.",
    _adapt_args,
)
def run_adapt(a: argparse.Namespace) -> int:
    from ..vl import load
    from ..vl.transfer import adapt

    res = adapt(
        load(a.run, a.knowledge),
        a.train,
        a.test,
        a.output,
        a.adapter,
        a.shots,
        a.draws,
        a.classes,
        a.domain_knowledge,
        a.init,
        a.steps,
        a.lr,
        a.seed,
    )
    for k, r in res["shots"].items():
        s = r["summary"]
        print(
            f"k={k:>3}  "
            + "  ".join(f"{m} {v['mean']:.4f} [{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]" for m, v in s.items())
        )
    print(f"results: {a.output}/metrics.json")
    return 0


def _zeroshot_args(p: argparse.ArgumentParser) -> None:
    _run_arg(p)
    p.add_argument(
        "--images",
        required=True,
        help="image folder, folder of class sub-folders, CSV manifest (path + "
        "optional label column of class names), or a features file "
        "of the run's image encoder (visionfm extract)",
    )
    p.add_argument("--classes", nargs="+", required=True, help="class names (prompted as the modality's template)")
    p.add_argument(
        "--domain-knowledge",
        action="store_true",
        help="ensemble each class's prompt with its expert descriptions (default: name only)",
    )
    p.add_argument("--modality", help="prompt templates of this modality (default: the encoder's)")
    p.add_argument("--ordinal", action="store_true", help="ordered grades: also quadratic kappa")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for 95%% intervals (0: none)")


@command(
    "zeroshot",
    "Zero-shot classification from class names (optionally expert descriptions): probabilities "
    "CSV; with labels balanced accuracy, kappa, macro-F1, AUROC with 95% CIs.",
    _zeroshot_args,
)
def run_zeroshot(a: argparse.Namespace) -> int:
    from ..vl import load
    from ..vl.evaluate import ZS_KEYS, zeroshot_eval

    m = zeroshot_eval(
        load(a.run, a.knowledge), a.images, a.classes, a.output, a.domain_knowledge, a.modality, a.ordinal, a.n_boot
    )
    print(f"{m['n']} images -> {a.output}/predictions.csv")
    for key in ZS_KEYS if "balanced_accuracy" in m else ():
        head, _, tail = key.partition(".")
        v = m[head][tail] if tail else m[head]
        ci = m.get("ci95", {}).get(key)
        print(f"  {key:<18} {v:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and ci[0] is not None else ""))
    return 0


def _retrieve_args(p: argparse.ArgumentParser) -> None:
    _run_arg(p)
    p.add_argument(
        "--images",
        required=True,
        help="image folder or CSV manifest (a text column, e.g. report, pairs images with texts: recall@k is reported)",
    )
    p.add_argument("--query", nargs="+", default=[], help="query texts")
    p.add_argument("--top-k", type=int, default=5, help="results listed per query and per image")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for 95%% intervals of recall@k")


@command(
    "retrieve",
    "Image-text retrieval: text -> top-k images, image -> top-k texts, recall@k for paired data.",
    _retrieve_args,
)
def run_retrieve(a: argparse.Namespace) -> int:
    from ..vl import load
    from ..vl.evaluate import retrieve

    res = retrieve(load(a.run, a.knowledge), a.images, a.output, a.query, a.top_k, n_boot=a.n_boot)
    for way in ("text_to_image", "image_to_text"):
        if way in res:
            print(f"{way}: " + json.dumps(res[way]))
    print(f"results: {a.output}/text_to_image.csv, {a.output}/image_to_text.csv")
    return 0
