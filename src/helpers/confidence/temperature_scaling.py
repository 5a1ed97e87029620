"""Post-hoc calibration of a classifier's LOGITS: temperature scaling and vector scaling.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 chosen to
minimize the validation NLL; it never changes the argmax, so accuracy is untouched. T is
fitted as log T with torch L-BFGS (strong-Wolfe line search) in float64. The fit is accepted
only if it converged (gradient norm <= ``grad_tol``) to a finite T inside ``bounds``; otherwise
a golden-section search over log T in ``bounds`` gives T (NLL(logits / T) is convex in 1/T, so
unimodal in log T) and ``optimizer`` records "bounded_search". Vector scaling fits a per-class
scale and bias, ``logits * w + b``, with the same L-BFGS routine.

Fit on the validation split only, never on test: the test split measures the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from helpers.metrics.calibration import negative_log_likelihood, validate_logits

METHODS = ("temperature_scaling", "vector_scaling")


@dataclass(frozen=True)
class ScalingFit:
    """A fitted calibration map and how it was obtained (``to_dict`` for the results JSON)."""

    method: str  # one of METHODS
    optimizer: str  # "lbfgs" or "bounded_search"
    converged: bool
    iterations: int  # of the optimizer that produced the parameters
    nll_before: float = math.nan  # validation NLL of the raw logits
    nll_after: float = math.nan  # ... and of the calibrated logits
    temperature: float | None = None  # temperature_scaling
    scale: tuple[float, ...] | None = None  # vector_scaling
    bias: tuple[float, ...] | None = None  # vector_scaling

    def apply(self, logits) -> np.ndarray:
        """Calibrated logits (softmax them for calibrated probabilities)."""
        logits = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature_scaling":
            return logits / self.temperature
        if logits.ndim != 2 or logits.shape[1] != len(self.scale):
            raise ValueError(f"vector scaling was fitted for {len(self.scale)} classes; "
                             f"got logits of shape {logits.shape}")
        return logits * np.asarray(self.scale) + np.asarray(self.bias)

    def to_dict(self) -> dict:
        params = ({"temperature": self.temperature} if self.method == "temperature_scaling"
                  else {"scale": list(self.scale), "bias": list(self.bias)})
        return {"method": self.method, **params,
                "calibration_loss": {"metric": "nll", "before": self.nll_before,
                                     "after": self.nll_after},
                "optimizer": self.optimizer, "converged": self.converged,
                "iterations": self.iterations}


def _with_losses(fit: ScalingFit, logits: np.ndarray, labels: np.ndarray) -> ScalingFit:
    """``fit`` with its NLL before and after calibration on the data it was fitted on."""
    return replace(fit, nll_before=negative_log_likelihood(logits, labels),
                   nll_after=negative_log_likelihood(fit.apply(logits), labels))


def _minimize_lbfgs(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor],
                    max_iter: int, grad_tol: float) -> tuple[int, bool]:
    """Run L-BFGS on ``params`` in place; return (iterations, converged by gradient norm)."""
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=grad_tol,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = closure()  # loss and gradient at the final point
    grad_norm = max(float(p.grad.abs().max()) for p in params)
    finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(p).all()) for p in params)
    return int(optimizer.state[params[0]].get("n_iter", 0)), finite and grad_norm <= grad_tol


def golden_section_minimize(f: Callable[[float], float], lo: float, hi: float,
                            tol: float = 1e-9, max_iter: int = 200) -> tuple[float, int]:
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


def fit_temperature(val_logits, val_labels, *, max_iter: int = 100, grad_tol: float = 1e-6,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> ScalingFit:
    """Fit T on VALIDATION logits/labels (never on test) by minimizing NLL(logits / T).

    ``max_iter`` bounds the L-BFGS iterations (0 skips straight to the bounded search);
    ``bounds`` is the range of T the fallback searches and an L-BFGS result must lie in.
    """
    if not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    logits_np, labels_np = validate_logits(val_logits, val_labels)
    logits, labels = torch.from_numpy(logits_np), torch.from_numpy(labels_np)

    def nll(log_t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits / log_t.exp(), labels)

    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    iterations, converged = _minimize_lbfgs(lambda: nll(log_t), [log_t], max_iter, grad_tol)
    temperature, optimizer = math.exp(log_t.item()), "lbfgs"
    if not (converged and bounds[0] <= temperature <= bounds[1]):
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        with torch.no_grad():
            best, iterations = golden_section_minimize(
                lambda x: float(nll(torch.tensor(x, dtype=torch.float64))), lo, hi)
        temperature, optimizer = math.exp(best), "bounded_search"
        converged = min(best - lo, hi - best) > 1e-6  # an optimum on a bound is not a minimum
    fit = ScalingFit(method="temperature_scaling", temperature=temperature, optimizer=optimizer,
                     converged=converged, iterations=iterations)
    return _with_losses(fit, logits_np, labels_np)


def fit_vector_scaling(val_logits, val_labels, *, max_iter: int = 200,
                       grad_tol: float = 1e-6) -> ScalingFit:
    """Fit a per-class scale w and bias b (logits * w + b) on VALIDATION data by L-BFGS on NLL.

    Unlike temperature scaling this may change the argmax. Raises if the fit is non-finite.
    """
    logits_np, labels_np = validate_logits(val_logits, val_labels)
    logits, labels = torch.from_numpy(logits_np), torch.from_numpy(labels_np)
    k = logits.shape[1]
    scale = torch.ones(k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    iterations, converged = _minimize_lbfgs(
        lambda: F.cross_entropy(logits * scale + bias, labels), [scale, bias], max_iter, grad_tol)
    if not (torch.isfinite(scale).all() and torch.isfinite(bias).all()):
        raise RuntimeError("vector scaling diverged to non-finite parameters (the validation set "
                           "may be separable); use temperature scaling instead")
    fit = ScalingFit(method="vector_scaling", scale=tuple(scale.tolist()), bias=tuple(bias.tolist()),
                     optimizer="lbfgs", converged=converged, iterations=iterations)
    return _with_losses(fit, logits_np, labels_np)


def fit_calibration(method: str, val_logits, val_labels, **options) -> ScalingFit:
    """Fit the calibration map named by ``method`` (one of METHODS) on validation data."""
    fitters = {"temperature_scaling": fit_temperature, "vector_scaling": fit_vector_scaling}
    if method not in fitters:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    return fitters[method](val_logits, val_labels, **options)
