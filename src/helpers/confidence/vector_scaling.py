"""Vector scaling (Guo et al., 2017): logits * w + b, a per-class scale and bias fitted on val NLL
(scipy L-BFGS, analytic gradient).

Unlike temperature scaling it may change the argmax. Starts from the identity (w = 1, b = 0).
"""

from __future__ import annotations

import numpy as np

from helpers.confidence.base import CalibrationMap, check_matrix, minimize_smooth, softmax_nll_grad, with_losses
from helpers.metrics.calibration import validate_logits


def fit(val_logits, val_labels, *, seed: int = 0, max_iter: int = 500, grad_tol: float = 1e-6) -> CalibrationMap:
    """Fit w and b on VALIDATION data; raises if the fit is non-finite (e.g. a separable val set)."""
    logits, labels = validate_logits(val_logits, val_labels)
    k = logits.shape[1]

    def loss(theta):
        value, grad = softmax_nll_grad(logits * theta[:k] + theta[k:], labels)
        return value, np.concatenate([(grad * logits).sum(axis=0), grad.sum(axis=0)])

    theta, iterations, converged = minimize_smooth(loss, np.r_[np.ones(k), np.zeros(k)], max_iter, grad_tol)
    if not np.isfinite(theta).all():
        raise RuntimeError(
            "vector scaling diverged to non-finite parameters (the validation set "
            "may be separable); use temperature scaling instead"
        )
    result = CalibrationMap(
        method="vector_scaling",
        params={"scale": theta[:k].tolist(), "bias": theta[k:].tolist()},
        optimizer="lbfgs",
        converged=converged,
        iterations=iterations,
        seed=seed,
    )
    return with_losses(result, logits, labels)


def check_params(params: dict) -> None:
    k = len(params.get("scale", []))
    check_matrix(params, "scale", (k,))
    check_matrix(params, "bias", (k,))


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    scale = np.asarray(params["scale"])
    if logits.ndim != 2 or logits.shape[1] != len(scale):
        raise ValueError(f"vector scaling was fitted for {len(scale)} classes; got logits of shape {logits.shape}")
    return logits * scale + np.asarray(params["bias"])


def probability_lipschitz(params: dict) -> float:
    return 0.5 * float(np.max(np.abs(params["scale"])))
