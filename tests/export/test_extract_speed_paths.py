"""The extraction speed paths keep their promises: the compiled path (regional ``torch.compile``, padded last batch)
gives the eager path's features and leaves the caller's encoder as it was; the bf16 path stays close to fp32 on real
images; the benchmark's official-style forward equals the encoder's."""

from __future__ import annotations

import json

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


def test_bf16_weights_cast_once_equal_autocast_and_leave_the_encoder():
    from visionfm.features import cast_encoder, encode_batch

    enc = tiny_encoder()
    cast = cast_encoder(enc, "bf16")
    assert next(enc.parameters()).dtype == torch.float32 and next(cast.parameters()).dtype == torch.bfloat16
    assert cast.info is enc.info and cast_encoder(enc, "fp32") is enc
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    auto = encode_batch(enc, x, 2, "none", "bf16")  # fp32 weights under autocast
    once = encode_batch(cast, x, 2, "none", "bf16")  # bf16 weights, no autocast
    exact = encode_batch(enc, x, 2, "none", "fp32")
    for a, b, e in zip(auto, once, exact):
        # autocast rounds each layer norm's float32 output to bf16 at the next linear: the same roundings
        torch.testing.assert_close(b, a, atol=1e-6 * float(a.abs().max()), rtol=0)
        assert 0 < float((b - e).abs().max()) < 0.05 * float(e.abs().max())


def _int8_linear(k: int = 64, n: int = 96):
    """A Linear whose weights and inputs lie exactly on the int8 / uint8 grids (power-of-two scales)."""
    from torch import nn

    from visionfm.models.vit_int8 import Int8Linear

    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(k, n)
    w = torch.randint(-127, 128, (n, k), generator=g).float()
    w[:, 0] = 127  # every row's max |w| is 127 steps: the per-channel scale is exactly 2^-7
    x = torch.randint(0, 256, (50, k), generator=g).float()
    x[0, 0], x[0, 1] = 0, 255  # the input range [0, 255] steps of 2^-4: scale 2^-4, zero point 0
    with torch.no_grad():
        lin.weight.copy_(w / 128)
        lin.bias.copy_(torch.randint(-8, 8, (n,), generator=g).float() / 4)
    return lin, x / 16, Int8Linear


def test_int8_linear_known_answer_on_exact_grids():
    """Inputs and weights exactly representable: the int8 matmul (int32 accumulation) equals the float one."""
    lin, x, Int8Linear = _int8_linear()
    ref = lin(x).detach()
    q = Int8Linear(lin, torch.float32)
    q.calibrating = True
    xq = q.quant(x)
    q.calibrating = False
    assert xq.dtype == torch.uint8 and (q.x_scale, q.x_zp) == (1 / 16, 0)
    torch.testing.assert_close(q(xq), ref, atol=1e-5, rtol=0)
    res = torch.ones_like(ref)
    q(xq, residual=res)  # the fused residual add writes into its argument
    torch.testing.assert_close(res, ref + 1, atol=1e-5, rtol=0)
    g = Int8Linear(lin, torch.uint8, gelu=True)
    g.x_scale, g.x_zp, g.in_range, g.out_q = q.x_scale, q.x_zp, q.in_range, (0.05, 10)
    want = torch.clamp(torch.round(torch.nn.functional.gelu(ref) / 0.05) + 10, 0, 255)
    assert (g(xq).float() - want).abs().max() <= 1  # GELU and requantisation fused: within one step


def test_int8_extraction_from_real_images_stays_close_and_records_its_calibration(tmp_path):
    from visionfm.data import ImageCollection, Sample
    from visionfm.errors import UserError
    from visionfm.features import encode_batch

    files = sorted(require(DRIVE).glob("*.png"))[:10]
    coll = ImageCollection(DRIVE, [Sample(f, f.name) for f in files])
    enc = tiny_encoder()
    kw = dict(input_size=32, batch_size=4, num_workers=0, progress=False, device="cpu")
    f32 = load_features(extract_features(enc, coll, tmp_path / "a.safetensors", **kw))
    q = load_features(extract_features(enc, coll, tmp_path / "q.safetensors", precision="int8", **kw))
    for a, b in ((f32.cls, q.cls), (f32.patch_mean, q.patch_mean)):
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert 0 < np.abs(a - b).max() < 0.1 * np.abs(a).max() and cos.min() > 0.99
    assert q.meta["precision"] == "int8" and json.loads(q.meta["int8_calibration"]) == [f.name for f in files[:8]]
    assert next(enc.parameters()).dtype == torch.float32  # the caller's encoder is untouched
    with pytest.raises(UserError, match="int8"):
        encode_batch(enc, torch.zeros(1, 3, 32, 32), 1, "none", "int8")  # a float encoder cannot run int8


@pytest.mark.slow  # one inductor compilation (freezing) of the tiny encoder: ~20-60 s on a loaded 2-core machine
def test_frozen_compile_equals_eager_bf16(tmp_path):
    from visionfm.data import ImageCollection, Sample

    files = sorted(require(DRIVE).glob("*.png"))[:5]
    coll = ImageCollection(DRIVE, [Sample(f, f.name) for f in files])
    kw = dict(input_size=32, batch_size=2, num_workers=0, progress=False, device="cpu", precision="bf16")
    eager = load_features(extract_features(tiny_encoder(), coll, tmp_path / "e.safetensors", **kw)).cls
    frozen = load_features(extract_features(tiny_encoder(), coll, tmp_path / "f.safetensors", compile="frozen", **kw))
    np.testing.assert_allclose(frozen.cls, eager, atol=0.02 * np.abs(eager).max())  # fused bf16 rounds differently


@pytest.mark.parametrize("final_norm", [True, False])
def test_int8_encoder_tracks_the_float_one_with_and_without_final_norm(final_norm):
    """Without a final norm the CLS tokens are the residual stream itself, which the int8 blocks update in place:
    the earlier layers' tokens must be copies, not views."""
    from visionfm.checkpoints import random_encoder
    from visionfm.models.vit_int8 import quantize_encoder

    enc = random_encoder("vit_test", seed=0, final_norm=final_norm, depth=4)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = enc(x, n_last_blocks=4)
        got = quantize_encoder(enc, [x[:4]])(x, n_last_blocks=4)
    for a, b in ((ref.cls_concat(), got.cls_concat()), (ref.patch_tokens.mean(1), got.patch_tokens.mean(1))):
        assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
        assert 0 < float((a - b).abs().max()) < 0.1 * float(a.abs().max())


def test_cli_int8_extracts_and_refuses_what_it_cannot_do(tmp_path, capsys):
    from tests.helpers import cli, save_tiny_encoder

    images = require(DRIVE)
    w = save_tiny_encoder(tmp_path / "enc.safetensors")
    base = ("extract", "--weights", w, "--data", images, "--input-size", 32, "--num-workers", 0)
    assert cli(*base, "--output", tmp_path / "q.safetensors", "--precision", "int8", "--jpeg-draft") == 0
    assert load_features(tmp_path / "q.safetensors").meta["precision"] == "int8"
    capsys.readouterr()
    for extra in (("--compile",), ("--volumes",)):
        assert cli(*base, "--output", tmp_path / "x.safetensors", "--precision", "int8", *extra) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(err) == 1 and err[0].startswith("visionfm extract: error:") and "int8" in err[0]
    assert not (tmp_path / "x.safetensors").exists()


def test_int8_smoothing_is_an_identity_in_float_and_tames_outlier_channels():
    """SmoothQuant's folding changes nothing in exact arithmetic (layer norm / s, weight columns * s), and on an
    encoder whose layer norms make a few outlier channels (as large pretrained ViTs have) it keeps the int8
    features close where per-tensor activation scales alone do not."""
    import torch.nn.functional as F

    from visionfm.checkpoints import random_encoder
    from visionfm.models.vit_int8 import _affine, layer_norm_absmax, quantize_encoder, smoothing_scales

    enc = random_encoder("vit_test", seed=0, depth=3)
    with torch.no_grad():
        for blk in enc.blocks:  # two channels of every layer norm output 30x larger than the rest
            blk.norm1.weight[:2] *= 30
            blk.norm2.weight[:2] *= 30
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    blk, tokens = enc.blocks[0], torch.randn(5, 17, 64)
    s = smoothing_scales(layer_norm_absmax(enc, [x])[0][0], blk.attn.qkv.weight)
    assert s[:2].min() > 3 * s[2:].median()  # the outlier channels are the ones divided most
    with torch.no_grad():
        smoothed = F.linear(F.layer_norm(tokens, (64,), *_affine(blk.norm1, s)), blk.attn.qkv.weight * s)
        torch.testing.assert_close(smoothed + blk.attn.qkv.bias, blk.attn.qkv(blk.norm1(tokens)), atol=1e-4, rtol=1e-4)
        ref = enc(x, n_last_blocks=3).cls_concat()
        errs = [
            float((quantize_encoder(enc, [x], smooth=a)(x, 3).cls_concat() - ref).abs().max() / ref.abs().max())
            for a in (None, 0.5)
        ]
    assert errs[1] < 0.6 * errs[0], errs
