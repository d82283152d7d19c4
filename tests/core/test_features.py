"""Feature extraction: one safetensors file, rows aligned with paths, labels kept, identical under torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from visionfm.data import Preprocess, read_image, scan
from visionfm.features import encode_batch, extract_features, load_features


def test_extract_rows_match_direct_encoding(tmp_path, tiny_encoder, image_folder):
    out = extract_features(
        tiny_encoder,
        image_folder,
        tmp_path / "f.safetensors",
        layout="imagenet",
        input_size=32,
        n_last_blocks=2,
        batch_size=4,
        num_workers=0,
        progress=False,
    )
    fs = load_features(out)
    coll = scan(image_folder, layout="imagenet")
    assert fs.paths == [s.rel for s in coll.samples]
    assert fs.cls.shape == (6, 128) and fs.patch_mean.shape == (6, 64)
    np.testing.assert_array_equal(fs.labels[:, 0], [0, 0, 0, 1, 1, 1])
    prep = Preprocess(32, tiny_encoder.info.mean, tiny_encoder.info.std, "bilinear")  # the official extraction's
    x = torch.stack([prep(read_image(s.path)) for s in coll.samples])
    cls, patch = encode_batch(tiny_encoder, x, n_last_blocks=2)
    np.testing.assert_allclose(fs.cls, cls.numpy(), atol=1e-5)
    np.testing.assert_allclose(fs.patch_mean, patch.numpy(), atol=1e-5)
    assert fs.meta["n_last_blocks"] == "2" and fs.meta["modality"] == "Fundus"
    assert fs.meta["interpolation"] == "bilinear" and fs.meta["split"] == ""
    assert json.loads(fs.meta["preprocess"])["resize"] == [32, 32]
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*lock"))


def test_flip_tta_is_flip_invariant(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    a, _ = encode_batch(tiny_encoder, x, tta="hflip")
    b, _ = encode_batch(tiny_encoder, x.flip(-1), tta="hflip")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown tta"):
        encode_batch(tiny_encoder, x, tta="rot90")


def test_bf16_features_close_to_fp32(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    a, _ = encode_batch(tiny_encoder, x)
    b, _ = encode_batch(tiny_encoder, x, precision="bf16")
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.1


def test_output_must_be_safetensors(tmp_path, tiny_encoder, image_folder):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        extract_features(tiny_encoder, image_folder, tmp_path / "f.npz")


def test_load_features_rejects_other_files(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match="not a visionfm features file"):
        load_features(tiny_weights)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, tiny_weights, image_folder):
    """2-process gloo extraction writes one merged file equal to the single-process one (no gaps, no repeats)."""
    common = [
        "extract",
        "--weights",
        str(tiny_weights),
        "--data",
        str(image_folder),
        "--input-size",
        "32",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "visionfm.cli",
        *common,
        "--output",
        str(tmp_path / "two.safetensors"),
    ]
    res = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    from visionfm.cli import main

    assert main([*common, "--output", str(tmp_path / "one.safetensors")]) == 0
    two, one = load_features(tmp_path / "two.safetensors"), load_features(tmp_path / "one.safetensors")
    assert two.paths == one.paths and len(two.paths) == 6
    np.testing.assert_allclose(two.cls, one.cls, atol=1e-6)
    assert np.abs(two.cls).sum(1).min() > 0  # every row written
