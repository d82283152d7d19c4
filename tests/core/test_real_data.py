"""Extraction on real eye images from ../shared/data (skipped cleanly when absent)."""

import numpy as np

from visionfm import extract_features, load_encoder, load_features


def test_extract_real_fundus_and_external_eye(tmp_path, shared_data, official_fixture):
    enc = load_encoder(official_fixture / "checkpoint.pth")
    drive = extract_features(
        enc,
        shared_data / "DRIVE" / "test" / "images",
        tmp_path / "drive.safetensors",
        batch_size=4,
        num_workers=0,
        progress=False,
    )
    fs = load_features(drive)
    assert len(fs.paths) == 20 and fs.cls.shape == (20, 384) and np.isfinite(fs.cls).all()
    # RGBA external-eye photos in class folders: labels come from the folder names
    ext = extract_features(
        enc,
        shared_data / "external-eye-cataract-samples",
        tmp_path / "ext.safetensors",
        layout="imagenet",
        input_size=112,
        num_workers=0,
        progress=False,
    )
    fe = load_features(ext)
    assert fe.labels is not None and set(np.unique(fe.labels)) == {0.0, 1.0}
