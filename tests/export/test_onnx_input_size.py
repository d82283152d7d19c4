"""ONNX export of a ViT at an input size other than its training size: the position embeddings are interpolated
for the export size (bicubic, the official "offset" rule) and the graph matches PyTorch at that size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from tests.helpers import save_tiny_encoder


@pytest.mark.parametrize("size", [48, 64])  # the tiny encoder trained at 32 px (4 x 4 patches of 8 px)
def test_encoder_exports_at_a_non_native_size(tmp_path, size):
    from visionfm.export import export_onnx, load_model, load_onnx

    weights = save_tiny_encoder(tmp_path / "enc.safetensors")
    res = export_onnx(weights, tmp_path / "enc.onnx", input_size=size, n_check=1)
    assert res.max_abs_error <= 1e-4 and res.info["model"]["input_size"] == size
    dims = [d.dim_value for d in onnx.load(str(res.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, size, size]  # the image size is fixed in the graph: the interpolation is for it alone
    # an independent check: a freshly loaded encoder (interpolating on every call) on other images, batch 3
    torch_model = load_model(weights, input_size=size)
    assert torch_model.encoder.pos_embed.shape[1] == 1 + 4 * 4
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = [t.numpy() for t in torch_model.module(x)]
    got = load_onnx(res.path).run({"image": x.numpy()})
    assert [g.shape for g in got] == [r.shape for r in ref]
    assert max(float(np.abs(g - r).max()) for g, r in zip(got, ref)) <= 1e-4
