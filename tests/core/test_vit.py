import pytest
import torch

from visionfm.models import ARCHS, create_encoder, interpolate_pos_embed, list_archs


@pytest.mark.parametrize("arch", list_archs())
def test_every_registered_arch_builds_with_named_outputs(arch):
    # Shrink depth/width so the registry-wide test stays fast; patch size and head width come from the registry.
    cfg = ARCHS.get(arch)()
    enc = create_encoder(arch, depth=2, embed_dim=cfg.num_heads * 16).eval()
    p = cfg.patch_size
    x = torch.randn(2, 3, 4 * p, 3 * p)
    out = enc(x, n_last_blocks=2, return_attention=True)
    d = enc.cfg.embed_dim
    assert out.tokens.shape == (2, 1 + 12, d)
    assert out.cls.shape == (2, d) and out.patch_tokens.shape == (2, 12, d)
    assert len(out.layers) == 2 and out.cls_concat().shape == (2, 2 * d)
    assert out.attention.shape == (2, cfg.num_heads, 13, 13)
    assert out.grid == (4, 3)


def test_attention_probabilities_match_fused_path(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    fused = tiny_encoder(x)
    explicit = tiny_encoder(x, return_attention="all")
    torch.testing.assert_close(fused.tokens, explicit.tokens, atol=1e-5, rtol=1e-5)
    assert set(explicit.attentions) == {0, 1}
    torch.testing.assert_close(explicit.attention.sum(-1), torch.ones(2, 2, 17))
    assert fused.attention is None


def test_any_input_size_interpolates_positions(tiny_encoder):
    out = tiny_encoder(torch.randn(1, 3, 48, 64))
    assert out.grid == (6, 8) and out.tokens.shape == (1, 49, 64)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_encoder(torch.randn(1, 3, 30, 32))


def test_interpolation_identity_at_native_size():
    pe = torch.randn(1, 1 + 16, 8)
    assert interpolate_pos_embed(pe, 4, 4) is pe
    assert interpolate_pos_embed(pe, 6, 5).shape == (1, 31, 8)


def test_mask_token_replaces_masked_patches(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    tokens, _ = tiny_encoder.prepare_tokens(x, mask)
    plain, _ = tiny_encoder.prepare_tokens(x)
    changed = (tokens != plain).any(-1)
    assert changed[0].nonzero().flatten().tolist() == [1 + 1 * 4 + 2]
    assert not changed[1].any()
    with pytest.raises(ValueError, match="mask shape"):
        tiny_encoder.prepare_tokens(x, mask[:, :2])


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = create_encoder("vit_test", drop_path_rate=0.0).train()
    b = create_encoder("vit_test", grad_checkpointing=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    a(x).cls.sum().backward()
    b(x).cls.sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_drop_path_only_in_training():
    enc = create_encoder("vit_test", drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    enc.eval()
    torch.testing.assert_close(enc(x).tokens, enc(x).tokens)
    enc.train()
    torch.manual_seed(1)
    t1 = enc(x).tokens
    torch.manual_seed(2)
    assert not torch.allclose(t1, enc(x).tokens)


def test_bf16_autocast_on_cpu(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    ref = tiny_encoder(x).tokens
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_encoder(x, return_attention=True)
    assert out.tokens.dtype == torch.bfloat16
    assert (out.tokens.float() - ref).abs().max() < 0.1


def test_register_tokens_are_kept_apart():
    enc = create_encoder("vit_test", num_register_tokens=4, layer_scale=True).eval()
    out = enc(torch.randn(1, 3, 32, 32), return_attention=True)
    assert out.tokens.shape == (1, 17, 64) and out.registers.shape == (1, 4, 64)
    assert out.attention.shape == (1, 2, 21, 21)


def test_n_last_blocks_clamped_to_depth_as_officially(tiny_encoder):
    assert len(tiny_encoder(torch.randn(1, 3, 32, 32), n_last_blocks=4).layers) == 2
    with pytest.raises(ValueError):
        tiny_encoder(torch.randn(1, 3, 32, 32), n_last_blocks=0)


def test_official_arch_names_are_aliases():
    assert ARCHS.get("vit_base") is ARCHS.get("vit_base_patch16")
    assert [ARCHS.canonical(f"vit_{s}") for s in ("tiny", "small", "base", "large")] == [
        f"vit_{s}_patch16" for s in ("tiny", "small", "base", "large")
    ]
    assert "vit_base" not in list_archs()  # aliases are spellings, not extra architectures


def test_position_resizing_modes():
    pe = torch.randn(1, 1 + 25, 8)
    offset, size = interpolate_pos_embed(pe, 4, 4), interpolate_pos_embed(pe, 4, 4, mode="size")
    anti = interpolate_pos_embed(pe, 4, 4, mode="size-antialias")
    assert offset.shape == size.shape == anti.shape == (1, 17, 8)
    assert torch.equal(offset[:, 0], pe[:, 0]) and torch.equal(size[:, 0], pe[:, 0])
    assert (offset - size).abs().max() > 1e-3 and (size - anti).abs().max() > 1e-3  # three different resizings
    grid = pe[:, 1:].reshape(1, 5, 5, 8).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(size[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 16, 8))
    with pytest.raises(ValueError, match="pos_interp"):
        create_encoder("vit_test", pos_interp="nearest")


def test_declared_info_and_optional_final_norm():
    from visionfm.models import EncoderInfo

    enc = create_encoder("vit_test", final_norm=False).eval()
    assert enc.info is None and isinstance(enc.norm, torch.nn.Identity) and "norm.weight" not in enc.state_dict()
    info = EncoderInfo(enc.cfg, "OCT", (0.2,) * 3, (0.1,) * 3)
    assert enc.set_info(info) is enc and enc.info.arch == "vit_test"
    x = torch.randn(1, 3, 32, 32)
    out = enc(x)
    tokens, _ = enc.prepare_tokens(x)
    for blk in enc.blocks:
        tokens, _ = blk(tokens)
    torch.testing.assert_close(out.tokens, tokens)  # no final norm: the last block's tokens as they are
