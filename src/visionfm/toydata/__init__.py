"""Procedural ophthalmic phantoms with ground truth, for every task and in every layout the toolkit reads.

Deterministic by seed, numpy + PIL only, hundreds of images in seconds. Library use::

    from visionfm.toydata import make_dataset, make_all, fundus_phantom
    info = make_dataset("fundus-dr", "toy/fundus-dr", n=200, seed=0, size=128)
    everything = make_all("toy", n=48, size=64)        # one small data set per task
    p = fundus_phantom(np.random.default_rng(0), 128)  # p.image, p.masks["vessel"], p.points["fovea"], p.labels
"""

from .anterior import (
    EXTERNAL_CLASSES,
    NARROW_ANGLE_DEG,
    SLITLAMP_CLASSES,
    UBM_LANDMARKS,
    external_phantom,
    slitlamp_phantom,
    ubm_phantom,
)
from .fundus import (
    CDR_RATE_PER_YEAR,
    DR_LESION_BINS,
    FORECAST_CDR_MIN,
    FORECAST_VD_REF,
    GLAUCOMA_CDR,
    MULTILABEL_CLASSES,
    FundusSpec,
    dr_grade,
    forecast_converts,
    fundus_phantom,
    multilabel_vector,
    sample_fundus_spec,
)
from .kinds import DR_CLASSES, KINDS, TASKS, ToyKind
from .oct import OCT_CONDITIONS, OCT_LAYERS, OCT_SEG_CLASSES, oct_phantom
from .phantom import Phantom
from .writers import SPLITS, ToyDataset, generate, make_all, make_dataset, split_of

__all__ = [
    "CDR_RATE_PER_YEAR",
    "DR_CLASSES",
    "DR_LESION_BINS",
    "EXTERNAL_CLASSES",
    "FORECAST_CDR_MIN",
    "FORECAST_VD_REF",
    "GLAUCOMA_CDR",
    "KINDS",
    "MULTILABEL_CLASSES",
    "NARROW_ANGLE_DEG",
    "OCT_CONDITIONS",
    "OCT_LAYERS",
    "OCT_SEG_CLASSES",
    "SLITLAMP_CLASSES",
    "SPLITS",
    "TASKS",
    "UBM_LANDMARKS",
    "FundusSpec",
    "Phantom",
    "ToyDataset",
    "ToyKind",
    "dr_grade",
    "external_phantom",
    "forecast_converts",
    "fundus_phantom",
    "generate",
    "make_all",
    "make_dataset",
    "multilabel_vector",
    "oct_phantom",
    "sample_fundus_spec",
    "slitlamp_phantom",
    "split_of",
    "ubm_phantom",
]
