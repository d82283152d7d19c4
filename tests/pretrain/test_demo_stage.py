"""The demo hook pretrains on the fundus phantoms and hands an encoder to the later stages."""

import time

import visionfm
from visionfm.demo import DemoConfig, DemoContext
from visionfm.toydata import make_dataset


def test_demo_stage_fast(tmp_path):
    datasets = {k: make_dataset(k, tmp_path / "data" / k, n=24, seed=0, size=64) for k in ("fundus-dr", "oct-dme")}
    ctx = DemoContext(DemoConfig(output=str(tmp_path), fast=True, device="cpu"), tmp_path, datasets)
    from visionfm.pretrain.demo_stage import demo_stage

    t0 = time.perf_counter()
    section = demo_stage(ctx)
    assert time.perf_counter() - t0 < 60  # < 30 s on an idle 2-core machine
    enc = visionfm.load_encoder(ctx.encoder_path)
    assert enc.info.modality == "Fundus" and enc.cfg.img_size == 64
    assert section.images[0].is_file() and len(section.tables[0][1]) == 2
    assert ctx.facts["pretrain_run"] == tmp_path / "pretrain"
    assert len(list((tmp_path / "pretrain").glob("checkpoint_0*.pth"))) >= 2  # for the attention-evolution figure
    assert "Training health:" in section.text and (tmp_path / "pretrain" / "health.json").is_file()
