"""No calibration map: the raw logits as they are.

A candidate of the selection like any map, and the simplest (first in the tie-break): when no fitted
map beats the raw logits' NLL on val by cross-validation, phase 06 keeps the raw logits instead of
deploying a map that makes the confidences worse (on a small, nearly separable val set it can).
"""

from __future__ import annotations

import numpy as np

from helpers.confidence.base import CalibrationMap, with_losses
from helpers.metrics.calibration import validate_logits


def fit(val_logits, val_labels, *, seed: int = 0) -> CalibrationMap:
    logits, labels = validate_logits(val_logits, val_labels)
    return with_losses(CalibrationMap(method="identity", params={}, seed=seed), logits, labels)


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits)


def check_params(params: dict) -> None:
    if params:
        raise ValueError(f"the identity map has no parameters, got {params!r}")


def probability_lipschitz(params: dict) -> float:
    return 0.5  # softmax alone: |dp| <= |dz| / 2 in the max norm
