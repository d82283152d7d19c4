"""Stacked contrast views as input channels, the U-Net's width, and hard-negative windows (known answers; tiny)."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from visionfm.cli import main
from visionfm.dense.config import DenseConfig, contrast_channels, contrast_parts
from visionfm.dense.datasets import hard_negatives
from visionfm.dense.decoders import build_dense_model
from visionfm.dense.transforms import input_stats, normalise_contrast, prepare_image
from visionfm.errors import ConfigError


def test_contrast_channels_known_answers():
    assert [contrast_channels(m) for m in ("none", "standardize", "clahe", "green_clahe")] == [3, 3, 3, 3]
    assert contrast_channels("standardize+green_clahe") == 4  # a grey view is one channel in a stack
    assert contrast_channels("standardize+clahe") == 6
    assert contrast_channels("clahe+standardize+green_clahe") == 7
    assert contrast_parts("standardize+green_clahe") == ["standardize", "green_clahe"]
    for bad in ("none+standardize", "standardize+standardize", "standardize+hist", "hist"):
        with pytest.raises(ConfigError, match="contrast"):
            contrast_parts(bad)


def test_stacked_views_are_the_single_modes_side_by_side():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 48, 48, generator=g)
    fov = torch.zeros(48, 48, dtype=torch.bool)
    fov[4:-4, 4:-4] = True
    out = normalise_contrast(x, fov, "standardize+green_clahe")
    assert out.shape == (4, 48, 48)
    assert torch.allclose(out[:3], normalise_contrast(x, fov, "standardize"))
    assert torch.allclose(out[3], normalise_contrast(x, fov, "green_clahe")[0])
    assert out[:, ~fov].abs().max() == 0  # zero outside the field of view, every channel
    img = (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    y, f = prepare_image(img, fov.numpy(), None, None, None, "standardize+clahe")
    assert y.shape == (6, 48, 48) and torch.equal(f, fov)


def test_input_stats_per_channel():
    mean, std = [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]
    assert input_stats(mean, std, "green_clahe") == (mean, std)
    assert input_stats(mean, std, "standardize+green_clahe") == ([0.1, 0.2, 0.3, 0.2], [1.0, 2.0, 3.0, 2.0])


def test_config_checks_stacks_and_window_shares():
    assert DenseConfig(crop=64, model="unet", contrast="standardize+green_clahe", hard_crop=0.1).hard_crop == 0.1
    with pytest.raises(ConfigError, match="only --unet"):
        DenseConfig(crop=64, model="unetr", contrast="standardize+green_clahe")
    with pytest.raises(ConfigError, match="must not exceed 1"):
        DenseConfig(crop=64, model="unet", fg_crop=0.7, border_crop=0.2, hard_crop=0.2)
    with pytest.raises(ConfigError, match="hard_crop"):
        DenseConfig(crop=64, hard_crop=1.5)
    with pytest.raises(ConfigError, match="unet_width"):
        DenseConfig(model="unet", unet_width=0)


def test_unet_takes_more_channels_and_a_width():
    model = build_dense_model("unet", None, 2, in_channels=4, width=4)
    assert model(torch.randn(1, 4, 32, 32)).shape == (1, 2, 32, 32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 4 and convs[0].out_channels == 4
    assert max(m.out_channels for m in convs) == 64  # 4, 8, 16, 32, 64
    with pytest.raises(ValueError, match="RGB"):
        build_dense_model("unetr", None, 1, in_channels=4)


def test_hard_negatives_mark_only_unlabelled_thin_dark_structures():
    img = np.full((64, 64), 0.6, np.float32)
    img[:, 10:12] = 0.2  # an unlabelled vessel: the hard negative
    img[:, 40:42] = 0.2  # a labelled dark lesion of the same look: never a negative
    img[40:60, 15:35] = 0.2  # a dark area wider than the filter: not a thin structure
    target = np.zeros((2, 64, 64), np.float32)
    target[1, :, 40:42] = 1
    fov = np.ones((64, 64), bool)
    pts = hard_negatives(img, fov, target, size=7).numpy()
    # the FOV is eroded by 3 px, so rows 3..60 of the two columns of the unlabelled line, nothing else
    assert set(pts[:, 1].tolist()) == {10, 11} and len(pts) == 2 * 58
    assert len(hard_negatives(np.full((64, 64), 0.5, np.float32), fov, target, size=7)) == 0  # flat: none


def test_train_predict_with_stacked_views_and_hard_windows(drive_like, tmp_path):
    """The stack reaches the run: 4 input channels, 4-long normalisation, prediction rebuilds and runs the model."""
    from visionfm.dense.models_io import load_run

    run, out = tmp_path / "r", tmp_path / "p"
    args = ["--data", str(drive_like), "--unet", "--crop", "32", "--contrast", "standardize+green_clahe"]
    args += ["--hard-crop", "0.3", "--unet-width", "4", "--max-steps", "3", "--batch-size", "2"]
    assert main(["segment", "train", *args, "--device", "cpu", "--output", str(run)]) == 0
    saved = yaml.safe_load((run / "dense.yaml").read_text())
    assert saved["contrast"] == "standardize+green_clahe" and saved["hard_crop"] == 0.3 and saved["unet_width"] == 4
    assert len(saved["state"]["mean"]) == len(saved["state"]["std"]) == 4
    model, cfg = load_run(run)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 4 and first.out_channels == 4
    pred = ["--run", str(run), "--data", str(drive_like), "--split", "training", "--device", "cpu"]
    assert main(["segment", "predict", *pred, "--output", str(out)]) == 0
    assert (out / "21_training.png").is_file()


def test_elongation_known_answers_and_dropping_a_bar():
    from visionfm.dense.postprocess import drop_elongated, elongation, parse_elongation_limits

    yy, xx = np.mgrid[:40, :64]
    disc = (yy - 20) ** 2 + (xx - 12) ** 2 <= 25  # radius 5: 81 pixels; the centre's nearest outside pixel: (5, 1)
    bar = np.zeros((40, 64), bool)
    bar[19:22, 30:60] = True  # 3 x 30: area 90, deepest 2 -> 90 / (4 pi) = 7.16
    labels, ratio = elongation(disc | bar)
    assert labels.max() == 2 and sorted(np.round(ratio, 2).tolist()) == [round(81 / (26 * np.pi), 2), 7.16]
    prob = np.where(disc | bar, 0.9, 0.1).astype(np.float32)
    out = drop_elongated(prob, 0.5, 4.0)
    assert (out[bar] == 0).all() and np.array_equal(out[~bar], prob[~bar])
    assert drop_elongated(prob, 0.5, 8.0) is prob  # nothing beyond the limit: untouched
    assert parse_elongation_limits(["HE=6"], ["MA", "HE"]) == {1: 6.0}
    for bad in ("HE", "XX=3", "HE=abc", "HE=0.5"):
        with pytest.raises(ValueError, match="drop-elongated"):
            parse_elongation_limits([bad], ["MA", "HE"])


def test_export_prepares_a_stacked_run_as_training_did(drive_like, tmp_path):
    """Serving / ONNX export read the run's contrast and per-channel normalisation (4 channels here)."""
    from visionfm.data import read_image
    from visionfm.dense.fov import estimate_fov
    from visionfm.export import load_model, preprocess_image

    run = tmp_path / "r"
    args = ["--data", str(drive_like), "--unet", "--crop", "32", "--contrast", "standardize+green_clahe"]
    args += ["--unet-width", "4", "--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--output", str(run)]
    assert main(["segment", "train", *args]) == 0
    card = load_model(run).card
    assert card.contrast == "standardize+green_clahe" and len(card.mean) == 4
    img = read_image(drive_like / "training" / "images" / "22_training.png")
    x, _ = prepare_image(img, estimate_fov(img), contrast="standardize+green_clahe")
    want = (x - torch.tensor(card.mean).view(-1, 1, 1)) / torch.tensor(card.std).view(-1, 1, 1)
    assert np.allclose(preprocess_image(card, img), want.numpy(), atol=1e-6)


def test_hard_windows_are_centred_on_hard_negatives(tmp_path):
    """With --hard-crop 1 every training window is placed around one of the image's hard-negative pixels."""
    from tests.dense.conftest import make_drive_like
    from visionfm.dense.data import resolve_spec
    from visionfm.dense.datasets import SegmentationDataset

    root = make_drive_like(tmp_path / "d", 2, (64, 64))  # 64 px: room for the 15-px filter
    for f in sorted((root / "training" / "images").iterdir()):
        img = np.array(Image.open(f))
        img[:, 40:42] = 30  # an unlabelled dark line (the labelled vessel lies at columns 10-15)
        Image.fromarray(img).save(f)
    spec = resolve_spec(root, "training")
    data = SegmentationDataset(spec.items(), spec, 0, [0.5] * 3, [0.2] * 3, crop=16, border_crop=0.0, hard_crop=1.0)
    assert all(len(h) for h in data.hard)
    hard = {tuple(p) for p in data.hard[0].tolist()}
    assert {x for _, x in hard} <= {40, 41}
    assert all(data._around(0) in hard for _ in range(20))
    plain = SegmentationDataset(spec.items(), spec, 0, [0.5] * 3, [0.2] * 3, crop=16, border_crop=0.0)
    assert not any(len(h) for h in plain.hard) and plain._around(0) is None
