"""The eight VisionFM imaging modalities: one canonical name each, the spellings users have, and preprocessing facts.

The official code spells modalities three ways ("SiltLamp", "Silt-Lamp", "Slit Lamp"); here every spelling is
folded (case, spaces, dashes, underscores ignored) onto one canonical name, and an unknown name is an error that
lists the valid ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .registry import Registry

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODALITIES",
    "Modality",
    "canonical_modality",
    "get_modality",
    "list_modalities",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Modality:
    """Facts about one imaging modality.

    Attributes:
        name: canonical name, e.g. ``"SlitLamp"``.
        description: human-readable description.
        mean: per-channel mean of the official VisionFM pretraining data (RGB, in [0, 1]).
        std: per-channel standard deviation.
        aliases: other spellings accepted for this modality.
        channels: input channels of the encoder (grey modalities are replicated to RGB, as officially).
        input_size: default square input side in pixels.
    """

    name: str
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    aliases: tuple[str, ...] = field(default=())
    channels: int = 3
    input_size: int = 224


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-./]+", "", name).lower()


# Spellings are folded (case, spaces, dashes, underscores, dots ignored) by the registry itself, so a modality
# added by a user with ``MODALITIES.add(m.name, m, m.aliases)`` is found under every spelling like the built-in ones.
MODALITIES: Registry[Modality] = Registry("modality", fold=_fold)


def _add(m: Modality) -> None:
    MODALITIES.add(m.name, m, m.aliases)


_add(
    Modality(
        "Fundus",
        "colour fundus photograph",
        (0.4237375, 0.2609461, 0.1284039),
        (0.2948253, 0.2016737, 0.1366802),
        ("CFP", "fundus photo", "retina", "retinal"),
    )
)
_add(
    Modality(
        "OCT",
        "optical coherence tomography B-scan",
        (0.2109193, 0.2109193, 0.2109192),
        (0.1759889, 0.1759889, 0.1759889),
        ("optical coherence tomography",),
    )
)
_add(
    Modality(
        "FFA",
        "fundus fluorescein angiography",
        (0.2020487, 0.2020515, 0.2020107),
        (0.1740605, 0.1740421, 0.1740121),
        ("fluorescein angiography", "FA"),
    )
)
_add(
    Modality(
        "SlitLamp",
        "slit-lamp photograph",
        (0.5556667, 0.4028857, 0.3885789),
        (0.2651668, 0.2331159, 0.2390358),
        ("SiltLamp", "Silt-Lamp", "Silt Lamp", "Slit Lamp", "Slit-Lamp"),
    )
)
_add(
    Modality(
        "Ultrasound",
        "B-scan ocular ultrasound",
        (0.0598924, 0.0597867, 0.0566950),
        (0.1542770, 0.1550487, 0.1446458),
        ("UltraSound", "B-Ultrasound", "B-scan", "BScan", "US"),
    )
)
_add(
    Modality(
        "External",
        "external eye photograph",
        (0.4936253, 0.3632481, 0.2595699),
        (0.3200100, 0.2710943, 0.2199159),
        ("External Eye", "ExternalEye", "External-Eye", "eye photo"),
    )
)
_add(Modality("MRI", "orbital magnetic resonance imaging", (0.1736886,) * 3, (0.1619866,) * 3, ("magnetic resonance",)))
_add(
    Modality(
        "UBM",
        "ultrasound biomicroscopy of the anterior segment",
        (0.0961109,) * 3,
        (0.2097787,) * 3,
        ("ultrasound biomicroscopy",),
    )
)


def canonical_modality(name: str) -> str:
    """Return the canonical name for any accepted spelling.

    Raises:
        UnknownNameError: (a ``ValueError``) the name is not a known modality (the message lists the valid names).
    """
    return MODALITIES.canonical(name)


def get_modality(name: str) -> Modality:
    """The :class:`Modality` for any accepted spelling of ``name``."""
    return MODALITIES.get(canonical_modality(name))


def list_modalities() -> list[str]:
    """Canonical names of all registered modalities."""
    return MODALITIES.names()
