"""Honest evaluation for recognition tasks: seeded splits (validation, k-shot, k-fold), metrics computed from scores
over the whole evaluation set, bootstrap confidence intervals, plots, and results/prediction files."""
from .splits import kshot_draws, kshot_indices, stratified_kfold, stratified_split

__all__ = ["kshot_draws", "kshot_indices", "stratified_kfold", "stratified_split"]
