"""The fused bf16 ViT (oneDNN-packed linears, GELU and residual adds fused) computes the encoder's features at bf16
precision for every architecture variant (layer scale, registers, no qkv bias, no final norm), and extraction uses
it on CPUs with native bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import DATA, require, tiny_encoder
from visionfm.engine.precision import cpu_has_native_bf16
from visionfm.models import VisionTransformer, ViTConfig
from visionfm.models.inference import cast_encoder, feature_pair
from visionfm.models.vit_fused import PackedBf16ViT, packed_bf16_available

pytestmark = pytest.mark.skipif(
    not (packed_bf16_available() and cpu_has_native_bf16()), reason="needs a CPU with native bf16 (AMX / AVX512-BF16)"
)


def _variant(**cfg) -> VisionTransformer:
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(embed_dim=64, depth=3, num_heads=4, patch_size=8, img_size=32, **cfg)).eval()
    with torch.no_grad():  # non-trivial layer-scale gammas and norms: the folding must be exercised, not bypassed
        for name, p in enc.named_parameters():
            if name.endswith("gamma") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return enc


@pytest.mark.parametrize(
    "cfg",
    [{}, {"layer_scale": True}, {"num_register_tokens": 4}, {"qkv_bias": False}, {"final_norm": False}],
    ids=["plain", "layer-scale", "registers", "no-qkv-bias", "no-final-norm"],
)
def test_packed_bf16_matches_the_float_encoder_at_bf16_precision(cfg):
    enc = _variant(**cfg)
    packed = PackedBf16ViT(enc)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = enc(x, n_last_blocks=2)
        cast = cast_encoder(enc, "bf16")(x.bfloat16(), n_last_blocks=2)
        got = packed(x.bfloat16(), 2)
    assert got.tokens.shape == ref.tokens.shape and len(got.layers) == 2
    for want, have, plain in zip(feature_pair(ref), feature_pair(got), feature_pair(cast)):
        scale = float(want.abs().max())
        err, err_cast = float((have - want).abs().max()), float((plain - want).abs().max())
        assert 0 < err < 0.05 * scale  # bf16, not fp32 ...
        assert err < 3 * err_cast + 1e-3 * scale  # ... and no worse than the plain bf16 cast model
    assert next(enc.parameters()).dtype == torch.float32  # the caller's encoder is untouched


def test_cast_encoder_packs_only_when_asked():
    enc = tiny_encoder()
    assert isinstance(cast_encoder(enc, "bf16", packed=True), PackedBf16ViT)
    assert isinstance(cast_encoder(enc, "bf16"), VisionTransformer)
    assert cast_encoder(enc, "fp32", packed=True) is enc


def test_extraction_runs_packed_bf16_on_real_images(tmp_path, monkeypatch):
    """``extract`` at bf16 goes through the packed model (counted), close to fp32 on real fundus images."""
    from visionfm import extract_features, load_features
    from visionfm.data import ImageCollection, Sample
    from visionfm.models import vit_fused

    drive = require(DATA / "DRIVE" / "test" / "images")
    files = sorted(drive.glob("*.png"))[:4]
    coll = ImageCollection(drive, [Sample(f, f.name) for f in files])
    calls = []
    block = vit_fused.PackedBf16ViT.block
    monkeypatch.setattr(vit_fused.PackedBf16ViT, "block", lambda self, i, x: calls.append(i) or block(self, i, x))
    kw = dict(input_size=32, batch_size=4, num_workers=0, progress=False, device="cpu")
    f32 = load_features(extract_features(tiny_encoder(), coll, tmp_path / "a.safetensors", **kw)).cls
    b16 = load_features(extract_features(tiny_encoder(), coll, tmp_path / "b.safetensors", precision="bf16", **kw))
    assert calls == [0, 1] and b16.meta["precision"] == "bf16"
    cos = (f32 * b16.cls).sum(1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(b16.cls, axis=1))
    assert 0 < np.abs(f32 - b16.cls).max() < 0.05 * np.abs(f32).max() and cos.min() > 0.999


def test_chunked_attention_and_patch_matmul_change_nothing_but_speed(monkeypatch):
    """Attention in chunks of a few images gives the whole batch's numbers exactly; the patch embedding as one
    matmul over unfolded patches gives the convolution's, up to bf16 summation order."""
    from visionfm.models import vit_fused

    enc = _variant()
    packed = PackedBf16ViT(enc)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3)).bfloat16()
    with torch.inference_mode():
        whole = packed(x, 2).cls_concat()
        monkeypatch.setattr(vit_fused, "ATTENTION_ROWS", 20)  # 17 tokens: one image per call
        assert torch.equal(packed(x, 2).cls_concat(), whole)
        conv = enc.patch_embed.proj
        ref = conv(x.float())
        got = packed.enc.patch_embed.proj(x).float()
    assert isinstance(packed.enc.patch_embed.proj, vit_fused._PatchLinear) and got.shape == ref.shape
    assert float((got - ref).abs().max()) < 0.02 * float(ref.abs().max())
