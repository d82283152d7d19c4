"""Segmentation metrics as pure functions plus a streaming accumulator (known-answer tested).

Dice, IoU, sensitivity and specificity are pooled over all pixels of a dataset (the DRIVE convention); AUC is
computed from score histograms inside the field of view (exact up to the bin width, and streamable over
full-resolution images); HD95 is averaged over images where both prediction and truth are non-empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "SegmentationMeter",
    "auc_from_histograms",
    "average_precision_from_histograms",
    "best_threshold_from_histograms",
    "confusion",
    "hd95",
    "radial_errors",
    "scores_from_confusion",
]


def confusion(pred: np.ndarray, gt: np.ndarray, fov: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of two boolean maps ``[H, W]`` inside ``fov`` (all pixels when None)."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    if fov is not None:
        pred, gt = pred[fov.astype(bool)], gt[fov.astype(bool)]
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def scores_from_confusion(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity and accuracy (NaN where undefined, e.g. Dice with no positives at all)."""
    return {
        "dice": _div(2 * tp, 2 * tp + fp + fn),
        "iou": _div(tp, tp + fp + fn),
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "accuracy": _div(tp + tn, tp + fp + fn + tn),
    }


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from score histograms of positives and negatives over the same ascending bins.

    Pairs in the same bin count one half (the Mann-Whitney tie rule), so AUC is exact when no two different scores
    share a bin.
    """
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def average_precision_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision, IDRiD's lesion metric) from score histograms.

    Thresholds run down the bins (a pixel is positive when its bin is >= the threshold's); each bin adds its share
    of the positives times the precision at that threshold, so all scores sharing a bin count as one step.

    Args:
        pos / neg: ``[bins]`` counts of positive / negative pixels per ascending score bin.

    Returns:
        AP in [0, 1]; NaN without positives. A model that ranks every positive above every negative scores 1; one
        with a single score for all pixels scores the prevalence.
    """
    pos, neg = pos.astype(np.float64)[::-1], neg.astype(np.float64)[::-1]
    n_pos = pos.sum()
    if n_pos == 0:
        return float("nan")
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    return float((precision * pos).sum() / n_pos)


def best_threshold_from_histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """The probability threshold that maximises pooled Dice, and that Dice, from score histograms.

    Bin ``i`` of ``B`` holds scores in ``[i/B, (i+1)/B)``; threshold ``i/B`` marks bins ``>= i`` positive.
    Candidates are ``1/B .. (B-1)/B`` (a threshold strictly inside (0, 1)). Meant for a validation split: the
    chosen value is then applied unchanged to the test images.

    Returns:
        (threshold, Dice at it); (0.5, NaN) when there are no positives (nothing to choose on).
    """
    bins = len(pos)
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    n_pos = pos.sum()
    if n_pos == 0 or bins < 2:
        return 0.5, float("nan")
    tp = np.cumsum(pos[::-1])[::-1]  # tp[i]: positives in bins >= i
    fp = np.cumsum(neg[::-1])[::-1]
    dice = 2 * tp / (2 * tp + fp + (n_pos - tp))
    i = 1 + int(np.argmax(dice[1:]))  # first best: the lowest threshold among equals
    return i / bins, float(dice[i])


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=0)


def hd95(pred: np.ndarray, gt: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance (pixels) between boundaries of two boolean maps ``[H, W]``.

    Takes the larger of the two directed 95th percentiles (MONAI's convention). 0 when both are empty, NaN when
    only one is.
    """
    pred, gt = pred.astype(bool), gt.astype(bool)
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return float("nan")
    sp, sg = _surface(pred), _surface(gt)
    d_to_gt = ndimage.distance_transform_edt(~sg)
    d_to_pred = ndimage.distance_transform_edt(~sp)
    return float(max(np.percentile(d_to_gt[sp], 95), np.percentile(d_to_pred[sg], 95)))


class SegmentationMeter:
    """Accumulates per-class metrics over images.

    Args:
        class_names: one name per foreground channel K.
        threshold: probability above which a pixel is predicted positive: one for all classes or one per class.
        bins: histogram bins for AUC and AUPR.
        with_hd95: compute HD95 (costs a distance transform per image and class).
    """

    def __init__(
        self,
        class_names: list[str],
        threshold: float | Sequence[float] = 0.5,
        bins: int = 10000,
        with_hd95: bool = True,
    ) -> None:
        self.names = list(class_names)
        self.threshold = threshold
        self.thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(self.names),))
        self.bins = bins
        self.with_hd95 = with_hd95
        k = len(self.names)
        self.counts = np.zeros((k, 4), dtype=np.int64)
        self.pos = np.zeros((k, bins), dtype=np.int64)
        self.neg = np.zeros((k, bins), dtype=np.int64)
        self.hd: list[list[float]] = [[] for _ in range(k)]
        self.hd_undefined = np.zeros(k, dtype=np.int64)  # images where exactly one of prediction / truth is empty

    def update(self, prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None = None, hd95_stride: int = 1) -> None:
        """prob ``[K, H, W]`` in [0, 1], gt ``[K, H, W]`` bool, fov ``[H, W]`` bool or None.

        ``hd95_stride`` > 1 computes HD95 on every n-th pixel (times n, so still in original pixels): a distance
        transform of a 4288x2848 fundus per class would dominate evaluation time.
        """
        if prob.shape != gt.shape or prob.shape[0] != len(self.names):
            raise ValueError(f"prob {prob.shape} / truth {gt.shape} do not match {len(self.names)} classes")
        inside = np.ones(prob.shape[1:], bool) if fov is None else fov.astype(bool)
        for c in range(len(self.names)):
            pred = prob[c] > self.thresholds[c]
            self.counts[c] += confusion(pred, gt[c], inside)
            idx = np.clip((prob[c][inside] * self.bins).astype(np.int64), 0, self.bins - 1)
            g = gt[c][inside].astype(bool)
            self.pos[c] += np.bincount(idx[g], minlength=self.bins)
            self.neg[c] += np.bincount(idx[~g], minlength=self.bins)
            if self.with_hd95:
                self._add_hd95(c, pred & inside, gt[c].astype(bool) & inside, hd95_stride)

    def _add_hd95(self, c: int, pred: np.ndarray, gt: np.ndarray, stride: int) -> None:
        """HD95 of one image and class: only defined when both maps are non-empty (else counted as undefined)."""
        if pred.any() and gt.any():
            self.hd[c].append(hd95(pred[::stride, ::stride], gt[::stride, ::stride]) * stride)
        elif pred.any() or gt.any():
            self.hd_undefined[c] += 1

    def merge(self, other: SegmentationMeter) -> None:
        """Add another meter's counts (same classes and bins): pooled metrics from per-image meters."""
        self.counts += other.counts
        self.pos += other.pos
        self.neg += other.neg
        self.hd_undefined += other.hd_undefined
        for mine, theirs in zip(self.hd, other.hd):
            mine.extend(theirs)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{class: {dice, iou, sensitivity, specificity, accuracy, auc, hd95, hd95_undefined}}`` plus ``'mean'``.

        ``hd95`` is the mean over images where prediction and truth are both non-empty inside the FOV;
        ``hd95_undefined`` counts the images where exactly one of them is empty (a missed or an invented
        structure), which a distance cannot express.
        """
        out: dict[str, dict[str, float]] = {}
        for c, name in enumerate(self.names):
            s = scores_from_confusion(*(int(v) for v in self.counts[c]))
            s["auc"] = auc_from_histograms(self.pos[c], self.neg[c])
            s["aupr"] = average_precision_from_histograms(self.pos[c], self.neg[c])
            if self.with_hd95:
                s["hd95"] = float(np.mean(self.hd[c])) if self.hd[c] else float("nan")
                s["hd95_undefined"] = float(self.hd_undefined[c])
            out[name] = s
        keys = next(iter(out.values())).keys() if out else []
        out["mean"] = {
            k: float(np.nanmean([out[n][k] for n in self.names]))
            if any(not math.isnan(out[n][k]) for n in self.names)
            else float("nan")
            for k in keys
        }
        return out


def radial_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[N, K]`` between predicted and true landmarks ``[N, K, 2]`` (same pixel units)."""
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"landmark arrays must match as [N, K, 2], got {pred.shape} and {gt.shape}")
    return np.sqrt(((pred.astype(np.float64) - gt) ** 2).sum(-1))
