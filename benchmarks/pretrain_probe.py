"""Linear probe on RetinaMNIST: a pretrained encoder against the same architecture at random initialisation.

Protocol (identical for every encoder): RetinaMNIST (MedMNIST v2, official splits) written once in the vfm layout
with ``visionfm.data.medmnist_to_folder``; features of :func:`visionfm.synth.probe.probe_features` (bicubic resize
of the 28x28 images to the encoder's input size, CLS tokens of the last 4 blocks concatenated); then

* the full probe (:func:`~visionfm.synth.probe.linear_probe`): standardised; multinomial logistic regression fitted
  on all 1080 training images with C chosen on val by macro one-vs-rest AUC; test AUC (macro OvR, as MedMNIST's
  ``getAUC``) and accuracy of the selected model;
* the few-shot probe (:func:`~visionfm.synth.probe.fewshot_probe`): the same fitted on k training images per class
  (``--shots``, default 1 5 10 20) over ``--draws`` seeded draws (default 20), the same draws for every encoder, so
  the pretrained encoder is compared with each random twin draw by draw (paired differences, 95% t-interval of
  their mean over draws).

    python benchmarks/pretrain_probe.py --weights runs/pretrain/fundus-vit-tiny/encoder.safetensors

Three random-init twins (seeds 0, 1, 2) show how much the random baseline itself varies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import visionfm
from visionfm.checkpoints import random_encoder, save_encoder
from visionfm.data import medmnist_to_folder
from visionfm.models import VisionTransformer
from visionfm.synth.probe import fewshot_probe, linear_probe, probe_features


def random_twin(ref: VisionTransformer, out: Path, seed: int) -> Path:
    """The architecture of ``ref`` at random initialisation (seeded), saved with the same modality facts."""
    save_encoder(random_encoder(ref.cfg, seed, ref.info.modality), out)
    return out


def _print_fewshot(fewshot: dict[int, dict[str, dict]], draws: int) -> None:
    """Per k: each encoder's mean (sd) test AUC over the draws, and pretrained minus random paired by draw."""
    from scipy.stats import t as t_dist

    print(f"\nFew-shot linear probe (k training images per class, {draws} draws, C on val; test AUC mean (sd))")
    names = list(next(iter(fewshot.values())))
    print(f"{'k':>3} " + " ".join(f"{n[:22]:>22}" for n in names) + "   pretrained - random (95% CI)")
    for k, res in fewshot.items():
        cells = " ".join(f"{res[n]['test_auc']:>14.3f} ({res[n]['test_auc_sd']:.3f})" for n in names)
        rand = [np.array(res[n]["draws"]) for n in names if n.startswith("random")]
        diff = ""
        if rand and "pretrained" in res:
            d = np.array(res["pretrained"]["draws"]) - np.mean(rand, axis=0)  # paired by draw
            half = t_dist.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            diff = f"   {d.mean():+.3f} ({d.mean() - half:+.3f}, {d.mean() + half:+.3f})"
        print(f"{k:>3} {cells}{diff}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, type=Path, help="pretrained encoder (.safetensors or any format)")
    p.add_argument("--npz", type=Path, default=Path("../shared/data/retinamnist/retinamnist.npz"))
    p.add_argument("--work", type=Path, default=Path("runs/pretrain_probe"), help="features and results")
    p.add_argument("--input-size", type=int, help="encoder input side (default: the encoder's img_size)")
    p.add_argument("--retinamnist", type=Path, default=Path("runs/retinamnist"), help="vfm-layout copy of the npz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random-init twins")
    p.add_argument("--no-random", action="store_true", help="probe only --weights (no random-init row)")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 5, 10, 20], help="k of the few-shot probes (none: skip)")
    p.add_argument("--draws", type=int, default=20, help="draws per few-shot probe")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    root = medmnist_to_folder(a.npz, a.retinamnist)
    ref = visionfm.load_encoder(a.weights)
    size = a.input_size or ref.cfg.img_size
    encoders = [("pretrained", a.weights, "pre")]
    for seed in [] if a.no_random else a.seeds:
        twin = random_twin(ref, a.work / f"random_init_seed{seed}.safetensors", seed)
        encoders.append((f"random init (seed {seed})", twin, f"rand{seed}"))
    feats = {
        name: probe_features(w, root, a.work / tag, size, n_last_blocks=4, device="cpu") for name, w, tag in encoders
    }
    rows = {name: linear_probe(f) for name, f in feats.items()}
    arch = ref.info.arch
    print(f"RetinaMNIST linear probe ({arch}, {size} px, CLS of last 4 blocks, C on val)")
    print(f"{'encoder':<26} {'C':>7} {'val AUC':>8} {'test AUC':>9} {'test ACC':>9}")
    for name, r in rows.items():
        print(f"{name:<26} {r['C']:>7g} {r['val_auc']:>8.3f} {r['test_auc']:>9.3f} {r['test_acc']:>9.3f}")
    rand = [r for name, r in rows.items() if name.startswith("random")]
    if len(rand) > 1:
        auc, acc = np.array([r["test_auc"] for r in rand]), np.array([r["test_acc"] for r in rand])
        print(
            f"{'random init, mean (sd)':<26} {'':>7} {'':>8} {auc.mean():>5.3f} ({auc.std(ddof=1):.3f}) "
            f"{acc.mean():>5.3f} ({acc.std(ddof=1):.3f})"
        )
    fewshot = {k: {name: fewshot_probe(f, k, a.draws) for name, f in feats.items()} for k in a.shots}
    if fewshot:
        _print_fewshot(fewshot, a.draws)
    (a.work / "probe.json").write_text(
        json.dumps(
            {
                "weights": str(a.weights),
                "arch": arch,
                "input_size": size,
                "results": rows,
                "fewshot": {str(k): v for k, v in fewshot.items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
