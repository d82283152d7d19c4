"""Label schemas and heads: the official 13-output schema, YAML schemas, the registry of heads."""

from __future__ import annotations

import pytest
import torch

from visionfm.recognition.heads import HEADS, TIME_ENCODINGS, MLPHead, build_head, list_heads
from visionfm.recognition.schema import OFFICIAL_13, LabelSchema, get_schema, load_schema


def test_official_schema():
    assert OFFICIAL_13.outputs == [
        "Healthy",
        "DR-1",
        "DR-2",
        "DR-3",
        "DR-4",
        "DR",
        "Glaucoma",
        "AMD",
        "Cataract",
        "Hypertensive Retinopathy",
        "Retinal Vein Occlusion",
        "Myopia",
        "Retinal Detachment",
    ]
    assert OFFICIAL_13.group_indices() == {"DR grade": [0, 1, 2, 3, 4]}
    assert OFFICIAL_13.binary_indices() == list(range(5, 13))
    assert get_schema(None) is OFFICIAL_13 and get_schema("official13") is OFFICIAL_13
    assert get_schema(OFFICIAL_13.to_dict()).outputs == OFFICIAL_13.outputs


def test_schema_yaml_and_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("outputs: [no DR, NPDR, PDR, DME]\ngroups: {DR: [no DR, NPDR, PDR]}\nweights: {DME: 2}\n")
    s = load_schema(p)
    assert s.group_indices() == {"DR": [0, 1, 2]} and s.binary_indices() == [3] and s.weight("DME") == 2.0
    assert get_schema(str(p)).outputs == s.outputs
    p.write_text("outputs: [a, b]\ngroups: {g: [a, c]}\n")
    with pytest.raises(ValueError, match=r"s.yaml.*unknown outputs \['c'\]"):
        load_schema(p)
    p.write_text("outputs: [a]\ncolour: red\n")
    with pytest.raises(ValueError, match="unknown schema keys"):
        load_schema(p)
    with pytest.raises(ValueError, match="duplicate"):
        LabelSchema(["a", "a"])
    with pytest.raises(ValueError, match="unknown label schema"):
        get_schema("nope")


@pytest.mark.parametrize("name", list_heads())
def test_every_head_maps_features_to_logits(name):
    head = build_head(name, 16, 3)
    x, t = torch.randn(8, 16), torch.rand(8) * 1000
    head.fit_inputs(x)
    out = head(x, t)
    assert out.shape == (8, 3) and torch.isfinite(out).all()
    out.sum().backward()


def test_linear_head_is_one_affine_map():
    head = build_head("linear", 6, 2)
    x = torch.randn(20, 6) * 5 + 3
    head.fit_inputs(x)
    assert sum(p.numel() for p in head.parameters()) == 6 * 2 + 2
    w, b = head.fc.weight, head.fc.bias
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    assert torch.allclose(head(x), z @ w.T + b, atol=1e-5)


def test_mlp_head_is_the_official_structure():
    head = MLPHead(64, 5)
    assert isinstance(head.bn, torch.nn.BatchNorm1d)
    assert head.bn.momentum == 0.01 and head.bn.eps == 1e-6  # official 0.99 in Keras convention
    dims = [(m.in_features, m.out_features) for m in head.classifier if isinstance(m, torch.nn.Linear)]
    assert dims == [(64, 32), (32, 16), (16, 5)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in head.classifier if isinstance(m, torch.nn.Linear))
    # running statistics move 1% towards each batch
    head.train()
    x = torch.ones(4, 64) * 10
    head(x)
    assert torch.allclose(head.bn.running_mean, torch.full((64,), 0.1))


@pytest.mark.parametrize("enc", ["sinusoidal", "learned"])
def test_forecast_head_uses_the_interval(enc):
    torch.manual_seed(0)
    head = build_head("forecast", 8, 1, time_encoding=enc)
    torch.nn.init.normal_(head.fc.weight)
    x = torch.randn(1, 8).repeat(3, 1)
    out = head(x, torch.tensor([90.0, 700.0, 1800.0]))
    assert out[0] != out[1] and out[1] != out[2]
    with pytest.raises(ValueError, match="time interval"):
        head(x)


def test_forecast_head_without_time_encoding_ignores_the_interval():
    head = build_head("forecast", 8, 1, time_encoding="none")
    x = torch.randn(1, 8).repeat(2, 1)
    out = head(x, torch.tensor([90.0, 1800.0]))
    assert out[0] == out[1]
    assert set(TIME_ENCODINGS.names()) == {"sinusoidal", "learned", "none"}


def test_sinusoidal_encoding_values():
    enc = TIME_ENCODINGS.get("sinusoidal")(4, min_period=1.0, max_period=4.0)
    e = enc(torch.tensor([365.25]))  # one year: periods 1 and 4 years
    assert e[0].tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0], abs=1e-5)


def test_bad_head_options():
    with pytest.raises(ValueError, match="bad options"):
        build_head("linear", 4, 2, colour="red")
    with pytest.raises(KeyError, match="unknown recognition head"):
        HEADS.get("transformer")
