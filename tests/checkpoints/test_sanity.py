"""Bad weights give one clear line naming the file (and the tensor), never a traceback or a silent wrong result."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.helpers import save_tiny_encoder, tiny_encoder
from visionfm.checkpoints import CheckpointError, load_encoder
from visionfm.errors import UserError


def _sd(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny_encoder(seed).state_dict().items()}


def test_nonfinite_tensors_are_named_and_can_be_allowed(tmp_path):
    sd = _sd()
    sd["blocks.0.norm1.weight"][3] = float("nan")
    sd["pos_embed"][0, 0, 0] = float("inf")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(
        CheckpointError,
        match=r"nan.pth: non-finite .* 2 tensor\(s\): pos_embed, "
        r"blocks.0.norm1.weight; .*allow-nonfinite",
    ):
        load_encoder(tmp_path / "nan.pth", "Fundus", "vit_test")
    enc = load_encoder(tmp_path / "nan.pth", "Fundus", "vit_test", allow_nonfinite=True)
    assert torch.isnan(enc.blocks[0].norm1.weight[3])


def test_arch_is_checked_against_safetensors_metadata(tmp_path):
    path = save_tiny_encoder(tmp_path / "t.safetensors")
    with pytest.raises(UserError, match="unknown encoder architecture 'vit_nope'"):
        load_encoder(path, arch="vit_nope")
    with pytest.raises(
        CheckpointError,
        match=r"--arch vit_base \(vit_base_patch16: D=768.*file's architecture "
        r"vit_test \(D=64",
    ):
        load_encoder(path, arch="vit_base")
    assert load_encoder(path, arch="vit_test").cfg.depth == 2


def test_official_arch_names_are_aliases(tmp_path):
    torch.save(_sd(), tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="arch 'vit_tiny' has embed_dim=192"):
        load_encoder(tmp_path / "t.pth", "Fundus", arch="vit_tiny")


@pytest.mark.parametrize(
    "case,match",
    [
        ("random", r"rand.pth: not a torch checkpoint \(a plain pickle, or corrupt"),
        ("unrelated", r"unrelated.pth \[state_dict\]: not a ViT encoder: none of .*'fc.bias', 'fc.weight'"),
        ("npz", r"arr.npz: a NumPy .npz archive, not a torch checkpoint"),
        ("pickled_npz", r"pickled.npz: not a torch checkpoint \(a plain pickle"),
        ("folder", r"weights_dir: is a folder; expected a weights file"),
        (
            "shape",
            (
                r"shape.pth: encoder weights do not fit: tensor blocks.1.attn.qkv.weight has shape \(10, 64\), "
                r"expected \(192, 64\)$"
            ),
        ),
        (
            "width",
            (
                r"width.pth: encoder weights do not fit: tensor cls_token has shape \(1, 1, 32\), "
                r"expected \(1, 1, 64\)$"
            ),
        ),
    ],
)
def test_bad_weights_give_one_clear_line(tmp_path, case, match):
    path = {
        "random": "rand.pth",
        "unrelated": "unrelated.pth",
        "npz": "arr.npz",
        "pickled_npz": "pickled.npz",
        "folder": "weights_dir",
        "shape": "shape.pth",
        "width": "width.pth",
    }[case]
    path = tmp_path / path
    if case == "random":
        path.write_bytes(bytes([0x80]) + np.random.default_rng(0).bytes(4095))  # seeded; not text, not a zip
    elif case == "unrelated":
        torch.save({"fc.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)}, path)
    elif case == "npz":
        np.savez(path, a=np.zeros(3))
    elif case == "pickled_npz":
        path.write_bytes(pickle.dumps({"a": np.zeros(3)}))
    elif case == "folder":
        path.mkdir()
    else:
        sd = _sd()
        if case == "shape":
            sd["blocks.1.attn.qkv.weight"] = torch.zeros(10, 64)
        else:
            sd["cls_token"] = torch.zeros(1, 1, 32)
        torch.save(sd, path)
    with pytest.raises(UserError) as err:
        load_encoder(path, "Fundus", "vit_test" if case in ("shape", "width") else None)
    assert "\n" not in str(err.value)
    assert __import__("re").search(match, str(err.value)), str(err.value)


def test_cli_info_and_errors(tmp_path, capsys):
    from visionfm.cli import main

    sd = _sd()
    sd["norm.bias"][0] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    assert main(["info", "--weights", str(tmp_path / "nan.pth"), "--arch", "vit_test"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nan.pth" in err and "norm.bias" in err and "--allow-nonfinite" in err and len(err.splitlines()) == 1
    assert main(["info", "--weights", str(tmp_path / "nan.pth"), "--arch", "vit_test", "--allow-nonfinite"]) == 0
    out = capsys.readouterr().out
    assert "family: unknown" in out and "normalisation: not recorded: pass --modality" in out
    assert main(["info", "--weights", str(tmp_path)]) == 2
    assert "is a folder; expected a weights file" in capsys.readouterr().err


def test_safetensors_metadata_errors_name_the_file(tmp_path):
    import json

    from safetensors import safe_open

    from visionfm.checkpoints import save_safetensors

    path = save_tiny_encoder(tmp_path / "t.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    save_safetensors(tensors, tmp_path / "key.safetensors", {**meta, "config": json.dumps({**cfg, "depht": 3})})
    with pytest.raises(CheckpointError, match=r"key.safetensors: unreadable architecture in its metadata .*'depht'"):
        load_encoder(tmp_path / "key.safetensors")
    tensors["norm.weight"][0] = float("inf")
    save_safetensors(tensors, tmp_path / "inf.safetensors", meta)
    with pytest.raises(CheckpointError, match=r"inf.safetensors: non-finite .*: norm.weight;"):
        load_encoder(tmp_path / "inf.safetensors")
