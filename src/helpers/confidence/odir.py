"""The ODIR-regularised linear map x @ W.T + b of Kull et al. (2019), lambda chosen by cross-validation on val.

ODIR (off-diagonal and intercept regularisation) adds to the mean NLL
``lambda * sum_{i != j} W_ij^2 / (K (K - 1)) + lambda * sum_j b_j^2 / K``: the diagonal (a per-class
temperature) is free, everything that mixes classes or shifts them is shrunk. One lambda serves
both terms (the paper tunes them separately). Matrix scaling takes the logits as x, Dirichlet
calibration their log-softmax. lambda is the value in ``LAMBDAS`` with the lowest pooled
``n_folds``-fold CV NLL on the VALIDATION data (seeded folds; a tie goes to the larger lambda,
the simpler map); the map is then refitted on all of val. Each fold fits the lambdas from the largest
down, each warm-started from the last (a regularisation path; the first starts from the identity).
``hyper["cv_nll"]`` is the CV NLL at the chosen lambda: phase 06's selection reuses it (same folds)
rather than nesting a second CV around the lambda search, so it is optimistic by the minimum over
the grid (small next to the gaps between methods measured here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from helpers.confidence.base import (
    CalibrationMap,
    check_matrix,
    cv_folds,
    minimize_smooth,
    softmax_nll_grad,
    with_losses,
)
from helpers.metrics.calibration import negative_log_likelihood, validate_logits

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
N_FOLDS = 5


def fit_linear(
    x: np.ndarray,
    labels: np.ndarray,
    lam: float,
    max_iter: int = 1000,
    grad_tol: float = 1e-6,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, int, bool]:
    """(theta = [W.ravel(), b], iterations, converged) minimising the mean NLL of x @ W.T + b plus the
    ODIR penalty, from ``start`` (default the identity: W = I, b = 0)."""
    k = x.shape[1]
    off = 1 - np.eye(k)
    c_w, c_b = lam / (k * (k - 1)), lam / k

    def loss(theta):
        weights, bias = theta[: k * k].reshape(k, k), theta[k * k :]
        value, grad = softmax_nll_grad(x @ weights.T + bias, labels)
        value += c_w * ((weights * off) ** 2).sum() + c_b * (bias**2).sum()
        grad_weights = grad.T @ x + 2 * c_w * weights * off
        return value, np.concatenate([grad_weights.ravel(), grad.sum(axis=0) + 2 * c_b * bias])

    start = np.r_[np.eye(k).ravel(), np.zeros(k)] if start is None else start
    return minimize_smooth(loss, start, max_iter, grad_tol)


def _path(x, labels, lambdas, max_iter, grad_tol) -> list[tuple[np.ndarray, int, bool]]:
    """Fits for ``lambdas`` (descending), each warm-started from the previous: a regularisation path."""
    fits, start = [], None
    for lam in lambdas:
        fits.append(fit_linear(x, labels, lam, max_iter, grad_tol, start))
        start = fits[-1][0]
    return fits


def fit(
    method: str,
    features: Callable[[np.ndarray], np.ndarray],
    val_logits,
    val_labels,
    *,
    seed: int = 0,
    lambdas=LAMBDAS,
    n_folds: int = N_FOLDS,
    max_iter: int = 1000,
    grad_tol: float = 1e-5,
) -> CalibrationMap:
    """Choose lambda by CV on val (unless one is given), then fit W, b on all of val."""
    logits, labels = validate_logits(val_logits, val_labels)
    x = features(logits)
    k = x.shape[1]
    lambdas = sorted((float(v) for v in lambdas), reverse=True)
    if not lambdas or min(lambdas) < 0:
        raise ValueError(f"lambdas must be a non-empty list of values >= 0, got {lambdas}")
    cv_nll = {}
    if len(lambdas) > 1:
        folds = cv_folds(labels, n_folds, seed)
        held = np.zeros(len(lambdas))
        for train, test in folds:
            for i, (theta, _, _) in enumerate(_path(x[train], labels[train], lambdas, max_iter, grad_tol)):
                held[i] += negative_log_likelihood(linear(_unpack(theta, k), x[test]), labels[test]) * len(test)
        cv_nll = dict(zip(lambdas, held / len(labels)))
    best = min(lambdas, key=lambda lam: (round(cv_nll.get(lam, 0.0), 12), -lam))  # tie: the larger lambda
    theta, iterations, converged = _path(x, labels, lambdas[: lambdas.index(best) + 1], max_iter, grad_tol)[-1]
    params = _unpack(theta, k)
    hyper = {
        "lambda": best,
        "penalty": "odir",
        "lambda_cv_nll": {f"{lam:g}": v for lam, v in cv_nll.items()},
        "cv_nll": cv_nll.get(best),
        "n_folds": n_folds if cv_nll else 0,
    }
    result = CalibrationMap(
        method=method,
        params=params,
        optimizer="lbfgs",
        converged=converged,
        iterations=iterations,
        seed=seed,
        hyper=hyper,
    )
    return with_losses(result, logits, labels)


def _unpack(theta: np.ndarray, k: int) -> dict:
    return {"weights": theta[: k * k].reshape(k, k).tolist(), "bias": theta[k * k :].tolist()}


def check_params(params: dict) -> None:
    k = len(params.get("bias", []))
    check_matrix(params, "weights", (k, k))
    check_matrix(params, "bias", (k,))


def linear(params: dict, x: np.ndarray) -> np.ndarray:
    weights = np.asarray(params["weights"])
    if x.ndim != 2 or x.shape[1] != weights.shape[1]:
        raise ValueError(f"this map was fitted for {weights.shape[1]} classes; got logits of shape {x.shape}")
    return x @ weights.T + np.asarray(params["bias"])


def row_norm(params: dict) -> float:
    """max_i sum_j |W_ij|: the max-norm Lipschitz constant of x -> x @ W.T + b."""
    return float(np.abs(np.asarray(params["weights"])).sum(axis=1).max())
