"""The service decodes JPEGs as the served run's training features were decoded: draft-decoded (a DCT-domain
downscale, ``extract --jpeg-draft``, the default of ``--precision auto``) or fully, so its answers on a real OCT
B-scan JPEG equal ``visionfm predict``'s on the same file."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import DATA, cli, require
from visionfm.serve import ServeConfig, start_server

OCT_DME = DATA / "OCT-fundus-DME-DR"


def _oct_jpegs() -> dict[str, list[Path]]:
    """OCT B-scan JPEGs (1408 x 573) of the manifest by DME label: 5 per class."""
    root = require(OCT_DME)
    with open(root / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == "OCT"]
    return {c: [root / r["path"] for r in rows if r["DME"] == lab][:5] for c, lab in (("dme", "1"), ("healthy", "0"))}


def _run(root: Path, weights: Path, name: str, draft: bool) -> Path:
    """A DME head on the tiny encoder's 32-px features of 3 + 3 B-scans (2 + 2 to test), JPEGs drafted or not."""
    feats = {}
    for split, part in (("training", slice(0, 3)), ("test", slice(3, 5))):
        data = root / "oct" / split
        for c, paths in _oct_jpegs().items():
            (data / c).mkdir(parents=True, exist_ok=True)
            for p in paths[part]:
                shutil.copyfile(p, data / c / p.name)
        feats[split] = root / "features" / f"{name}_{split}.safetensors"
        args = ["extract", "--weights", weights, "--data", data, "--layout", "imagenet", "--output", feats[split]]
        flag = "--jpeg-draft" if draft else "--no-jpeg-draft"  # fp32 either way: exact features to compare with
        rc = cli(*args, "--precision", "fp32", flag, "--input-size", 32, "--n-last-blocks", 2, "--num-workers", 0)
        assert rc == 0
    run = root / "runs" / name
    argv = ["classify", "train", "--train", feats["training"], "--test", feats["test"], "--output", run]
    assert cli(*argv, "--epochs", 3, "--batch-size", 4, "--n-boot", 0, "--device", "cpu") == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, serve_weights) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("jpeg_draft")
    return {"drafted": _run(root, serve_weights, "drafted", True), "full": _run(root, serve_weights, "full", False)}


@pytest.fixture(scope="module")
def client(runs):
    srv = start_server(ServeConfig(runs=[str(runs["drafted"]), str(runs["full"])], port=0, max_batch=2))
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c
    srv.stop()


def test_cards_record_the_runs_jpeg_decoding(runs):
    from visionfm.export import load_model

    drafted, full = (load_model(runs[k]).card for k in ("drafted", "full"))
    assert drafted.jpeg_draft and drafted.draft_side() == 32
    assert not full.jpeg_draft and full.draft_side() is None
    assert load_model(runs["drafted"], encoder_only=True).card.draft_side() == 32  # embeddings follow the run too


def test_draft_decoding_changes_the_model_input():
    """The draft decode of a B-scan is smaller and, resized to 32 px, observably different from the full decode."""
    from visionfm.data import Preprocess
    from visionfm.data.images import decode_image

    data = _oct_jpegs()["dme"][4].read_bytes()
    full, draft = decode_image(data, "b.jpg"), decode_image(data, "b.jpg", draft=32)
    assert full.shape == (573, 1408, 3) and draft.shape == (72, 176, 3)  # 1/8 in the DCT domain, both sides >= 32
    prep = Preprocess(32, [0.5] * 3, [0.5] * 3, "bilinear")
    assert float((prep(full) - prep(draft)).abs().max()) > 1e-2
    png = decode_image(_png_bytes(full), "b.png", draft=32)  # draft is for JPEGs only
    assert np.array_equal(png, full)


def _row(path: Path) -> dict[str, str]:
    """The one row of a predictions CSV."""
    with open(path, newline="") as f:
        (row,) = list(csv.DictReader(f))
    return row


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["drafted", "full"])
def test_served_jpeg_matches_the_predict_command(client, runs, name, tmp_path):
    """A real OCT JPEG through the service gives the probabilities ``visionfm predict`` writes, for a run whose
    features were draft-decoded and for one decoded fully; the answer names the file's own size."""
    from visionfm.recognition.predict import predict_paths

    path = _oct_jpegs()["dme"][4]
    r = client.post("v1/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")}, data={"model": name})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert (res["width"], res["height"]) == (1408, 573)
    model = {m["name"]: m for m in client.get("v1/models").json()["models"]}[name]
    assert model["preprocessing"]["jpeg_draft"] is (name == "drafted")
    ref = _row(predict_paths(runs[name], [path], tmp_path / "p.csv", device="cpu"))
    for cls, p in res["probabilities"].items():
        assert p == pytest.approx(float(ref[f"prob_{cls}"]), abs=1e-5)


def test_onnx_card_and_onnx_predict_follow_the_draft(runs, tmp_path):
    """The exported card keeps ``jpeg_draft`` (sidecar JSON round trip) and ``predict --backend onnxruntime``
    decodes the JPEG as ``predict`` does."""
    from visionfm.export import export_onnx, load_onnx
    from visionfm.export.predict import predict_onnx
    from visionfm.recognition.predict import predict_paths

    onnx = tmp_path / "drafted.onnx"
    export_onnx(runs["drafted"], onnx, n_check=1)
    assert load_onnx(onnx).card.jpeg_draft is True
    path = _oct_jpegs()["healthy"][4]
    (tmp_path / "imgs").mkdir()
    shutil.copyfile(path, tmp_path / "imgs" / path.name)
    got = _row(predict_onnx(runs["drafted"], tmp_path / "imgs", tmp_path / "onnx.csv", onnx))
    ref = _row(predict_paths(runs["drafted"], [tmp_path / "imgs" / path.name], tmp_path / "torch.csv", device="cpu"))
    probs = [k for k in ref if k.startswith("prob_")]
    assert probs and all(float(got[k]) == pytest.approx(float(ref[k]), abs=1e-5) for k in probs)
