"""Histogram binning (Zadrozny & Elkan, 2001), one-vs-rest: a non-parametric baseline.

For each class k, the softmax probability p_k is cut into ``n_bins`` equal-width bins and replaced by
the frequency of class k among the val rows in that bin (an empty bin keeps its midpoint); rows
are floored and renormalised (``base.probabilities_to_logits``). A step map: it can change the argmax,
and no logit tolerance bounds its output, so it is reported but never selected for deployment.
"""

from __future__ import annotations

import numpy as np

from helpers.confidence.base import CalibrationMap, check_matrix, probabilities_to_logits, with_losses
from helpers.metrics.calibration import bin_index, softmax, validate_logits


def fit(val_logits, val_labels, *, seed: int = 0, n_bins: int = 15) -> CalibrationMap:
    logits, labels = validate_logits(val_logits, val_labels)
    probs = softmax(logits)
    values = []
    midpoints = (np.arange(n_bins) + 0.5) / n_bins
    for k in range(probs.shape[1]):
        bins = bin_index(probs[:, k], n_bins)
        count = np.bincount(bins, minlength=n_bins)
        hits = np.bincount(bins, weights=labels == k, minlength=n_bins)
        values.append(np.where(count > 0, hits / np.maximum(count, 1), midpoints).tolist())
    result = CalibrationMap(method="histogram_binning", params={"n_bins": n_bins, "values": values}, seed=seed)
    return with_losses(result, logits, labels)


def check_params(params: dict) -> None:
    values = np.asarray(params.get("values", []), dtype=np.float64)
    check_matrix(params, "values", (len(values), int(params.get("n_bins", 0))))


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    values = np.asarray(params["values"])
    probs = softmax(logits)
    columns = np.arange(probs.shape[1])
    return probabilities_to_logits(values[columns, bin_index(probs, params["n_bins"])])


def probability_lipschitz(params: dict) -> None:
    return None
