"""At bf16 on a CPU with native bf16 the service computes features with the fused model ``extract`` runs, so a run
trained on bf16 features answers a served image exactly as ``visionfm predict`` does (same kernels, not merely the
same precision), and ``extract --volumes`` uses the same model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import cli
from tests.serve.test_jpeg_draft import _oct_jpegs, _row
from visionfm.engine.precision import cpu_has_native_bf16

pytestmark = pytest.mark.skipif(not cpu_has_native_bf16(), reason="needs a CPU with native bf16 (AMX / AVX512-BF16)")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, serve_weights) -> Path:
    """A DME head on bf16 features (draft-decoded JPEGs: extract's default) of 3 + 3 real OCT B-scans."""
    root = tmp_path_factory.mktemp("fused_bf16")
    feats = {}
    for split, part in (("training", slice(0, 3)), ("test", slice(3, 5))):
        for c, paths in _oct_jpegs().items():
            (root / split / c).mkdir(parents=True)
            for p in paths[part]:
                shutil.copyfile(p, root / split / c / p.name)
        feats[split] = root / f"{split}.safetensors"
        argv = ["extract", "--weights", serve_weights, "--data", root / split, "--layout", "imagenet"]
        assert cli(*argv, "--output", feats[split], "--precision", "bf16", "--input-size", 32, "--num-workers", 0) == 0
    run = root / "run"
    argv = ["classify", "train", "--train", feats["training"], "--test", feats["test"], "--output", run]
    assert cli(*argv, "--epochs", 3, "--batch-size", 4, "--n-boot", 0, "--device", "cpu") == 0
    return run


def test_served_bf16_run_uses_the_fused_model_and_matches_predict(bf16_run, tmp_path):
    from visionfm.data.images import read_image
    from visionfm.models.vit_fused import PackedBf16ViT
    from visionfm.recognition.predict import predict_paths
    from visionfm.serve.embed import embed_batch
    from visionfm.serve.models import load_served

    (served,) = load_served([str(bf16_run)]).values()
    assert served.precision == "bf16" and isinstance(served.features, PackedBf16ViT)
    assert served.loaded.encoder is not served.features  # explain keeps the attention-capable encoder
    path = _oct_jpegs()["dme"][4]
    x = served.prepare(read_image(path, draft=served.card.draft_side()), None)
    (probs,) = served.run_batch([x])
    ref = _row(predict_paths(bf16_run, [path], tmp_path / "p.csv", device="cpu"))
    assert np.allclose(probs[0], [float(ref[f"prob_{c}"]) for c in served.card.names], atol=1e-5)
    # embeddings: the run's own feature, unit length, from the same fused model
    (emb,) = embed_batch(served, [x["image"]])
    assert emb.dtype == np.float32 and abs(float(np.linalg.norm(emb)) - 1) < 1e-5


def test_volume_extraction_at_bf16_runs_the_fused_model(tmp_path, serve_weights, monkeypatch):
    from visionfm.models import vit_fused
    from visionfm.volumes import extract_volume_features, load_volume_features

    vol = tmp_path / "vols" / "eye1"
    vol.mkdir(parents=True)
    for i, p in enumerate(_oct_jpegs()["healthy"][:3]):
        shutil.copyfile(p, vol / f"{i:02d}.jpg")
    calls = []
    block = vit_fused.PackedBf16ViT.block
    monkeypatch.setattr(vit_fused.PackedBf16ViT, "block", lambda self, i, x: calls.append(i) or block(self, i, x))
    out = extract_volume_features(
        serve_weights,
        tmp_path / "vols",
        tmp_path / "v.safetensors",
        input_size=32,
        precision="bf16",
        num_workers=0,
        progress=False,
    )
    feats = load_volume_features(out)
    assert calls and feats.meta["precision"] == "bf16" and np.isfinite(feats.cls).all()
