"""Fixtures of the recognition tests: phantom data sets, a tiny encoder file and feature caches (session-scoped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import save_tiny_encoder


@pytest.fixture(scope="session")
def rec_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recognition")


@pytest.fixture(scope="session")
def rec_weights(rec_root) -> Path:
    """A randomly initialised test-sized ViT (depth 2, width 64, 32 px) saved with Fundus facts."""
    return save_tiny_encoder(rec_root / "tiny_fundus.safetensors", seed=0, modality="Fundus")


@pytest.fixture(scope="session")
def rec_weights_oct(rec_root) -> Path:
    """A second tiny encoder (another seed) recorded as an OCT encoder."""
    return save_tiny_encoder(rec_root / "tiny_oct.safetensors", seed=1, modality="OCT")


@pytest.fixture(scope="session")
def toy(rec_root) -> dict:
    """Small phantom data sets (32 px) of the recognition kinds."""
    from visionfm.toydata import make_dataset

    sizes = {"fundus-dr": 60, "oct-dme": 36, "fundus-multilabel": 48, "fundus-biomarkers": 48, "glaucoma-forecast": 64}
    return {k: make_dataset(k, rec_root / "toy" / k, n=n, seed=0, size=32, progress=False) for k, n in sizes.items()}


def extract(weights: Path, data: Path, out: Path, split: str = "training", modality: str | None = None, **kw) -> Path:
    """Features of a folder/manifest with the tiny encoder (cached on disk across tests)."""
    from visionfm import extract_features

    kw.setdefault("n_last_blocks", 2)  # the tiny encoder has 2 blocks
    if not out.is_file():
        extract_features(
            weights,
            data,
            out,
            modality=modality,
            split=split,
            input_size=32,
            num_workers=0,
            batch_size=64,
            progress=False,
            device="cpu",
            **kw,
        )
    return out


@pytest.fixture(scope="session")
def caches(toy, rec_root, rec_weights, rec_weights_oct) -> dict:
    """Feature caches: {kind: {split: path}} with the tiny Fundus encoder (OCT encoder for oct-dme)."""
    out = {}
    for kind, ds in toy.items():
        w = rec_weights_oct if kind == "oct-dme" else rec_weights
        out[kind] = {
            s: extract(w, ds.root, rec_root / "features" / f"{kind}_{s}.safetensors", s) for s in ("training", "test")
        }
    return out
