"""The toy data sets, one per task: which phantom, which labels, which layout (a registry; add one with ``KINDS.add``).

Each kind's ``sample(rng, index, size)`` returns the phantom and the label values written to the official
``<split>_labels.txt`` line (empty for segmentation and landmarks, whose ground truth lives in mask and coordinate
files). ``columns`` names those values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from .anterior import EXTERNAL_CLASSES, SLITLAMP_CLASSES, UBM_LANDMARKS, external_phantom, slitlamp_phantom, ubm_phantom
from .fundus import (
    FORECAST_CDR_MIN,
    MULTILABEL_CLASSES,
    FundusSpec,
    forecast_converts,
    fundus_phantom,
    multilabel_vector,
    sample_fundus_spec,
)
from .oct import OCT_CONDITIONS, OCT_SEG_CLASSES, oct_phantom
from .phantom import Phantom

__all__ = ["DR_CLASSES", "FORECAST_INTERVAL_DAYS", "KINDS", "TASKS", "ToyKind"]

TASKS = ("classification", "multilabel", "regression", "forecasting", "segmentation", "landmarks")
DR_CLASSES = ("no_DR", "mild", "moderate", "severe", "proliferative")
FORECAST_INTERVAL_DAYS = (90, 1825)
Sampler = Callable[[np.random.Generator, int, int], "tuple[Phantom, list[float]]"]


@dataclass(frozen=True)
class ToyKind:
    """One toy data set.

    Attributes:
        name: the ``--kind`` name.
        description: one line for ``--help`` and the docs.
        task: one of :data:`TASKS` (decides the layouts written).
        modality: canonical modality name.
        sample: ``(rng, index, size) -> (Phantom, label values)``.
        columns: names of the label values (classification: ``("label",)``).
        classes: class names (classification), mask classes (segmentation, in label-map order) or landmark names.
    """

    name: str
    description: str
    task: str
    modality: str
    sample: Sampler
    columns: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()


KINDS: Registry[ToyKind] = Registry("toy-data kind")


def _add(kind: ToyKind) -> None:
    if kind.task not in TASKS:
        raise ValueError(f"toy kind {kind.name}: task {kind.task!r} not one of {TASKS}")
    KINDS.add(kind.name, kind)


def _dr(rng, i, size):
    p = fundus_phantom(rng, size, sample_fundus_spec(rng, grade=i % 5, glaucoma=False))
    return p, [p.labels["dr_grade"]]


def _multilabel(rng, i, size):
    p = fundus_phantom(rng, size, sample_fundus_spec(rng, disease_p=0.25))
    return p, multilabel_vector(p.labels)


def _biomarkers(rng, i, size):
    p = fundus_phantom(rng, size, sample_fundus_spec(rng))
    return p, [p.targets[k] for k in ("cup_disc_ratio", "vessel_density", "lesion_count")]


def _forecast(rng, i, size):
    """Glaucoma suspects; the cup grows faster where vessels are sparse: converts = f(cdr, vessel density, interval)."""
    cdr = float(rng.uniform(FORECAST_CDR_MIN, 0.5))
    interval = int(rng.integers(FORECAST_INTERVAL_DAYS[0], FORECAST_INTERVAL_DAYS[1] + 1))
    p = fundus_phantom(rng, size, FundusSpec(grade=0, cdr=cdr, right_eye=bool(rng.random() < 0.5)))
    converts = forecast_converts(cdr, p.targets["vessel_density"], interval, size)
    p.labels.update(converts=converts, interval_days=interval)
    return p, [converts, interval]


def _fundus_any(rng, i, size):
    return fundus_phantom(rng, size, sample_fundus_spec(rng, grade=1 + i % 4, disease_p=0.15)), []


def _oct(rng, i, size):
    p = oct_phantom(rng, size, condition=i % len(OCT_CONDITIONS))
    return p, [p.labels["condition"]]


def _oct_layers(rng, i, size):
    return oct_phantom(rng, size, condition=i % len(OCT_CONDITIONS)), []


def _ubm(rng, i, size):
    return ubm_phantom(rng, size), []


def _slitlamp(rng, i, size):
    p = slitlamp_phantom(rng, size, condition=i % len(SLITLAMP_CLASSES))
    return p, [p.labels["condition"]]


def _external(rng, i, size):
    p = external_phantom(rng, size, condition=i % len(EXTERNAL_CLASSES))
    return p, [p.labels["condition"]]


_add(
    ToyKind(
        "fundus-dr",
        "fundus, DR grade 0-4 set by the lesion count (single-label)",
        "classification",
        "Fundus",
        _dr,
        ("label",),
        DR_CLASSES,
    )
)
_add(
    ToyKind(
        "fundus-multilabel",
        "fundus, the 13-way VisionFM multi-label schema",
        "multilabel",
        "Fundus",
        _multilabel,
        MULTILABEL_CLASSES,
        MULTILABEL_CLASSES,
    )
)
_add(
    ToyKind(
        "fundus-biomarkers",
        "fundus, regression of cup-to-disc ratio, vessel density, lesion count",
        "regression",
        "Fundus",
        _biomarkers,
        ("cup_disc_ratio", "vessel_density", "lesion_count"),
    )
)
_add(
    ToyKind(
        "glaucoma-forecast",
        "fundus + interval (days) -> converts to glaucoma by then",
        "forecasting",
        "Fundus",
        _forecast,
        ("converts", "interval_days"),
    )
)
_add(
    ToyKind(
        "fundus-vessels",
        "fundus vessel segmentation (binary 0/1 masks)",
        "segmentation",
        "Fundus",
        _fundus_any,
        (),
        ("vessel",),
    )
)
_add(
    ToyKind(
        "fundus-lesions",
        "fundus optic disc, cup, haemorrhage, exudate segmentation",
        "segmentation",
        "Fundus",
        _fundus_any,
        (),
        ("optic_disc", "optic_cup", "haemorrhage", "exudate"),
    )
)
_add(
    ToyKind(
        "fundus-landmarks",
        "fundus optic-disc centre and fovea coordinates",
        "landmarks",
        "Fundus",
        _fundus_any,
        (),
        ("optic_disc_centre", "fovea"),
    )
)
_add(
    ToyKind(
        "oct-dme",
        "OCT B-scan: normal / DME (fluid) / AMD (drusen)",
        "classification",
        "OCT",
        _oct,
        ("label",),
        OCT_CONDITIONS,
    )
)
_add(
    ToyKind(
        "oct-layers",
        "OCT layer, fluid and drusen segmentation (label map 0..9)",
        "segmentation",
        "OCT",
        _oct_layers,
        (),
        OCT_SEG_CLASSES,
    )
)
_add(
    ToyKind(
        "ubm-landmarks",
        "UBM chamber angle: scleral spur, angle recess, auxiliary point",
        "landmarks",
        "UBM",
        _ubm,
        (),
        UBM_LANDMARKS,
    )
)
_add(
    ToyKind(
        "slitlamp",
        "slit lamp: normal / keratitis / cataract",
        "classification",
        "SlitLamp",
        _slitlamp,
        ("label",),
        SLITLAMP_CLASSES,
    )
)
_add(
    ToyKind(
        "external",
        "external eye: normal / cataract",
        "classification",
        "External",
        _external,
        ("label",),
        EXTERNAL_CLASSES,
    )
)
