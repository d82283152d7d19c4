"""The extraction speed paths keep their promises: the compiled path (regional ``torch.compile``, padded last batch)
gives the eager path's features and leaves the caller's encoder as it was; the bf16 path stays close to fp32 on real
images; the benchmark's official-style forward equals the encoder's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import DATA, require, tiny_encoder
from visionfm import extract_features, load_features

DRIVE = DATA / "DRIVE" / "test" / "images"


@pytest.mark.slow  # one inductor compilation of a tiny block: ~10-40 s on a loaded 2-core machine
def test_compiled_extraction_equals_eager_and_restores_the_encoder(tmp_path):
    from visionfm.data import ImageCollection, Sample

    files = sorted(require(DRIVE).glob("*.png"))[:5]
    coll = ImageCollection(DRIVE, [Sample(f, f.name) for f in files])
    enc = tiny_encoder()
    kw = dict(input_size=32, batch_size=2, num_workers=0, progress=False, device="cpu", n_last_blocks=2)
    eager = load_features(extract_features(enc, coll, tmp_path / "e.safetensors", **kw))
    comp = load_features(extract_features(enc, coll, tmp_path / "c.safetensors", compile=True, **kw))
    np.testing.assert_allclose(comp.cls, eager.cls, atol=1e-4)  # 5 images at batch 2: the last batch was padded
    np.testing.assert_allclose(comp.patch_mean, eager.patch_mean, atol=1e-4)
    assert all(getattr(b, "_compiled_call_impl", None) is None for b in enc.blocks)


def test_bf16_features_stay_close_to_fp32_on_real_images(tmp_path):
    from visionfm.data import ImageCollection, Sample

    files = sorted(require(DRIVE).glob("*.png"))[:4]
    coll = ImageCollection(DRIVE, [Sample(f, f.name) for f in files])
    kw = dict(input_size=32, batch_size=4, num_workers=0, progress=False, device="cpu")
    f32 = load_features(extract_features(tiny_encoder(), coll, tmp_path / "a.safetensors", **kw)).cls
    b16 = load_features(
        extract_features(tiny_encoder(), coll, tmp_path / "b.safetensors", precision="bf16", jpeg_draft=True, **kw)
    ).cls
    cos = (f32 * b16).sum(1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(b16, axis=1))
    assert 0 < np.abs(f32 - b16).max() < 0.05 * np.abs(f32).max() and cos.min() > 0.999


def test_benchmark_official_forward_equals_the_encoder():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_extract", Path(__file__).resolve().parents[2] / "benchmarks" / "extract.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    enc = tiny_encoder().eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = enc(x, n_last_blocks=2).cls_concat()
        got = bench.official_forward(enc, x, 2)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
