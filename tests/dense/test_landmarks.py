"""Heatmap -> coordinate round trips and landmark label files."""

import json

import numpy as np
import pytest
import torch

from visionfm.dense.landmarks import (
    argmax_subpixel,
    centre_of_mask,
    gaussian_heatmaps,
    read_landmarks,
    scale_points,
    soft_argmax,
    write_landmarks,
)


def test_heatmaps_are_float_and_peak_at_subpixel_point():
    hm = gaussian_heatmaps(torch.tensor([[10.3, 7.6]]), (20, 24), sigma=2.0)
    assert hm.dtype == torch.float32 and 0.9 < hm.max() < 1.0  # not rounded, not cast to int


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_round_trip_through_resize_below_half_pixel(sigma):
    rng = np.random.default_rng(0)
    orig = (584, 565)  # DRIVE-sized original, 64 px network input
    pts = np.stack([rng.uniform(5, orig[1] - 5, 6), rng.uniform(5, orig[0] - 5, 6)], -1)
    small = scale_points(pts, orig, (64, 64))
    hm = gaussian_heatmaps(torch.from_numpy(small).float(), (64, 64), sigma)[None]
    # Argmax + log-parabola: every point, border ones included (one sits 0.3 heatmap px from the top edge).
    back = scale_points(argmax_subpixel(hm)[0].double().numpy(), (64, 64), orig)
    assert np.abs(back - pts).max() < 0.5  # in original pixels, after a ~9x resize
    # Windowed soft-argmax: unbiased where the 3-sigma window fits inside the map.
    inside = ((small > 3 * sigma + 1) & (small < 64 - 3 * sigma - 2)).all(-1)
    back = scale_points(soft_argmax(hm, radius=int(3 * sigma + 1))[0].double().numpy(), (64, 64), orig)
    assert inside.sum() >= 3 and np.abs(back - pts)[inside].max() < 0.5


def test_logits_of_a_gaussian_decode_exactly():
    from visionfm.dense.landmarks import heatmap_from_logits

    hm = gaussian_heatmaps(torch.tensor([[12.3, 20.7]]), (32, 32), 3.0)
    logits = torch.log(hm.clamp_min(1e-30))[None] + 5.0  # what a perfect KL-trained model outputs
    assert torch.allclose(argmax_subpixel(heatmap_from_logits(logits)), torch.tensor([[[12.3, 20.7]]]), atol=1e-3)


def test_scale_points_is_exactly_invertible():
    p = np.array([[0.0, 0.0], [10.25, 3.5]])
    assert np.allclose(scale_points(scale_points(p, (30, 40), (7, 9)), (7, 9), (30, 40)), p)
    # Pixel-centre convention: the centre of a 2x2 image is (0.5, 0.5) and maps to (1.5, 1.5) at 4x4.
    assert np.allclose(scale_points(np.array([[0.5, 0.5]]), (2, 2), (4, 4)), [[1.5, 1.5]])


def test_csv_json_npy_labels(tmp_path):
    from PIL import Image

    imgs = [tmp_path / "a.png", tmp_path / "b.png"]
    for img, side in zip(imgs, (16, 64)):  # b.png is 4x its heatmap
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(img)
    pts = np.array([[[1.5, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.25]]])
    write_landmarks(tmp_path / "l.csv", ["p", "q"], ["a.png", "b.png"], pts)
    got, names = read_landmarks(tmp_path / "l.csv", imgs)
    assert names == ["p", "q"] and np.allclose(got, pts)
    (tmp_path / "l.json").write_text(json.dumps({"a": {"p": [1.5, 2], "q": [3, 4]}, "b.png": [[5, 6], [7, 8.25]]}))
    got, names = read_landmarks(tmp_path / "l.json", imgs)
    assert names == ["p", "q"] and np.allclose(got, pts)
    hm = tmp_path / "hm"
    hm.mkdir()
    heat_pts = [pts[0], scale_points(pts[1], (64, 64), (16, 16))]  # b's heatmap is at 16 px: peaks in 16-px units
    for i, (img, p) in enumerate(zip(imgs, heat_pts)):
        arr = gaussian_heatmaps(torch.from_numpy(p).float(), (16, 16), 2.0).numpy().astype(np.float16)
        np.save(hm / f"{img.stem}.npy", arr.transpose(1, 2, 0) if i else arr)  # official [H, W, K] and [K, H, W]
    got, _ = read_landmarks(hm, imgs)
    # float16 heatmaps decode to sub-pixel precision, and b's peaks come back in its own 64-px pixels (4x).
    assert np.abs(got[0] - pts[0]).max() < 0.02 and np.abs(got[1] - pts[1]).max() < 0.08
    np.save(hm / "a.npy", np.zeros((2, 16, 16), np.uint8))  # an integer-cast heatmap that lost its landmark
    with pytest.raises(ValueError, match=r"a\.npy: heatmap channel\(s\) \[0, 1\].*lost"):
        read_landmarks(hm, imgs)
    with pytest.raises(FileNotFoundError, match="c.png"):
        read_landmarks(tmp_path / "l.csv", [tmp_path / "c.png"])


def test_centre_of_mask():
    m = np.zeros((10, 10), bool)
    m[2:5, 6:9] = True
    assert centre_of_mask(m).tolist() == [7.0, 3.0]
