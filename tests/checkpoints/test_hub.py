"""``hf-hub:`` references resolve through huggingface_hub's own cache, offline, wherever weights are accepted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import save_tiny_encoder
from visionfm.checkpoints import load_encoder, parse_hub_reference, resolve_encoder, resolve_weights_path
from visionfm.errors import UserError

REV = "0123456789abcdef0123456789abcdef01234567"


def _cache(root: Path, repo: str, files: dict[str, Path]) -> Path:
    """The layout huggingface_hub writes: models--ORG--NAME/{blobs,snapshots/<rev>,refs/main}."""
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / REV
    snap.mkdir(parents=True)
    (base / "blobs").mkdir()
    for name, src in files.items():
        blob = base / "blobs" / f"blob{len(list((base / 'blobs').iterdir()))}"
        shutil.copy(src, blob)
        (snap / name).symlink_to(Path("..", "..", "blobs", blob.name))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(REV)
    return base


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    enc_file = save_tiny_encoder(tmp_path / "enc.safetensors", seed=4, modality="OCT")
    torch.save(
        {"model": {k: v for k, v in load_encoder(enc_file).state_dict().items() if k != "mask_token"}},
        tmp_path / "mae.pth",
    )
    _cache(cache, "org/encoder", {"model.safetensors": enc_file})
    _cache(cache, "YukunZhou/RETFound_tiny", {"RETFound_tiny.pth": tmp_path / "mae.pth"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: the cache alone must answer
    return cache, enc_file


def test_cache_is_huggingface_hubs_own_layout(hub):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub[0])
    assert {r.repo_id for r in info.repos} == {"org/encoder", "YukunZhou/RETFound_tiny"}
    assert not info.warnings


def test_reference_with_and_without_file_resolves_offline(hub):
    cache, enc_file = hub
    path = resolve_weights_path("hf-hub:org/encoder:model.safetensors")
    assert path.read_bytes() == enc_file.read_bytes() and str(cache) in str(path)
    assert resolve_weights_path("hf-hub:org/encoder") == path  # default file: model.safetensors
    enc = load_encoder("hf-hub:org/encoder")
    ref = load_encoder(enc_file)
    assert enc.info.modality == "OCT" and enc.info.source == "hf-hub:org/encoder"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x).tokens, ref(x).tokens, atol=0, rtol=0)
    # RETFound's convention: YukunZhou/<NAME> holds <NAME>.pth
    mae = resolve_encoder("hf-hub:YukunZhou/RETFound_tiny@" + REV, arch="vit_test")
    assert mae.info.format == "mae" and mae.info.mean == (0.485, 0.456, 0.406)


def test_extract_accepts_a_hub_reference(hub, tmp_path):
    from PIL import Image

    from visionfm.features import extract_features, load_features

    for i in range(2):
        Image.new("RGB", (40, 40), (30 * i, 60, 90)).save(tmp_path / f"im{i}.png")
    out = extract_features(
        "hf-hub:org/encoder",
        tmp_path,
        tmp_path / "f.safetensors",
        input_size=32,
        n_last_blocks=1,
        num_workers=0,
        progress=False,
        device="cpu",
    )
    assert load_features(out).cls.shape == (2, 64)


@pytest.mark.parametrize(
    "ref,match",
    [
        ("hf-hub:org/encoder:missing.pth", r"no missing.pth in the local cache \(HF_HUB_OFFLINE"),
        ("hf-hub:org/absent", r"no model.safetensors, absent.pth.*hf-hub:org/absent:FILE"),
        ("hf-hub:no-slash", "expected hf-hub:ORG/NAME"),
    ],
)
def test_bad_references_are_one_line_user_errors(hub, ref, match):
    with pytest.raises(UserError, match=match):
        load_encoder(ref)


def test_parse_reference():
    assert parse_hub_reference("hf-hub:a/b") == ("a/b", None, None)
    assert parse_hub_reference("hf-hub:a/b@v1:sub/w.pth") == ("a/b", "v1", "sub/w.pth")


def test_gated_repository_names_the_token(monkeypatch):
    import httpx
    from huggingface_hub.errors import GatedRepoError

    from visionfm.checkpoints import hub as hubmod

    def gated(*a, **k):
        raise GatedRepoError("403 gated", response=httpx.Response(403, request=httpx.Request("GET", "https://x")))

    monkeypatch.setattr(hubmod, "_download", gated)
    with pytest.raises(UserError, match="gated repository.*HF_TOKEN"):
        resolve_weights_path("hf-hub:YukunZhou/RETFound_mae_natureCFP")


def test_safe_torch_load_accepts_references(hub):
    from visionfm.checkpoints import safe_torch_load

    obj = safe_torch_load("hf-hub:YukunZhou/RETFound_tiny")
    assert "model" in obj and "cls_token" in obj["model"]


def test_resolve_encoder_takes_modules_files_and_references(hub, tmp_path):
    from visionfm.models import create_encoder

    module = create_encoder("vit_test")
    assert resolve_encoder(module) is module and module.info is None
    assert resolve_encoder(module, modality="fundus").info.modality == "Fundus"  # declared once, from the modality
    other = torch.nn.Linear(2, 2)
    assert resolve_encoder(other) is other
    a, b = resolve_encoder(hub[1]), resolve_encoder("hf-hub:org/encoder")
    assert torch.equal(a.pos_embed, b.pos_embed) and a.info.modality == b.info.modality == "OCT"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resolve_encoder(tmp_path / "nowhere.pth")
