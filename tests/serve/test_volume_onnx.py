"""OCT volume classifiers under ONNX Runtime: one exported graph per run (one volume's B-scans -> volume logits and
per-B-scan relevance, the run's own MIL head traced), checked at export on real OCT B-scans, equal to PyTorch for
every pooling, applied by ``volumes predict --backend onnxruntime`` (and ``predict``) and served with
``serve --backend onnxruntime``."""

from __future__ import annotations

import csv
import json

import httpx
import numpy as np
import pytest
import torch

from tests.helpers import DATA, cli, require
from visionfm.serve import ServeConfig, start_server

OCT = DATA / "OCT-fundus-DME-DR" / "OCT"


def _rows(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["volume"]: r for r in csv.DictReader(f)}


def _same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for v in a:
        probs = [k for k in a[v] if k.startswith("prob_")]
        assert [float(a[v][k]) for k in probs] == pytest.approx([float(b[v][k]) for k in probs], abs=1e-4)
        for k in ("prediction", "driving_bscan", "driving_bscan_name", "laterality", "n_bscans"):
            assert a[v][k] == b[v][k], (v, k)


@pytest.fixture(scope="module")
def volume_onnx(volume_run, tmp_path_factory):
    """The fixture's mean-pooling classifier exported with real OCT B-scans (DME dataset) as the check volume."""
    out = tmp_path_factory.mktemp("volonnx") / "oct_volumes.onnx"
    assert cli("export", "--run", volume_run, "--format", "onnx", "--output", out, "--images", require(OCT)) == 0
    return out


def test_export_checks_real_bscans_and_matches_torch_for_every_pooling(volume_onnx, volume_run, serve_root, tmp_path):
    from visionfm.export import load_model, load_onnx, preprocess_image
    from visionfm.volumes import read_volume

    side = json.loads(volume_onnx.with_name("oct_volumes.onnx.json").read_text())
    assert side["model"]["kind"] == "volume" and side["outputs"] == ["logits", "relevance"]
    assert side["check"]["max_abs_error"] <= 1e-4 and all("OCT" in p for p in side["check"]["images"])
    assert side["dynamic_axes"] == {"image": {"0": "bscans"}, "relevance": {"1": "bscans"}}
    vol = read_volume(serve_root / "volumes" / "lesion" / "eye3.dcm")
    runs = {"mean": (volume_run, volume_onnx)}
    for pooling in ("max", "attention"):  # the other heads, trained on the fixture's features and exported
        run = tmp_path / pooling
        feats = serve_root / "features" / "volumes.safetensors"
        train = ("volumes", "train", "--features", feats, "--pooling", pooling, "--output", run, "--epochs", 2)
        assert cli(*train, "--batch-size", 4, "--no-progress") == 0
        assert cli("export", "--run", run, "--output", tmp_path / f"{pooling}.onnx") == 0
        runs[pooling] = (run, tmp_path / f"{pooling}.onnx")
    for pooling, (run, onnx) in runs.items():
        ref, ort = load_model(run), load_onnx(onnx)
        x = np.stack([preprocess_image(ref.card, b) for b in vol.bscans])
        for n in (len(x), 1):  # the dynamic B-scan axis: the whole volume and a one-B-scan volume
            with torch.no_grad():
                want = [t.numpy() for t in ref.module(torch.from_numpy(x[:n]))]
            got = ort.run({"image": x[:n]})
            assert [g.shape for g in got] == [(1, len(ref.card.names)), (1, n)]
            for w, g in zip(want, got):
                np.testing.assert_allclose(g, w, atol=1e-4, err_msg=pooling)
            bag = ref.module.encoder(torch.from_numpy(x[:n]), n_last_blocks=ref.card.n_last_blocks)
            feats = bag.cls_concat() if ref.card.feature == "cls" else bag.patch_tokens.mean(1)
            lib = ref.volume_head.predict_bag(feats.detach().numpy())  # the library's own path, same decision
            assert ref.volume_head.decide(got[0][0], got[1][0])["driving_bscan"] == lib["driving_bscan"]


def _predict(run, data, out, *extra) -> int:
    return cli("volumes", "predict", "--run", run, "--data", data, "--csv", out, *extra)


def test_volumes_predict_onnxruntime_equals_torch(volume_onnx, volume_run, serve_root, serve_weights, tmp_path):
    data = serve_root / "volumes"
    out = {b: tmp_path / f"{b}.csv" for b in ("torch", "ort", "ort_fresh", "predict", "predict_torch")}
    assert _predict(volume_run, data, out["torch"], "--weights", serve_weights) == 0
    assert _predict(volume_run, data, out["ort"], "--backend", "onnxruntime", "--onnx", volume_onnx) == 0
    assert _predict(volume_run, data, out["ort_fresh"], "--backend", "onnxruntime") == 0  # exported now, checked
    ort = ("--backend", "onnxruntime", "--onnx", volume_onnx)
    assert cli("predict", "--run", volume_run, "--images", data, "--output", out["predict"], *ort) == 0
    assert cli("predict", "--run", volume_run, "--images", data, "--output", out["predict_torch"]) == 0  # run's encoder
    torch_rows = _rows(out["torch"])
    assert len(torch_rows) == 8 and {r["n_bscans"] for r in torch_rows.values()} == {"3"}
    for b in ("ort", "ort_fresh", "predict", "predict_torch"):
        _same_rows(_rows(out[b]), torch_rows)
    feats = serve_root / "features" / "volumes.safetensors"  # cached features need no encoder: refused, one line
    cmd = ("volumes", "predict", "--run", volume_run, "--features", feats, "--csv", tmp_path / "x.csv")
    assert cli(*cmd, "--backend", "onnxruntime") == 2


def test_volume_served_with_onnxruntime(volume_onnx, volume_run, serve_root):
    dcm = serve_root / "volumes" / "lesion" / "eye3.dcm"
    answers = {}
    for backend, onnx in (("torch", []), ("onnxruntime", [str(volume_onnx)]), ("onnxruntime", [])):
        srv = start_server(ServeConfig(runs=[str(volume_run)], port=0, backend=backend, onnx=onnx))
        try:
            r = httpx.post(srv.url + "v1/predict", files={"file": (dcm.name, dcm.read_bytes())}, timeout=120)
            model = httpx.get(srv.url + "v1/models").json()["models"][0]
        finally:
            srv.stop()
        assert r.status_code == 200, r.text
        assert r.json()["model"]["backend"] == backend and model["kind"] == "volume"
        assert (model["onnx"] or "").endswith(".onnx") == (backend == "onnxruntime")
        answers[(backend, bool(onnx))] = r.json()["results"][0]
    ref = answers[("torch", False)]
    for key, got in answers.items():
        assert got.keys() == ref.keys(), key
        assert got["n_bscans"] == 3 and got["dicom"]["laterality"] == "R"
        assert got["prediction"] == ref["prediction"] and got["driving_bscan"] == ref["driving_bscan"]
        assert list(got["probabilities"].values()) == pytest.approx(list(ref["probabilities"].values()), abs=1e-4)
        assert got["relevance"] == pytest.approx(ref["relevance"], abs=1e-4)
