"""Checkpoint formats: official fixture parity, converter round trips, strictness and safety."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from visionfm.checkpoints import CheckpointError, list_formats, load_encoder, read_weights, save_encoder
from visionfm.models import create_encoder


def _ref(fixture, name):
    return torch.from_numpy(np.load(fixture / name))


@pytest.mark.parametrize("size", [224, 448])
def test_official_fixture_parity(official_fixture, size):
    enc = load_encoder(official_fixture / "checkpoint.pth")
    assert enc.info.format == "visionfm" and enc.info.modality == "Fundus" and enc.info.family == "VisionFM"
    assert enc.info.normalisation_from == "Fundus statistics, recorded in the checkpoint"
    arch = json.loads((official_fixture / "arch.json").read_text())
    assert (enc.cfg.embed_dim, enc.cfg.depth, enc.cfg.num_heads, enc.cfg.patch_size) == (
        arch["embed_dim"],
        arch["depth"],
        arch["num_heads"],
        arch["patch_size"],
    )
    np.testing.assert_allclose(enc.info.mean, arch["normalisation_mean"], atol=1e-7)
    x = _ref(official_fixture, f"input_{size}.npy")
    with torch.no_grad():
        out = enc(x, n_last_blocks=4, return_attention=size == 224)
    torch.testing.assert_close(out.tokens, _ref(official_fixture, f"tokens_{size}.npy"), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cls_concat(), _ref(official_fixture, f"last4_cls_{size}.npy"), atol=1e-5, rtol=0)
    if size == 224:
        torch.testing.assert_close(out.attention, _ref(official_fixture, "last_attention_224.npy"), atol=1e-5, rtol=0)


def test_fixture_preprocessing_matches_official_inputs(official_fixture, shared_data):
    from visionfm.data import Preprocess, read_image
    from visionfm.modalities import get_modality

    img = read_image(shared_data / "DRIVE" / "test" / "images" / "01_test.png")
    m = get_modality("Fundus")
    for size in (224, 448):
        x = Preprocess(size, m.mean, m.std)(img)
        np.testing.assert_allclose(x.numpy(), np.load(official_fixture / f"input_{size}.npy")[0], atol=1e-5)


def test_fixture_converts_to_safetensors_and_back(official_fixture, tmp_path):
    enc = load_encoder(official_fixture / "checkpoint.pth")
    save_encoder(enc, tmp_path / "enc.safetensors")
    back = load_encoder(tmp_path / "enc.safetensors")
    assert back.info.modality == "Fundus" and back.info.mean == enc.info.mean
    assert "mask_token" in back.info.not_loaded  # never exported as if it were a trained tensor
    x = _ref(official_fixture, "input_224.npy")
    with torch.no_grad():
        torch.testing.assert_close(back(x).tokens, enc(x).tokens, atol=0, rtol=0)
    # loads with no pickle at all: safetensors metadata carries the facts
    from safetensors import safe_open

    with safe_open(str(tmp_path / "enc.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["modality"] == "Fundus" and json.loads(meta["config"])["depth"] == 3


# --- converter round trips: every format written from one known encoder must load back to the same outputs ---


def _official(sd):
    sd = {("masked_embed" if k == "mask_token" else k): v for k, v in sd.items()}
    teacher = {f"backbone.{k}": v for k, v in sd.items() if k != "masked_embed"}
    teacher["head.mlp.0.weight"] = torch.zeros(4, 4)
    student = {f"module.backbone.{k}": v for k, v in sd.items()}
    return {"student": student, "teacher": teacher, "epoch": 3, "args": argparse.Namespace(modality="SiltLamp")}


def _teacher_only(sd):
    return {"teacher": {f"module.backbone.{k}": v for k, v in sd.items()}}


def _plain_prefixed(sd):
    return {f"module.{k}": v for k, v in sd.items()}


def _mae(sd):
    model = {k: v for k, v in sd.items() if k != "mask_token"}
    model["mask_token"] = torch.zeros(1, 1, 32)  # decoder-width MAE token
    model["decoder_embed.weight"] = torch.zeros(32, 64)
    model["decoder_pred.bias"] = torch.zeros(16)
    return {"model": model, "args": argparse.Namespace(model="vit_large_patch16")}


FORMATS = {"visionfm": _official, "teacher-only": _teacher_only, "state_dict": _plain_prefixed, "mae": _mae}


@pytest.mark.parametrize("kind", FORMATS)
def test_converter_round_trip(kind, tmp_path, tiny_encoder):
    path = tmp_path / f"{kind}.pth"
    torch.save(FORMATS[kind](tiny_encoder.state_dict()), path)
    # vit_test has 32-wide heads, so name it: inference assumes the released-ViT convention of 64-wide heads
    enc = load_encoder(path, modality="Fundus", arch="vit_test")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x).tokens, tiny_encoder(x).tokens, atol=0, rtol=0)
    if kind == "mae":
        assert enc.info.mean == (0.485, 0.456, 0.406)  # RETFound weights use ImageNet statistics
    if kind == "visionfm":
        assert enc.info.modality == "Fundus"  # explicit modality wins over args.modality='SiltLamp'


def test_dinov2_naming_with_layer_scale_registers_and_chunks(tmp_path):
    torch.manual_seed(0)
    ref = create_encoder("vit_test", layer_scale=True, num_register_tokens=2).eval()
    for p in ref.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    # FSDP block chunks: blocks.{chunk}.{index}
    sd = {
        k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k: v for k, v in ref.state_dict().items()
    }
    sd["dino_head.mlp.0.weight"] = torch.zeros(2, 2)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, tmp_path / "d.pth")
    enc = load_encoder(tmp_path / "d.pth", arch="vit_test")
    assert enc.info.format == "dinov2" and enc.cfg.num_register_tokens == 2 and enc.cfg.layer_scale
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x).tokens, ref(x).tokens, atol=0, rtol=0)


def test_arch_inferred_from_tensors(tmp_path):
    enc = create_encoder("vit_small_patch14", depth=2)
    torch.save(enc.state_dict(), tmp_path / "s.pth")
    back = load_encoder(tmp_path / "s.pth", modality="OCT")
    assert (back.cfg.embed_dim, back.cfg.num_heads, back.cfg.patch_size, back.cfg.img_size) == (384, 6, 14, 518)
    assert back.info.mean == (0.2109193, 0.2109193, 0.2109192)


# --- strictness and safety ---


def test_missing_tensor_is_an_error_naming_it(tmp_path, tiny_encoder):
    sd = dict(tiny_encoder.state_dict())
    del sd["blocks.1.mlp.fc2.bias"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"missing \['blocks.1.mlp.fc2.bias'\]"):
        load_encoder(tmp_path / "m.pth", modality="Fundus", arch="vit_test")


def test_unexpected_tensor_is_an_error_naming_it(tmp_path, tiny_encoder):
    sd = dict(tiny_encoder.state_dict())
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(sd, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match="unexpected.*blocks.0.attn.extra"):
        load_encoder(tmp_path / "u.pth", modality="Fundus", arch="vit_test")


def test_arch_mismatch_is_an_error(tmp_path, tiny_encoder):
    torch.save(tiny_encoder.state_dict(), tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="embed_dim=768"):
        load_encoder(tmp_path / "t.pth", modality="Fundus", arch="vit_base_patch16")


def test_no_modality_and_no_normalisation_is_an_error(tmp_path, tiny_encoder):
    torch.save(tiny_encoder.state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match="pass modality"):
        load_encoder(tmp_path / "t.pth", arch="vit_test")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_encoder(tmp_path / "notes.pth")
    torch.save({"optimizer": {"state": {}}}, tmp_path / "opt.pth")
    with pytest.raises(CheckpointError, match="not a recognised encoder checkpoint"):
        load_encoder(tmp_path / "opt.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_encoder(tmp_path / "nope.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_encoder(tmp_path / "bad.safetensors")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickle_is_refused(tmp_path, tiny_encoder):
    torch.save({"teacher": tiny_encoder.state_dict(), "args": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        read_weights(tmp_path / "evil.pth")


def test_formats_listed():
    assert set(list_formats()) >= {"visionfm", "mae", "dinov2", "state_dict", "safetensors"}


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from visionfm.checkpoints import atomic_write

    target = tmp_path / "ck.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ck.bin"]


def test_official_torch_load_refuses_fixture_but_we_read_it(official_fixture):
    # The official code's plain torch.load fails on torch >= 2.6 (weights_only default); ours reads it safely.
    code = f"import torch; torch.load({str(official_fixture / 'checkpoint.pth')!r})"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0
    conv, _ = read_weights(official_fixture / "checkpoint.pth")
    assert conv.format == "visionfm" and len(conv.dropped) == 10


def test_saved_encoder_bytes_are_the_same_in_every_process(tmp_path):
    """The SHA-256 that runs record for their encoder must survive a re-save of the same weights elsewhere."""
    import hashlib

    code = (
        "import sys, torch; from visionfm.models import create_encoder; from visionfm.checkpoints import "
        "save_encoder; torch.manual_seed(0); save_encoder(create_encoder('vit_test'), sys.argv[1], source='s')"
    )
    digests = []
    for i in range(2):  # separate processes: safetensors' own writer orders metadata differently in each
        out = tmp_path / f"e{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    torch.manual_seed(0)
    ref = create_encoder("vit_test")
    back = load_encoder(tmp_path / "e0.safetensors", modality="Fundus")
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, atol=0, rtol=0)


def test_save_safetensors_dtypes_round_trip(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from visionfm.checkpoints import save_safetensors

    tensors = {
        "b": torch.randn(3, 2).to(torch.bfloat16),
        "a": torch.arange(5),
        "flag": torch.tensor(True),
        "h": torch.randn(2, 2).half().t(),
    }  # a non-contiguous view too
    path = save_safetensors(tensors, tmp_path / "t.safetensors", {"z": "1", "a": "2"})
    back = load_file(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"a": "2", "z": "1"}
    with pytest.raises(ValueError, match="complex64"):
        save_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


def test_loading_skips_random_initialisation(tmp_path, monkeypatch):
    from visionfm.models.vit import VisionTransformer

    torch.manual_seed(0)
    enc = create_encoder("vit_test")
    sd = {k: v for k, v in enc.state_dict().items() if k != "mask_token"}  # released files lack the iBOT token
    torch.save(sd, tmp_path / "plain.pth")

    def boom(self):
        raise AssertionError("random initialisation while loading")

    monkeypatch.setattr(VisionTransformer, "_init_weights", boom)
    back = load_encoder(tmp_path / "plain.pth", modality="Fundus")
    assert back.info.not_loaded == ("mask_token",) and torch.equal(back.mask_token, torch.zeros_like(enc.mask_token))
    assert all(not p.is_meta for p in back.parameters()) and all(p.requires_grad for p in back.parameters())
    for k, v in sd.items():
        assert torch.equal(back.state_dict()[k], v)


def test_random_encoder_is_seeded_and_is_a_pretraining_start(tmp_path):
    from visionfm.checkpoints import random_encoder
    from visionfm.pretrain import PretrainConfig, build_encoders

    a, b, c = random_encoder("vit_test", 3, "OCT"), random_encoder("vit_test", 3), random_encoder("vit_test", 4)
    assert torch.equal(a.pos_embed, b.pos_embed) and not torch.equal(a.pos_embed, c.pos_embed)
    assert a.info.modality == "OCT" and a.info.source == "random init seed 3" and b.info is None
    cfg = PretrainConfig(data=[str(tmp_path)], arch="vit_test", global_size=32)
    torch.manual_seed(3)  # what visionfm.pretrain.pretrain does with --seed 3 before building its encoders
    state = torch.random.get_rng_state()
    random_encoder("vit_test", 5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    student = build_encoders(cfg)[0]
    for k, v in random_encoder(student.cfg, 3).state_dict().items():
        assert torch.equal(student.state_dict()[k], v)
    save_encoder(a, tmp_path / "a.safetensors")
    assert load_encoder(tmp_path / "a.safetensors").info.modality == "OCT"
