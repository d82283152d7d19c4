"""Fidelity report end to end on encoder features: a copied training image is caught, the files are written."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
from PIL import Image

from visionfm.cli import main
from visionfm.synth.fidelity import measure_fidelity


def _synthetic_with_a_copy(disc_folder, tmp_path):
    """Four 16-px 'synthetic' images: a copy of training image a/0.png (squared) and three blue discs."""
    syn = tmp_path / "syn"
    syn.mkdir()
    rng = np.random.default_rng(3)
    copy = np.asarray(Image.open(disc_folder / "a" / "0.png"))[:, 4:28]  # the centre square, as square_image takes
    Image.fromarray(copy).resize((16, 16), Image.BICUBIC).save(syn / "copy.png")
    for i in range(3):
        img = np.zeros((16, 16, 3), np.uint8)
        img[3:13, 3:13] = (30, 60, 200)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(syn / f"blue{i}.png")
    return syn


def test_measure_fidelity_flags_the_copy(disc_folder, tmp_path, tiny_encoder):
    syn = _synthetic_with_a_copy(disc_folder, tmp_path)
    out = tmp_path / "fid"
    rep = measure_fidelity(
        disc_folder, syn, tiny_encoder, out, input_size=32, k=2, quantile=0.05, n_pairs=3, device="cpu", progress=False
    )
    assert (rep.n_real, rep.n_synthetic, rep.resolution) == (8, 4, 16)
    assert rep.frechet_distance > 0 and 0 <= rep.precision <= 1 and 0 <= rep.recall <= 1
    rows = {r["synthetic"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(out / "nearest.csv"))}
    assert rows["copy.png"]["nearest_pixels"].endswith("a/0.png") and rows["copy.png"]["flagged_pixels"] == "1"
    assert rows["copy.png"]["flagged_features"] == "1"
    assert all(rows[f"blue{i}.png"]["flagged_pixels"] == "0" for i in range(3))
    assert rep.memorised_fraction_pixels == 0.25
    assert json.loads((out / "fidelity.json").read_text())["report"]["k"] == 2
    assert Image.open(out / "nearest_pairs.png").size[0] > 100


def test_identical_sets_have_zero_fd_and_full_precision_recall(disc_folder, tmp_path, tiny_encoder):
    same = tmp_path / "same"
    shutil.copytree(disc_folder, same)
    rep = measure_fidelity(
        disc_folder, same, tiny_encoder, tmp_path / "o", input_size=32, k=2, device="cpu", progress=False
    )
    assert rep.frechet_distance < 1e-6 and rep.precision == 1.0 and rep.recall == 1.0
    assert rep.memorised_fraction_features == 1.0  # every "synthetic" image is a training image


def test_cli_fidelity(disc_folder, tmp_path, tiny_weights, capsys):
    syn = _synthetic_with_a_copy(disc_folder, tmp_path)
    rc = main(
        [
            "synth",
            "fidelity",
            "--real",
            str(disc_folder),
            "--synthetic",
            str(syn),
            "--weights",
            str(tiny_weights),
            "--output",
            str(tmp_path / "f"),
            "--input-size",
            "32",
            "--k",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and '"frechet_distance"' in capsys.readouterr().out
    assert (
        main(
            [
                "synth",
                "fidelity",
                "--real",
                str(tmp_path / "missing"),
                "--synthetic",
                str(syn),
                "--weights",
                str(tiny_weights),
                "--output",
                str(tmp_path / "f2"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
