"""Real images from ../shared/data (skipped when absent): the quick recognition benchmark end to end, patient-level
splits of the OCT manifest, and predict on real OCT B-scans."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.helpers import DATA, require
from visionfm.cli import main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_split_cli_is_patient_level(tmp_path, capsys):
    manifest = require(DATA / "OCT-fundus-DME-DR") / "manifest.csv"
    assert (
        main(
            [
                "split",
                "--manifest",
                str(manifest),
                "--output",
                str(tmp_path / "oct"),
                "--group-column",
                "patient",
                "--stratify-column",
                "DME",
                "--where",
                "modality=OCT",
                "--test-fraction",
                "0.3",
            ]
        )
        == 0
    )
    train, test = _rows(tmp_path / "oct_train.csv"), _rows(tmp_path / "oct_test.csv")
    assert len(train) + len(test) == 120 and all(r["modality"] == "OCT" for r in train + test)
    assert not {r["patient"] for r in train} & {r["patient"] for r in test}
    assert 0.2 < len(test) / 120 < 0.4 and all(r["path"].startswith("/") for r in test)
    assert main(["split", "--manifest", str(manifest), "--output", str(tmp_path / "x"), "--where", "eye"]) == 2
    assert "COLUMN=VALUE" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from visionfm.recognition.benchmark import benchmark

    require(DATA / "retinamnist")
    require(DATA / "OCT-fundus-DME-DR")
    out = tmp_path_factory.mktemp("rec_bench")
    return out, benchmark(DATA, out, None, quick=True)


def test_quick_benchmark_rows(quick):
    out, rows = quick
    keys = {"task", "dataset", "method", "encoder", "metric", "value", "published", "notes"}
    assert rows and all(set(r) == keys for r in rows)
    methods = {r["method"] for r in rows}
    assert any("linear head on frozen" in m for m in methods) and any("mlp head" in m for m in methods)
    assert any("fine-tune" in m for m in methods) and any("1-shot" in m for m in methods)
    assert any("patient-level" in m for m in methods) and any("OCT test images only" in m for m in methods)
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"].startswith(("auroc", "accuracy")))
    assert all("MedMNIST v2" in r["published"] for r in rows if "frozen" in r["method"])


def test_quick_benchmark_masks_missing_dr_labels_and_splits_by_patient(quick):
    import json

    out, _ = quick
    m = json.loads((out / "multilabel" / "metrics.json").read_text())
    test_rows = _rows(out / "splits" / "mm_test.csv")
    n_dr_known = sum(r["DR"].strip() != "-" for r in test_rows)
    assert m["test"]["n_labelled"]["NPDR"] == n_dr_known < len(test_rows) == m["test"]["n_labelled"]["DME"]
    assert sorted(m["encoders"]) == ["Fundus", "OCT"]
    train = {r["patient"] for r in _rows(out / "splits" / "mm_train.csv")}
    assert not train & {r["patient"] for r in test_rows}


def test_predict_on_real_oct_images(quick, tmp_path):
    from visionfm.recognition.predict import predict

    out, _ = quick
    test = out / "splits" / "oct_test.csv"
    pred = predict(out / "oct_dme_linear", test, tmp_path / "p.csv", device="cpu")
    rows = _rows(pred)
    assert len(rows) == len(_rows(test)) and {"prob_no DME", "prob_DME", "predicted"} <= set(rows[0])
    p = np.array([[float(r["prob_no DME"]), float(r["prob_DME"])] for r in rows])
    assert np.allclose(p.sum(1), 1.0)
    with pytest.raises(ValueError, match="not OCT|not Fundus"):
        predict(out / "oct_dme_linear", test, tmp_path / "q.csv", modality="Fundus", device="cpu")
