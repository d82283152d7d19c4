"""Attention maps: known answers for rollout, normalisation and shapes, registers, input sizes, backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import FIXTURES, require

from visionfm.explain import attention_maps, attention_rollout, cls_patch_attention, upsample_maps
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


def test_maps_describe_the_normal_forward_whatever_backend(tiny_encoder):
    """The explicit-probability path gives the same tokens as the fused SDPA forward; any kernel gives same maps."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = tiny_encoder(x).tokens
        explicit = tiny_encoder(x, return_attention="all").tokens
    torch.testing.assert_close(plain, explicit, atol=1e-5, rtol=1e-5)
    ref = attention_maps(tiny_encoder, x)
    with sdpa_kernel([SDPBackend.MATH]):
        other = attention_maps(tiny_encoder, x)
    torch.testing.assert_close(ref.rollout, other.rollout)


def test_official_fixture_last_block_attention():
    """CLS maps of the official-format checkpoint equal those of the official code's saved attention."""
    from visionfm.checkpoints import load_encoder

    root = require(FIXTURES)
    enc = load_encoder(root / "checkpoint.pth")
    x = torch.from_numpy(np.load(root / "input_224.npy"))
    ref = torch.from_numpy(np.load(root / "last_attention_224.npy"))[:, :, 0, 1:]
    m = attention_maps(enc, x, rollout=False)
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
