"""Pretraining data: sources and modalities, the real:synthetic ratio in every epoch, corrupt images, errors."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from visionfm.data import ImageReadError
from visionfm.modalities import get_modality
from visionfm.pretrain import PretrainConfig, build_dataset

from .conftest import tiny_config


def _pngs(root, n, size=(40, 36), seed=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / f"s{i}.png")
    return root


def test_real_images_give_views_and_masks(drive_folder, tmp_path):
    cfg = tiny_config([drive_folder], tmp_path, load_size=64, local_crops=3, local_size=16)
    ds = build_dataset(cfg, patch_size=8)
    item = ds[0]
    assert len(ds) == 20
    assert item["global"].shape == (2, 3, 32, 32) and item["global"].dtype == torch.uint8
    assert item["local"].shape == (3, 3, 16, 16) and item["mask"].shape == (2, 4, 4)
    torch.testing.assert_close(item["mean"], torch.tensor(get_modality("Fundus").mean))
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["global"], item["global"])  # new crops every epoch
    ds.set_epoch(0)
    assert torch.equal(ds[0]["global"], item["global"])  # ... and the same ones for the same epoch


def test_ratio_holds_in_every_epoch(retina_folder, tmp_path):
    syn = _pngs(tmp_path / "syn", 7)
    cfg = tiny_config([retina_folder], tmp_path, synthetic=[str(syn)], synthetic_ratio=0.5)
    ds = build_dataset(cfg, 8)
    assert len(ds) == 48 + 24
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        paths = [ds.item(i)[0] for i in range(len(ds))]
        kinds = Counter(p.parent == syn for p in paths)
        assert kinds[False] == 48 and kinds[True] == 24  # 1:0.5 exactly
        counts = Counter(p for p in paths if p.parent == syn)
        assert max(counts.values()) - min(counts.values()) <= 1  # cycled evenly through the pool
        seen.append([p.name for p in paths[48:]])
    assert seen[0] != seen[1]  # a fresh draw each epoch


def test_synthetic_only_and_modality_prefix(tmp_path):
    syn = _pngs(tmp_path / "syn", 5)
    ds = build_dataset(tiny_config([], tmp_path, synthetic=[str(syn)], modality="OCT"), 8)
    assert len(ds) == 5 and ds.item(0)[0].parent == syn
    torch.testing.assert_close(ds[0]["mean"], torch.tensor(get_modality("OCT").mean))
    oct_dir = _pngs(tmp_path / "oct", 2)
    ds = build_dataset(tiny_config([str(syn), f"optical coherence tomography={oct_dir}"], tmp_path), 8)
    means = {tuple(ds[i]["mean"].tolist()) for i in range(len(ds))}
    assert len(means) == 2  # Fundus and OCT statistics, per image
    with pytest.raises(ValueError, match="synthetic only"):
        PretrainConfig(data=[], synthetic=[str(syn)], synthetic_ratio=1.0)


def test_corrupt_image_skipped_counted_and_logged(retina_folder, tmp_path):
    root = _pngs(tmp_path / "mixed", 3)
    bad = root / "s1.png"
    bad.write_bytes(b"not an image at all")
    cfg = tiny_config([root], tmp_path)
    ds = build_dataset(cfg, 8, bad_log=tmp_path / "bad_images.txt")
    item = ds[1]
    assert item["bad"].item() == 1 and item["global"].shape == (2, 3, 32, 32)
    assert (tmp_path / "bad_images.txt").read_text().splitlines() == [str(bad)]
    ds_fail = build_dataset(tiny_config([root], tmp_path, on_bad_image="fail"), 8)
    with pytest.raises(ImageReadError, match="s1.png"):
        ds_fail[1]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found: .*nowhere"):
        build_dataset(tiny_config([tmp_path / "nowhere"], tmp_path), 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        build_dataset(tiny_config([tmp_path / "empty"], tmp_path), 8)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="image folder or a .csv manifest"):
        build_dataset(tiny_config([tmp_path / "notes.txt"], tmp_path), 8)
    with pytest.raises(ValueError, match="unknown modality 'Xray'"):
        build_dataset(tiny_config([tmp_path], tmp_path, modality="Xray"), 8)
    with pytest.raises(ValueError, match="unknown modality 'Xray'"):
        build_dataset(tiny_config([f"Xray={tmp_path}"], tmp_path), 8)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        build_dataset(tiny_config([_pngs(tmp_path / "ok", 1)], tmp_path, global_size=36), 8)
