"""Zero-shot and retrieval from the command line on real images, and recall@k against known answers."""

import csv
import json

import numpy as np
import pytest

from tests.helpers import cli
from visionfm.vl.evaluate import recall_at_k


def test_recall_at_k_known_answer():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    pos = np.eye(3, dtype=bool)
    # own items (the diagonal) rank 1st, 2nd and 3rd for queries 0, 1 and 2
    assert recall_at_k(sim, pos, (1, 2, 3)) == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}
    ci = recall_at_k(sim, pos, (1, 3), n_boot=200)["ci95"]
    assert ci["R@3"] == [1.0, 1.0] and 0 <= ci["R@1"][0] <= 1 / 3 <= ci["R@1"][1] <= 1


@pytest.fixture
def run(keratitis_run):
    return keratitis_run[0]


def test_zeroshot_and_retrieve_on_real_images(run, keratitis, csdi_subset, tmp_path, capsys):
    out = tmp_path / "zs"
    assert (
        cli(
            "zeroshot",
            "--run",
            run,
            "--images",
            keratitis,
            "--classes",
            "keratitis",
            "normal cornea",
            "other corneal abnormality",
            "--domain-knowledge",
            "--output",
            out,
            "--n-boot",
            "50",
        )
        == 0
    )
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and rows[0]["true"] == "keratitis"
    probs = np.array([[float(r[c]) for c in r if c.startswith("prob_")] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    m = json.loads((out / "metrics.json").read_text())
    assert {"balanced_accuracy", "kappa", "f1", "auroc", "ci95"} <= set(m)
    assert set(m["ci95"]) == {"balanced_accuracy", "kappa", "f1.macro", "auroc.macro"}
    assert len(m["prompts"]["keratitis"]) > 1  # the expert descriptions joined the ensemble
    assert "balanced_accuracy" in capsys.readouterr().out

    ret = tmp_path / "ret"
    assert (
        cli(
            "retrieve",
            "--run",
            run,
            "--images",
            csdi_subset,
            "--query",
            "a severe cataract",
            "--output",
            ret,
            "--top-k",
            "3",
            "--n-boot",
            "50",
        )
        == 0
    )
    res = json.loads((ret / "metrics.json").read_text())
    assert set(res["text_to_image"]) == {"R@1", "R@5", "R@10", "ci95"} and res["images"] == 40
    with open(ret / "text_to_image.csv", newline="") as f:
        hits = [r for r in csv.DictReader(f) if r["query"] == "a severe cataract"]
    assert [r["rank"] for r in hits] == ["1", "2", "3"]


def test_zeroshot_labels_that_match_no_class(run, keratitis, tmp_path, capsys):
    # sub-folders naming no class at all: an unlabelled folder tree, scored without metrics
    assert (
        cli(
            "zeroshot",
            "--run",
            run,
            "--images",
            keratitis,
            "--classes",
            "glaucoma",
            "normal",
            "--output",
            tmp_path / "z",
            "--n-boot",
            "0",
        )
        == 0
    )
    assert json.loads((tmp_path / "z" / "metrics.json").read_text())["n"] == 12
    one = next(keratitis.glob("Keratitis/*.jpg"))
    assert (
        cli(
            "zeroshot",
            "--run",
            run,
            "--images",
            one,
            "--classes",
            "keratitis",
            "normal cornea",
            "--output",
            tmp_path / "one",
        )
        == 0
    )
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["n"] == 1
    # some sub-folders name a class and one does not: an error naming the label
    assert (
        cli(
            "zeroshot",
            "--run",
            run,
            "--images",
            keratitis,
            "--classes",
            "keratitis",
            "normal cornea",
            "--output",
            tmp_path / "z2",
        )
        == 2
    )
    assert "'Other_cornea_abnormalities' matches none of --classes" in capsys.readouterr().err
