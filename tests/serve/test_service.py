"""The service end to end: a real uvicorn server on a loopback port, called over HTTP with httpx.

Answers are checked against the library's own predictors on the same files (recognition ``predict``, ``segment
predict``, ``landmark predict``), bad requests against their 4xx codes, and the server against staying alive."""

from __future__ import annotations

import base64
import csv
import io
import struct
import zlib

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import DATA, require
from visionfm.serve import ServeConfig, start_server

FUNDUS = DATA / "DRIVE" / "test" / "images"


@pytest.fixture(scope="module")
def server(dr_run, forecast_run, seg_run, landmark_run):
    srv = start_server(
        ServeConfig(
            runs=[str(dr_run), str(forecast_run), str(seg_run), str(landmark_run)],
            port=0,
            max_batch=4,
            max_pixels=2_000_000,
        )
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _phantom(i: int = 0, size: int = 64) -> np.ndarray:
    from visionfm.toydata.writers import generate

    return generate("fundus-dr", i, seed=3, size=size)[0].image


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_models_health_and_identity(client, dr_run):
    assert client.get("healthz").json()["status"] == "ok"
    models = {m["name"]: m for m in client.get("v1/models").json()["models"]}
    assert {k: m["kind"] for k, m in models.items()} == {
        "dr": "classify",
        "forecast": "forecast",
        "vessels": "segment",
        "line": "landmark",
    }
    info = yaml.safe_load((dr_run / "run.yaml").read_text())
    assert models["dr"]["encoder_sha256"] == info["encoders"]["Fundus"]["sha256"]
    assert models["dr"]["outputs"] == info["names"] and models["dr"]["preprocessing"]["input_size"] == 32


def test_predict_real_fundus_matches_the_predict_command(client, dr_run, tmp_path):
    """A DRIVE fundus photograph through the service gives the probabilities ``visionfm predict`` writes."""
    from visionfm.recognition.predict import predict_paths

    paths = sorted(require(FUNDUS).glob("*.png"))[:2]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    r = client.post("v1/predict", files=files, data={"model": "dr"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "dr" and len(body["results"]) == 2
    ref = {
        row["path"].rsplit("/", 1)[-1]: row
        for row in _rows(predict_paths(dr_run, paths, tmp_path / "p.csv", device="cpu"))
    }
    for res in body["results"]:
        probs = res["probabilities"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert (res["width"], res["height"]) == (565, 584)
        assert res["prediction"] == max(probs, key=probs.get)
        for name, p in probs.items():
            assert p == pytest.approx(float(ref[res["filename"]][f"prob_{name}"]), abs=1e-4)


def test_dicom_upload_answers_like_the_same_pixels_as_png(client):
    from tests.data.dicom_factory import make_dicom

    arr = _phantom(1)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        dcm = make_dicom(
            Path(tmp) / "eye.dcm", arr, photometric="RGB", laterality="L", pixel_spacing=[0.01, 0.012]
        ).read_bytes()
    a = client.post("v1/predict", files={"file": ("eye.dcm", dcm, "application/dicom")}, data={"model": "dr"})
    b = client.post("v1/predict", files={"file": ("eye.png", _png(arr))}, data={"model": "dr"})
    assert a.status_code == 200 and b.status_code == 200, a.text
    pa, pb = a.json()["results"][0]["probabilities"], b.json()["results"][0]["probabilities"]
    assert pa == pytest.approx(pb, abs=1e-6)
    facts = a.json()["results"][0]["dicom"]  # the eye and the pixel size travel with the answer
    assert facts["laterality"] == "L" and facts["pixel_spacing"] == [0.01, 0.012] and facts["modality"] == "OP"
    assert "dicom" not in b.json()["results"][0]
    unnamed = client.post("v1/predict", files={"file": ("noext", dcm)}, data={"model": "dr"})  # by content
    assert unnamed.status_code == 200


def test_forecast_needs_an_interval(client):
    img = _png(_phantom(2))
    r = client.post("v1/predict", files={"file": ("a.png", img)}, data={"model": "forecast"})
    assert r.status_code == 400 and "interval_days" in r.json()["detail"]
    near = client.post("v1/predict", files={"file": ("a.png", img)}, data={"model": "forecast", "interval_days": 30})
    far = client.post("v1/predict", files={"file": ("a.png", img)}, data={"model": "forecast", "interval_days": 900})
    p1, p2 = (x.json()["results"][0]["probabilities"] for x in (near, far))
    assert set(p1) == {"no conversion", "converts"} and p1 != p2  # the interval reaches the head


def test_segment_matches_segment_predict(client, seg_run, serve_root, tmp_path):
    from visionfm.dense import predict_segmentation

    img_path = serve_root / "drive" / "training" / "images" / "21_training.png"
    files = {"file": (img_path.name, img_path.read_bytes())}
    r = client.post("v1/segment", files=files, data={"model": "vessels"})
    assert r.status_code == 200, r.text
    body = r.json()
    mask = np.array(Image.open(io.BytesIO(base64.b64decode(body["masks"]["vessel"]))))
    predict_segmentation(
        seg_run, serve_root / "drive", tmp_path / "pred", split="training", device="cpu", evaluate=False
    )
    ref = np.array(Image.open(tmp_path / "pred" / "21_training.png"))
    assert mask.shape == ref.shape == (40, 36)
    fov = np.array(Image.open(serve_root / "drive" / "training" / "mask" / "21_training_mask.gif")) > 0
    assert np.array_equal(mask[fov] > 0, ref[fov] > 0)  # segment predict also blanks outside the FOV
    assert body["pixel_fraction"]["vessel"] == pytest.approx((mask > 0).mean())
    png = client.post("v1/segment?format=png&class=vessel", files=files, data={"model": "vessels"})
    assert png.headers["content-type"] == "image/png" and np.array_equal(
        np.array(Image.open(io.BytesIO(png.content))), mask
    )
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay"]))).size == (36, 40)


def test_landmarks_match_landmark_predict(client, landmark_run, serve_root, tmp_path):
    from visionfm.dense import predict_landmark

    images = serve_root / "drive" / "training" / "images"
    predict_landmark(landmark_run, images, tmp_path / "lp", device="cpu")
    ref = {r["image"]: r for r in _rows(tmp_path / "lp" / "landmarks.csv")}
    p = images / "22_training.png"
    r = client.post("v1/predict", files={"file": (p.name, p.read_bytes())}, data={"model": "line"})
    assert r.status_code == 200, r.text
    ((x, y),) = r.json()["results"][0]["landmarks"].values()
    assert 0 <= x < 36 and 0 <= y < 40
    row = ref[p.name]
    assert (x, y) == pytest.approx((float(row["line_x"]), float(row["line_y"])), abs=1e-2)


def test_explain_returns_a_heat_map_over_the_image(client):
    p = sorted(require(FUNDUS).glob("*.png"))[0]
    r = client.post("v1/explain", files={"file": (p.name, p.read_bytes())}, data={"model": "dr"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    over = np.array(Image.open(io.BytesIO(r.content)))
    assert over.shape == (512, 495, 3)  # the 565x584 photograph scaled to a 512-px longer side
    j = client.post(
        "v1/explain?format=json&map=rollout", files={"file": (p.name, p.read_bytes())}, data={"model": "dr"}
    ).json()
    assert j["grid"] == [4, 4] and j["map"] == "rollout"
    img = np.array(Image.open(io.BytesIO(base64.b64decode(j["image"]))))
    assert img.shape == over.shape and not np.array_equal(img, over)


def _png_header(w: int, h: int) -> bytes:
    """A syntactically valid PNG claiming ``w x h`` pixels with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "files,data,status,says",
    [
        ({"file": ("empty.png", b"")}, {"model": "dr"}, 400, "empty"),
        (
            {"file": ("noise.png", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))},
            {"model": "dr"},
            400,
            "noise.png",
        ),
        ({"file": ("cut.png", _png(np.full((64, 64, 3), 7, np.uint8))[:120])}, {"model": "dr"}, 400, "cut.png"),
        ({"file": ("bomb.png", _png_header(60000, 60000))}, {"model": "dr"}, 413, "bomb.png"),
        ({"file": ("big.png", _png_header(2000, 2000))}, {"model": "dr"}, 413, "limit"),
        ({"image": ("a.png", b"x")}, {"model": "dr"}, 422, "file"),
        ({"file": ("a.png", b"x")}, {"model": "nope"}, 404, "unknown model"),
        ({"file": ("a.png", b"x")}, {}, 400, "several models"),
        ({"file": ("a.dcm", b"\0" * 128 + b"DICM" + b"\x02" * 50)}, {"model": "dr"}, 400, "a.dcm"),
    ],
)
def test_bad_requests_are_4xx_and_the_service_lives_on(client, files, data, status, says):
    r = client.post("v1/predict", files=files, data=data)
    assert r.status_code == status, r.text
    assert says in str(r.json()["detail"])
    assert client.get("healthz").status_code == 200


def test_wrong_endpoint_for_the_model_and_bad_options(client):
    img = {"file": ("a.png", _png(_phantom()))}
    assert client.post("v1/segment", files=img, data={"model": "dr"}).status_code == 400
    assert client.post("v1/segment?class=nope", files=img, data={"model": "vessels"}).status_code == 400
    assert client.post("v1/segment?format=gif", files=img, data={"model": "vessels"}).status_code == 422
    assert client.post("v1/explain?map=nope", files=img, data={"model": "dr"}).status_code == 422
    many = [("file", ("a.png", _png(_phantom()))) for _ in range(17)]
    assert client.post("v1/predict", files=many, data={"model": "dr"}).status_code == 413
    assert client.get("v1/nothing").status_code == 404


def test_metrics_count_requests_and_batches(client):
    text = client.get("metrics").text
    assert 'visionfm_requests_total{endpoint="/v1/predict",status="200"}' in text
    assert 'visionfm_requests_total{endpoint="/v1/predict",status="400"}' in text
    assert 'visionfm_batch_size_count{model="dr"}' in text and "visionfm_queue_depth 0" in text


def test_page_docs_and_static_files(client):
    page = client.get("")
    assert (
        page.status_code == 200
        and 'id="prediction"' in page.text
        and "http" not in page.text.split("<footer")[0].replace("http-equiv", "")
    )  # no CDN: every asset from this server
    assert client.get("static/app.js").status_code == 200 and client.get("static/style.css").status_code == 200
    assert client.get("docs").status_code == 200
    spec = client.get("openapi.json").json()
    assert {"/v1/predict", "/v1/segment", "/v1/explain", "/v1/models"} <= set(spec["paths"])


def test_limits_api_key_upload_size_and_timeout(dr_run):
    srv = start_server(ServeConfig(runs=[str(dr_run)], port=0, api_key="s3cret", max_upload_mb=0.01))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            img = {"file": ("a.png", _png(_phantom(0, 32)))}
            assert c.post("v1/predict", files=img).status_code == 401
            assert c.post("v1/predict", files=img, headers={"X-API-Key": "wrong"}).status_code == 401
            assert c.get("metrics").status_code == 401 and c.get("healthz").status_code == 200
            ok = c.post("v1/predict", files=img, headers={"X-API-Key": "s3cret"})
            assert ok.status_code == 200 and ok.json()["results"][0]["prediction"]  # one model: no name needed
            big = {"file": ("b.png", _png(np.random.default_rng(0).integers(0, 255, (80, 80, 3), np.uint8)))}
            r = c.post("v1/predict", files=big, headers={"X-API-Key": "s3cret"})
            assert r.status_code == 413 and "limit" in r.json()["detail"]
    finally:
        srv.stop()
    srv = start_server(ServeConfig(runs=[str(dr_run)], port=0, timeout_s=0.001))
    try:
        r = httpx.post(srv.url + "v1/predict", files={"file": ("a.png", _png(_phantom(0, 256)))}, timeout=30)
        assert r.status_code == 504 and "no answer" in r.json()["detail"]
        assert httpx.get(srv.url + "healthz").status_code == 200
    finally:
        srv.stop()


def test_onnxruntime_backend_answers_as_torch(client, dr_run, tmp_path):
    srv = start_server(ServeConfig(runs=[str(dr_run)], port=0, backend="onnxruntime"))
    try:
        img = _png(_phantom(4))
        got = httpx.post(srv.url + "v1/predict", files={"file": ("a.png", img)}, timeout=60).json()
        ref = client.post("v1/predict", files={"file": ("a.png", img)}, data={"model": "dr"}).json()
        assert got["model"]["backend"] == "onnxruntime"
        assert got["results"][0]["probabilities"] == pytest.approx(ref["results"][0]["probabilities"], abs=1e-4)
        models = httpx.get(srv.url + "v1/models").json()["models"]
        assert models[0]["onnx"].endswith("dr.onnx")
    finally:
        srv.stop()


def test_oct_volume_upload_answers_like_volumes_predict(volume_run, serve_root, serve_weights, tmp_path):
    """A multi-frame DICOM volume is one sample: the volume's probabilities and the B-scan that drove them, equal to
    ``visionfm volumes predict`` on the same file."""
    from visionfm.cli import main

    dcm = serve_root / "volumes" / "lesion" / "eye3.dcm"
    srv = start_server(ServeConfig(runs=[str(volume_run)], port=0))
    try:
        r = httpx.post(srv.url + "v1/predict", files={"file": (dcm.name, dcm.read_bytes())}, timeout=60)
        two_d = httpx.post(srv.url + "v1/predict", files={"file": ("b.png", _png(_phantom(0, 48)))}, timeout=60)
        bad = httpx.post(srv.url + "v1/predict", files={"file": ("v.dcm", dcm.read_bytes()[:600])}, timeout=60)
    finally:
        srv.stop()
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["n_bscans"] == 3 and len(res["relevance"]) == 3 and res["dicom"]["laterality"] == "R"
    assert r.json()["model"]["kind"] == "volume"
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "volumes",
                "predict",
                "--run",
                str(volume_run),
                "--data",
                str(dcm.parent),
                "--weights",
                str(serve_weights),
                "--csv",
                str(out),
            ]
        )
        == 0
    )
    row = next(x for x in _rows(out) if x["volume"] == "eye3.dcm")
    assert res["driving_bscan"] == int(row["driving_bscan"]) and res["prediction"] == row["prediction"]
    for c, p in res["probabilities"].items():
        assert p == pytest.approx(float(row[f"prob_{c}"]), abs=1e-5)
    assert two_d.status_code == 200 and two_d.json()["results"][0]["n_bscans"] == 1  # an image: one B-scan
    assert bad.status_code == 400 and "v.dcm" in bad.json()["detail"]
    onnx = tmp_path / "v.onnx"  # the encoder alone (per-B-scan features); the whole classifier: test_volume_onnx.py
    assert main(["export", "--run", str(volume_run), "--output", str(onnx), "--encoder-only"]) == 0


def test_segment_uses_the_runs_validation_thresholds(seg_run, serve_root, tmp_path):
    """A run trained with --tune-thresholds keeps per-class thresholds: served masks use them as segment predict
    does, and a request's own threshold replaces them."""
    import shutil

    import yaml

    from visionfm.dense import predict_segmentation

    run = tmp_path / "tuned"
    shutil.copytree(seg_run, run)
    cfg = yaml.safe_load((run / "dense.yaml").read_text())
    cfg["state"]["thresholds"] = [0.97]
    (run / "dense.yaml").write_text(yaml.safe_dump(cfg))
    img_path = serve_root / "drive" / "training" / "images" / "21_training.png"
    predict_segmentation(run, serve_root / "drive", tmp_path / "pred", split="training", device="cpu", evaluate=False)
    ref = np.array(Image.open(tmp_path / "pred" / "21_training.png")) > 0
    srv = start_server(ServeConfig(runs=[str(run)], port=0))
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            files = {"file": (img_path.name, img_path.read_bytes())}
            assert c.get("v1/models").json()["models"][0]["thresholds"] == [0.97]
            tuned = c.post("v1/segment", files=files, params={"format": "png"})
            low = c.post("v1/segment", files=files, params={"format": "png", "threshold": 0.01})
    finally:
        srv.stop()
    tuned, low = (np.array(Image.open(io.BytesIO(r.content))) > 0 for r in (tuned, low))
    assert np.array_equal(tuned, ref)
    assert low.sum() > tuned.sum()
