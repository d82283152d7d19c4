"""Plots are written and non-empty; metrics.json and prediction CSVs round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionfm.evaluation import (
    classification_metrics,
    plot_confusion,
    plot_pr,
    plot_reliability,
    plot_roc,
    read_predictions,
    write_predictions,
    write_results,
)

NAMES = ["normal", "mild", "severe"]


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    p = rng.dirichlet(np.ones(3), n) + np.eye(3)[y]
    return y, p / p.sum(1, keepdims=True)


def _is_png(path) -> bool:
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"))
        return im.format == "PNG" and min(im.size) > 100 and len(np.unique(grey)) > 10


def test_plots_are_written(tmp_path):
    y, p = _data()
    cm = classification_metrics(y, p, NAMES)["confusion_matrix"]
    paths = [
        plot_roc(y, p, NAMES, tmp_path / "sub" / "roc.png"),
        plot_pr(y, p, NAMES, tmp_path / "pr.png"),
        plot_reliability(y, p, tmp_path / "rel.png"),
        plot_confusion(cm, NAMES, tmp_path / "cm.png"),
    ]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 5000 and _is_png(path)


def test_multilabel_and_binary_curves(tmp_path):
    y = np.array([[1, 0], [0, np.nan], [1, 1], [0, np.nan], [0, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.9], [0.6, 0.8], [0.3, 0.5], [0.4, 0.7]])
    assert _is_png(plot_roc(y, p, ["dr", "dme"], tmp_path / "ml_roc.png"))
    assert _is_png(
        plot_pr(
            np.array([0, 1, 1, 0]),
            np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]]),
            ["neg", "pos"],
            tmp_path / "bin_pr.png",
        )
    )
    with pytest.raises(ValueError, match="cm must be a square"):
        plot_confusion(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")


def test_write_results_nan_as_null_and_config(tmp_path):
    metrics = {"auroc": {"a": np.float32(0.5), "b": float("nan")}, "cm": np.eye(2, dtype=np.int64), "n": np.int64(4)}
    path = write_results(tmp_path / "run", metrics, config={"lr": 1e-3, "seed": 0})
    data = json.loads(path.read_text())
    assert path.name == "metrics.json"
    assert data == {"auroc": {"a": 0.5, "b": None}, "cm": [[1, 0], [0, 1]], "n": 4}
    assert "lr: 0.001" in (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ValueError, match="metrics: cannot write"):
        write_results(tmp_path, {"x": object()})


def test_predictions_multiclass_round_trip(tmp_path):
    y, p = _data()
    paths = [f"images/img_{i}, left.png" for i in range(len(y))]  # a comma in a path survives CSV quoting
    csv_path = write_predictions(tmp_path / "pred.csv", paths, p, NAMES, y_true=y)
    header = csv_path.read_text().splitlines()[0]
    assert header == "path,true,prob_normal,prob_mild,prob_severe,predicted"
    back = read_predictions(csv_path)
    assert back.kind == "multiclass" and back.paths == paths and back.names == NAMES
    assert np.array_equal(back.probs, p) and np.array_equal(back.y_true, y)
    assert back.predicted == [NAMES[i] for i in p.argmax(1)]
    unlabelled = read_predictions(write_predictions(tmp_path / "new.csv", paths, p, NAMES))
    assert unlabelled.y_true is None and np.array_equal(unlabelled.probs, p)


def test_predictions_multilabel_and_regression_round_trip(tmp_path):
    y = np.array([[1, 0], [0, np.nan], [np.nan, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.9], [0.6, 0.8]])
    back = read_predictions(write_predictions(tmp_path / "ml.csv", ["a", "b", "c"], p, ["dr", "dme"], y_true=y))
    assert back.kind == "multilabel" and np.array_equal(back.y_true, y, equal_nan=True)
    assert back.predicted == ["dr", "dme", "dr;dme"]
    t, q = np.array([[5.1, 140.0], [np.nan, 120.5]]), np.array([[4.9, 133.25], [5.3, 125.0]])
    reg = read_predictions(
        write_predictions(tmp_path / "reg.csv", ["a", "b"], q, ["hgb", "glucose"], t, kind="regression")
    )
    assert reg.kind == "regression" and np.array_equal(reg.probs, q) and np.array_equal(reg.y_true, t, equal_nan=True)


def test_predictions_bad_input(tmp_path):
    y, p = _data(6)
    with pytest.raises(ValueError, match="paths has 5 entries"):
        write_predictions(tmp_path / "x.csv", ["a"] * 5, p, NAMES)
    with pytest.raises(ValueError, match="y_true contains class index 7"):
        write_predictions(tmp_path / "x.csv", ["a"] * 6, p, NAMES, y_true=np.array([0, 1, 2, 7, 0, 1]))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,true,prob_a,prob_b,predicted\nx.png,a,0.2,0.8,b\ny.png,zzz,0.5,0.5,a\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: unknown class name 'zzz'"):
        read_predictions(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_predictions(tmp_path / "nope.csv")
