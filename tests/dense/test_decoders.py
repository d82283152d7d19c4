"""Multi-level features and decoder shapes, freezing, and the U-Net baseline."""

import pytest
import torch

from visionfm.dense.backbone import block_indices, multilevel_features
from visionfm.dense.decoders import build_dense_model


def test_block_indices_official_and_scaled():
    assert block_indices(12) == [3, 5, 7, 11]
    assert block_indices(24) == [7, 11, 15, 23]
    assert block_indices(2) == [0, 0, 0, 1]


def test_multilevel_last_block_equals_encoder_output(tiny_encoder):
    x = torch.randn(1, 3, 32, 40)
    feats, grid = multilevel_features(tiny_encoder, x, [0, 1])
    out = tiny_encoder(x, n_last_blocks=2)
    assert grid == (4, 5) and feats[1].shape == (1, 64, 4, 5)
    for f, ref in zip(feats, out.layers):
        assert torch.allclose(f.flatten(2).transpose(1, 2), ref[:, 1:], atol=1e-6)


@pytest.mark.parametrize("name", ["unetr", "linear"])
def test_frozen_decoder_any_size_and_no_encoder_grad(tiny_encoder, name):
    model = build_dense_model(name, tiny_encoder, 2)
    model.train()
    y = model(torch.randn(2, 3, 48, 32))
    assert y.shape == (2, 2, 48, 32)
    y.mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert not model.encoder.training  # frozen encoder stays in eval mode
    assert any(p.grad is not None for p in model.decoder.parameters())


def test_finetune_reaches_encoder(tiny_encoder):
    model = build_dense_model("unetr", tiny_encoder, 1, finetune=True)
    model(torch.randn(1, 3, 32, 32)).mean().backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_unet_baseline_and_unknown_name():
    y = build_dense_model("unet", None, 3)(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32)
    with pytest.raises(KeyError, match="valid: "):
        build_dense_model("segformer", None, 1)
    with pytest.raises(ValueError, match="--weights"):
        build_dense_model("unetr", None, 1)
