"""The honest statistics of helpers.metrics.calibration against exact simulations, Kumar et al.'s
estimator as they published it, and netcal (a test-only extra)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.metrics.calibration import (
    bin_index,
    calibration_summary,
    calibration_table,
    calibration_verdict,
    debiased_ece,
    ece_bootstrap,
    expected_calibration_error,
    null_ece,
    smooth_ece,
    softmax,
    top_label,
)


def model(seed: int, n: int, k: int = 10, temperature: float = 1.0):
    """(logits, labels): labels drawn from softmax(z), reported as z * temperature (1: perfectly calibrated)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    labels = np.minimum((rng.random((n, 1)) > np.cumsum(softmax(z), axis=1)).sum(axis=1), k - 1)
    return z * temperature, labels


def plugin_ece(conf, correct, n_bins=15):
    bins = bin_index(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    return np.abs(np.bincount(bins, conf - correct, minlength=n_bins)).sum() / len(conf) if count.sum() else 0.0


def test_vectorised_bootstrap_matches_the_index_bootstrap():
    conf, correct = top_label(*model(0, 3000, temperature=1.5))
    fast = ece_bootstrap(conf, correct, n_boot=4000, seed=0)
    rng = np.random.default_rng(1)
    exact = np.array([plugin_ece(conf[i], correct[i]) for i in rng.integers(0, len(conf), (4000, len(conf)))])
    # quantiles of two 4000-draw samples of one distribution agree to Monte-Carlo error (~0.05 sd here)
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(exact, q), abs=0.1 * exact.std() + 2e-4)
    assert fast.std() == pytest.approx(exact.std(), rel=0.08)


def test_null_band_matches_labels_drawn_from_the_confidences():
    conf, _ = top_label(*model(2, 2000, temperature=1.3))
    fast = null_ece(conf, n_null=4000, seed=0)
    rng = np.random.default_rng(3)
    exact = np.array([plugin_ece(conf, rng.random(len(conf)) < conf) for _ in range(4000)])
    for q in (0.05, 0.5, 0.95):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(exact, q), abs=0.1 * exact.std() + 2e-4)


def test_a_calibrated_model_is_called_indistinguishable_and_an_overconfident_one_not():
    for temperature, expected in ((1.0, True), (1.6, False)):
        logits, labels = model(4, 5000, temperature=temperature)
        conf, _ = top_label(logits, labels)
        verdict = calibration_verdict(expected_calibration_error(logits, labels), null_ece(conf, seed=1), len(conf))
        assert verdict["indistinguishable"] is expected, verdict
        assert ("indistinguishable from calibrated at this sample size" in verdict["verdict"]) is expected
        assert "n = 5000" in verdict["verdict"]


def test_the_null_band_shrinks_with_n_like_one_over_root_n():
    conf, _ = top_label(*model(5, 40000))
    small, big = np.median(null_ece(conf[:2500])), np.median(null_ece(conf))
    assert small / big == pytest.approx(4.0, rel=0.25)


def kumar_normal_debiased_ce(conf, correct, n_bins=15, resamples=20000, seed=0):
    """``normal_debiased_ce`` of Kumar et al.'s uncertainty-calibration library (power 1), re-typed here."""
    bins = bin_index(conf, n_bins)
    data = [(conf[bins == b], correct[bins == b]) for b in range(n_bins) if (bins == b).any()]
    sizes = np.array([len(c) for c, _ in data])
    label_means = np.array([y.mean() for _, y in data])
    label_stddev = np.sqrt(label_means * (1 - label_means) / sizes)
    model_vals = np.array([c.mean() for c, _ in data])
    bin_probs = sizes / sizes.sum()
    ce = bin_probs @ np.abs(label_means - model_vals)
    rng = np.random.default_rng(seed)
    samples = rng.normal(label_means, label_stddev, (resamples, len(data)))
    return 2 * ce - (np.abs(samples - model_vals) @ bin_probs).mean()


def test_debiased_ece_is_kumars_estimator_in_closed_form_and_removes_the_small_sample_bias():
    logits, labels = model(6, 1500, temperature=1.2)
    conf, correct = top_label(logits, labels)
    ours = debiased_ece(conf, correct)
    assert ours["l1"] == pytest.approx(kumar_normal_debiased_ce(conf, correct.astype(float)), abs=2e-4)
    # perfectly calibrated (true calibration error 0): on average over 10 samples both estimates sit below the plug-in
    runs = [top_label(*model(seed, 1500)) for seed in range(10, 20)]
    plugin = np.mean([plugin_ece(c, y) for c, y in runs])
    debiased = [debiased_ece(c, y) for c, y in runs]
    assert np.mean([d["l1"] for d in debiased]) < 0.85 * plugin and np.mean([d["l2"] for d in debiased]) < plugin


def test_summary_and_table_carry_every_honest_column():
    logits, labels = model(8, 2000, temperature=1.5)
    summary = calibration_summary(logits, labels, n_boot=200)
    assert summary["ece_ci95"][0] < summary["ece"] < summary["ece_ci95"][1]
    assert summary["null"]["p_value"] < 0.05 and not summary["null"]["indistinguishable"]
    row = calibration_table({"model": summary}).loc["model"]
    assert row["verdict"] == "miscalibrated" and row["n"] == 2000
    assert {"ece_ci95", "ece_debiased", "null_p95", "p", "ace"} <= set(row.index)


def test_ece_agrees_with_netcal():
    netcal = pytest.importorskip("netcal.metrics")
    logits, labels = model(9, 4000, temperature=1.4)
    conf, correct = top_label(logits, labels)
    edges = np.arange(16) / 15
    keep = np.abs(conf[:, None] - edges).min(axis=1) > 1e-6  # netcal's bins are [lo, hi), ours (lo, hi]
    probs = softmax(logits)[keep]
    theirs = netcal.ECE(bins=15).measure(probs, labels[keep])
    assert expected_calibration_error(logits[keep], labels[keep]) == pytest.approx(theirs, abs=1e-6)


def test_smooth_ece_agrees_with_relplot_and_is_its_own_bandwidth():
    relplot = pytest.importorskip("relplot")
    for temperature in (1.0, 1.5):  # relplot truncates its kernel at |t - c| = 1/2, which matters only for sigma >~ 0.2
        conf, correct = top_label(*model(10, 5000, temperature=temperature))
        ours = smooth_ece(conf, correct)
        assert ours["smece"] == pytest.approx(ours["sigma"], abs=1e-6)
        assert ours["smece"] == pytest.approx(relplot.smECE(conf, correct.astype(float)), abs=1e-3)
