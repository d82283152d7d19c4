"""Attention maps: known answers for rollout, normalisation and shapes, registers, input sizes, attention backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import FIXTURES, require
from visionfm.explain import attention_maps, attention_rollout, capture_attention, cls_patch_attention, upsample_maps
from visionfm.models import create_encoder


def test_rollout_known_answer_two_blocks():
    # One head, tokens [CLS, p1, p2]. Block 1: CLS looks half at itself, half at p1. Block 2: CLS looks at p2.
    a1 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    a2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    r = attention_rollout([a1, a2])[0]
    # by hand: A1' = 0.5 A1 + 0.5 I = [[.75,.25,0],...]; A2' = [[.5,0,.5],...]; R[0] = .5*A1'[0] + .5*A1'[2]
    torch.testing.assert_close(r[0], torch.tensor([0.375, 0.125, 0.5]))
    torch.testing.assert_close(cls_patch_attention(r[None], 1)[0], torch.tensor([0.2, 0.8]))
    # without the residual identity it is the plain product: CLS -> p2 only
    torch.testing.assert_close(attention_rollout([a1, a2], residual=False)[0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_rollout_averages_heads_and_keeps_rows_stochastic():
    torch.manual_seed(0)
    attn = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(3)]
    r = attention_rollout(attn)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))
    one = attention_rollout(attn[:1])
    expected = 0.5 * attn[0].mean(1) + 0.5 * torch.eye(5)
    torch.testing.assert_close(one, expected)
    with pytest.raises(ValueError, match="at least one block"):
        attention_rollout([])


def test_maps_shapes_and_sums(tiny_encoder):
    x = torch.randn(3, 3, 32, 32)
    m = attention_maps(tiny_encoder, x)
    assert m.heads.shape == (3, 2, 4, 4) and m.mean.shape == (3, 4, 4) and m.rollout.shape == (3, 4, 4)
    for t in (m.heads, m.mean, m.rollout):
        assert (t >= 0).all()
        torch.testing.assert_close(t.flatten(-2).sum(-1), torch.ones(t.shape[:-2]))
    out = tiny_encoder(x, return_attention=True)
    row = out.attention[:, :, 0, 1:]
    torch.testing.assert_close(m.heads.flatten(-2), row / row.sum(-1, keepdim=True))
    merged = out.attention.mean(1)[:, 0, 1:]
    torch.testing.assert_close(m.mean.flatten(-2), merged / merged.sum(-1, keepdim=True))


def test_register_tokens_are_skipped():
    torch.manual_seed(0)
    enc = create_encoder("vit_test", num_register_tokens=3).eval()
    torch.nn.init.normal_(enc.register_tokens, std=1.0)
    x = torch.randn(2, 3, 32, 32)
    m = attention_maps(enc, x)
    assert m.heads.shape == (2, 2, 4, 4)
    out = enc(x, return_attention="all")
    row = out.attention[:, :, 0, 4:]  # [CLS, 3 registers, 16 patches]
    torch.testing.assert_close(m.heads.flatten(-2), row / row.sum(-1, keepdim=True))
    r = attention_rollout([out.attentions[i] for i in sorted(out.attentions)])[:, 0, 4:]
    torch.testing.assert_close(m.rollout.flatten(-2), r / r.sum(-1, keepdim=True))


@pytest.mark.parametrize("hw", [(48, 48), (32, 56), (64, 40)])
def test_any_input_size(tiny_encoder, hw):
    m = attention_maps(tiny_encoder, torch.randn(1, 3, *hw))
    assert m.grid == (hw[0] // 8, hw[1] // 8) and m.heads.shape[-2:] == m.grid


def _available_sdpa_backends() -> list:
    """The SDPA kernels that run on this machine's CPU (MATH everywhere; FLASH_ATTENTION on recent torch)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 5, 8)
    ok = []
    for name, b in SDPBackend.__members__.items():
        if name in ("ERROR", "OVERRIDEABLE"):
            continue
        try:
            with sdpa_kernel([b]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
        except RuntimeError:
            continue
        ok.append(b)
    return ok


def test_forward_capture_equals_explicit_probabilities(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    fwd = attention_maps(tiny_encoder, x)
    ref = attention_maps(tiny_encoder, x, source="explicit")
    for a, b in ((fwd.heads, ref.heads), (fwd.mean, ref.mean), (fwd.rollout, ref.rollout)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    probs, out = capture_attention(tiny_encoder, x)
    explicit = tiny_encoder(x, return_attention="all")
    assert sorted(probs) == [0, 1]
    for i in probs:
        torch.testing.assert_close(probs[i], explicit.attentions[i], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="source="):
        attention_maps(tiny_encoder, x, source="gradcam")
    with pytest.raises(ValueError, match="blocks"):
        attention_maps(torch.nn.Linear(3, 3), x)


def test_maps_of_the_forward_pass_whatever_sdpa_kernel_runs_it(tiny_encoder):
    """Each SDPA kernel this machine has runs the forward; the maps are those of that pass and all agree."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = _available_sdpa_backends()
    assert SDPBackend.MATH in backends
    x = torch.randn(2, 3, 32, 32)
    ref = attention_maps(tiny_encoder, x, source="explicit")
    ref_tokens = tiny_encoder(x, return_attention="all").tokens
    for backend in backends:
        with sdpa_kernel([backend]):
            probs, out = capture_attention(tiny_encoder, x)
            maps = attention_maps(tiny_encoder, x)
        torch.testing.assert_close(out.tokens, ref_tokens, atol=1e-5, rtol=1e-5)  # the fused pass itself
        torch.testing.assert_close(maps.rollout, ref.rollout, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(maps.heads, ref.heads, atol=1e-6, rtol=1e-5)


def test_maps_with_a_patched_in_attention_implementation(tiny_encoder, monkeypatch):
    """A foreign attention kernel (chunked over queries, not SDPA at all) runs the forward: same maps."""
    calls = []

    def chunked_attention(q, k, v, *args, **kwargs):
        calls.append(q.shape)
        scale = q.shape[-1] ** -0.5
        return torch.cat([((qc * scale) @ k.transpose(-2, -1)).softmax(-1) @ v for qc in q.split(3, dim=-2)], -2)

    x = torch.randn(2, 3, 32, 32)
    ref = attention_maps(tiny_encoder, x, source="explicit")
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", chunked_attention)
    maps = attention_maps(tiny_encoder, x)
    assert len(calls) == tiny_encoder.cfg.depth  # the forward really ran through the patched kernel
    torch.testing.assert_close(maps.mean, ref.mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps.rollout, ref.rollout, atol=1e-6, rtol=1e-5)


def test_maps_under_bf16_autocast(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    ref = attention_maps(tiny_encoder, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m = attention_maps(tiny_encoder, x)
    assert m.mean.dtype == torch.float32
    torch.testing.assert_close(m.mean.flatten(-2).sum(-1), torch.ones(2))
    torch.testing.assert_close(m.mean, ref.mean, atol=2e-3, rtol=0.05)


def test_official_fixture_last_block_attention():
    """CLS maps of the official-format checkpoint equal those of the official code's saved attention."""
    from visionfm.checkpoints import load_encoder

    root = require(FIXTURES)
    enc = load_encoder(root / "checkpoint.pth")
    x = torch.from_numpy(np.load(root / "input_224.npy"))
    ref = torch.from_numpy(np.load(root / "last_attention_224.npy"))[:, :, 0, 1:]
    for source in ("forward", "explicit"):
        m = attention_maps(enc, x, rollout=False, source=source)
        assert m.rollout is None
        torch.testing.assert_close(m.heads.flatten(-2), ref / ref.sum(-1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_upsample_maps_normalised():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    up = upsample_maps(maps, (8, 6))
    assert up.shape == (1, 8, 6) and up.min() == 0 and up.max() == 1
    raw = upsample_maps(maps, (4, 4), normalise=False)
    assert raw[0, 0, 0] == 0 and raw[0, -1, -1] == 3


def test_bfloat16_encoder(tiny_encoder):
    from visionfm.explain import explain_images

    enc = tiny_encoder.to(torch.bfloat16)
    e = explain_images(enc, [np.full((40, 40, 3), 120, np.uint8)], progress=False)[0]
    assert e.mean.dtype == torch.float32
    torch.testing.assert_close(e.rollout.sum(), torch.tensor(1.0))
