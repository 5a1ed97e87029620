"""helpers.confidence.temperature_scaling on synthetic logits whose true temperature is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.confidence.methods import fit_calibration
from helpers.confidence.temperature_scaling import fit as fit_temperature
from helpers.confidence.temperature_scaling import golden_section_minimize
from helpers.confidence.vector_scaling import fit as fit_vector_scaling
from helpers.metrics.calibration import expected_calibration_error, negative_log_likelihood, softmax
from helpers.run import atomic


def calibrated_logits(seed: int, n: int, k: int = 10):
    """Logits z with labels drawn from softmax(z): perfectly calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    cdf = np.cumsum(softmax(z), axis=1)
    return z, np.minimum((rng.random((n, 1)) > cdf).sum(axis=1), k - 1)


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_recovers_a_known_temperature(t_true):
    z, labels = calibrated_logits(0, 20000)
    fit = fit_temperature(z * t_true, labels)  # miscalibrated by T: z * T / T = z
    assert fit.optimizer == "lbfgs" and fit.converged
    assert fit.temperature == pytest.approx(t_true, rel=0.04)
    assert fit.nll_after < fit.nll_before
    assert fit.nll_after == pytest.approx(negative_log_likelihood(z * t_true / fit.temperature, labels))


def test_bounded_search_fallback_finds_the_same_minimum():
    z, labels = calibrated_logits(1, 5000)
    lbfgs = fit_temperature(z * 2.0, labels)
    fallback = fit_temperature(z * 2.0, labels, max_iter=0)  # L-BFGS cannot converge
    assert (fallback.optimizer, fallback.converged) == ("bounded_search", True)
    assert fallback.iterations > 0
    assert fallback.temperature == pytest.approx(lbfgs.temperature, rel=1e-6)


def test_unbounded_optimum_falls_back_and_reports_no_convergence():
    """Labels independent of the logits: NLL keeps falling as T grows (towards uniform)."""
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(0, 3, (2000, 5)), rng.integers(0, 5, 2000)
    fit = fit_temperature(logits, labels, bounds=(0.1, 10.0))
    assert (fit.optimizer, fit.converged) == ("bounded_search", False)
    assert fit.temperature == pytest.approx(10.0, rel=1e-6)
    assert 0 < fit.temperature and fit.nll_after < fit.nll_before


def test_temperature_is_positive_and_ece_drops_on_held_out_data():
    z, labels = calibrated_logits(3, 12000)
    logits = z * 3.0  # overconfident
    val, test = slice(0, 6000), slice(6000, None)
    fit = fit_temperature(logits[val], labels[val])
    assert fit.temperature > 0
    before = expected_calibration_error(logits[test], labels[test])
    after = expected_calibration_error(fit.apply(logits[test]), labels[test])
    assert after < before / 3
    np.testing.assert_array_equal(fit.apply(logits).argmax(axis=1), logits.argmax(axis=1))


def test_fit_is_deterministic_to_the_bit(tmp_path):
    z, labels = calibrated_logits(4, 3000)
    first, second = fit_temperature(z * 1.7, labels), fit_temperature(z * 1.7, labels)
    assert first.temperature.hex() == second.temperature.hex()
    a = atomic.write_json(tmp_path / "a.json", first.to_dict())
    b = atomic.write_json(tmp_path / "b.json", second.to_dict())
    assert a.read_bytes() == b.read_bytes()
    record = json.loads(a.read_text())
    assert record["method"] == "temperature_scaling"
    assert set(record) == {
        "method",
        "params",
        "calibration_loss",
        "optimizer",
        "converged",
        "iterations",
        "seed",
        "hyper",
    }
    assert record["params"] == {"temperature": first.temperature}
    assert record["calibration_loss"]["after"] <= record["calibration_loss"]["before"]


def test_refuses_probabilities_and_bad_bounds():
    z, labels = calibrated_logits(5, 100)
    with pytest.raises(ValueError, match="probabilities"):
        fit_temperature(softmax(z), labels)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(z, labels, bounds=(0.0, 5.0))


def test_vector_scaling_recovers_per_class_scales():
    z, labels = calibrated_logits(6, 20000, k=4)
    w_true, b_true = np.array([0.5, 1.0, 2.0, 0.8]), np.array([0.3, -0.2, 0.0, 0.5])
    distorted = (z - b_true) / w_true  # so distorted * w_true + b_true == z
    fit = fit_vector_scaling(distorted, labels)
    assert fit.method == "vector_scaling" and fit.converged
    np.testing.assert_allclose(fit.params["scale"], w_true, rtol=0.06)
    bias = np.asarray(fit.params["bias"])  # identified only up to a shared constant
    np.testing.assert_allclose(bias - bias.mean(), b_true - b_true.mean(), atol=0.05)
    temperature = fit_temperature(distorted, labels)
    assert fit.nll_after < temperature.nll_after
    with pytest.raises(ValueError, match="fitted for 4 classes"):
        fit.apply(np.zeros((2, 3)))


def test_fit_calibration_dispatches_and_lists_methods():
    z, labels = calibrated_logits(7, 500)
    assert fit_calibration("temperature_scaling", z, labels) == fit_temperature(z, labels)
    assert fit_calibration("vector_scaling", z, labels).method == "vector_scaling"
    with pytest.raises(ValueError, match="temperature_scaling.*vector_scaling"):
        fit_calibration("platt", z, labels)


def test_golden_section_search():
    x, iterations = golden_section_minimize(lambda x: (x - 2.0) ** 2, 0.0, 5.0, tol=1e-10)
    assert x == pytest.approx(2.0, abs=1e-8) and 0 < iterations < 200
    x, _ = golden_section_minimize(lambda x: x, -1.0, 3.0)  # monotone: the lower end
    assert x == pytest.approx(-1.0, abs=1e-8)
    with pytest.raises(ValueError, match="lo < hi"):
        golden_section_minimize(lambda x: x, 1.0, 1.0)
