"""``visionfm synth <train|sample|fidelity|turing|turing-score|ratio-study>``: synthetic images end to end.

Each step is a normal command (``@command("synth <step>", ...)``); ``synth train``'s options are derived from
:class:`visionfm.synth.GeneratorConfig` (and its nested ``train`` loop settings), so a new config field appears here
by itself. The library is imported inside the functions: ``visionfm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import shlex

from . import command, command_group

command_group(
    "synth",
    "Synthetic images: train a generator, sample it, measure fidelity, run a visual Turing test, "
    "study real:synthetic pretraining ratios.",
)


def _train_args(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args
    from ..synth.config import PRESETS, GeneratorConfig

    p.add_argument(
        "--preset",
        choices=PRESETS.names(),
        help="model/training preset (tiny = CPU smoke run; default: none, the config's defaults)",
    )
    p.add_argument("--config", help="YAML file of config fields, over the preset (default: none)")
    # the loop's settings under their historical generator names (README and docs commands)
    p.add_argument(
        "--steps",
        type=int,
        dest="train.max_steps",
        help="total optimizer steps; resuming continues up to this, a larger value extends a finished "
        "run (default: 20000)",
    )
    p.add_argument(
        "--save-every", type=int, dest="train.checkpoint_every", help="checkpoint interval in steps (default: 1000)"
    )
    add_config_args(
        p, GeneratorConfig, exclude=("train.epochs", "train.select_metric", "train.select_mode", "train.lr_base_batch")
    )
    runs = p.add_mutually_exclusive_group()
    runs.add_argument(
        "--resume", action="store_true", help="continue the run in --output (default: an existing run is an error)"
    )
    runs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the generator run in --output (default: an existing run is an error)",
    )
    p.add_argument("--no-resume", action="store_true", help=argparse.SUPPRESS)  # the old spelling of the default


def _train_hint(a: argparse.Namespace, argv: list[str]) -> str:
    words = [w for w in argv if w not in ("--overwrite", "--no-resume")]
    return shlex.join(["visionfm", *words, *([] if "--resume" in words else ["--resume"])])


@command(
    "synth train",
    "Train (or resume) a diffusion generator on a folder or manifest of images.",
    _train_args,
    _train_hint,
)
def _run_train(a: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..synth import train_generator
    from ..synth.config import PRESETS, GeneratorConfig

    base = dict(PRESETS.get(a.preset)) if a.preset else None
    cfg = config_from_args(GeneratorConfig, a, a.config, base=base)
    exported = train_generator(cfg, resume=a.resume, overwrite=a.overwrite)
    print(f"generator: {exported}")
    return 0


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="run folder (its exported generator/, else its last checkpoint) or a checkpoint_XXXXXXXX.pth of the run",
    )
    p.add_argument("--output", required=True, help="folder for the PNGs and manifest.csv")
    p.add_argument("--num", type=int, default=64, help="number of images")
    p.add_argument("--batch-size", type=int, default=16, help="images per sampling batch")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--labels", type=int, nargs="+", help="classes to generate, cycled (default: all, balanced)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument(
        "--eta", type=float, default=1.0, help="DDIM eta: 0 deterministic, 1 stochastic (better for small generators)"
    )
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")


@command("synth sample", "Sample a trained generator to a folder of PNGs with manifest.csv.", _sample_args)
def _run_sample(a: argparse.Namespace) -> int:
    from ..fileio import exclusive_output
    from ..synth import sample_images

    with exclusive_output(a.output):
        m = sample_images(
            a.checkpoint,
            a.output,
            a.num,
            a.batch_size,
            a.steps,
            a.seed,
            a.labels,
            a.guidance,
            a.device,
            a.precision,
            a.eta,
        )
    print(f"wrote {a.num} images; manifest {m}")
    return 0


def _fidelity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", required=True, nargs="+", help="real images (folders or manifests)")
    p.add_argument("--synthetic", required=True, nargs="+", help="synthetic images (folder(s) or manifest.csv)")
    p.add_argument("--weights", required=True, help="encoder weights for the features")
    p.add_argument("--output", required=True, help="report folder")
    p.add_argument(
        "--train", nargs="+", help="the generator's training images, for the memorisation check (default: --real)"
    )
    p.add_argument("--modality", help="modality of the encoder/images (default: the weights')")
    p.add_argument("--resolution", type=int, help="common square side (default: the synthetic images')")
    p.add_argument("--input-size", type=int, default=224, help="encoder input side")
    p.add_argument("--k", type=int, default=3, help="neighbourhood size of precision/recall")
    p.add_argument("--quantile", type=float, default=0.05, help="memorisation threshold quantile")
    p.add_argument("--pairs", type=int, default=8, help="pairs in the nearest-neighbour grid")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")


@command("synth fidelity", "Frechet distance, precision/recall and memorisation check vs real images.", _fidelity_args)
def _run_fidelity(a: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..synth.fidelity import measure_fidelity

    r = measure_fidelity(
        a.real,
        a.synthetic,
        a.weights,
        a.output,
        a.train,
        a.modality,
        a.resolution,
        a.input_size,
        a.k,
        a.quantile,
        a.pairs,
        a.batch_size,
        a.device,
    )
    print(json.dumps(asdict(r), indent=1))
    return 0


def _turing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", required=True, nargs="+", help="real images (folders or manifests)")
    p.add_argument("--synthetic", required=True, help="synthetic images (folder or manifest)")
    p.add_argument("--reader", required=True, help="reader's name (recorded with each answer)")
    p.add_argument("--answers", required=True, help="JSON-lines file the answers are appended to")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--n", type=int, help="images per set (default: size of the smaller set)")
    p.add_argument("--seed", type=int, default=0, help="picks the images (same for every reader)")
    p.add_argument("--display-size", type=int, default=256, help="side every image is shown at")
    p.add_argument("--exit-when-done", action="store_true", help="stop the server after the last answer")


@command("synth turing", "Serve a visual Turing test page on 127.0.0.1 for one reader.", _turing_args)
def _run_turing(a: argparse.Namespace) -> int:
    from ..synth.turing import make_turing_server, serve_session

    server = make_turing_server(
        a.real, a.synthetic, a.reader, a.answers, a.port, a.n, a.seed, a.display_size, a.exit_when_done
    )
    st = server.state()
    print(
        f"Turing test for {a.reader!r}: {st['total']} images ({st['answered']} already answered). "
        f"Open {server.url} in a browser; answers go to {a.answers}. Ctrl-C to stop.",
        flush=True,
    )
    n = serve_session(server)
    print(f"{a.reader}: {n} answers in {a.answers}")
    return 0


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers", required=True, nargs="+", help="answers files (one or more readers)")
    p.add_argument("--output", help="also write the scores as JSON (default: print only)")


@command("synth turing-score", "Score Turing-test answer files: each reader and the panel mean +- sd.", _score_args)
def _run_score(a: argparse.Namespace) -> int:
    from ..synth.turing_score import format_scores, score_files

    print(format_scores(score_files(a.answers, a.output)))
    return 0


def _ratio_args(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args
    from ..synth.ratio_study import RatioStudyConfig

    p.add_argument(
        "--config", help="YAML file of RatioStudyConfig fields (command-line flags override it; default: none)"
    )
    add_config_args(p, RatioStudyConfig, exclude=("pretrain",))  # a mapping: YAML only


@command(
    "synth ratio-study",
    "Pretrain at several real:synthetic ratios on one budget and probe each encoder (paper Fig. 5f).",
    _ratio_args,
)
def _run_ratio(a: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..synth.ratio_study import RatioStudyConfig, run_ratio_study

    cfg = config_from_args(RatioStudyConfig, a, a.config)
    out = run_ratio_study(cfg)
    print((out / "results.md").read_text())
    print(f"curve: {out / 'ratio_curve.png'}; table: {out / 'results.json'}")
    return 0
