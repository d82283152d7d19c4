"""The demo stage: a tiny generator on the fundus phantoms, sampled and measured, in the demo's fast mode."""

from __future__ import annotations

import pytest

from visionfm.demo import DEMO_STAGES, DemoConfig, DemoContext


@pytest.mark.slow
def test_demo_stage_fast(tmp_path, tiny_weights):
    from visionfm.toydata import make_all

    cfg = DemoConfig(output=str(tmp_path), fast=True, device="cpu")
    ctx = DemoContext(cfg, tmp_path, encoder_path=tiny_weights)
    ctx.datasets = make_all(tmp_path / "data", n=cfg.n, size=cfg.size, kinds=["fundus-dr"], progress=False)
    section = DEMO_STAGES.get("synthetic")(ctx)
    ((caption, rows),) = section.tables
    syn, ref = rows
    assert syn["n"] == 16 and ref["n"] == ctx.datasets["fundus-dr"].counts["training"]
    # the real training images are the training set: all flagged as copies, and closer to held-out real images
    assert ref["copies (pixels)"] == 1.0 and syn["copies (pixels)"] < 1.0
    assert ref["FD"] < syn["FD"]
    paths = [im[0] if isinstance(im, tuple) else im for im in section.images]  # (path, caption) or a path
    assert paths and all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert all(isinstance(im, tuple) and im[1] for im in section.images)  # every figure says what it shows
    assert len(list((tmp_path / "synthetic" / "samples").glob("*.png"))) == 16
