"""ONNX export through the CLI: parity with PyTorch (checked at export, re-checked here under ONNX Runtime on real
fundus images and other batch sizes), the sidecar's identity and checksums, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import DATA, require
from visionfm.cli import main
from visionfm.export import load_model, load_onnx, preprocess_image


def _export(source, out, *extra) -> int:
    return main(["export", "--run", str(source), "--format", "onnx", "--output", str(out), *extra])


def _parity(onnx_path, source, images, **load_kw) -> float:
    """max |ORT - torch| on ``images`` in batches of 1 and all."""
    ort_model = load_onnx(onnx_path)
    torch_model = load_model(source, **load_kw)
    x = np.stack([preprocess_image(torch_model.card, im) for im in images])
    worst = 0.0
    for batch in (x[:1], x):
        inputs = {"image": batch}
        with torch.no_grad():
            ref = torch_model.module(torch.from_numpy(batch))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for r, g in zip(ref, ort_model.run(inputs)):
            assert g.shape == tuple(r.shape)
            worst = max(worst, float(np.abs(r.numpy() - g).max()))
    return worst


def test_export_run_checked_on_real_fundus_images(dr_run, tmp_path, capsys):
    from visionfm.data import read_image

    drive = require(DATA / "DRIVE" / "test" / "images")
    out = tmp_path / "dr.onnx"
    assert _export(dr_run, out, "--images", str(drive)) == 0
    printed = capsys.readouterr().out
    assert "max |onnx - torch| =" in printed and "sidecar" in printed
    side = json.loads((tmp_path / "dr.onnx.json").read_text())
    assert side["check"]["max_abs_error"] <= 1e-4 and len(side["check"]["images"]) == 4
    assert all("DRIVE" in p for p in side["check"]["images"])
    assert side["model"]["kind"] == "classify" and side["inputs"] == ["image"] and side["outputs"] == ["scores"]
    run_yaml = (dr_run / "run.yaml").read_text()
    assert side["model"]["encoder_sha256"] in run_yaml and len(side["source_sha256"]) == 2
    assert side["preprocessing"]["input_size"] == 32 and side["opset"] >= 17
    images = [read_image(p) for p in sorted(drive.glob("*.png"))[4:9]]  # other images, batch of 5
    assert _parity(out, dr_run, images) <= 1e-4


def test_export_encoder_alone_and_dense_run(dr_run, seg_run, serve_weights, tmp_path):
    from visionfm.toydata.writers import generate

    imgs = [generate("fundus-dr", i, seed=1, size=48)[0].image for i in range(3)]
    enc = tmp_path / "enc.onnx"
    assert _export(dr_run, enc, "--encoder-only") == 0
    side = json.loads((tmp_path / "enc.onnx.json").read_text())
    assert side["outputs"] == ["cls", "patch_mean"] and side["model"]["kind"] == "encoder"
    assert _parity(enc, dr_run, imgs, encoder_only=True) <= 1e-4
    w = tmp_path / "weights.onnx"
    assert _export(serve_weights, w) == 0
    assert _parity(w, serve_weights, imgs) <= 1e-4
    seg = tmp_path / "seg.onnx"
    assert _export(seg_run, seg) == 0
    assert json.loads((tmp_path / "seg.onnx.json").read_text())["outputs"] == ["logits"]
    assert _parity(seg, seg_run, imgs) <= 1e-4


def test_export_refusals_write_nothing(dr_run, tmp_path, capsys):
    assert _export(dr_run, tmp_path / "x.pt") == 2
    assert "end in .onnx" in capsys.readouterr().err
    assert _export(dr_run, tmp_path / "y.onnx", "--tolerance", "-1") == 2  # no export can pass
    assert "differs from PyTorch" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert _export(tmp_path / "missing", tmp_path / "z.onnx") == 2
    assert _export(dr_run, tmp_path / "z.onnx", "--opset", "13") == 2


def test_load_onnx_refuses_a_changed_file(dr_run, tmp_path):
    out = tmp_path / "dr.onnx"
    assert _export(dr_run, out) == 0
    out.write_bytes(out.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="SHA-256 differs"):
        load_onnx(out)
    (tmp_path / "dr.onnx.json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_onnx(out)


def test_predict_backend_onnxruntime_writes_what_torch_writes(dr_run, forecast_run, serve_root, tmp_path):
    """``visionfm predict --backend onnxruntime`` (exported on the fly, or from a file) gives the torch CSV."""
    import csv

    def rows(path):
        with open(path, newline="") as f:
            return {r["path"]: r for r in csv.DictReader(f)}

    images = serve_root / "toy" / "fundus-dr" / "test"
    base = ["predict", "--run", str(dr_run), "--images", str(images)]
    assert main([*base, "--output", str(tmp_path / "t.csv"), "--device", "cpu"]) == 0
    assert main([*base, "--output", str(tmp_path / "o.csv"), "--backend", "onnxruntime"]) == 0
    onnx = tmp_path / "dr.onnx"
    assert _export(dr_run, onnx) == 0
    assert main([*base, "--output", str(tmp_path / "f.csv"), "--backend", "onnxruntime", "--onnx", str(onnx)]) == 0
    ref, got, from_file = rows(tmp_path / "t.csv"), rows(tmp_path / "o.csv"), rows(tmp_path / "f.csv")
    assert ref.keys() == got.keys() == from_file.keys() and len(ref) == 5
    for k, r in ref.items():
        assert got[k]["predicted"] == r["predicted"]
        for col in (c for c in r if c.startswith("prob_")):
            assert float(got[k][col]) == pytest.approx(float(r[col]), abs=1e-4)
            assert float(from_file[k][col]) == pytest.approx(float(r[col]), abs=1e-4)
    other = tmp_path / "forecast.onnx"  # an export of another run is refused
    assert _export(forecast_run, other) == 0
    assert main([*base, "--output", str(tmp_path / "x.csv"), "--backend", "onnxruntime", "--onnx", str(other)]) == 2
