"""Linear probe on RetinaMNIST: a pretrained encoder against the same architecture at random initialisation.

Protocol (identical for every encoder): RetinaMNIST (MedMNIST v2, official splits) written once in the vfm layout
with ``visionfm.data.medmnist_to_folder``; then the linear probe of :func:`visionfm.synth.probe.probe_encoder`
(bicubic resize of the 28x28 images to the encoder's input size, CLS tokens of the last 4 blocks concatenated;
standardised; multinomial logistic regression fitted on train with C chosen on val by macro one-vs-rest AUC; test
AUC (macro OvR, as MedMNIST's ``getAUC``) and accuracy of the selected model).

    python benchmarks/pretrain_probe.py --weights runs/pretrain/fundus-vit-tiny/encoder.safetensors

Three random-init twins (seeds 0, 1, 2) show how much the random baseline itself varies.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import visionfm
from visionfm.checkpoints import EncoderInfo, save_encoder
from visionfm.data import medmnist_to_folder
from visionfm.models import VisionTransformer
from visionfm.synth.probe import probe_encoder


def random_twin(ref: VisionTransformer, out: Path, seed: int) -> Path:
    """The architecture of ``ref`` at random initialisation (seeded), saved with the same modality facts."""
    torch.manual_seed(seed)
    enc = VisionTransformer(ref.cfg)
    enc.info = EncoderInfo(ref.cfg, ref.info.modality, ref.info.mean, ref.info.std, f"random init seed {seed}",
                           "random", "random init")
    save_encoder(enc, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, type=Path, help="pretrained encoder (.safetensors or any format)")
    p.add_argument("--npz", type=Path, default=Path("../shared/data/retinamnist/retinamnist.npz"))
    p.add_argument("--work", type=Path, default=Path("runs/pretrain_probe"), help="features and results")
    p.add_argument("--input-size", type=int, help="encoder input side (default: the encoder's img_size)")
    p.add_argument("--retinamnist", type=Path, default=Path("runs/retinamnist"), help="vfm-layout copy of the npz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random-init twins")
    p.add_argument("--no-random", action="store_true", help="probe only --weights (no random-init row)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    root = medmnist_to_folder(a.npz, a.retinamnist)
    ref = visionfm.load_encoder(a.weights)
    size = a.input_size or ref.cfg.img_size
    encoders = [("pretrained", a.weights, "pre")]
    for seed in ([] if a.no_random else a.seeds):
        twin = random_twin(ref, a.work / f"random_init_seed{seed}.safetensors", seed)
        encoders.append((f"random init (seed {seed})", twin, f"rand{seed}"))
    rows = {name: probe_encoder(w, root, a.work / tag, size, n_last_blocks=4, device="cpu")
            for name, w, tag in encoders}
    arch = ref.info.arch
    print(f"RetinaMNIST linear probe ({arch}, {size} px, CLS of last 4 blocks, C on val)")
    print(f"{'encoder':<26} {'C':>7} {'val AUC':>8} {'test AUC':>9} {'test ACC':>9}")
    for name, r in rows.items():
        print(f"{name:<26} {r['C']:>7g} {r['val_auc']:>8.3f} {r['test_auc']:>9.3f} {r['test_acc']:>9.3f}")
    rand = [r for name, r in rows.items() if name.startswith("random")]
    if len(rand) > 1:
        auc, acc = np.array([r["test_auc"] for r in rand]), np.array([r["test_acc"] for r in rand])
        print(f"{'random init, mean (sd)':<26} {'':>7} {'':>8} {auc.mean():>5.3f} ({auc.std(ddof=1):.3f}) "
              f"{acc.mean():>5.3f} ({acc.std(ddof=1):.3f})")
    (a.work / "probe.json").write_text(json.dumps({"weights": str(a.weights), "arch": arch, "input_size": size,
                                                   "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
