"""One interface for every post-hoc calibration map: fit on VAL logits, apply to any logits, store as JSON.

A :class:`CalibrationMap` holds the method name, its parameters (plain floats and lists, so the
map round-trips through ``bundle.json``), how the fit went (optimizer, converged, iterations, the
seed of any data split it used) and the validation NLL before and after. ``apply(logits)`` returns
CALIBRATED LOGITS (log-probabilities for the maps that produce probabilities), so every metric and
phase 07 read them like any logits. Each method lives in its own module (``helpers.confidence.methods``
lists them); this module only dispatches.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from helpers.metrics.calibration import negative_log_likelihood

# method name -> its module in helpers.confidence; the order is the selection's tie-break (simplest first)
MODULES = {
    "identity": "identity",
    "temperature_scaling": "temperature_scaling",
    "vector_scaling": "vector_scaling",
    "ensemble_temperature_scaling": "ensemble_temperature",
    "matrix_scaling": "matrix_scaling",
    "dirichlet": "dirichlet",
    "histogram_binning": "histogram_binning",
    "isotonic": "isotonic",
}


def method_module(method: str):
    """The module implementing ``method`` (fit, apply, check_params, probability_lipschitz)."""
    if method not in MODULES:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {list(MODULES)}")
    return importlib.import_module(f"helpers.confidence.{MODULES[method]}")


@dataclass(frozen=True)
class CalibrationMap:
    """A fitted calibration map and how it was obtained (``to_dict`` / ``from_dict`` for JSON)."""

    method: str
    params: dict
    optimizer: str = (
        "closed_form"  # "lbfgs", "newton" (ODIR maps), "bounded_search", "closed_form" (binning / isotonic)
    )
    converged: bool = True
    iterations: int = 0
    seed: int = 0
    nll_before: float = math.nan  # validation NLL of the raw logits
    nll_after: float = math.nan  # ... and of the calibrated logits
    hyper: dict = field(default_factory=dict)  # hyper-parameters and how they were chosen (ODIR lambda)

    def _module(self):
        return method_module(self.method)

    def apply(self, logits) -> np.ndarray:
        """Calibrated logits, float64 [N, K] (softmax them for calibrated probabilities)."""
        logits = np.asarray(logits, dtype=np.float64)
        return self._module().apply(self.params, logits)

    def probability_lipschitz(self) -> float | None:
        """Bound on max |change of a calibrated probability| per unit max |change of a raw logit|;
        None for step maps (histogram binning, isotonic), which no logit tolerance bounds."""
        return self._module().probability_lipschitz(self.params)

    @property
    def temperature(self) -> float | None:
        return self.params.get("temperature")

    def label(self) -> str:
        """Short name for tables: the method and its key parameter (T, or the ODIR lambda)."""
        if "temperature" in self.params and self.method == "temperature_scaling":
            return f"{self.method} (T = {self.params['temperature']:.3f})"
        return f"{self.method} (lambda = {self.hyper['lambda']:g})" if "lambda" in self.hyper else self.method

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "params": self.params,
            "optimizer": self.optimizer,
            "converged": self.converged,
            "iterations": self.iterations,
            "seed": self.seed,
            "calibration_loss": {"metric": "nll", "before": self.nll_before, "after": self.nll_after},
            "hyper": self.hyper,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> CalibrationMap:
        """The map ``to_dict`` wrote (validated: known method, its parameters present)."""
        if not isinstance(doc, dict) or "method" not in doc or "params" not in doc:
            raise ValueError(f"a calibration map is a dict with 'method' and 'params', got {doc!r:.200}")
        loss = doc.get("calibration_loss", {})
        fit = cls(
            method=doc["method"],
            params=doc["params"],
            optimizer=doc.get("optimizer", "closed_form"),
            converged=bool(doc.get("converged", True)),
            iterations=int(doc.get("iterations", 0)),
            seed=int(doc.get("seed", 0)),
            nll_before=loss.get("before", math.nan),
            nll_after=loss.get("after", math.nan),
            hyper=doc.get("hyper", {}),
        )
        fit._module().check_params(fit.params)
        return fit


def with_losses(fit: CalibrationMap, logits: np.ndarray, labels: np.ndarray) -> CalibrationMap:
    """``fit`` with its NLL before and after calibration on the data it was fitted on."""
    return replace(
        fit,
        nll_before=negative_log_likelihood(logits, labels),
        nll_after=negative_log_likelihood(fit.apply(logits), labels),
    )


def minimize_lbfgs(
    loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], max_iter: int, grad_tol: float
) -> tuple[int, bool]:
    """Run L-BFGS (strong Wolfe) on ``params`` in place; (iterations, converged: finite and grad <= tol)."""
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=grad_tol,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run calibration work on one thread (BLAS and torch). Its problems are small -- k x k maps on a few
    thousand logits -- so a second thread costs more in synchronisation than it saves, many times over on a
    busy machine (measured on 2 cores at load 3: matrix scaling's fit 0.6 s on one thread, 13.5 s on two)."""
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def softmax_nll_grad(linear: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of softmax(linear) and its gradient with respect to ``linear`` (float64, analytic)."""
    shifted = linear - linear.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, labels]))
    grad = exp / total
    grad[rows, labels] -= 1.0
    return loss, grad / len(labels)


def minimize_smooth(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, max_iter: int, grad_tol: float
) -> tuple[np.ndarray, int, bool]:
    """scipy L-BFGS-B on a smooth loss with an analytic gradient: (argmin, iterations, converged).

    Converged: scipy reports success, the point is finite and max |gradient| <= ``grad_tol`` * 10
    (the relative-reduction stop may end a hair above ``grad_tol``; the gradient is recorded either way).
    """
    from scipy.optimize import minimize

    result = minimize(
        fun_and_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": grad_tol, "ftol": 1e-13, "maxcor": 20},
    )
    _, grad = fun_and_grad(result.x)
    finite = bool(np.isfinite(result.x).all() and np.isfinite(result.fun))
    return result.x, int(result.nit), bool(result.success) and finite and float(np.abs(grad).max()) <= 10 * grad_tol


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


PROBABILITY_FLOOR = 1e-6  # probability maps (binning, isotonic) floor every class here before renormalising


def probabilities_to_logits(probs: np.ndarray) -> np.ndarray:
    """Log of row-normalised probabilities, each floored at PROBABILITY_FLOOR (finite NLL)."""
    probs = np.maximum(probs, PROBABILITY_FLOOR)
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def check_matrix(params: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``params[key]`` as a finite float64 array of ``shape`` (a bundle may carry a damaged map)."""
    value = np.asarray(params.get(key, []), dtype=np.float64)
    if value.shape != shape or not np.isfinite(value).all():
        raise ValueError(
            f"calibration parameter {key!r} must be a finite array of shape {shape}, got shape {value.shape}"
        )
    return value


def cv_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (train, held-out) index pairs: stratified k-fold, or plain k-fold where a class has < k rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not isinstance(n_folds, int) or not 2 <= n_folds <= len(labels):
        raise ValueError(f"n_folds must be an integer in [2, {len(labels)}] (the val rows), got {n_folds!r}")
    stratify = np.bincount(labels).max() > 0 and np.bincount(labels)[np.bincount(labels) > 0].min() >= n_folds
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))
