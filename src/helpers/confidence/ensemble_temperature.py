"""Ensemble temperature scaling (Zhang et al., 2020): p = w0 softmax(z / T) + w1 softmax(z) + w2 / K.

T is the temperature-scaling fit; the weights (on the simplex, as softmax of 3 free parameters)
then minimise the validation NLL by L-BFGS, starting from (1, 0, 0) up to a softmax floor. It keeps
the argmax of z (all three terms rank classes as z does), and outputs log p.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from helpers.confidence import temperature_scaling
from helpers.confidence.base import CalibrationMap, check_matrix, minimize_lbfgs, with_losses
from helpers.metrics.calibration import softmax, validate_logits


def fit(val_logits, val_labels, *, seed: int = 0, max_iter: int = 200, grad_tol: float = 1e-6) -> CalibrationMap:
    logits_np, labels_np = validate_logits(val_logits, val_labels)
    ts = temperature_scaling.fit(logits_np, labels_np, seed=seed)
    k = logits_np.shape[1]
    parts = torch.from_numpy(
        np.stack([softmax(logits_np / ts.temperature), softmax(logits_np), np.full(logits_np.shape, 1 / k)], axis=-1)
    )
    picked = parts[torch.arange(len(labels_np)), torch.from_numpy(labels_np)]  # [N, 3]
    raw = torch.tensor([4.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    iterations, converged = minimize_lbfgs(
        lambda: -torch.log(picked @ torch.softmax(raw, 0)).mean(), [raw], max_iter, grad_tol
    )
    weights = torch.softmax(raw.detach(), 0).tolist()
    result = CalibrationMap(
        method="ensemble_temperature_scaling",
        params={"temperature": ts.temperature, "weights": weights},
        optimizer="lbfgs",
        converged=converged and ts.converged,
        iterations=iterations,
        seed=seed,
    )
    return with_losses(result, logits_np, labels_np)


def check_params(params: dict) -> None:
    temperature_scaling.check_params(params)
    weights = check_matrix(params, "weights", (3,))
    if (weights < 0).any() or not math.isclose(weights.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"ensemble weights must be >= 0 and sum to 1, got {weights.tolist()}")


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    w = params["weights"]
    probs = w[0] * softmax(logits / params["temperature"]) + w[1] * softmax(logits) + w[2] / logits.shape[1]
    return np.log(probs)


def probability_lipschitz(params: dict) -> float:
    w = params["weights"]
    return 0.5 * (w[0] / params["temperature"] + w[1])
