"""Pairing images with masks, mask styles, and bad input naming the file."""

import numpy as np
import pytest
from PIL import Image

from visionfm.dense.data import DenseSpec, load_target, resolve_spec


def test_drive_layout_pairs_and_loads(drive_like):
    spec = resolve_spec(drive_like, "training")
    assert spec.kind == "binary" and spec.fov is not None
    items = spec.items()
    assert [i.masks[0].name for i in items] == ["21_manual1.gif", "22_manual1.gif", "23_manual1.gif"]
    target, fov = load_target(items[0], spec, (40, 36))
    assert target.shape == (1, 40, 36) and set(np.unique(target)) == {0.0, 1.0} and fov[2, 2] and not fov[0, 0]


def test_per_class_and_labelmap(tmp_path):
    (tmp_path / "im").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "im" / "IDRiD_01.jpg")
    for c in ("EX", "OD"):
        (tmp_path / "m" / c).mkdir(parents=True)
        m = np.zeros((8, 8), np.uint8)
        m[: 2 if c == "EX" else 4] = 1
        Image.fromarray(m).save(tmp_path / "m" / c / f"IDRiD_01_{c}.tif")
    spec = resolve_spec(tmp_path / "im", masks=str(tmp_path / "m"))
    assert spec.kind == "per-class" and spec.classes == ["EX", "OD"]
    t, _ = load_target(spec.items()[0], spec, (8, 8))
    assert t[0].sum() == 16 and t[1].sum() == 32
    (tmp_path / "lm").mkdir()
    Image.fromarray(np.array([[0, 1], [2, 2]], np.uint8)).save(tmp_path / "lm" / "IDRiD_01.png")
    spec = DenseSpec(tmp_path / "im", tmp_path / "lm", "labelmap", ["a", "b"])
    t, _ = load_target(spec.items()[0], spec, (2, 2))
    assert t[0].tolist() == [[0, 1], [0, 0]] and t[1].tolist() == [[0, 0], [1, 1]]
    spec.classes = ["a"]  # value 2 is now outside the classes
    with pytest.raises(ValueError, match=r"IDRiD_01\.png.*outside the classes"):
        load_target(spec.items()[0], spec, (2, 2))


def test_bad_input_names_the_file(drive_like):
    spec = resolve_spec(drive_like, "training")
    item = spec.items()[0]
    with pytest.raises(ValueError, match=r"21_manual1\.gif: mask size 36x40 differs"):
        load_target(item, spec, (50, 36))
    Image.fromarray(np.full((40, 36), 7, np.uint8)).save(item.masks[0])
    Image.fromarray(np.arange(40 * 36).reshape(40, 36).astype(np.uint8)).save(item.masks[0])
    with pytest.raises(ValueError, match=r"21_manual1\.gif: a binary mask"):
        load_target(item, spec, (40, 36))
    item.masks[0].unlink()
    with pytest.raises(FileNotFoundError, match=r"21_training\.png: no mask file"):
        spec.items()


def test_landmark_outside_image_names_file(drive_like):
    from visionfm.dense.datasets import LandmarkDataset

    img = drive_like / "training" / "images" / "21_training.png"
    with pytest.raises(ValueError, match=r"21_training\.png: landmark .* outside the 36x40 image"):
        LandmarkDataset([img], np.array([[[40.0, 3.0]]]), 32, 2.0, [0.5] * 3, [0.2] * 3)


def test_native_crop_dataset_keeps_alignment(drive_like):
    import torch

    from visionfm.dense.datasets import SegmentationDataset

    spec = resolve_spec(drive_like, "training")
    ds = SegmentationDataset(spec.items(), spec, 999, [0.0] * 3, [1.0] * 3, crop=24, min_length=5)
    assert len(ds) == 5
    torch.manual_seed(0)
    s = ds[0]
    assert s["image"].shape == (3, 24, 24) and s["target"].shape == (1, 24, 24)
    # The synthetic vessel is dark (30/255) exactly where the mask is 1: the crop kept them aligned.
    assert torch.equal(s["target"][0] > 0.5, s["image"][0] < 0.2)


def test_max_side_scales_native_images_and_keeps_alignment(drive_like):
    from visionfm.dense.datasets import SegmentationDataset, working_size

    assert working_size((2848, 4288), 1024) == (680, 1024) and working_size((40, 36), None) == (40, 36)
    spec = resolve_spec(drive_like, "training")
    ds = SegmentationDataset(spec.items(), spec, 999, [0.0] * 3, [1.0] * 3, crop=16, max_side=20)
    assert ds.images[0].shape == (3, 20, 18) and ds.targets[0].shape == (1, 20, 18)
    # Columns 10-12 of 36 hold the vessel: at half size it covers columns 5-6, where the image is dark too.
    col_t, col_i = ds.targets[0][0].mean(0), ds.images[0][0].mean(0)
    assert col_t.argmax() in (5, 6) and col_i.argmin() in (5, 6) and col_t[:4].max() == 0


def test_one_colour_masks_read_as_binary(tmp_path):
    from visionfm.dense.data import read_mask

    red = np.zeros((4, 5, 4), np.uint8)
    red[..., 3] = 255  # opaque RGBA, like IDRiD_81_EX.tif
    red[1:3, 2:4, 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    assert read_mask(tmp_path / "red.png").tolist() == (red[..., 0] > 0).astype(int).tolist()
    red[0, 0, 1] = 255  # a second colour (green)
    Image.fromarray(red).save(tmp_path / "two.png")
    with pytest.raises(ValueError, match=r"two\.png: colour mask with several colours"):
        read_mask(tmp_path / "two.png")


def test_foreground_crops_always_hold_the_structure(drive_like):
    import torch

    from visionfm.dense.datasets import SegmentationDataset

    spec = resolve_spec(drive_like, "training")
    torch.manual_seed(0)
    plain = SegmentationDataset(spec.items()[:1], spec, 999, [0.0] * 3, [1.0] * 3, crop=8)
    fg = SegmentationDataset(spec.items()[:1], spec, 999, [0.0] * 3, [1.0] * 3, crop=8, fg_crop=1.0)
    # The 3-px vessel fills 3 of 36 columns: plain 8-px windows miss it about half the time, foreground ones never.
    assert sum(plain[0]["target"].sum() == 0 for _ in range(40)) > 5
    assert all(fg[0]["target"].sum() > 0 for _ in range(40))
