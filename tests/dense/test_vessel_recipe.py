"""The cross-dataset vessel recipe: scale by field of view, contrast normalisation, Dice + BCE (known answers)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.helpers import DATA, require
from visionfm.cli import main
from visionfm.dense.config import DenseConfig
from visionfm.dense.fov import estimate_fov, fov_diameter
from visionfm.dense.losses import SEG_LOSSES, dice_bce_loss, soft_dice_loss
from visionfm.dense.transforms import normalise_contrast, prepare_image, working_shape
from visionfm.errors import ConfigError


def _disc(h, w, r, cy=None, cx=None):
    yy, xx = np.mgrid[:h, :w]
    cy, cx = (h - 1) / 2 if cy is None else cy, (w - 1) / 2 if cx is None else cx
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _fundus(h, w, r, seed=0, gain=1.0):
    """A textured bright disc on black (brightness ``gain``) and its mask."""
    rng = np.random.default_rng(seed)
    disc = _disc(h, w, r)
    img = np.zeros((h, w, 3), np.float32)
    tex = 0.5 + 0.2 * rng.random((h, w)) + 0.2 * np.linspace(0, 1, w)[None]  # texture + uneven illumination
    img[disc] = np.stack([0.9 * tex, 0.5 * tex, 0.2 * tex], -1)[disc]
    return np.clip(img * gain, 0, 1), disc


def test_fov_diameter_is_the_larger_extent():
    assert fov_diameter(_disc(120, 150, 50)) == 100  # centre between pixels: 2r
    cut = _disc(120, 150, 70)  # cut at the top and bottom (as DRIVE's): the width is the diameter
    assert fov_diameter(cut) == 140
    assert fov_diameter(None, (40, 60)) == 60  # no FOV: the image
    assert fov_diameter(np.ones((30, 20), bool)) == 30
    with pytest.raises(ValueError):
        fov_diameter(None)


def test_working_shape_scales_to_the_fov_diameter():
    assert working_shape((100, 200), None, 100.0, 50) == (50, 100)  # down
    assert working_shape((100, 200), None, 100.0, 300) == (300, 600)  # up
    assert working_shape((100, 200), 100) == (50, 100)  # max_side alone: only down
    assert working_shape((100, 200), 400) == (100, 200)
    assert working_shape((100, 200), 100, 100.0, 150) == (150, 300)  # fov_diameter wins over max_side


def test_prepare_image_gives_every_camera_the_same_fov_size():
    # the same eye photographed at two resolutions: after preparation its FOV is fov_diameter px across in both
    for h, w, r in ((120, 150, 50), (300, 320, 140)):
        img, disc = _fundus(h, w, r)
        x, f = prepare_image(img, disc, fov_diameter_px=60)
        assert x.shape[0] == 3 and x.shape[1:] == f.shape and f.dtype == torch.bool
        assert abs(fov_diameter(f.numpy()) - 60) <= 1
    # without fov_diameter and contrast it is the plain [0, 1] image
    img, disc = _fundus(40, 50, 15)
    x, f = prepare_image(img, disc)
    assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1)) and torch.equal(f, torch.from_numpy(disc))
    x, f = prepare_image((img * 255).astype(np.uint8), None, size=32)
    assert x.shape == (3, 32, 32) and f.all()


@pytest.mark.parametrize("mode", ["standardize", "clahe", "green_clahe"])
def test_contrast_normalisation_brings_a_dark_image_to_the_bright_ones_range(mode):
    bright, disc = _fundus(96, 96, 44, gain=1.0)
    dark, _ = _fundus(96, 96, 44, gain=0.45)  # the same eye under-exposed (CHASE_DB1 next to DRIVE)
    f = torch.from_numpy(disc)

    def prep(a):
        return normalise_contrast(torch.from_numpy(a).permute(2, 0, 1).contiguous(), f, mode)

    before = (torch.from_numpy(bright - dark).permute(2, 0, 1)[1][f]).abs().mean()
    nb, nd = prep(bright), prep(dark)
    after = (nb[1][f] - nd[1][f]).abs().mean()
    # the exposure difference is gone (standardize: an affine map undone exactly; CLAHE's clip limit depends on
    # the histogram's spread, so a little remains)
    assert after < (0.01 if mode == "standardize" else 0.2) * before
    assert nb.min() >= 0 and nb.max() <= 1 and nb[:, ~f].abs().max() == 0
    assert abs(float(nb[1][f].mean()) - 0.5) < 0.02 and abs(float(nb[1][f].std()) - 0.2) < 0.02
    if mode == "green_clahe":  # a grey image: three equal channels
        assert torch.equal(nb[0], nb[1]) and torch.equal(nb[1], nb[2])
    elif mode == "clahe":  # CLAHE changed the lightness, not only the range: not a per-channel affine map
        ref = normalise_contrast(torch.from_numpy(bright).permute(2, 0, 1).contiguous(), f, "standardize")
        assert (nb - ref)[:, f].abs().mean() > 0.01
    assert torch.equal(normalise_contrast(nb, f, "none"), nb)
    with pytest.raises(ValueError, match="contrast"):
        normalise_contrast(nb, f, "hist")


def test_dice_bce_known_answer():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    out = dice_bce_loss(logits, target, gamma=2.0)  # gamma ignored: plain BCE
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(out["bce_loss"], bce) and torch.allclose(out["dice_loss"], soft_dice_loss(logits, target))
    assert torch.allclose(out["loss"], bce + soft_dice_loss(logits, target))
    valid = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # only the first row counts
    assert torch.allclose(
        dice_bce_loss(logits, target, valid)["bce_loss"],
        F.binary_cross_entropy_with_logits(logits[..., 0, :], target[..., 0, :]),
    )
    sure = torch.where(target > 0, 20.0, -20.0)
    assert dice_bce_loss(sure, target)["loss"] < 1e-6
    assert SEG_LOSSES["dice_bce"] is dice_bce_loss


def test_config_checks_the_new_options():
    cfg = DenseConfig(crop=64, fov_diameter=540, contrast="green_clahe", loss="dice_bce")
    assert cfg.fov_diameter == 540
    with pytest.raises(ConfigError, match="fov_diameter goes with crop"):
        DenseConfig(fov_diameter=540)
    with pytest.raises(ConfigError, match="contrast"):
        DenseConfig(crop=64, contrast="hist")
    with pytest.raises(ConfigError, match="fov_diameter"):
        DenseConfig(crop=64, fov_diameter=0)


def test_train_and_predict_with_fov_scale_and_contrast(drive_like, tmp_path):
    """The options reach training and prediction; masks come back at the original size, empty outside the FOV."""
    run, out = tmp_path / "r", tmp_path / "p"
    args = ["--data", str(drive_like), "--unet", "--crop", "32", "--fov-diameter", "24", "--contrast"]
    args += ["green_clahe", "--loss", "dice_bce", "--max-steps", "3", "--batch-size", "2", "--precision", "bf16"]
    assert main(["segment", "train", *args, "--device", "cpu", "--output", str(run)]) == 0
    saved = (run / "dense.yaml").read_text()
    assert "fov_diameter: 24" in saved and "contrast: green_clahe" in saved and "precision: bf16" in saved
    pred = ["--run", str(run), "--data", str(drive_like), "--split", "training", "--device", "cpu"]
    assert main(["segment", "predict", *pred, "--output", str(out)]) == 0
    mask = np.array(Image.open(out / "21_training.png"))
    fov = np.array(Image.open(drive_like / "training" / "mask" / "21_training_mask.gif")) > 0
    assert mask.shape == (40, 36) and not mask[~fov].any()
    assert json.loads((out / "metrics.json").read_text())["fov"] == {"given": 3}
    # serving / ONNX export prepare the image as training did (a plain resize would be silently wrong)
    from visionfm.data import read_image
    from visionfm.export import load_model, preprocess_image

    card = load_model(run).card
    assert (card.fov_diameter, card.contrast) == (24, "green_clahe")
    img = read_image(drive_like / "training" / "images" / "22_training.png")
    x, _ = prepare_image(img, estimate_fov(img), fov_diameter_px=24, contrast="green_clahe")
    want = (x - torch.tensor(card.mean).view(3, 1, 1)) / torch.tensor(card.std).view(3, 1, 1)
    assert np.allclose(preprocess_image(card, img), want.numpy(), atol=1e-6)


def test_real_drive_and_chase_prepared_to_the_same_fov_size():
    """DRIVE (565x584) and CHASE_DB1 (999x960) with estimated FOVs end up with FOVs 540 +- 1% across."""
    from visionfm.data import read_image

    for path in (DATA / "DRIVE/test/images/01_test.png", DATA / "CHASEDB1/test/images/Image_08L.jpg"):
        img = read_image(require(path))
        x, f = prepare_image(img, estimate_fov(img), fov_diameter_px=540, contrast="green_clahe")
        assert abs(fov_diameter(f.numpy()) - 540) <= 5.4 and x[:, ~f].abs().max() == 0
        assert abs(float(x[1][f].mean()) - 0.5) < 0.02  # both land in the same range
