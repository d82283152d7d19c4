"""``POST /v1/embed`` and ``POST /v1/retrieve`` on a real uvicorn server: embeddings equal the library's
(``visionfm.vl.load(run).encode_image`` / ``encode_text`` for a vision-language run, the ``visionfm extract``
features file for a recognition run), retrieval over real CSDI photographs and their expert reports equals
``visionfm.vl.evaluate.retrieve`` (and the onnxruntime backend), bad requests are 4xx with a message."""

from __future__ import annotations

import csv

import httpx
import numpy as np
import pytest

from tests.helpers import DATA, require
from visionfm.serve import ServeConfig, start_server

KERATITIS = DATA / "slit-lamp-keratitis-samples"
CSDI = DATA / "CSDI-cataract-reports"


@pytest.fixture(scope="module")
def server(vl_run, dr_run, volume_run, serve_weights):
    runs = [str(vl_run), str(dr_run), str(volume_run), str(serve_weights)]
    srv = start_server(ServeConfig(runs=runs, port=0, max_texts=4))
    yield srv
    srv.stop()


def _files(paths) -> list:
    return [("file", (p.name, p.read_bytes())) for p in paths]


def _csdi(n: int) -> tuple[list, list[str]]:
    """The first ``n`` CSDI photographs with distinct reports: (paths, reports)."""
    with open(require(CSDI / "manifest.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r["caption_en"], r["path"])
        if len(seen) == n:
            break
    return [CSDI / p for p in seen.values()], list(seen)


def test_embed_vl_images_and_texts_equal_the_library(server, vl_run):
    import visionfm.vl as vl

    photos = sorted((require(KERATITIS) / "Keratitis").glob("*.jpg"))[:2]
    texts = ["A slit-lamp photograph of keratitis.", "A clear, healthy cornea."]
    r = httpx.post(
        server.url + "v1/embed",
        files=_files(photos),
        data={"model": "kera_vl", "text": texts},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "kera_vl" and body["model"]["encoder_sha256"]
    assert body["embedding"]["space"] == "image-text" and body["embedding"]["normalised"] is True
    run = vl.load(vl_run)
    img = np.array([x["embedding"] for x in body["images"]])
    txt = np.array([x["embedding"] for x in body["texts"]])
    assert img.shape == txt.shape == (2, body["embedding"]["dim"])
    np.testing.assert_allclose(img, run.encode_image(photos).numpy(), atol=1e-5)
    np.testing.assert_allclose(txt, run.encode_text(texts).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert [x["filename"] for x in body["images"]] == [p.name for p in photos]
    only_text = httpx.post(server.url + "v1/embed", data={"model": "kera_vl", "text": texts[:1]}, timeout=60).json()
    assert only_text["images"] == [] and only_text["texts"][0]["embedding"] == pytest.approx(txt[0], abs=1e-5)


def test_embed_recognition_run_equals_the_extracted_feature(server, serve_root):
    """A recognition run's embedding is the feature its head reads, as ``visionfm extract`` wrote it, normalised."""
    from visionfm.features import load_features

    fs = load_features(serve_root / "features" / "fundus-dr_test.safetensors")
    img = serve_root / "toy" / "fundus-dr" / fs.paths[0]  # relative to the data root
    r = httpx.post(server.url + "v1/embed", files={"file": (img.name, img.read_bytes())}, data={"model": "dr"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["embedding"] == {
        "space": "encoder",
        "feature": "cls",
        "n_last_blocks": 2,
        "tta": "none",
        "normalised": True,
        "dim": 128,
    }
    want = fs.cls[0] / np.linalg.norm(fs.cls[0])
    np.testing.assert_allclose(body["images"][0]["embedding"], want, atol=1e-5)
    enc = httpx.post(
        server.url + "v1/embed", files={"file": (img.name, img.read_bytes())}, data={"model": "tiny_fundus"}
    )
    assert enc.status_code == 200 and enc.json()["embedding"]["feature"] == "last"  # an encoder file: final CLS
    last = fs.cls[0][-64:]  # the extraction's last block (width 64) of the same encoder
    np.testing.assert_allclose(enc.json()["images"][0]["embedding"], last / np.linalg.norm(last), atol=1e-5)


def test_retrieve_real_csdi_reports_equals_the_library(server, vl_run, tmp_path):
    import visionfm.vl as vl
    from visionfm.vl.evaluate import retrieve

    photos, reports = _csdi(3)
    data = {"model": "kera_vl", "text": reports}
    r = httpx.post(server.url + "v1/retrieve", files=_files(photos), data=data, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    run = vl.load(vl_run)
    sim = run.encode_image(photos).numpy() @ run.encode_text(reports).numpy().T  # [images, texts]
    np.testing.assert_allclose(body["similarity"], sim, atol=1e-5)
    manifest = tmp_path / "pairs.csv"  # the batch command on the same pairs: its image -> text ranking
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "report"], *([str(p), t] for p, t in zip(photos, reports))])
    retrieve(run, manifest, tmp_path / "out", n_boot=0)
    with open(tmp_path / "out" / "image_to_text.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for img in body["images"]:
        ranked = [x["text"] for x in img["texts"]]
        assert ranked == [x["text"] for x in rows if x["image"].endswith(img["filename"])]
        scores = [x["score"] for x in img["texts"]]
        assert scores == sorted(scores, reverse=True)
    for j, t in enumerate(body["texts"]):
        assert [x["index"] for x in t["images"]] == list(np.argsort(-sim[:, j], kind="stable"))
    top = httpx.post(server.url + "v1/retrieve", files=_files(photos[:1]), data={**data, "k": "1"}, timeout=60).json()
    (best,) = top["images"][0]["texts"]  # k=1: the best text only
    assert best["index"] == body["images"][0]["texts"][0]["index"]
    assert best["score"] == pytest.approx(body["images"][0]["texts"][0]["score"], abs=1e-5)
    ort = start_server(ServeConfig(runs=[str(vl_run)], port=0, backend="onnxruntime"))
    try:
        got = httpx.post(ort.url + "v1/retrieve", files=_files(photos), data={"text": reports}, timeout=120)
    finally:
        ort.stop()
    assert got.json()["model"]["backend"] == "onnxruntime"
    np.testing.assert_allclose(got.json()["similarity"], sim, atol=1e-4)


@pytest.mark.parametrize(
    ("path", "data", "files", "status", "needle"),
    [
        ("embed", {"model": "kera_vl"}, False, 400, "nothing to embed"),
        ("embed", {"model": "dr", "text": "a text"}, False, 400, "without a text encoder"),
        ("embed", {"model": "oct_volumes"}, True, 400, "OCT volumes"),
        ("embed", {"model": "kera_vl", "text": " "}, False, 400, "empty text"),
        ("embed", {"model": "kera_vl", "text": ["t"] * 5}, False, 413, "at most 4"),
        ("embed", {"model": "kera_vl", "text": "x" * 2001}, False, 400, "characters"),
        ("retrieve", {"model": "dr", "text": "a"}, True, 400, "vision-language run"),
        ("retrieve", {"model": "kera_vl", "text": "a", "k": "0"}, True, 422, "k"),
        ("retrieve", {"model": "kera_vl"}, True, 422, "text"),
        ("retrieve", {"model": "nope", "text": "a"}, True, 404, "unknown model"),
    ],
)
def test_bad_embed_and_retrieve_requests_are_4xx(server, path, data, files, status, needle):
    photo = sorted((require(KERATITIS) / "Keratitis").glob("*.jpg"))[0]
    upload = {"file": (photo.name, photo.read_bytes())} if files else None
    r = httpx.post(server.url + f"v1/{path}", data=data, files=upload, timeout=60)
    assert r.status_code == status and needle in str(r.json()["detail"]), r.text
    assert httpx.get(server.url + "healthz").status_code == 200


def test_openapi_lists_embed_and_retrieve(server):
    paths = httpx.get(server.url + "openapi.json").json()["paths"]
    assert {"/v1/embed", "/v1/retrieve"} <= set(paths)
    assert "text" in str(paths["/v1/retrieve"]) and "k" in str(paths["/v1/retrieve"])
