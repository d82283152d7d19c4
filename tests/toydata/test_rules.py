"""Every label rule the toy data states is visible in the pixels, and the regression targets follow the image.

Each test measures the picture (not the generator's own bookkeeping) and compares eyes drawn with and without the
condition, so a rule that stopped being drawn fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from visionfm.toydata import (
    FundusSpec,
    external_phantom,
    fundus_phantom,
    oct_phantom,
    sample_fundus_spec,
    slitlamp_phantom,
)

S = 128


def _pair(flag: str, seed: int):
    """The same eye (same seed) drawn without and with one disease flag."""
    spec = dict(grade=0, cdr=0.3, right_eye=bool(seed % 2))
    return (
        fundus_phantom(np.random.default_rng(seed), S, FundusSpec(**spec, **{flag: False})),
        fundus_phantom(np.random.default_rng(seed), S, FundusSpec(**spec, **{flag: True})),
    )


def _sharpness(p) -> float:
    """Mean |Laplacian| of the green channel inside the field of view (blur lowers it)."""
    fov = ndimage.binary_erosion(p.masks["fov"], iterations=3)
    return float(np.abs(ndimage.laplace(p.image[..., 1].astype(float)))[fov].mean())


def _grey_sector(p) -> float:
    """How much the greenest of 12 peripheral sectors stands out (G/R of grey tissue is high, of fundus low)."""
    im = p.image.astype(float) + 1
    c = (S - 1) / 2
    yy, xx = np.mgrid[:S, :S]
    rr = np.hypot(xx - c, yy - c) / (0.47 * S)
    sector = ((np.arctan2(yy - c, xx - c) + np.pi) / (2 * np.pi) * 12).astype(int) % 12
    ring = (rr > 0.55) & (rr < 0.95) & ~ndimage.binary_dilation(p.masks["vessel"])
    ratio = im[..., 1] / im[..., 0]
    per = np.array([ratio[ring & (sector == b)].mean() for b in range(12)])
    return float(per.max() - np.median(per))


def _pale_near_disc(p) -> np.ndarray:
    """Pale (yellow-white) pixels around, not on, the optic disc: ``[H, W]`` bool."""
    im = p.image.astype(int)
    x, y = p.points["optic_disc_centre"]
    yy, xx = np.mgrid[:S, :S]
    near = np.hypot(xx - x, yy - y) < 0.075 * S * 1.6
    return (im[..., 0] > 200) & (im[..., 1] > 160) & near & ~p.masks["optic_disc"]


@pytest.mark.parametrize("seed", range(3))
def test_cataract_blurs_the_whole_picture(seed):
    clear, cataract = _pair("cataract", seed)
    assert _sharpness(cataract) < 0.3 * _sharpness(clear)


@pytest.mark.parametrize("seed", range(3))
def test_detachment_is_a_grey_peripheral_sector(seed):
    flat, detached = _pair("detachment", seed)
    assert _grey_sector(detached) > 0.15 > _grey_sector(flat) + 0.05


@pytest.mark.parametrize("seed", range(3))
def test_myopia_draws_a_temporal_peripapillary_crescent(seed):
    normal, myopic = _pair("myopia", seed)
    crescent = _pale_near_disc(myopic)
    assert crescent.sum() > 30 and not _pale_near_disc(normal).any()
    disc_x, fovea_x = myopic.points["optic_disc_centre"][0], myopic.points["fovea"][0]
    xs = np.nonzero(crescent)[1]
    assert np.sign(xs.mean() - disc_x) == np.sign(fovea_x - disc_x)  # on the temporal side (towards the fovea)


@pytest.mark.parametrize("seed", range(3))
def test_hypertension_narrows_the_arteries_only(seed):
    normal, hypertensive = _pair("hypertensive", seed)
    assert np.array_equal(normal.masks["vein"], hypertensive.masks["vein"])
    assert hypertensive.masks["artery"].sum() < 0.75 * normal.masks["artery"].sum()


@pytest.mark.parametrize("seed", range(3))
def test_amd_drusen_are_yellow_and_at_the_macula(seed):
    normal, amd = _pair("amd", seed)
    drusen = amd.masks["drusen"]
    assert drusen.sum() >= 4 and not normal.masks["drusen"].any()
    fx, fy = amd.points["fovea"]
    ys, xs = np.nonzero(drusen)
    assert np.hypot(xs - fx, ys - fy).max() <= 0.1 * S + 0.014 * S + 1
    colour = amd.image[drusen].astype(float).mean(0)
    assert colour[0] > 190 and colour[1] > 160 and colour[2] < colour[1]


@pytest.mark.parametrize("seed", range(3))
def test_vein_occlusion_haemorrhages_fill_one_sector(seed):
    normal, rvo = _pair("rvo", seed)
    haem = rvo.masks["haemorrhage"]
    assert haem.sum() > 20 and not normal.masks["haemorrhage"].any()
    assert rvo.labels["dr_grade"] == 0 and rvo.targets["lesion_count"] == 0  # not DR lesions
    x, y = rvo.points["optic_disc_centre"]
    ys, xs = np.nonzero(haem)
    ang = np.arctan2(ys - y, xs - x)
    spread = math.sqrt(-2 * math.log(np.hypot(np.cos(ang).mean(), np.sin(ang).mean())))  # circular std (rad)
    assert spread < 0.6
    assert rvo.image[haem][:, 1].mean() < 40  # dark red


def test_vessel_density_and_lesion_count_follow_the_pixels():
    """Regression targets are learnable: they track crude pixel measurements (corr > 0.8 over 30 eyes)."""
    density, dark, count, blobs = [], [], [], []
    for i in range(30):
        rng = np.random.default_rng(2000 + i)
        p = fundus_phantom(rng, 96, sample_fundus_spec(rng))
        im, fov = p.image.astype(int), p.masks["fov"]
        g = im[..., 1].astype(float)
        dark.append(((g < 0.75 * ndimage.median_filter(g, size=9)) & fov).sum() / fov.sum())
        density.append(p.targets["vessel_density"])
        exudate = (im[..., 0] > 200) & (im[..., 1] > 180) & (im[..., 2] < 150)
        red_dot = (im[..., 0] < 130) & (im[..., 1] < 25)
        blobs.append(ndimage.label(exudate)[1] + ndimage.label(red_dot)[1])
        count.append(p.targets["lesion_count"])
    assert np.corrcoef(density, dark)[0, 1] > 0.8
    assert np.corrcoef(count, blobs)[0, 1] > 0.8


def _onl_asymmetry(p, s: int) -> np.ndarray:
    """Per column: outer-nuclear-layer (+ fluid) thickness minus that of the column mirrored about the fovea.

    Without fluid the layers' thickness depends only on the distance to the foveal pit, so this is ~0.
    """
    onl = (p.masks["ONL"] | p.masks["fluid"]).sum(0).astype(float)
    xc = p.points["fovea"][0]
    x = np.arange(s)
    mirror = np.round(2 * xc - x).astype(int)
    ok = (mirror >= 0) & (mirror < s)
    out = np.zeros(s)
    out[ok] = onl[ok] - onl[mirror[ok]]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_oct_fluid_swells_the_onl_and_drusen_lift_the_rpe(seed):
    s = 96
    normal = oct_phantom(np.random.default_rng(seed), s, condition=0)
    assert np.abs(_onl_asymmetry(normal, s)).max() <= 2
    dme = oct_phantom(np.random.default_rng(seed), s, condition=1)
    asym = np.abs(_onl_asymmetry(dme, s))
    assert (
        asym.max() >= 4
        and dme.masks["fluid"][:, int(np.argmax(asym))].any()
        | dme.masks["fluid"][:, int(np.round(2 * dme.points["fovea"][0] - np.argmax(asym)))].any()
    )  # the swelling is where fluid is
    amd = oct_phantom(np.random.default_rng(seed), s, condition=2)
    rpe_top = np.argmax(amd.masks["RPE"], axis=0).astype(float)
    lifted = amd.masks["drusen"].any(0)
    assert lifted.any() and rpe_top[lifted].min() < np.median(rpe_top[~lifted]) - 1


def _redness(p) -> float:
    """Mean R - G of the sclera (the eye outside the iris)."""
    px = p.image[p.masks["eye"] & ~p.masks["iris"]].astype(float)
    return float((px[:, 0] - px[:, 1]).mean())


@pytest.mark.parametrize("seed", range(3))
def test_slitlamp_conditions_are_visible(seed):
    normal, keratitis, cataract = (slitlamp_phantom(np.random.default_rng(seed), S, c) for c in range(3))
    assert keratitis.image[keratitis.masks["lesion"]].mean() > 90  # a small, faint white infiltrate
    assert _redness(keratitis) > _redness(normal) + 5  # mild conjunctival injection
    pupil = [p.image[p.masks["pupil"]].astype(float).mean() for p in (normal, cataract)]
    assert pupil[1] > pupil[0] + 12  # a faint grey-yellow lens opacity in the dark pupil


@pytest.mark.parametrize("seed", range(4))
def test_external_eye_targets_are_measured_on_the_drawing(seed):
    p = external_phantom(np.random.default_rng(seed), S, 0)
    cy = round(p.points["pupil_centre"][1])
    iris_w = p.masks["iris"][cy].sum()  # the iris disc includes the pupil
    pupil_w = p.masks["pupil"][cy].sum()
    assert pupil_w / iris_w == pytest.approx(p.targets["pupil_iris_ratio"], abs=2.5 / iris_w)
    rows = np.nonzero(p.masks["fissure"].any(1))[0]
    cols = np.nonzero(p.masks["fissure"].any(0))[0]
    assert p.targets["lid_opening"] == pytest.approx((rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1))
