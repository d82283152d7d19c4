"""Vision-language runs served (zero-shot from class names sent with the request) and OCT volumes uploaded in every
form the toolkit reads (zip of B-scans, several B-scan images, an eyepy vendor file), on a real uvicorn server.

Answers are compared with the library on the same files: ``visionfm.vl.load(run).zeroshot`` for the zero-shot
probabilities and the multi-frame DICOM of the same B-scans (itself checked against ``volumes predict`` in
``test_service.py``) for the volume answers."""

from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import DATA, require
from visionfm.serve import ServeConfig, start_server

KERATITIS = DATA / "slit-lamp-keratitis-samples"
CLASSES = ["keratitis", "normal cornea", "other corneal abnormality"]


@pytest.fixture(scope="module")
def vl_server(vl_run, volume_run):
    srv = start_server(ServeConfig(runs=[str(vl_run), str(volume_run)], port=0, max_batch=4))
    yield srv
    srv.stop()


def test_zero_shot_answers_equal_the_library(vl_server, vl_run):
    import visionfm.vl as vl

    photos = sorted((KERATITIS / "Keratitis").glob("*.jpg"))[:2]
    files = [("file", (p.name, p.read_bytes())) for p in photos]
    data = {"model": "kera_vl", "classes": ", ".join(CLASSES)}
    r = httpx.post(vl_server.url + "v1/predict", files=files, data=data, timeout=120)
    assert r.status_code == 200, r.text
    ref = vl.load(vl_run).zeroshot(photos, CLASSES, domain_knowledge=True)
    for res, want in zip(r.json()["results"], ref):
        assert list(res["probabilities"]) == CLASSES
        np.testing.assert_allclose(list(res["probabilities"].values()), want, atol=1e-5)
        assert res["prediction"] == CLASSES[int(np.argmax(want))] and res["domain_knowledge"] is True
    plain = httpx.post(
        vl_server.url + "v1/predict", files=files[:1], data={**data, "domain_knowledge": "false"}, timeout=120
    ).json()["results"][0]
    ref_plain = vl.load(vl_run).zeroshot(photos[:1], CLASSES, domain_knowledge=False)[0]
    np.testing.assert_allclose(list(plain["probabilities"].values()), ref_plain, atol=1e-5)
    models = {m["name"]: m for m in httpx.get(vl_server.url + "v1/models").json()["models"]}
    assert models["kera_vl"]["kind"] == "vl" and "keratitis" in models["kera_vl"]["zero_shot"]["known_categories"]
    heat = httpx.post(vl_server.url + "v1/explain", files=files[:1], data={"model": "kera_vl"}, timeout=120)
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    ort = start_server(ServeConfig(runs=[str(vl_run)], port=0, backend="onnxruntime"))  # image side exported
    try:
        got = httpx.post(ort.url + "v1/predict", files=files, data=data, timeout=120).json()["results"]
    finally:
        ort.stop()
    np.testing.assert_allclose([list(g["probabilities"].values()) for g in got], ref, atol=1e-4)


@pytest.mark.parametrize(
    ("classes", "needle"),
    [(None, "at least two"), ("keratitis", "at least two"), ("a,a", "distinct"), ("x" * 300 + ",b", "characters")],
)
def test_zero_shot_refuses_bad_class_lists(vl_server, classes, needle):
    photo = sorted((require(KERATITIS) / "Keratitis").glob("*.jpg"))[0]
    data = {"model": "kera_vl", **({"classes": classes} if classes is not None else {})}
    r = httpx.post(vl_server.url + "v1/predict", files={"file": (photo.name, photo.read_bytes())}, data=data)
    assert r.status_code == 400 and needle in r.json()["detail"]
    assert httpx.get(vl_server.url + "healthz").status_code == 200


def _bscans(serve_root) -> list:
    """The B-scans of the fixture's lesion volume ``eye3.dcm`` (a multi-frame DICOM) as PNG files, and its bytes."""
    from visionfm.data.dicom import read_dicom

    dcm = serve_root / "volumes" / "lesion" / "eye3.dcm"
    frames = read_dicom(dcm).frames
    pngs = []
    for k, f in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(f[..., 0] if f.dtype == np.uint8 else (f[..., 0] * 255).round().astype(np.uint8)).save(
            buf, format="PNG"
        )
        pngs.append((f"{k + 1}.png", buf.getvalue()))
    return pngs, dcm.read_bytes()


def test_volume_as_zip_or_bscans_equals_the_dicom_volume(vl_server, serve_root):
    pngs, dcm = _bscans(serve_root)
    url = vl_server.url + "v1/predict"
    ref = httpx.post(url, files={"file": ("eye3.dcm", dcm)}, data={"model": "oct_volumes"}, timeout=120).json()
    ref = ref["results"][0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in reversed(pngs):  # stored out of order: natural order of the names rebuilds the volume
            z.writestr(f"eye3/{name}", data)
        z.writestr("__MACOSX/eye3/._1.png", b"junk")
    zipped = httpx.post(url, files={"file": ("eye3.zip", buf.getvalue())}, data={"model": "oct_volumes"}, timeout=120)
    several = httpx.post(
        url,
        files=[("file", p) for p in reversed(pngs)],
        data={"model": "oct_volumes", "bscans": "true"},
        timeout=120,
    )
    for r in (zipped, several):
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert len(res) == 1 and res[0]["n_bscans"] == 3
        assert res[0]["driving_bscan"] == ref["driving_bscan"] and res[0]["prediction"] == ref["prediction"]
        for c, p in ref["probabilities"].items():
            assert res[0]["probabilities"][c] == pytest.approx(p, abs=1e-5)


def test_volume_from_a_vendor_file_through_eyepy(vl_server, serve_root, tmp_path):
    sio = pytest.importorskip("scipy.io")
    pytest.importorskip("eyepy")
    pngs, dcm = _bscans(serve_root)
    stack = np.stack([np.asarray(Image.open(io.BytesIO(d))) for _, d in pngs], axis=-1)  # Duke: [H, W, N]
    sio.savemat(tmp_path / "eye3.mat", {"images": stack, "layerMaps": np.full((3, 48, 3), np.nan), "Age": [[60]]})
    url = vl_server.url + "v1/predict"
    r = httpx.post(url, files={"file": ("eye3.mat", (tmp_path / "eye3.mat").read_bytes())}, timeout=120)
    ref = httpx.post(url, files={"file": ("eye3.dcm", dcm)}, data={"model": "oct_volumes"}, timeout=120).json()
    assert r.status_code == 400 and "several models" in r.json()["detail"]  # two served: the model must be named
    r = httpx.post(
        url,
        files={"file": ("eye3.mat", (tmp_path / "eye3.mat").read_bytes())},
        data={"model": "oct_volumes"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["n_bscans"] == 3 and res["driving_bscan"] == ref["results"][0]["driving_bscan"]
    for c, p in ref["results"][0]["probabilities"].items():
        assert res["probabilities"][c] == pytest.approx(p, abs=1e-5)
    bad = httpx.post(url, files={"file": ("x.vol", b"not a heidelberg file")}, data={"model": "oct_volumes"})
    assert bad.status_code == 400 and "x.vol" in bad.json()["detail"] and "/tmp" not in bad.json()["detail"]


def test_bad_volume_uploads_are_4xx(vl_server, serve_root):
    pngs, _ = _bscans(serve_root)
    url = vl_server.url + "v1/predict"
    small = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(small, format="PNG")
    empty_zip = io.BytesIO()
    with zipfile.ZipFile(empty_zip, "w") as z:
        z.writestr("notes.txt", b"no images")
    cases = [
        ({"file": ("e.zip", empty_zip.getvalue())}, {}, 400, "without B-scan images"),
        ({"file": ("e.zip", b"PK\x03\x04broken")}, {}, 400, "e.zip"),
        ([("file", pngs[0]), ("file", ("9.png", small.getvalue()))], {"bscans": "true"}, 400, "different sizes"),
    ]
    for files, extra, status, needle in cases:
        r = httpx.post(url, files=files, data={"model": "oct_volumes", **extra}, timeout=60)
        assert r.status_code == status and needle in r.json()["detail"], r.text
    r = httpx.post(url, files=[("file", pngs[0])], data={"model": "kera_vl", "bscans": "true", "classes": "a,b"})
    assert r.status_code == 400 and "volume classifier" in r.json()["detail"]
    assert httpx.get(vl_server.url + "healthz").status_code == 200


def test_page_zero_shot_and_volume_bscans(browser, vl_server, serve_root, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    photo = sorted((require(KERATITIS) / "Keratitis").glob("*.jpg"))[0]
    api = httpx.post(
        vl_server.url + "v1/predict",
        files={"file": (photo.name, photo.read_bytes())},
        data={"model": "kera_vl", "classes": ",".join(CLASSES)},
        timeout=120,
    ).json()["results"][0]
    wait = WebDriverWait(browser, 90)
    state = lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    browser.get(vl_server.url)
    wait.until(lambda b: state(b) == "ready")
    Select(browser.find_element(By.ID, "model")).select_by_value("kera_vl")
    assert browser.find_element(By.ID, "classes").is_displayed()
    browser.find_element(By.ID, "classes").send_keys(", ".join(CLASSES))
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda b: state(b) in ("done", "error"))
    assert browser.find_element(By.ID, "error").text == ""
    assert browser.find_element(By.ID, "prediction").text == api["prediction"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#scores tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == CLASSES
    assert browser.find_element(By.ID, "heatmap").is_displayed()
    pngs, _ = _bscans(serve_root)  # three B-scan files picked at once: one volume
    paths = []
    for name, data in pngs:
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    Select(browser.find_element(By.ID, "model")).select_by_value("oct_volumes")  # re-runs on the photograph
    assert not browser.find_element(By.ID, "classes").is_displayed()
    wait.until(lambda b: state(b) in ("done", "error"))
    browser.find_element(By.ID, "file").clear()  # chromedriver adds to a multiple input's files otherwise
    browser.find_element(By.ID, "file").send_keys("\n".join(paths))
    wait.until(lambda b: "3 B-scans" in b.find_element(By.ID, "filename").text or b.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    assert "B-scan 1 drove the decision" in browser.find_element(By.ID, "filename").text  # the lesion B-scan


def _answers(url: str, photo, dcm) -> tuple:
    """Four concurrent DRIVE requests, a volume and a heat map from one server; its batch-size metric."""
    import concurrent.futures as cf

    def post(name: str, data: bytes, model: str) -> httpx.Response:
        return httpx.post(url + "v1/predict", files={"file": (name, data)}, data={"model": model}, timeout=120)

    with cf.ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda _: post(photo.name, photo.read_bytes(), "dr"), range(4)))
    vol = post(dcm.name, dcm.read_bytes(), "oct_volumes")
    heat = httpx.post(url + "v1/explain", files={"file": (photo.name, photo.read_bytes())}, data={"model": "dr"})
    assert all(r.status_code == 200 for r in rs) and vol.status_code == 200 and heat.status_code == 200
    metrics = httpx.get(url + "metrics").text
    assert any(line.startswith("visionfm_batch_size_sum") for line in metrics.splitlines())
    return rs[0].json(), vol.json()


def test_bf16_service_answers_close_to_fp32(dr_run, volume_run, serve_root):
    """``--precision bf16``: Linear/Conv weights stored in bf16 once, one autocast forward per batch; answers move by
    bf16 rounding only; batching, heat maps and volumes still work."""
    photo = sorted(require(DATA / "DRIVE" / "test" / "images").glob("*.png"))[0]
    dcm = serve_root / "volumes" / "lesion" / "eye3.dcm"
    answers = {}
    for precision in ("fp32", "bf16"):
        srv = start_server(ServeConfig(runs=[str(dr_run), str(volume_run)], port=0, precision=precision))
        try:
            one, vol = _answers(srv.url, photo, dcm)
        finally:
            srv.stop()
        assert one["model"]["precision"] == precision
        answers[precision] = (one["results"][0]["probabilities"], vol["results"][0]["probabilities"])
    for a, b in zip(answers["fp32"], answers["bf16"]):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 0.05 for k in a)
