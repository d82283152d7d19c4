"""Anterior-segment phantoms: a UBM view of the chamber angle with its three landmarks, slit-lamp and external eye.

UBM geometry: the corneoscleral wall's inner surface is a straight line leaving the angle recess up and to the right;
the iris leaves the recess to the right. The scleral spur is a bright spur on that wall a short distance from the
recess, and the auxiliary point lies on the posterior corneal surface a fixed distance (``0.12 * size``, the analogue
of the 500 um of AOD500) further along the wall's tangent at the spur. The angle between wall and iris is the
regression target; below 20 degrees the angle is labelled narrow.
"""

from __future__ import annotations

import math

import numpy as np

from .phantom import Phantom, blur, draw_mask, ellipse_mask, paint, smooth_field, speckle, square_size, to_uint8

__all__ = [
    "EXTERNAL_CLASSES",
    "NARROW_ANGLE_DEG",
    "SLITLAMP_CLASSES",
    "UBM_LANDMARKS",
    "external_phantom",
    "slitlamp_phantom",
    "ubm_phantom",
]

UBM_LANDMARKS = ("scleral_spur", "angle_recess", "auxiliary_point")
SLITLAMP_CLASSES = ("normal", "keratitis", "cataract")
EXTERNAL_CLASSES = ("normal", "cataract")
NARROW_ANGLE_DEG = 20.0


def _poly(shape, pts) -> np.ndarray:
    return draw_mask(shape, lambda d: d.polygon([tuple(map(float, p)) for p in pts], fill=255))


def ubm_phantom(rng: np.random.Generator, size: int = 128) -> Phantom:
    """Draw one UBM image of the anterior chamber angle.

    Returns:
        :class:`Phantom` with masks ``corneosclera, iris, ciliary_body, scleral_spur``, points
        :data:`UBM_LANDMARKS`, label ``narrow_angle``, targets ``angle_deg, aod`` (the auxiliary point's distance
        to the iris line, a fraction of the image side).
    """
    s = square_size(size)
    shape = (s, s)
    rec = np.array([rng.uniform(0.25, 0.35) * s, rng.uniform(0.58, 0.66) * s])
    th_iris = math.radians(rng.uniform(-5.0, 10.0))
    angle = rng.uniform(8.0, 45.0)
    th_wall = th_iris + math.radians(angle)
    u_w = np.array([math.cos(th_wall), -math.sin(th_wall)])  # up-right in image coordinates (y down)
    n_c = np.array([math.sin(th_wall), math.cos(th_wall)])  # wall normal pointing into the chamber
    u_i = np.array([math.cos(th_iris), -math.sin(th_iris)])
    n_i = np.array([math.sin(th_iris), math.cos(th_iris)])  # below the iris' anterior surface
    spur = rec + 0.1 * s * u_w
    aux = spur + 0.12 * s * u_w
    far, t_wall, t_iris = 2.0 * s, 0.16 * s, rng.uniform(0.05, 0.07) * s
    wall = _poly(
        shape, [rec - far * u_w, rec + far * u_w, rec + far * u_w - t_wall * n_c, rec - far * u_w - t_wall * n_c]
    )
    iris = _poly(
        shape,
        [
            rec,
            rec + 0.75 * s * u_i,
            rec + 0.75 * s * u_i + 0.5 * t_iris * n_i,
            rec + 0.3 * s * u_i + t_iris * n_i,
            rec + t_iris * n_i - 0.01 * s * u_w,
        ],
    )
    ciliary = ellipse_mask(shape, *(rec + 0.07 * s * n_i - 0.03 * s * u_w), 0.09 * s, 0.05 * s, angle=-th_iris) & ~wall
    spur_m = _poly(shape, [spur - 0.02 * s * u_w, spur + 0.025 * s * n_c, spur + 0.02 * s * u_w])
    img = np.full(shape, 0.04, np.float32)
    img[ciliary] = 0.45
    img[iris] = 0.6
    tex = smooth_field(rng, shape, 8)
    img[wall] = 0.7 + 0.15 * tex[wall]
    img[spur_m] = 0.95
    img = blur(np.repeat(speckle(rng, img, 4.0)[..., None], 3, axis=-1), 0.7)
    aod = abs(float(np.dot(aux - rec, n_i)))
    return Phantom(
        image=to_uint8(img),
        masks=dict(corneosclera=wall, iris=iris, ciliary_body=ciliary, scleral_spur=spur_m),
        points={
            "scleral_spur": tuple(map(float, spur)),
            "angle_recess": tuple(map(float, rec)),
            "auxiliary_point": tuple(map(float, aux)),
        },
        labels={"narrow_angle": int(angle < NARROW_ANGLE_DEG)},
        targets={"angle_deg": float(angle), "aod": aod / s},
    )


def _eye(rng, s, img, cx, cy, iris_r, pupil_r, iris_colour) -> tuple[np.ndarray, np.ndarray]:
    shape = (s, s)
    iris = ellipse_mask(shape, cx, cy, iris_r, iris_r)
    pupil = ellipse_mask(shape, cx, cy, pupil_r, pupil_r)
    tex = smooth_field(rng, shape, 10)
    paint(img, iris, iris_colour, 0.75 + 0.25 * tex)
    paint(img, pupil, (0.03, 0.03, 0.03))
    return iris, pupil


def slitlamp_phantom(rng: np.random.Generator, size: int = 128, condition: int | None = None) -> Phantom:
    """Draw one slit-lamp photograph: sclera with conjunctival vessels, iris, pupil and the slit beam.

    Rules: ``keratitis`` adds a small white corneal infiltrate and mild conjunctival redness; ``cataract`` fills the
    pupil with a faint grey-yellow lens opacity (subtle on purpose: strong versions were read by any random encoder).
    """
    s = square_size(size)
    shape = (s, s)
    condition = int(rng.integers(len(SLITLAMP_CLASSES))) if condition is None else int(condition)
    c = (s - 1) / 2 + rng.normal(0, 0.03 * s, 2)
    img = np.full((s, s, 3), 0.12, np.float32) * (0.7 + 0.6 * smooth_field(rng, shape, 4))[..., None]
    eye = ellipse_mask(shape, c[0], c[1], 0.46 * s, 0.32 * s)
    # keratitis: a mild conjunctival injection (a random encoder reads a strong global colour shift at once)
    paint(img, eye, (0.9, 0.8, 0.75) if condition != 1 else (0.9, 0.77, 0.72))
    vessels = (
        draw_mask(
            shape,
            lambda d: [
                d.line(
                    [
                        tuple(c + rng.uniform(0.2, 0.45) * s * np.array([math.cos(a), math.sin(a) * 0.65])),
                        tuple(c + 0.45 * s * np.array([math.cos(a + 0.2), math.sin(a) * 0.7])),
                    ],
                    fill=255,
                    width=1,
                )
                for a in rng.uniform(0, 2 * math.pi, 12)
            ],
        )
        & eye
    )
    paint(img, vessels, (0.75, 0.15, 0.12), 0.5 if condition == 1 else 0.4)
    iris, pupil = _eye(
        rng,
        s,
        img,
        c[0],
        c[1],
        0.2 * s,
        rng.uniform(0.06, 0.09) * s,
        (0.45, 0.28, 0.12) if rng.random() < 0.6 else (0.3, 0.4, 0.55),
    )
    lesion = np.zeros(shape, bool)
    if condition == 1:
        lesion = ellipse_mask(shape, *(c + rng.uniform(-0.1, 0.1, 2) * s), 0.04 * s, 0.03 * s, rng.uniform(0, 3))
        paint(img, lesion, (0.95, 0.95, 0.9), 0.4)
    elif condition == 2:
        lesion = pupil
        paint(img, pupil, (0.75, 0.7, 0.5), 0.15)  # a faint lens opacity, not a white pupil
    beam_x = c[0] + rng.uniform(-0.12, 0.12) * s
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    beam = np.exp(-(((xx - beam_x - 0.15 * s * ((yy - c[1]) / s) ** 2 * 4) / (0.012 * s)) ** 2)) * (
        np.abs(yy - c[1]) < 0.3 * s
    )
    paint(img, beam > 0.05, (1.0, 1.0, 0.95), 0.8 * beam)
    return Phantom(
        image=to_uint8(blur(img, 0.5)),
        masks=dict(eye=eye, iris=iris, pupil=pupil, lesion=lesion),
        points={"pupil_centre": (float(c[0]), float(c[1]))},
        labels={"condition": condition},
        targets={},
    )


def external_phantom(rng: np.random.Generator, size: int = 128, condition: int | None = None) -> Phantom:
    """Draw one external-eye photograph: skin, almond lid opening, sclera, iris, pupil, corneal reflex.

    Rules: ``cataract`` turns the pupil faintly grey (subtle on purpose, as above). Targets: ``pupil_iris_ratio``
    and ``lid_opening`` (the height of the lid opening over its width), both measured on the drawing.
    """
    s = square_size(size)
    shape = (s, s)
    condition = int(rng.integers(len(EXTERNAL_CLASSES))) if condition is None else int(condition)
    skin = np.array([0.82, 0.62, 0.5]) * rng.uniform(0.6, 1.05)
    img = np.ones((s, s, 3), np.float32) * skin.astype(np.float32)
    img *= (0.85 + 0.3 * smooth_field(rng, shape, 4))[..., None]
    cx, cy, half_w = (s - 1) / 2, (s - 1) / 2 + rng.normal(0, 0.02 * s), 0.4 * s
    opening = rng.uniform(0.25, 0.55)  # lid opening height / width
    t = np.linspace(-1, 1, 41)
    upper = [(cx + half_w * v, cy - opening * half_w * 1.1 * (1 - v * v)) for v in t]
    lower = [(cx + half_w * v, cy + opening * half_w * 0.9 * (1 - v * v)) for v in t[::-1]]
    fissure = _poly(shape, upper + lower)
    paint(img, fissure, (0.93, 0.9, 0.86))
    pupil_r, iris_r = rng.uniform(0.05, 0.1) * s, 0.17 * s
    img_eye = img.copy()
    iris, pupil = _eye(rng, s, img_eye, cx, cy, iris_r, pupil_r, (0.35, 0.22, 0.1))
    if condition == 1:
        paint(img_eye, pupil, (0.82, 0.82, 0.78), 0.12)  # a faint grey pupil: a small, low-contrast sign
    img = np.where(fissure[..., None], img_eye, img)
    paint(
        img,
        ellipse_mask(shape, cx + 0.3 * iris_r, cy - 0.3 * iris_r, 0.02 * s + 0.5, 0.02 * s + 0.5) & fissure,
        (1.0, 1.0, 1.0),
    )
    rows = np.nonzero(fissure.any(axis=1))[0]
    cols = np.nonzero(fissure.any(axis=0))[0]
    return Phantom(
        image=to_uint8(blur(img, 0.5)),
        masks=dict(fissure=fissure, iris=iris & fissure, pupil=pupil & fissure),
        points={"pupil_centre": (float(cx), float(cy))},
        labels={"condition": condition},
        targets={
            "pupil_iris_ratio": float(pupil_r / iris_r),
            "lid_opening": float((rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1)),
        },
    )
