"""Procedural ophthalmic phantoms with ground truth, for every task and in every layout the toolkit reads.

Deterministic by seed, numpy + PIL only, hundreds of images in seconds. Library use::

    from visionfm.toydata import make_dataset, make_all, fundus_phantom
    info = make_dataset("fundus-dr", "toy/fundus-dr", n=200, seed=0, size=128)
    everything = make_all("toy", n=48, size=64)        # one small data set per task
    p = fundus_phantom(np.random.default_rng(0), 128)  # p.image, p.masks["vessel"], p.points["fovea"], p.labels
"""
from .anterior import (EXTERNAL_CLASSES, NARROW_ANGLE_DEG, SLITLAMP_CLASSES, UBM_LANDMARKS, external_phantom,
                       slitlamp_phantom, ubm_phantom)
from .fundus import (CDR_RATE_PER_YEAR, DR_LESION_BINS, GLAUCOMA_CDR, MULTILABEL_CLASSES, FundusSpec, dr_grade,
                     fundus_phantom, multilabel_vector, sample_fundus_spec)
from .kinds import DR_CLASSES, KINDS, TASKS, ToyKind
from .oct import OCT_CONDITIONS, OCT_LAYERS, OCT_SEG_CLASSES, oct_phantom
from .phantom import Phantom
from .writers import SPLITS, ToyDataset, generate, make_all, make_dataset, split_of

__all__ = ["Phantom", "fundus_phantom", "oct_phantom", "ubm_phantom", "slitlamp_phantom", "external_phantom",
           "FundusSpec", "sample_fundus_spec", "multilabel_vector", "dr_grade", "MULTILABEL_CLASSES",
           "DR_LESION_BINS", "GLAUCOMA_CDR", "CDR_RATE_PER_YEAR", "DR_CLASSES", "OCT_LAYERS", "OCT_SEG_CLASSES",
           "OCT_CONDITIONS", "UBM_LANDMARKS", "SLITLAMP_CLASSES", "EXTERNAL_CLASSES", "NARROW_ANGLE_DEG", "KINDS",
           "TASKS", "ToyKind", "ToyDataset", "make_dataset", "make_all", "generate", "split_of", "SPLITS"]
