"""Released checkpoint families load to 1e-5 against reference forward passes written from their own model code.

The references (tests/checkpoints/reference.py) never import visionfm; the fixture files are laid out as each
family's code writes them (tests/checkpoints/fixtures.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionfm.checkpoints import detect_format, infer_config, load_encoder, load_head, save_encoder
from visionfm.models import VisionTransformer, ViTConfig, arch_name

from .fixtures import retfound_dinov2_file, retfound_finetuned_file, vit_state
from .reference import dinov2_forward, mae_finetuned_logits, timm_forward

ATOL = 1e-5


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _img(side: int, seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=_gen(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# --- RETFound-DINOv2: 'teacher', 'backbone.', DINOv2 naming with layer scale and mask token, patch 14 ---


@pytest.mark.parametrize("chunks", [0, 1])
def test_retfound_dinov2_matches_retfound_pipeline(tmp_path, chunks):
    sd = vit_state(128, 2, 14, 5, generator=_gen(), layer_scale=True)  # trained at 70 px, like 518 px for ViT-L
    torch.save(retfound_dinov2_file(sd, _gen(2), chunks), tmp_path / "RETFound_dinov2_meh.pth")
    enc = load_encoder(tmp_path / "RETFound_dinov2_meh.pth", format="retfound-dinov2")
    assert enc.info.family == "RETFound-DINOv2" and enc.info.mean == (0.485, 0.456, 0.406)
    assert enc.cfg.layer_scale and enc.cfg.pos_interp == "size" and enc.info.not_loaded == ()
    assert "dino_head.mlp.0.weight" not in enc.state_dict()
    with torch.no_grad():
        for side in (70, 56):  # native grid, then RETFound's 224-px use: embeddings resized to the input grid
            x = _img(side)
            ref = dinov2_forward(sd, x, heads=2, resize="mae")
            out = enc(x)
            _close(out.tokens, ref)
    torch.testing.assert_close(enc.mask_token, torch.zeros(1, 128))  # the file's own token, loaded


def test_dinov2_format_keeps_dinov2s_own_resizing(tmp_path):
    sd = vit_state(128, 2, 14, 5, generator=_gen(3), layer_scale=True, registers=2)
    torch.save(retfound_dinov2_file(sd, _gen(4)), tmp_path / "teacher.pth")
    enc = load_encoder(tmp_path / "teacher.pth", format="dinov2")
    assert enc.cfg.pos_interp == "offset" and enc.cfg.num_register_tokens == 2
    x = _img(56)
    with torch.no_grad():
        ref = dinov2_forward(sd, x, heads=2, resize="dinov2")
        out = enc(x)
    _close(out.tokens, torch.cat([ref[:, :1], ref[:, 3:]], dim=1))
    _close(out.registers, ref[:, 1:3])


def test_retfound_dinov2_layout_is_detected_at_vit_large():
    """The release is ViT-L/14 (D=1024, 24 blocks, 518 px): detected by layout, architecture read off the tensors."""
    with torch.device("meta"):
        ref = VisionTransformer(
            ViTConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=14, img_size=518, layer_scale=True)
        )
    sd = {f"backbone.{k}": v for k, v in ref.state_dict().items()}
    assert detect_format({"teacher": sd}) == "retfound-dinov2"
    cfg = infer_config({k[len("backbone.") :]: v for k, v in sd.items()})
    assert arch_name(cfg) == "vit_large_patch14" and cfg.img_size == 518 and cfg.layer_scale
    small = {k: v for k, v in sd.items() if k != "backbone.cls_token"}
    small["backbone.cls_token"] = torch.zeros(1, 1, 384, device="meta")
    assert detect_format({"teacher": small}) == "dinov2"  # another width: a DINOv2 teacher, read as DINOv2 does


# --- RETFound-Green: timm vit_small_patch14_reg4_dinov2 at 392 px, mean = std = 0.5 ---


@pytest.mark.slow  # ViT-S at 392 px, twice (loader and reference)
def test_retfound_green_at_its_real_size(tmp_path):
    sd = vit_state(
        384, 12, 14, 28, generator=_gen(5), layer_scale=True, registers=4, cls_position=False, reg_name="reg_token"
    )
    torch.save(sd, tmp_path / "retfoundgreen_statedict.pth")
    enc = load_encoder(tmp_path / "retfoundgreen_statedict.pth")
    info = enc.info
    assert (info.family, info.format, info.mean, info.std) == ("RETFound-Green", "timm", (0.5,) * 3, (0.5,) * 3)
    assert arch_name(enc.cfg) == "vit_small_patch14" and enc.cfg.img_size == 392
    assert enc.cfg.num_register_tokens == 4
    x = _img(392, batch=1)
    with torch.no_grad():
        ref = timm_forward(sd, x, heads=6)
        out = enc(x)
    _close(out.cls, ref[:, 0])
    _close(out.patch_tokens, ref[:, 5:])
    _close(out.registers, ref[:, 1:5])
    _close(out.patch_tokens.mean(1), ref[:, 5:].mean(1))  # RETFound-Green's feature: global_pool='avg'
    save_encoder(enc, tmp_path / "green.safetensors")  # converted: family and normalisation travel with it
    back = load_encoder(tmp_path / "green.safetensors")
    assert back.info.family == "RETFound-Green" and back.info.mean == (0.5,) * 3
    with torch.no_grad():
        _close(back(x).tokens, out.tokens)


def test_timm_registers_at_another_size_resize_as_timm(tmp_path):
    sd = vit_state(
        128, 2, 14, 5, generator=_gen(6), layer_scale=True, registers=4, cls_position=False, reg_name="reg_token"
    )
    torch.save({"state_dict": sd}, tmp_path / "timm.pth")
    enc = load_encoder(tmp_path / "timm.pth", modality="Fundus")
    assert enc.info.format == "timm" and enc.info.family == "timm ViT" and enc.cfg.pos_interp == "size-antialias"
    with torch.no_grad():
        for side in (70, 42):
            x = _img(side)
            ref = timm_forward(sd, x, heads=2)
            out = enc(x)
            _close(out.cls, ref[:, 0])
            _close(out.patch_tokens, ref[:, 5:])


# --- checkpoints saved by RETFound's own fine-tuning: 'model' with head (+ fc_norm) ---


@pytest.mark.parametrize("pool", ["avg", "cls"])
@pytest.mark.parametrize("layer_scale", [False, True])  # RETFound-MAE / RETFound-DINOv2 fine-tuned
def test_retfound_finetuned_classifier(tmp_path, pool, layer_scale):
    sd = vit_state(128, 2, 16, 4, generator=_gen(7), layer_scale=layer_scale, final_norm=pool == "cls")
    torch.save(retfound_finetuned_file(sd, 5, _gen(8)), tmp_path / "checkpoint-best.pth")
    enc = load_encoder(tmp_path / "checkpoint-best.pth")
    info = enc.info
    assert info.format == "retfound-finetuned" and info.mean == (0.485, 0.456, 0.406)
    assert enc.cfg.final_norm == (pool == "cls") and info.head_tensors["head.weight"].shape == (5, 128)
    assert "5 outputs" in info.report and ("fc_norm" in info.report) == (pool == "avg")
    head = load_head(tmp_path / "checkpoint-best.pth")
    assert set(head) == set(info.head_tensors)
    x = _img(64)
    with torch.no_grad():
        ref = mae_finetuned_logits(sd | head, x, heads=2)
        out = enc(x)
        if pool == "avg":  # RETFound's forward: fc_norm(mean of patch tokens), no final norm
            feat = F.layer_norm(out.patch_tokens.mean(1), (128,), head["fc_norm.weight"], head["fc_norm.bias"], 1e-6)
        else:
            feat = out.cls
        _close(F.linear(feat, head["head.weight"], head["head.bias"]), ref)
    save_encoder(enc, tmp_path / "enc.safetensors")  # the encoder alone (no final norm when fc_norm replaced it)
    back = load_encoder(tmp_path / "enc.safetensors")
    assert back.cfg == enc.cfg and back.info.head_tensors == {}
    with torch.no_grad():
        _close(back(x).tokens, out.tokens)


@pytest.mark.slow  # ViT-S at 392 px, twice (loader and reference)
def test_retfound_green_extracts_real_fundus_images(tmp_path):
    """A RETFound-Green-layout file through the whole extraction on real DRIVE fundus photographs: the family's 392 px
    and 0.5 normalisation are recorded, and the features are the reference forward's average-pooled tokens."""
    import shutil

    from tests.helpers import DATA, require
    from visionfm.data import Preprocess, read_image
    from visionfm.features import extract_features, load_features

    src = require(DATA / "DRIVE" / "test" / "images")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("01_test.png", "02_test.png"):
        shutil.copy(src / name, imgs / name)
    sd = vit_state(
        384, 12, 14, 28, generator=_gen(9), layer_scale=True, registers=4, cls_position=False, reg_name="reg_token"
    )
    torch.save(sd, tmp_path / "retfoundgreen_statedict.pth")
    out = extract_features(
        tmp_path / "retfoundgreen_statedict.pth",
        imgs,
        tmp_path / "f.safetensors",
        input_size=392,
        n_last_blocks=1,
        num_workers=0,
        progress=False,
        device="cpu",
    )
    fs = load_features(out)
    assert fs.meta["mean"] == "[0.5, 0.5, 0.5]" and fs.meta["input_size"] == "392"
    prep = Preprocess(392, (0.5,) * 3, (0.5,) * 3, fs.meta.get("interpolation", "bilinear"))
    x = torch.stack([prep(read_image(imgs / p)) for p in fs.paths])
    with torch.no_grad():
        ref = timm_forward(sd, x, heads=6)
    _close(torch.from_numpy(fs.patch_mean), ref[:, 5:].mean(1))
    _close(torch.from_numpy(fs.cls), ref[:, 0])
