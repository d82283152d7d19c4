"""Shared test fixtures: tiny models, the shared real data (skipped cleanly when absent), temp folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import helpers
from tests.helpers import DATA, FIXTURES, SHARED, require  # noqa: F401  (re-exported)

# Two cores on CI: keep every test single-threaded so parallel work never oversubscribes.
torch.set_num_threads(int(os.environ.get("VISIONFM_TEST_THREADS", "1")))


@pytest.fixture
def shared_data() -> Path:
    return require(DATA)


@pytest.fixture
def official_fixture() -> Path:
    return require(FIXTURES)


@pytest.fixture
def tiny_encoder():
    """A randomly initialised test-sized ViT (depth 2, width 64, 32-px input) with Fundus facts attached."""
    return helpers.tiny_encoder()


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    """The tiny encoder saved as visionfm safetensors."""
    return helpers.save_tiny_encoder(tmp_path / "tiny.safetensors")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six small RGB PNGs in two class folders (imagenet layout; also a plain tree)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by selenium through the system ``chromedriver``.

    Skipped, with the reason, when selenium (the ``dev`` extra), ``chromium`` or ``chromedriver`` is missing.
    """
    import shutil

    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="the browser test needs selenium (pip install -e '.[dev]')"
    )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "headless browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium  # with both paths given, selenium never tries to download a browser or driver
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    try:
        yield drv
    finally:
        drv.quit()
