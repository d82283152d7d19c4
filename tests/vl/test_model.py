"""Projection heads (normalised before and after), the logit scale, and the three image-training modes."""

import math

import pytest
import torch

from tests.helpers import tiny_encoder
from visionfm.vl.model import ProjectionHead, VLModel, set_image_training


def test_projection_is_normalised_before_and_after():
    head = ProjectionHead(8, 512)
    x = torch.randn(4, 8)
    out = head(x)
    assert out.shape == (4, 512)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(head(7.5 * x), out)  # the input's scale is normalised away
    assert head.proj.bias is None


def test_logit_scale_starts_at_1_over_007_and_caps_at_100():
    m = VLModel(None, None, image_dim=64, text_dim=384)
    assert m.logit_scale == pytest.approx(1 / 0.07)
    with torch.no_grad():
        m.log_scale.fill_(math.log(500))
    assert m.logit_scale == pytest.approx(100.0)
    state = m.projection_state()
    assert set(state) == {"image_proj.weight", "text_proj.weight", "log_scale"}
    with pytest.raises(ValueError, match="shapes do not fit"):
        VLModel(None, None, image_dim=32, text_dim=384).load_projection_state(state, "x")


def test_frozen_partial_full_image_training():
    enc = tiny_encoder()

    def trainable() -> set[str]:
        return {
            n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
            for n, p in enc.named_parameters()
            if p.requires_grad
        }

    set_image_training(enc, "frozen")
    assert trainable() == set()
    set_image_training(enc, "partial", 1)
    assert trainable() == {"blocks.1", "norm"}
    set_image_training(enc, "full")
    assert {"blocks.0", "blocks.1", "norm", "patch_embed", "cls_token", "pos_embed"} <= trainable()
    with pytest.raises(ValueError, match="unfreeze_blocks"):
        set_image_training(enc, "partial", 5)
