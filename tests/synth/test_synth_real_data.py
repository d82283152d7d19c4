"""Every synthetic-image capability on real fundus photographs (DRIVE; skipped when the shared data is absent)."""

from __future__ import annotations

import io
import json
import threading
import urllib.request

import numpy as np
from PIL import Image

from tests.helpers import DATA, require
from visionfm.synth import resolve_config, sample_images, train_generator
from visionfm.synth.data import load_training_data
from visionfm.synth.fidelity import measure_fidelity
from visionfm.synth.turing import make_turing_server


def test_generator_trains_and_samples_on_drive(tmp_path):
    images = require(DATA / "DRIVE" / "training" / "images")
    cfg = resolve_config(
        "tiny",
        overrides=dict(
            data=str(images),
            output=str(tmp_path / "run"),
            image_size=16,
            block_out_channels=[16, 32],
            steps=3,
            batch_size=4,
            save_every=3,
            device="cpu",
        ),
    )
    last = train_generator(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (last.parent / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(losses))
    manifest = sample_images(last.parent, tmp_path / "syn", num=2, steps=2, device="cpu", progress=False)
    assert np.asarray(Image.open(manifest.parent / "synthetic_000001.png")).shape == (16, 16, 3)


def test_center_crop_keeps_the_fundus_disc(tmp_path):
    images = require(DATA / "DRIVE" / "training" / "images")
    data = load_training_data(str(images), image_size=32, progress=False)
    x = data.images.float()
    assert x.shape == (20, 3, 32, 32)
    # corners are outside the field of view (black), the centre is the lit retina
    assert x[:, :, :3, :3].mean() < 15 and x[:, :, 12:20, 12:20].mean() > 60


def test_fidelity_and_turing_on_drive(tmp_path, tiny_encoder):
    train = require(DATA / "DRIVE" / "training" / "images")
    test = require(DATA / "DRIVE" / "test" / "images")
    # A "generator" that copies training images must be caught; held-out real images must not be.
    rep = measure_fidelity(
        test,
        train,
        tiny_encoder,
        tmp_path / "copies",
        train=train,
        resolution=32,
        input_size=32,
        device="cpu",
        progress=False,
    )
    assert rep.memorised_fraction_pixels == 1.0 and rep.memorised_fraction_features == 1.0
    rep = measure_fidelity(
        train, test, tiny_encoder, tmp_path / "heldout", resolution=32, input_size=32, device="cpu", progress=False
    )
    assert rep.memorised_fraction_pixels <= 0.1 and rep.precision > 0.5
    srv = make_turing_server(test, train, "reader", tmp_path / "a.jsonl", port=0, n=2, display_size=128)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        state = json.loads(urllib.request.urlopen(srv.url + "api/state", timeout=10).read())
        png = urllib.request.urlopen(srv.url + f"image/{state['next']}.png", timeout=10).read()
        with Image.open(io.BytesIO(png)) as im:
            assert im.size == (128, 128)  # every image shown at one size, whatever its source size
    finally:
        srv.shutdown()
        srv.server_close()
