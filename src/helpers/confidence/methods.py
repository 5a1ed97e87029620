"""The calibration methods by name: one ``fit(val_logits, val_labels, *, seed, ...)`` each, one registry.

Every method module provides ``fit`` (-> CalibrationMap), ``apply(params, logits)``,
``check_params(params)`` and ``probability_lipschitz(params)``. ``SELECTABLE`` are the smooth maps
phase 06 may choose for deployment; the step maps (histogram binning, isotonic) are baselines.
The order is the tie-break of the selection: simplest first.
"""

from __future__ import annotations

from helpers.confidence.base import MODULES, CalibrationMap, method_module
from helpers.run.params import did_you_mean

METHODS = tuple(MODULES)
SELECTABLE = (
    "identity",
    "temperature_scaling",
    "vector_scaling",
    "ensemble_temperature_scaling",
    "matrix_scaling",
    "dirichlet",
)


def check_methods(methods) -> list[str]:
    """``methods`` ("all", "a,b" or a list of names) as known names in METHODS order, the identity (no map)
    and temperature scaling always included (the references every other map is compared with)."""
    if isinstance(methods, str):
        methods = list(METHODS) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in MODULES]
    if unknown or not methods:
        raise ValueError(
            f"unknown calibration method(s) {unknown or methods!r}{did_you_mean(unknown, METHODS)}; pass 'all' "
            f"or a comma-separated list of {', '.join(METHODS)}"
        )
    always = ("identity", "temperature_scaling")
    return [*always, *[m for m in METHODS if m in methods and m not in always]]


def fit_calibration(method: str, val_logits, val_labels, **options) -> CalibrationMap:
    """Fit the calibration map named by ``method`` on validation data."""
    return method_module(method).fit(val_logits, val_labels, **options)
