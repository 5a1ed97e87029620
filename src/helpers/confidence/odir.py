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

The objective is convex and has k (k + 1) parameters (110 for 10 classes), so each fit is Newton's
method with the exact Hessian and a backtracking line search: 5-10 iterations where L-BFGS took hundreds,
each a few small matrix products (``benchmarks/bench_calibration.py`` times it beside the L-BFGS fit).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from helpers.confidence.base import CalibrationMap, check_matrix, cv_folds, with_losses
from helpers.metrics.calibration import negative_log_likelihood, validate_logits

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
N_FOLDS = 5


def _newton(
    value_grad_hess: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
    value: Callable[[np.ndarray], float],
    start: np.ndarray,
    max_iter: int,
    grad_tol: float,
) -> tuple[np.ndarray, int, bool]:
    """Damped Newton on a smooth convex objective: (argmin, iterations, converged: max |gradient| <= grad_tol)."""
    theta = start
    for iteration in range(max_iter + 1):
        current, grad, hess = value_grad_hess(theta)
        if not np.isfinite(current) or float(np.abs(grad).max()) <= grad_tol:
            return theta, iteration, bool(np.isfinite(current))
        try:
            step = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:  # a flat direction (lambda = 0): the least-norm step
            step = -np.linalg.lstsq(hess, grad, rcond=None)[0]
        slope, t = float(grad @ step), 1.0
        if slope >= 0:  # not a descent direction (numerically singular): fall back to the gradient
            step, slope = -grad, -float(grad @ grad)
        while value(theta + t * step) > current + 1e-4 * t * slope and t > 1e-10:
            t *= 0.5
        theta = theta + t * step
    return theta, max_iter, False


def fit_linear(
    x: np.ndarray,
    labels: np.ndarray,
    lam: float,
    max_iter: int = 100,
    grad_tol: float = 1e-6,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, int, bool]:
    """(theta = [W.ravel(), b], iterations, converged) minimising the mean NLL of x @ W.T + b plus the
    ODIR penalty, from ``start`` (default the identity: W = I, b = 0), by Newton's method."""
    n, k = x.shape
    x1 = np.c_[x, np.ones(n)]  # one row of theta per class: [W_c, b_c]
    onehot = np.eye(k)[labels]
    penalty = np.c_[(1 - np.eye(k)) * lam / (k * (k - 1)), np.full(k, lam / k)].ravel()

    def probabilities(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = x1 @ rows.reshape(k, k + 1).T
        shifted = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return shifted - log_norm, np.exp(shifted - log_norm)

    def value(rows: np.ndarray) -> float:
        log_p, _ = probabilities(rows)
        return float(-(log_p * onehot).sum() / n + penalty @ rows**2)

    def value_grad_hess(rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        log_p, p = probabilities(rows)
        grad = ((p - onehot).T @ x1).ravel() / n + 2 * penalty * rows
        weighted = (p[:, :, None] * x1[:, None, :]).reshape(n, -1)  # p_ic x_i, as rows of (c, j)
        hess = -(weighted.T @ weighted)
        for c in range(k):  # the block diagonal: sum_i p_ic x_i x_i^T
            block = slice(c * (k + 1), (c + 1) * (k + 1))
            hess[block, block] += x1.T @ (p[:, c : c + 1] * x1)
        hess /= n
        hess[np.diag_indices_from(hess)] += 2 * penalty
        return float(-(log_p * onehot).sum() / n + penalty @ rows**2), grad, hess

    if start is None:
        start = np.r_[np.eye(k).ravel(), np.zeros(k)]
    rows = np.c_[start[: k * k].reshape(k, k), start[k * k :]].ravel()
    rows, iterations, converged = _newton(value_grad_hess, value, rows, max_iter, grad_tol)
    table = rows.reshape(k, k + 1)
    return np.r_[table[:, :k].ravel(), table[:, k]], iterations, converged


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
    max_iter: int = 100,
    grad_tol: float = 1e-6,
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
        optimizer="newton",
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
