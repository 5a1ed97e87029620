"""helpers.confidence.shift: one map fitted on source val, measured on source-like and shifted test sets."""

from __future__ import annotations

import numpy as np

from helpers.confidence.shift import shift_summaries, shift_table
from helpers.confidence.temperature_scaling import fit as fit_temperature
from helpers.metrics.calibration import softmax


def sample(seed: int, n: int, temperature: float, noise: float = 0.0):
    """Labels drawn from softmax(z); the model reports z * temperature, plus logit noise under shift."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, 10))
    labels = np.minimum((rng.random((n, 1)) > np.cumsum(softmax(z), axis=1)).sum(axis=1), 9)
    return z * temperature + rng.normal(0, noise, z.shape), labels


def test_a_map_fitted_on_source_stays_calibrated_on_source_and_degrades_under_shift():
    calibration = fit_temperature(*sample(0, 4000, 2.0))
    sets = {"source test": sample(1, 4000, 2.0), "target test": sample(2, 4000, 2.0, noise=3.0)}
    summaries = shift_summaries(sets, calibration, n_boot=300)
    assert summaries["source test"]["calibrated"]["null"]["indistinguishable"]
    assert not summaries["target test"]["calibrated"]["null"]["indistinguishable"]  # Ovadia et al.'s finding
    assert summaries["target test"]["calibrated"]["ece"] > 2 * summaries["source test"]["calibrated"]["ece"]
    table = shift_table(summaries)
    assert list(table.index) == [(s, k) for s in sets for k in ("raw", "calibrated")]
    assert table.loc[("source test", "calibrated"), "verdict"] == "indistinguishable from calibrated"
