"""Fixtures of the serving tests: tiny trained runs (recognition, forecasting, segmentation, landmarks), a real
uvicorn server on a free loopback port, and headless Chromium (skipped cleanly when absent)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dense.conftest import make_drive_like
from tests.helpers import save_tiny_encoder


@pytest.fixture(scope="session")
def serve_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def serve_weights(serve_root) -> Path:
    return save_tiny_encoder(serve_root / "tiny_fundus.safetensors", seed=0, modality="Fundus")


def _head_run(root: Path, weights: Path, kind: str, name: str, **cfg) -> Path:
    from visionfm import extract_features
    from visionfm.recognition import HeadConfig, train_head
    from visionfm.toydata import make_dataset

    ds = make_dataset(kind, root / "toy" / kind, n=24, seed=0, size=32, progress=False)
    feats = {s: extract_features(weights, ds.root, root / "features" / f"{kind}_{s}.safetensors", split=s,
                                 input_size=32, n_last_blocks=2, num_workers=0, batch_size=64, progress=False,
                                 device="cpu")
             for s in ("training", "test")}
    return train_head(HeadConfig(train=[str(feats["training"])], test=[str(feats["test"])], epochs=3, batch_size=16,
                                 n_boot=0, device="cpu", output_dir=str(root / "runs" / name), **cfg))


@pytest.fixture(scope="session")
def dr_run(serve_root, serve_weights) -> Path:
    """A linear DR-grading head (5 classes) on the tiny encoder's features of 32-px fundus phantoms."""
    return _head_run(serve_root, serve_weights, "fundus-dr", "dr", task="classify", ordinal=True)


@pytest.fixture(scope="session")
def forecast_run(serve_root, serve_weights) -> Path:
    """A glaucoma-forecasting head (needs an interval in days per image)."""
    return _head_run(serve_root, serve_weights, "glaucoma-forecast", "forecast", task="forecast", lr=1e-2)


@pytest.fixture(scope="session")
def seg_run(serve_root, serve_weights) -> Path:
    """A tiny ViT + UNETR vessel segmenter (2 steps on a DRIVE-like folder, 32 px)."""
    from visionfm.dense import DenseConfig, train_segmentation

    data = make_drive_like(serve_root / "drive")
    return train_segmentation(DenseConfig(task="segment", data=str(data), weights=str(serve_weights), input_size=32,
                                          max_steps=2, epochs=1, batch_size=2, device="cpu",
                                          output_dir=str(serve_root / "runs" / "vessels")))


@pytest.fixture(scope="session")
def landmark_run(serve_root, serve_weights, seg_run) -> Path:
    """A tiny landmark detector (the vessel line's centre as one landmark)."""
    from visionfm.dense import DenseConfig, landmarks_from_masks, train_landmark

    images = serve_root / "drive" / "training" / "images"
    csv = serve_root / "line.csv"
    landmarks_from_masks(images, serve_root / "drive" / "training" / "1st_manual", csv, name="line")
    return train_landmark(DenseConfig(task="landmark", data=str(images), labels=str(csv), weights=str(serve_weights),
                                      input_size=32, max_steps=2, epochs=1, batch_size=2, sigma=2.0, device="cpu",
                                      output_dir=str(serve_root / "runs" / "line")))


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium through the system ``chromedriver`` (skipped, with the reason, when either is missing)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium "
                                    "(pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless browser test needs chromium and chromedriver "
                    "(Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium  # both paths given: selenium never tries to download a browser or driver
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    try:
        yield drv
    finally:
        drv.quit()
