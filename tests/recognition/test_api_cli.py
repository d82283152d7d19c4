"""Head training end to end through the CLI (``main([...])``) on phantom features: runs, eval, predict."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.helpers import cli
from visionfm.cli import main
from visionfm.recognition.predict import predict

FAST = ["--epochs", "15", "--batch-size", "16", "--n-boot", "20", "--device", "cpu"]


def _io(cache: dict, out) -> list:
    """The training and test feature files of a phantom set and the run's output folder."""
    return ["--train", cache["training"], "--test", cache["test"], "--output", out]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dr_run(caches, rec_root):
    run = rec_root / "runs" / "dr_linear"
    c = caches["fundus-dr"]
    assert (
        main(
            [
                "classify",
                "train",
                "--train",
                str(c["training"]),
                "--test",
                str(c["test"]),
                "--ordinal",
                "--output",
                str(run),
                *FAST,
            ]
        )
        == 0
    )
    return run


def test_classify_run_folder(dr_run):
    names = {p.name for p in dr_run.iterdir()}
    assert {
        "head.safetensors",
        "run.yaml",
        "metrics.json",
        "predictions.csv",
        "roc.png",
        "pr.png",
        "reliability.png",
        "confusion.png",
    } <= names
    m = json.loads((dr_run / "metrics.json").read_text())
    assert m["selection"]["metric"] == "auroc" and "carved" in m["selection"]["validation_split"]
    assert m["n"] == {"train": 36, "val": 9, "test": 15}
    t = m["test"]
    assert set(t["auroc"]) == {"0", "1", "2", "3", "4", "macro"} and "kappa_quadratic" in t
    lo, hi = t["ci95"]["auroc.macro"]
    assert lo <= t["auroc"]["macro"] <= hi
    rows = _rows(dr_run / "predictions.csv")
    assert len(rows) == 15 and {"path", "true", "prob_0", "prob_4", "predicted"} <= set(rows[0])
    assert m["encoders"]["Fundus"]["sha256"]


def test_classify_eval_and_predict_agree(dr_run, caches, toy, rec_root, capsys):
    out = rec_root / "runs" / "dr_eval"
    assert (
        cli(
            "classify",
            "eval",
            "--run",
            dr_run,
            "--features",
            caches["fundus-dr"]["test"],
            "--output",
            out,
            "--n-boot",
            "0",
        )
        == 0
    )
    assert "auroc.macro" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    ref = json.loads((dr_run / "metrics.json").read_text())["test"]
    assert m["test"]["auroc"]["macro"] == pytest.approx(ref["auroc"]["macro"])
    # the same from the labelled images: features re-extracted with the run's encoder
    out2 = rec_root / "runs" / "dr_eval_images"
    assert (
        cli(
            "classify",
            "eval",
            "--run",
            dr_run,
            "--data",
            toy["fundus-dr"].root,
            "--split",
            "test",
            "--output",
            out2,
            "--n-boot",
            "0",
        )
        == 0
    )
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["test"]["auroc"]["macro"] == pytest.approx(ref["auroc"]["macro"], abs=1e-6)
    pred = rec_root / "runs" / "dr_pred.csv"
    assert (
        cli("predict", "--run", dr_run, "--images", toy["fundus-dr"].root / "test", "--output", pred, "--device", "cpu")
        == 0
    )
    new = {r["path"]: float(r["prob_2"]) for r in _rows(pred)}
    old = {r["path"].split("/", 1)[1]: float(r["prob_2"]) for r in _rows(dr_run / "predictions.csv")}
    assert new.keys() == old.keys()  # re-extracted features give the same probabilities as the cache
    assert all(abs(new[k] - old[k]) < 1e-4 for k in new)


def test_predict_refuses_another_encoder_or_modality(dr_run, toy, rec_weights_oct, rec_root, capsys):
    out = rec_root / "runs" / "bad.csv"
    with pytest.raises(ValueError, match="refusing .*tiny_oct.safetensors: sha256"):
        predict(dr_run, toy["fundus-dr"].root / "test", out, weights=rec_weights_oct, device="cpu")
    with pytest.raises(ValueError, match="trained on features of \\['Fundus'\\], not OCT"):
        predict(dr_run, toy["fundus-dr"].root / "test", out, modality="OCT", device="cpu")
    assert (
        cli(
            "predict",
            "--run",
            dr_run,
            "--images",
            toy["oct-dme"].root / "test",
            "--output",
            out,
            "--weights",
            rec_weights_oct,
        )
        == 2
    )
    assert "refusing" in capsys.readouterr().err


def test_eval_refuses_features_of_another_encoder(dr_run, caches, capsys):
    assert cli("classify", "eval", "--run", dr_run, "--features", caches["oct-dme"]["test"]) == 2
    assert "not among the modalities" in capsys.readouterr().err


def test_multilabel_official_schema_with_groups(caches, rec_root, toy):
    run = rec_root / "runs" / "ml"
    c = caches["fundus-multilabel"]
    assert cli("multilabel", "train", *_io(c, run), "--head", "mlp", *FAST) == 0
    m = json.loads((run / "metrics.json").read_text())["test"]
    assert len(m["auroc"]) == 14 and m["n_labelled"]["Healthy"] == 12
    rows = _rows(run / "predictions.csv")
    probs = np.array([[float(r[f"prob_{n}"]) for n in ("Healthy", "DR-1", "DR-2", "DR-3", "DR-4")] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-6)  # the DR grade is one softmax group
    assert (run / "roc.png").is_file()


def test_multilabel_two_modalities_missing_labels_and_predict(caches, rec_root, toy, tmp_path):
    schema = tmp_path / "schema.yaml"
    schema.write_text("outputs: [normal, DME, AMD, DR]\ngroups: {OCT finding: [normal, DME, AMD]}\n")
    labels = {}
    for kind, col, fn in (
        ("oct-dme", "OCT finding", lambda r: r["label"]),
        ("fundus-dr", "DR", lambda r: str(int(r["label"] != "0"))),
    ):
        f = tmp_path / f"{kind}.csv"
        rows = _rows(toy[kind].root / "manifest.csv")
        f.write_text(f"path,{col}\n" + "".join(f"{r['path']},{fn(r)}\n" for r in rows))
        labels[kind] = f
    run = rec_root / "runs" / "ml2"
    args = [
        "multilabel",
        "train",
        "--schema",
        str(schema),
        "--output",
        str(run),
        *FAST,
        "--train",
        str(caches["oct-dme"]["training"]),
        str(caches["fundus-dr"]["training"]),
        "--test",
        str(caches["oct-dme"]["test"]),
        str(caches["fundus-dr"]["test"]),
        "--labels",
        str(labels["oct-dme"]),
        str(labels["fundus-dr"]),
        "--test-labels",
        str(labels["oct-dme"]),
        str(labels["fundus-dr"]),
    ]
    assert main(args) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["n_labelled"] == {"normal": 9, "DME": 9, "AMD": 9, "DR": 15}
    assert sorted(m["encoders"]) == ["Fundus", "OCT"]
    with pytest.raises(ValueError, match="several modalities"):
        predict(run, toy["oct-dme"].root / "test", tmp_path / "p.csv", device="cpu")
    out = predict(run, toy["oct-dme"].root / "test", tmp_path / "p.csv", modality="oct", device="cpu")
    assert len(_rows(out)) == 9


def test_regress(caches, rec_root):
    run = rec_root / "runs" / "bio"
    c = caches["fundus-biomarkers"]
    assert (
        cli(
            "regress",
            "train",
            *_io(c, run),
            "--targets",
            "cup_disc_ratio",
            "vessel_density",
            "lesion_count",
            "--val-every",
            "5",
            *FAST,
        )
        == 0
    )
    m = json.loads((run / "metrics.json").read_text())
    assert m["selection"]["metric"] == "mae_std" and m["selection"]["best_epoch"] in (4, 9, 14)
    assert len([ln for ln in (run / "log.jsonl").read_text().splitlines() if "val/mae_std" in ln]) == 3
    assert set(m["test"]["accuracy"]) == {"cup_disc_ratio", "vessel_density", "lesion_count", "macro"}
    assert (run / "scatter.png").is_file() and {"pred_lesion_count", "true_lesion_count"} <= set(
        _rows(run / "predictions.csv")[0]
    )


def _synthetic_forecast(n: int, seed: int):
    """Noise features; conversion decided by the interval alone (longer than ~900 days)."""
    from visionfm.recognition.data import EncoderRef, FeatureTable

    rng = np.random.default_rng(seed)
    t = rng.uniform(90, 1825, n)
    y = np.stack([(t > 900).astype(float), t], 1)
    ref = EncoderRef("w", "0" * 64, "vit_test", {}, "Fundus", [0.5] * 3, [0.5] * 3, 32, 2)
    return FeatureTable(
        rng.normal(size=(n, 16)).astype(np.float32),
        y,
        [f"{i}.png" for i in range(n)],
        np.array(["Fundus"] * n, dtype=object),
        None,
        np.array(["x"] * n, dtype=object),
        {"Fundus": ref},
    )


@pytest.mark.parametrize("encoding, expect_high", [("sinusoidal", True), ("learned", True), ("none", False)])
def test_forecast_head_learns_from_the_interval(encoding, expect_high, tmp_path):
    from visionfm.engine import TrainConfig
    from visionfm.recognition.api import evaluate_table, fit_task
    from visionfm.recognition.config import HeadConfig
    from visionfm.recognition.data import FeatureDataset
    from visionfm.recognition.runs import label_spec, new_task

    cfg = HeadConfig(task="forecast", time_encoding=encoding)
    train, val, test = _synthetic_forecast(160, 0), _synthetic_forecast(60, 1), _synthetic_forecast(100, 2)
    task, _ = new_task(cfg, train, label_spec(cfg))
    loop = TrainConfig(output_dir=str(tmp_path), epochs=40, batch_size=32, lr=0.02, device="cpu", progress=False)
    fit_task(task, FeatureDataset(train, "forecast"), FeatureDataset(val, "forecast"), loop)
    auc = evaluate_table(task, test, None, n_boot=0)["auroc"]["macro"]
    assert (auc > 0.9) if expect_high else (auc < 0.75)


def test_forecast_cli_and_predict_on_phantoms(caches, rec_root, toy, tmp_path):
    c = caches["glaucoma-forecast"]
    run = rec_root / "runs" / "fc"
    assert cli("forecast", "train", *_io(c, run), "--balance", "focal", *FAST) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert "f1" in m["test"] and m["selection"]["metric"] == "auroc"
    out = predict(run, toy["glaucoma-forecast"].root / "manifest.csv", tmp_path / "f.csv", device="cpu")
    assert {"prob_converts", "prob_no conversion"} <= set(_rows(out)[0])
    with pytest.raises(ValueError, match="interval"):
        predict(run, toy["glaucoma-forecast"].root / "test", tmp_path / "g.csv", device="cpu")


def test_fewshot_draws_and_kfold(caches, rec_root, capsys):
    c = caches["fundus-dr"]
    out = rec_root / "runs" / "fs"
    assert cli("fewshot", *_io(c, out), "--shots", "1", "3", "--draws", "2", "--steps", "10", "--device", "cpu") == 0
    assert "1-shot" in capsys.readouterr().out
    r = json.loads((out / "fewshot.json").read_text())
    assert [(d["k"], d["n_train"]) for d in r["draws"]] == [(1, 5)] * 2 + [(3, 15)] * 2
    assert r["summary"]["3"]["auroc.macro"]["n"] == 2 and r["summary"]["3"]["auroc.macro"]["sd"] >= 0
    assert (out / "fewshot.png").is_file() and (out / "fewshot.csv").is_file()
    assert not list(out.glob("_work*"))
    # the same seed gives the same draws and numbers
    out2 = rec_root / "runs" / "fs2"
    assert cli("fewshot", *_io(c, out2), "--shots", "1", "--draws", "1", "--steps", "10", "--device", "cpu") == 0
    r2 = json.loads((out2 / "fewshot.json").read_text())
    assert [d["auroc.macro"] for d in r2["draws"]] == pytest.approx([r["draws"][0]["auroc.macro"]])
    out3 = rec_root / "runs" / "kf"
    assert (
        cli(
            "fewshot",
            "--kfold",
            "3",
            "--train",
            c["training"],
            "--max-steps",
            "10",
            "--n-boot",
            "10",
            "--output",
            out3,
            "--device",
            "cpu",
        )
        == 0
    )
    k = json.loads((out3 / "kfold.json").read_text())
    assert sum(f["n_test"] for f in k["folds"]) == 45 and len(_rows(out3 / "predictions.csv")) == 45
    assert "ci95" in k["pooled_out_of_fold"]
