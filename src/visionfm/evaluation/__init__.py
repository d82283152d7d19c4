"""Honest evaluation for recognition tasks: seeded splits (validation, k-shot, k-fold), metrics computed from scores
over the whole evaluation set, bootstrap confidence intervals, plots, and results/prediction files.

Model selection belongs on a validation split (:func:`stratified_split` carves one, grouped by patient when ids
exist); the test split is scored once, with :func:`classification_metrics` / :func:`multilabel_metrics` /
:func:`regression_metrics` and :func:`with_ci`.
"""

from .bootstrap import bootstrap_ci, resample_indices, with_ci
from .metrics import (
    classification_metrics,
    expected_calibration_error,
    multilabel_metrics,
    regression_metrics,
    reliability_bins,
)
from .plots import plot_confusion, plot_pr, plot_reliability, plot_roc
from .results import Predictions, read_predictions, to_jsonable, write_predictions, write_results
from .splits import kshot_draws, kshot_indices, stratified_kfold, stratified_split

__all__ = [
    "Predictions",
    "bootstrap_ci",
    "classification_metrics",
    "expected_calibration_error",
    "kshot_draws",
    "kshot_indices",
    "multilabel_metrics",
    "plot_confusion",
    "plot_pr",
    "plot_reliability",
    "plot_roc",
    "read_predictions",
    "regression_metrics",
    "reliability_bins",
    "resample_indices",
    "stratified_kfold",
    "stratified_split",
    "to_jsonable",
    "with_ci",
    "write_predictions",
    "write_results",
]
