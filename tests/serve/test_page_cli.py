"""The web page in headless Chromium (upload a real fundus photograph, read the prediction and see the heat map),
and ``visionfm serve`` as a user starts it: a subprocess on a free loopback port, called with httpx."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import DATA, require
from visionfm.serve import ServeConfig, start_server


@pytest.fixture(scope="module")
def page_server(dr_run, seg_run):
    srv = start_server(ServeConfig(runs=[str(dr_run), str(seg_run)], port=0))
    yield srv
    srv.stop()


def test_page_shows_prediction_and_heat_map(browser, page_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    photo = sorted(require(DATA / "DRIVE" / "test" / "images").glob("*.png"))[0]
    api = httpx.post(
        page_server.url + "v1/predict",
        files={"file": (photo.name, photo.read_bytes())},
        data={"model": "dr"},
        timeout=60,
    ).json()["results"][0]
    wait = WebDriverWait(browser, 60)
    browser.get(page_server.url)
    assert browser.title == "VisionFM"
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
    Select(browser.find_element(By.ID, "model")).select_by_value("dr")
    browser.find_element(By.ID, "file").send_keys(str(photo))  # picking the file runs the model
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
    assert browser.find_element(By.ID, "error").text == ""
    assert browser.find_element(By.ID, "prediction").text == api["prediction"]
    assert browser.find_element(By.ID, "filename").text == f"{photo.name} (565 x 584)"
    rows = browser.find_elements(By.CSS_SELECTOR, "#scores tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == list(api["probabilities"])
    heat = browser.find_element(By.ID, "heatmap")
    assert browser.execute_script("return arguments[0].naturalWidth;", heat) == 495  # 565x584 -> 512 px side
    assert heat.is_displayed() and browser.find_element(By.ID, "image").is_displayed()
    assert not browser.find_element(By.ID, "seg-figure").is_displayed()
    Select(browser.find_element(By.ID, "model")).select_by_value("vessels")  # re-runs on the same file
    wait.until(
        lambda b: (
            b.find_element(By.ID, "seg-figure").is_displayed()
            and b.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
        )
    )
    seg = browser.find_element(By.ID, "segmentation")
    assert browser.execute_script("return arguments[0].naturalHeight;", seg) == 584
    assert "% of pixels" in browser.find_element(By.ID, "prediction").text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a fresh Python process importing torch and the web stack: ~5 s idle, far more under load
def test_cli_serve_in_a_subprocess(dr_run, tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VISIONFM_API_KEY": "k"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "visionfm", "serve", "--run", str(dr_run), "--port", str(port), "--max-batch", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read()
        img = sorted((dr_run.parent.parent / "toy" / "fundus-dr" / "test").rglob("*.png"))[0]
        files = {"file": (img.name, img.read_bytes())}
        assert httpx.post(url + "v1/predict", files=files).status_code == 401  # key from the environment
        r = httpx.post(url + "v1/predict", files=files, headers={"X-API-Key": "k"}, timeout=60)
        assert r.status_code == 200 and r.json()["model"]["name"] == "dr"
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    assert f"serving dr (classify) on http://127.0.0.1:{port}/" in out and "API key required" in out


def test_cli_serve_refuses_a_bad_run(tmp_path, capsys):
    from visionfm.cli import main

    assert main(["serve", "--run", str(tmp_path), "--port", "0"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["serve", "--run", str(tmp_path), "--max-batch", "0"]) == 2
    assert "max_batch must be at least 1" in capsys.readouterr().err
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("max_batch: 4\nbogus: 1\n")
    assert main(["serve", "--run", str(tmp_path), "--config", str(cfg)]) == 2
    assert "bogus" in capsys.readouterr().err
