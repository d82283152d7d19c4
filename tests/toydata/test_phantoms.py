"""Phantoms have the properties their docs state: masks match the drawing, landmarks hit structures, labels and
targets follow the generator's rules, and everything is deterministic by seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from visionfm.toydata import (
    DR_LESION_BINS,
    GLAUCOMA_CDR,
    MULTILABEL_CLASSES,
    FundusSpec,
    dr_grade,
    external_phantom,
    fundus_phantom,
    generate,
    multilabel_vector,
    oct_phantom,
    sample_fundus_spec,
    slitlamp_phantom,
    ubm_phantom,
)


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng(1000 + i)


def test_generate_is_deterministic_by_seed_and_index():
    a, va = generate("fundus-multilabel", 3, seed=7, size=64)
    b, vb = generate("fundus-multilabel", 3, seed=7, size=64)
    c, _ = generate("fundus-multilabel", 3, seed=8, size=64)
    d, _ = generate("fundus-multilabel", 4, seed=7, size=64)
    assert np.array_equal(a.image, b.image) and va == vb
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, d.image)


@pytest.mark.parametrize("i", range(6))
def test_vessel_mask_matches_drawn_vessels(i):
    p = fundus_phantom(_rng(i), 128, FundusSpec(grade=0, cdr=0.3, right_eye=bool(i % 2)))
    img = p.image[..., 1].astype(float)  # green channel: vessels are dark there
    vessel, fov = p.masks["vessel"], p.masks["fov"]
    assert vessel.sum() > 200 and not (vessel & ~fov).any()
    ring = ndimage.binary_dilation(vessel, iterations=2) & ~vessel & fov & ~p.masks["optic_disc"]
    inside = vessel & ~ndimage.binary_dilation(p.masks["optic_disc"], iterations=2)
    assert img[inside].mean() < 0.6 * img[ring].mean()
    # every vessel pixel is darker than the background just beside it, not just on average
    assert np.median(img[inside]) < np.percentile(img[ring], 10)
    assert p.targets["vessel_density"] == pytest.approx(vessel[fov].mean())


@pytest.mark.parametrize("grade", range(5))
def test_dr_grade_follows_lesion_count(grade):
    p = fundus_phantom(_rng(grade), 128, FundusSpec(grade=grade, cdr=0.3))
    n = int(p.targets["lesion_count"])
    lo, hi = DR_LESION_BINS[grade]
    assert lo <= n <= hi and p.labels["dr_grade"] == grade == dr_grade(n)
    lesions = p.masks["haemorrhage"] | p.masks["exudate"]
    assert lesions.any() == (grade > 0)
    if grade > 0:
        # lesions are drawn where their masks say: red lesions dark, exudates yellow
        assert p.image[p.masks["haemorrhage"]][:, 1].mean() < 40
        ex = p.image[p.masks["exudate"]]
        if len(ex):
            assert ex[:, 0].mean() > 200 and ex[:, 1].mean() > 180


def test_multilabel_vector_rules():
    for i in range(40):
        rng = _rng(i)
        p = fundus_phantom(rng, 64, sample_fundus_spec(rng, disease_p=0.3))
        v = multilabel_vector(p.labels)
        assert len(v) == len(MULTILABEL_CLASSES) == 13
        g = p.labels["dr_grade"]
        assert v[5] == int(g > 0) and sum(v[1:5]) == int(g > 0) and (g == 0 or v[g] == 1)
        assert v[6] == int(p.targets["cup_disc_ratio"] >= GLAUCOMA_CDR)
        assert v[0] == int(sum(v[1:]) == 0)


@pytest.mark.parametrize("i", range(4))
def test_fundus_landmarks_and_cup_to_disc_ratio_hit_the_drawing(i):
    p = fundus_phantom(_rng(i), 128, FundusSpec(grade=0, cdr=0.3 + 0.12 * i, right_eye=bool(i % 2)))
    x, y = p.points["optic_disc_centre"]
    assert p.masks["optic_disc"][round(y), round(x)] and p.masks["optic_cup"][round(y), round(x)]
    fx, fy = p.points["fovea"]
    lum = p.image.astype(float).mean(-1)
    assert lum[round(fy) - 1 : round(fy) + 2, round(fx) - 1 : round(fx) + 2].mean() < lum[p.masks["fov"]].mean()
    rows_cup = np.nonzero(p.masks["optic_cup"].any(1))[0]
    rows_disc = np.nonzero(p.masks["optic_disc"].any(1))[0]
    measured = (rows_cup[-1] - rows_cup[0] + 1) / (rows_disc[-1] - rows_disc[0] + 1)
    assert measured == pytest.approx(p.targets["cup_disc_ratio"], abs=2.5 / len(rows_disc))


def test_cup_to_disc_ratio_is_visible_in_the_pixels():
    """The regression target is learnable: the pale cup area grows with the target (corr > 0.8)."""
    cdrs, pale = [], []
    for i in range(30):
        rng = _rng(i)
        p = fundus_phantom(rng, 96, sample_fundus_spec(rng, grade=0))
        im = p.image.astype(int)
        pale.append(((im[..., 0] > 235) & (im[..., 1] > 215)).sum())
        cdrs.append(p.targets["cup_disc_ratio"])
    assert np.corrcoef(cdrs, np.sqrt(pale))[0, 1] > 0.8


def _on_boundary(mask: np.ndarray, x: float, y: float, r: int = 1) -> bool:
    win = mask[round(y) - r : round(y) + r + 1, round(x) - r : round(x) + r + 1]
    return bool(win.any() and not win.all())


@pytest.mark.parametrize("i", range(5))
def test_ubm_landmarks_hit_the_angle_structures(i):
    s = 128
    p = ubm_phantom(_rng(i), s)
    wall, iris = p.masks["corneosclera"], p.masks["iris"]
    spur, rec, aux = (p.points[k] for k in ("scleral_spur", "angle_recess", "auxiliary_point"))
    assert _on_boundary(wall, *spur) and _on_boundary(wall, *aux)
    win = (slice(round(rec[1]) - 2, round(rec[1]) + 3), slice(round(rec[0]) - 2, round(rec[0]) + 3))
    assert wall[win].any() and iris[win].any()  # the recess is where iris meets the wall
    sy, sx = np.nonzero(p.masks["scleral_spur"])
    assert np.hypot(sx - spur[0], sy - spur[1]).min() <= 1.5  # the drawn spur sits on the landmark
    assert math.dist(spur, aux) == pytest.approx(0.12 * s)
    chamber = ~(wall | iris | p.masks["ciliary_body"] | p.masks["scleral_spur"])
    assert p.image[p.masks["scleral_spur"] & ~wall].mean() > 4 * p.image[chamber].mean()  # visible protrusion
    assert p.labels["narrow_angle"] == int(p.targets["angle_deg"] < 20)
    # the opening measured from the landmarks: the angle at the recess between spur and the iris direction
    d_w = np.subtract(spur, rec)
    ang_w = math.degrees(math.atan2(-d_w[1], d_w[0]))
    assert ang_w >= 8 and p.targets["angle_deg"] == pytest.approx(ang_w - _iris_angle(iris, rec), abs=4)


def _iris_angle(iris: np.ndarray, rec) -> float:
    """Direction of the iris' anterior surface measured on the mask (topmost iris pixel per column)."""
    xs = np.arange(int(rec[0]) + 10, int(rec[0]) + 60)
    tops = np.array([np.nonzero(iris[:, x])[0].min() for x in xs])
    slope = np.polyfit(xs, tops, 1)[0]
    return math.degrees(math.atan(-slope))


@pytest.mark.parametrize("cond", range(3))
def test_oct_layers_fluid_and_thickness(cond):
    s = 96
    p = oct_phantom(_rng(cond), s, condition=cond)
    layers = np.zeros((s, s), int)
    for v, name in enumerate(("RNFL", "GCL-IPL", "INL", "OPL", "ONL", "EZ", "RPE"), start=1):
        layers[p.masks[name]] = v
    for x in range(0, s, 7):  # layers are stacked top to bottom in every column
        col = layers[:, x][layers[:, x] > 0]
        assert np.all(np.diff(col) >= 0)
    assert p.labels["dme"] == int(cond == 1) == int(p.masks["fluid"].any())
    assert p.masks["drusen"].any() == (cond == 2)
    lum = p.image[..., 0].astype(float)
    if cond == 1:  # fluid is dark inside a bright retina
        assert lum[p.masks["fluid"]].mean() < 0.3 * lum[p.masks["RPE"]].mean()
    x = round(p.points["fovea"][0])
    assert p.masks["retina"][:, x].sum() / s == pytest.approx(p.targets["central_thickness"], abs=2 / s)


def test_slitlamp_and_external_rules():
    for c in range(3):
        p = slitlamp_phantom(_rng(c), 64, condition=c)
        assert p.labels["condition"] == c and p.masks["lesion"].any() == (c > 0)
    dark, bright = external_phantom(_rng(0), 96, 0), external_phantom(_rng(0), 96, 1)
    assert bright.image[bright.masks["pupil"]].mean() > dark.image[dark.masks["pupil"]].mean() + 15  # faint grey
    assert 0.2 < bright.targets["pupil_iris_ratio"] < 0.7
