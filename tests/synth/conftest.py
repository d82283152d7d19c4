"""Fixtures of the synthetic-image tests: small class folders, a tiny generator config, a headless browser.

"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image



def _disc(rng: np.random.Generator, size: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A fundus-like image: a noisy coloured disc on black, [size, size+8, 3] uint8 (not square on purpose)."""
    h, w = size, size + 8
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.45 * h) ** 2
    img = np.zeros((h, w, 3), np.float32)
    img[inside] = colour
    img += rng.normal(0, 12, img.shape) * inside[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def disc_folder(tmp_path) -> Path:
    """Eight 24x32 PNGs in two class folders (imagenet layout): red discs in a/, green discs in b/."""
    rng = np.random.default_rng(0)
    root = tmp_path / "discs"
    for c, colour in (("a", (200, 60, 30)), ("b", (40, 180, 60))):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(_disc(rng, 24, colour)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def tiny_overrides(tmp_path, disc_folder) -> dict:
    """Config overrides for a generator that trains in a fraction of a second per step on one core."""
    return dict(data=str(disc_folder), output=str(tmp_path / "run"), image_size=16, block_out_channels=[16, 32],
                attention_levels=[], layers_per_block=1, norm_num_groups=8, batch_size=4, steps=4, save_every=2,
                warmup_steps=2, num_train_timesteps=100, device="cpu", ema_decay=0.9)


class WebDriver:
    """A minimal W3C WebDriver client over the stdlib (talks to ``chromedriver``; no selenium needed)."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def request(self, method: str, path: str, body: dict | None = None) -> object:
        import json
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"{}").get("value")

    def start(self, chromium: str, user_data_dir: Path) -> None:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        self.session = self.request("POST", "/session", caps)["sessionId"]

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self.request("POST", self._s("/url"), {"url": url})

    def find(self, css: str) -> str:
        return self.request("POST", self._s("/element"), {"using": "css selector", "value": css})[self.ELEMENT]

    def click(self, css: str) -> None:
        self.request("POST", self._s(f"/element/{self.find(css)}/click"), {})

    def js(self, script: str) -> object:
        return self.request("POST", self._s("/execute/sync"), {"script": script, "args": []})

    def wait_for(self, script: str, timeout: float = 20.0) -> object:
        """Poll a JS expression until it is truthy; returns its value."""
        import time

        end = time.time() + timeout
        while time.time() < end:
            val = self.js(f"return ({script});")
            if val:
                return val
            time.sleep(0.05)
        raise TimeoutError(f"browser condition not met within {timeout}s: {script}")

    def quit(self) -> None:
        if self.session:
            self.request("DELETE", self._s(""))


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium driven through chromedriver; skipped when either is not installed."""
    import shutil
    import socket
    import subprocess
    import time
    import urllib.error

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless browser test needs chromium and chromedriver "
                    "(Debian: apt-get install chromium chromium-driver)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = WebDriver(port)
    try:
        for _ in range(100):
            try:
                if wd.request("GET", "/status").get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        wd.start(chromium, tmp_path / "chromium-profile")
        yield wd
    finally:
        try:
            wd.quit()
        except Exception:  # the browser may already be gone; the driver process is ended below anyway
            pass
        proc.terminate()
        proc.wait(timeout=10)
