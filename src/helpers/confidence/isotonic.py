"""Isotonic regression (Zadrozny & Elkan, 2002), one-vs-rest: a non-parametric baseline.

For each class k, a non-decreasing map of the softmax probability p_k to the frequency of class k
(scikit-learn's IsotonicRegression, clipped outside the val range), stored as its breakpoints and
applied by linear interpolation; rows are floored and renormalised. Like histogram binning it is
reported but never selected for deployment (its output is not bounded by a logit tolerance).
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from helpers.confidence.base import CalibrationMap, probabilities_to_logits, with_losses
from helpers.metrics.calibration import softmax, validate_logits


def fit(val_logits, val_labels, *, seed: int = 0) -> CalibrationMap:
    logits, labels = validate_logits(val_logits, val_labels)
    probs = softmax(logits)
    x, y = [], []
    for k in range(probs.shape[1]):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[:, k], labels == k)
        x.append(iso.X_thresholds_.tolist())
        y.append(iso.y_thresholds_.tolist())
    result = CalibrationMap(method="isotonic", params={"x": x, "y": y}, seed=seed)
    return with_losses(result, logits, labels)


def check_params(params: dict) -> None:
    x, y = params.get("x", []), params.get("y", [])
    if not x or len(x) != len(y) or any(len(a) != len(b) or not a for a, b in zip(x, y)):
        raise ValueError("isotonic parameters need one non-empty (x, y) breakpoint list of equal length per class")


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    probs = softmax(logits)
    if probs.shape[1] != len(params["x"]):
        raise ValueError(f"isotonic map was fitted for {len(params['x'])} classes; got logits of shape {logits.shape}")
    mapped = np.stack([np.interp(probs[:, k], params["x"][k], params["y"][k]) for k in range(probs.shape[1])], axis=1)
    return probabilities_to_logits(mapped)


def probability_lipschitz(params: dict) -> None:
    return None
