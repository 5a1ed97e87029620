"""Temperature scaling (Guo et al., 2017): logits / T, one scalar T > 0 minimising the validation NLL.

It never changes the argmax, so accuracy is untouched. T is fitted as log T with torch L-BFGS
(strong-Wolfe line search) in float64. The fit is accepted only if it converged (gradient norm <=
``grad_tol``) to a finite T inside ``bounds``; otherwise a golden-section search over log T in
``bounds`` gives T (NLL(logits / T) is convex in 1/T, so unimodal in log T) and ``optimizer``
records "bounded_search".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from helpers.confidence.base import CalibrationMap, minimize_lbfgs, with_losses
from helpers.metrics.calibration import validate_logits


def golden_section_minimize(
    f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-9, max_iter: int = 200
) -> tuple[float, int]:
    """Minimize a unimodal ``f`` on [lo, hi] by golden-section search: (argmin, iterations)."""
    if not lo < hi:
        raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    iterations = 0
    while b - a > tol and iterations < max_iter:
        if fc <= fd:  # the minimum lies in [a, d]
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:  # the minimum lies in [c, b]
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
        iterations += 1
    return (a + b) / 2, iterations


def fit(
    val_logits,
    val_labels,
    *,
    seed: int = 0,
    max_iter: int = 100,
    grad_tol: float = 1e-6,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> CalibrationMap:
    """Fit T on VALIDATION logits/labels (never on test) by minimizing NLL(logits / T).

    ``max_iter`` bounds the L-BFGS iterations (0 skips straight to the bounded search);
    ``bounds`` is the range of T the fallback searches and an L-BFGS result must lie in.
    The fit is deterministic; ``seed`` is only recorded.
    """
    if not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    logits_np, labels_np = validate_logits(val_logits, val_labels)
    logits, labels = torch.from_numpy(logits_np), torch.from_numpy(labels_np)

    def nll(log_t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits / log_t.exp(), labels)

    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    iterations, converged = minimize_lbfgs(lambda: nll(log_t), [log_t], max_iter, grad_tol)
    temperature, optimizer = math.exp(log_t.item()), "lbfgs"
    if not (converged and bounds[0] <= temperature <= bounds[1]):
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        with torch.no_grad():
            best, iterations = golden_section_minimize(
                lambda x: float(nll(torch.tensor(x, dtype=torch.float64))), lo, hi
            )
        temperature, optimizer = math.exp(best), "bounded_search"
        converged = min(best - lo, hi - best) > 1e-6  # an optimum on a bound is not a minimum
    result = CalibrationMap(
        method="temperature_scaling",
        params={"temperature": temperature},
        optimizer=optimizer,
        converged=converged,
        iterations=iterations,
        seed=seed,
    )
    return with_losses(result, logits_np, labels_np)


def check_params(params: dict) -> None:
    t = params.get("temperature")
    if not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    return logits / params["temperature"]


def probability_lipschitz(params: dict) -> float:
    return 0.5 / params["temperature"]  # softmax: |dp| <= |dz| / 2 in the max norm
