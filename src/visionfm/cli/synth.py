"""``visionfm synth <train|sample|fidelity|turing|turing-score|ratio-study>``: synthetic images end to end."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Callable

from . import command

_SUB: dict[str, Callable[[argparse.Namespace], int]] = {}


def _sub(sub, name: str, help: str):
    def deco(fn):
        p = sub.add_parser(name, help=help, description=help)
        fn.configure(p)
        p.set_defaults(_synth=name)
        _SUB[name] = fn
        return fn
    return deco


def _train_args(p: argparse.ArgumentParser) -> None:
    from ..synth.config import PRESETS

    p.add_argument("--preset", choices=PRESETS.names(), help="model/training preset (tiny = CPU smoke run)")
    p.add_argument("--config", help="YAML file of config fields (overrides the preset)")
    p.add_argument("--data", nargs="+", help="image folder(s) or CSV manifest(s)")
    p.add_argument("--output", help="run folder (checkpoints, config.yaml, log.jsonl)")
    p.add_argument("--layout", help="data layout: auto, tree, imagenet, vfm, csv")
    p.add_argument("--split", help="split of the official vfm layout")
    p.add_argument("--label-column", help="manifest column holding the class")
    p.add_argument("--conditional", action="store_true", default=None, help="class-conditional generator")
    p.add_argument("--num-classes", type=int, help="number of classes (default: inferred)")
    p.add_argument("--image-size", type=int, help="generated image side in pixels")
    p.add_argument("--channels", type=int, nargs="+", dest="block_out_channels", help="U-Net channels per level")
    p.add_argument("--steps", type=int, help="total optimizer steps (resuming continues up to this)")
    p.add_argument("--batch-size", type=int, help="images per step and process")
    p.add_argument("--accum-steps", type=int, help="gradient-accumulation micro-batches per step")
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr", type=float, help="cosine-decay the lr to this (default: constant after warm-up)")
    p.add_argument("--save-every", type=int, help="checkpoint interval in steps")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-cache", action="store_false", dest="cache", default=None,
                   help="decode images on the fly instead of caching them in memory")
    p.add_argument("--num-workers", type=int, help="decoding workers (with --no-cache)")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")


def _run_train(a: argparse.Namespace) -> int:
    from ..synth import resolve_config, train_generator

    fields = ("data", "output", "layout", "split", "label_column", "conditional", "num_classes", "image_size",
              "block_out_channels", "steps", "batch_size", "accum_steps", "lr", "min_lr", "save_every", "precision",
              "device", "seed", "cache", "num_workers")
    values = {k: getattr(a, k) for k in fields}
    if values["data"] and len(values["data"]) == 1:
        values["data"] = values["data"][0]
    cfg = resolve_config(a.preset, a.config, values)
    exported = train_generator(cfg, resume=not a.no_resume)
    print(f"generator: {exported}")
    return 0


_run_train.configure = _train_args


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder (its exported generator/, else its last "
                                                        "checkpoint) or a checkpoint_XXXXXXXX.pth of the run")
    p.add_argument("--output", required=True, help="folder for the PNGs and manifest.csv")
    p.add_argument("--num", type=int, default=64, help="number of images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--labels", type=int, nargs="+", help="classes to generate, cycled (default: all, balanced)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta: 0 deterministic, 1 stochastic (default; "
                                                            "better for small generators)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", default="auto")


def _run_sample(a: argparse.Namespace) -> int:
    from ..synth import sample_images

    m = sample_images(a.checkpoint, a.output, a.num, a.batch_size, a.steps, a.seed, a.labels, a.guidance, a.device,
                      a.precision, a.eta)
    print(f"wrote {a.num} images; manifest {m}")
    return 0


_run_sample.configure = _sample_args


def _fidelity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", required=True, nargs="+", help="real images (folders or manifests)")
    p.add_argument("--synthetic", required=True, nargs="+", help="synthetic images (folder(s) or manifest.csv)")
    p.add_argument("--weights", required=True, help="encoder weights for the features")
    p.add_argument("--output", required=True, help="report folder")
    p.add_argument("--train", nargs="+", help="the generator's training images, for the memorisation check "
                                              "(default: --real)")
    p.add_argument("--modality", help="modality of the encoder/images")
    p.add_argument("--resolution", type=int, help="common square side (default: the synthetic images')")
    p.add_argument("--input-size", type=int, default=224, help="encoder input side")
    p.add_argument("--k", type=int, default=3, help="neighbourhood size of precision/recall")
    p.add_argument("--quantile", type=float, default=0.05, help="memorisation threshold quantile")
    p.add_argument("--pairs", type=int, default=8, help="pairs in the nearest-neighbour grid")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")


def _run_fidelity(a: argparse.Namespace) -> int:
    from ..synth.fidelity import measure_fidelity

    r = measure_fidelity(a.real, a.synthetic, a.weights, a.output, a.train, a.modality, a.resolution, a.input_size,
                         a.k, a.quantile, a.pairs, a.batch_size, a.device)
    print(json.dumps(asdict(r), indent=1))
    return 0


_run_fidelity.configure = _fidelity_args


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


def _run_turing(a: argparse.Namespace) -> int:
    from ..synth.turing import make_turing_server, serve_session

    server = make_turing_server(a.real, a.synthetic, a.reader, a.answers, a.port, a.n, a.seed, a.display_size,
                                a.exit_when_done)
    st = server.state()
    print(f"Turing test for {a.reader!r}: {st['total']} images ({st['answered']} already answered). "
          f"Open {server.url} in a browser; answers go to {a.answers}. Ctrl-C to stop.", flush=True)
    n = serve_session(server)
    print(f"{a.reader}: {n} answers in {a.answers}")
    return 0


_run_turing.configure = _turing_args


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers", required=True, nargs="+", help="answers files (one or more readers)")
    p.add_argument("--output", help="also write the scores as JSON")


def _run_score(a: argparse.Namespace) -> int:
    from ..synth.turing_score import format_scores, score_files

    print(format_scores(score_files(a.answers, a.output)))
    return 0


_run_score.configure = _score_args


def _ratio_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of RatioStudyConfig fields (command-line flags override it)")
    p.add_argument("--real", nargs="+", help="real pretraining image folders (the generator's training images)")
    p.add_argument("--synthetic", nargs="+", help="synthetic image folders (e.g. a `synth sample` output)")
    p.add_argument("--probe-data", help="labelled vfm-layout folder with train/val/test (e.g. `visionfm medmnist`)")
    p.add_argument("--output", help="study folder")
    p.add_argument("--ratios", nargs="+", help="real:synthetic ratios (default 1:0 1:1 1:5 1:10 0:1)")
    p.add_argument("--seeds", type=int, nargs="+", help="pretraining seeds (each ratio runs once per seed)")
    p.add_argument("--steps", type=int, help="optimizer steps of every run (the shared budget)")
    p.add_argument("--arch", help="encoder architecture (visionfm.list_archs())")
    p.add_argument("--patch-size", type=int, help="patch size override")
    p.add_argument("--global-size", type=int, help="global crop side in pixels")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto, cpu or cuda")


def _run_ratio(a: argparse.Namespace) -> int:
    from ..engine import load_config
    from ..synth.ratio_study import RatioStudyConfig, run_ratio_study

    keys = ("real", "synthetic", "probe_data", "output", "ratios", "seeds", "steps", "arch", "patch_size",
            "global_size", "batch_size", "device")
    cfg = load_config(RatioStudyConfig, a.config, **{k: getattr(a, k) for k in keys})
    out = run_ratio_study(cfg)
    print((out / "results.md").read_text())
    print(f"curve: {out / 'ratio_curve.png'}; table: {out / 'results.json'}")
    return 0


_run_ratio.configure = _ratio_args


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="synth_command", metavar="<step>")
    for name, fn, help in (
            ("train", _run_train, "Train (or resume) a diffusion generator on a folder or manifest of images."),
            ("sample", _run_sample, "Sample a trained generator to a folder of PNGs with manifest.csv."),
            ("fidelity", _run_fidelity, "Frechet distance, precision/recall and memorisation check vs real images."),
            ("turing", _run_turing, "Serve a visual Turing test page on 127.0.0.1 for one reader."),
            ("turing-score", _run_score, "Score Turing-test answer files: each reader and the panel mean +- sd."),
            ("ratio-study", _run_ratio, "Pretrain at several real:synthetic ratios on one budget and probe each "
                                        "encoder (paper Fig. 5f).")):
        _sub(sub, name, help)(fn)


@command("synth", "Synthetic images: train a generator, sample it, measure fidelity, run a visual Turing test, "
                  "study real:synthetic pretraining ratios.", _configure)
def run(a: argparse.Namespace) -> int:
    name = getattr(a, "_synth", None)
    if name is None:
        raise ValueError("choose a step: " + ", ".join(_SUB))
    return _SUB[name](a)
