"""Choosing the calibration map: lowest cross-validated NLL on the VALIDATION split, never test.

Each candidate is fitted on k - 1 folds of val and scored on the held-out fold (seeded stratified
folds); the pooled held-out NLL ranks them. The ODIR maps bring their own score from the lambda
search on the same folds (see ``helpers.confidence.odir``). Only ``methods.SELECTABLE`` maps that converged on
all of val may be chosen; ties (equal to 1e-12) go to the earlier, simpler method of ``METHODS``.
"""

from __future__ import annotations

import numpy as np

from helpers.confidence.base import cv_folds
from helpers.confidence.methods import METHODS, SELECTABLE, fit_calibration
from helpers.metrics.calibration import negative_log_likelihood, validate_logits

N_FOLDS = 5


def cv_nll(method: str, logits: np.ndarray, labels: np.ndarray, folds, seed: int) -> float:
    """Pooled held-out NLL of ``method`` over ``folds`` of (logits, labels)."""
    total = 0.0
    for train, held in folds:
        fit = fit_calibration(method, logits[train], labels[train], seed=seed)
        total += negative_log_likelihood(fit.apply(logits[held]), labels[held]) * len(held)
    return total / len(labels)


def rank(scores: dict[str, float], eligible) -> list[str]:
    """``eligible`` methods best first: lowest score, a tie (equal to 1e-12) going to the earlier method of METHODS."""
    return sorted(eligible, key=lambda m: (round(scores[m], 12), METHODS.index(m)))


def _reusable(fit, n_folds: int, seed: int) -> bool:
    """An ODIR fit already scored itself on these folds (its lambda search): reuse that CV NLL."""
    return fit.hyper.get("cv_nll") is not None and fit.hyper.get("n_folds") == n_folds and fit.seed == seed


def select(fits: dict, val_logits, val_labels, *, seed: int = 0, n_folds: int = N_FOLDS) -> dict:
    """The chosen method among ``fits`` (method -> CalibrationMap fitted on all of val) and why."""
    logits, labels = validate_logits(val_logits, val_labels)
    folds = cv_folds(labels, n_folds, seed)
    scores = {
        m: (fit.hyper["cv_nll"] if _reusable(fit, n_folds, seed) else cv_nll(m, logits, labels, folds, seed))
        for m, fit in fits.items()
    }
    eligible = [m for m in fits if m in SELECTABLE and fits[m].converged and np.isfinite(scores[m])]
    if not eligible:
        raise RuntimeError(
            f"no selectable calibration map converged (fits: "
            f"{ {m: f.converged for m, f in fits.items()} }); check the val logits"
        )
    order = rank(scores, eligible)
    chosen = order[0]
    runner_up = f"; next {order[1]} at {scores[order[1]]:.4f}" if len(order) > 1 else ""
    excluded = [m for m in fits if m not in eligible]
    reason = (
        f"lowest {n_folds}-fold cross-validated NLL on val among the smooth maps that converged: "
        f"{scores[chosen]:.4f} (raw logits {negative_log_likelihood(logits, labels):.4f}{runner_up})"
        + (f"; not eligible: {', '.join(excluded)}" if excluded else "")
    )
    return {
        "chosen": chosen,
        "criterion": f"val {n_folds}-fold CV NLL",
        "cv_nll": scores,
        "n_folds": n_folds,
        "seed": seed,
        "eligible": eligible,
        "reason": reason,
    }
