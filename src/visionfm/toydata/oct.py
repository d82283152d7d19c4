"""OCT B-scan phantoms: seven retinal layers over a foveal pit, intraretinal fluid (DME), drusen (AMD), speckle.

Rules: ``DME`` eyes have 1-3 dark intraretinal fluid pockets that swell the outer nuclear layer; ``AMD`` eyes have
2-4 drusen lifting the RPE; ``normal`` eyes have neither. Thickness targets are measured on the drawn layers.
"""

from __future__ import annotations

import numpy as np

from .phantom import Phantom, blur, ellipse_mask, smooth_field, speckle, square_size, to_uint8

__all__ = ["OCT_CONDITIONS", "OCT_LAYERS", "OCT_SEG_CLASSES", "oct_phantom"]

OCT_LAYERS = ("RNFL", "GCL-IPL", "INL", "OPL", "ONL", "EZ", "RPE")
OCT_SEG_CLASSES = OCT_LAYERS + ("fluid", "drusen")  # label-map values 1..9 (0 = vitreous and choroid)
OCT_CONDITIONS = ("normal", "DME", "AMD")
_THICKNESS = np.array([0.035, 0.06, 0.035, 0.025, 0.07, 0.015, 0.02])  # fractions of the image height
_INTENSITY = np.array([0.0, 0.78, 0.55, 0.28, 0.62, 0.22, 0.82, 0.95, 0.03, 0.5], np.float32)  # by label value


def _boundaries(rng, s: int, xc: float, swell: np.ndarray, drusen: np.ndarray) -> np.ndarray:
    """Layer boundaries ``[8, W]`` (y of each layer's top, then the RPE bottom), in pixels."""
    x = np.arange(s, dtype=np.float32)
    pit = np.exp(-(((x - xc) / (0.09 * s)) ** 2))
    top = (
        0.28 * s
        + rng.uniform(-0.06, 0.06) * (x - s / 2)
        + 0.015 * s * np.sin(2 * np.pi * x / s * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi))
    )
    thick = _THICKNESS[:, None] * s * rng.uniform(0.9, 1.1, size=(7, 1)) * np.ones((1, s), np.float32)
    thick[:4] *= 1 - 0.85 * pit  # inner layers thin out at the foveal pit
    thick[4] *= 1 + 0.3 * pit
    thick[4] += swell
    top = top + 0.04 * s * pit  # the pit itself
    b = np.concatenate([top[None], top[None] + np.cumsum(thick, axis=0)], axis=0)
    b[5:7] -= drusen  # drusen lift the photoreceptors and the RPE; the RPE bottom (Bruch's membrane) stays
    return b


def oct_phantom(rng: np.random.Generator, size: int = 128, condition: int | None = None) -> Phantom:
    """Draw one macular OCT B-scan.

    Args:
        condition: index into :data:`OCT_CONDITIONS` (random when None).

    Returns:
        :class:`Phantom` with masks per :data:`OCT_SEG_CLASSES` plus ``retina``, point ``fovea`` (the pit's floor),
        labels ``condition, dme``, targets ``central_thickness, mean_thickness, fluid_area`` (fractions of height).
    """
    s = square_size(size)
    condition = int(rng.integers(len(OCT_CONDITIONS))) if condition is None else int(condition)
    if not 0 <= condition < len(OCT_CONDITIONS):
        raise ValueError(f"OCT condition {condition} not in 0..{len(OCT_CONDITIONS) - 1} ({OCT_CONDITIONS})")
    x = np.arange(s, dtype=np.float32)
    xc = s / 2 + rng.normal(0, 0.05 * s)
    pockets = []
    if condition == 1:
        for _ in range(int(rng.integers(1, 4))):
            px = xc + rng.uniform(-0.15, 0.15) * s
            pockets.append((px, rng.uniform(0.05, 0.08) * s, rng.uniform(0.03, 0.05) * s))
    swell = sum((2.2 * ry * np.exp(-(((x - px) / rx) ** 2)) for px, rx, ry in pockets), np.zeros(s, np.float32))
    drusen = np.zeros(s, np.float32)
    if condition == 2:
        for _ in range(int(rng.integers(2, 5))):
            drusen += rng.uniform(0.03, 0.05) * s * np.exp(-(((x - rng.uniform(0.2, 0.8) * s) / (0.03 * s)) ** 2))
    b = _boundaries(rng, s, xc, swell, drusen)
    yy = np.arange(s, dtype=np.float32)[:, None]
    lab = np.zeros((s, s), np.int64)
    for k in range(7):
        lab[(yy >= b[k]) & (yy < b[k + 1])] = k + 1
    lab[(yy >= b[7] - drusen) & (yy < b[7]) & (drusen > 0.5)] = 9
    retina = (yy >= b[0]) & (yy < b[7])
    fluid = np.zeros((s, s), bool)
    for px, rx, ry in pockets:
        i = int(np.clip(round(px), 0, s - 1))
        fluid |= ellipse_mask((s, s), px, (b[2, i] + b[5, i]) / 2, rx, ry)
    fluid &= (yy >= b[2]) & (yy < b[5])  # intraretinal: between the INL top and the ONL bottom
    lab[fluid] = 8
    img = _INTENSITY[lab]
    choroid = 0.4 * smooth_field(rng, (s, s), 12) * np.exp(-np.clip(yy - b[7], 0, None) / (0.12 * s))
    img = np.where(yy >= b[7], choroid + 0.05, img)
    img = blur(np.repeat(speckle(rng, img, 3.0)[..., None], 3, axis=-1), 0.6)
    ic = int(np.clip(round(xc), 0, s - 1))
    return Phantom(
        image=to_uint8(img),
        masks={**{name: lab == v for v, name in enumerate(OCT_SEG_CLASSES, start=1)}, "retina": retina},
        points={"fovea": (float(xc), float(b[0, ic]))},
        labels={"condition": condition, "dme": int(fluid.any())},
        targets={
            "central_thickness": float((b[7, ic] - b[0, ic]) / s),
            "mean_thickness": float((b[7] - b[0]).mean() / s),
            "fluid_area": float(fluid.mean()),
        },
    )
