"""Validation beyond leave-one-model-out: leave one batch size or precision out, the share of predictions within
+-10%, and Spearman's rank correlation (cross-checked against scipy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_latency_estimator import synthetic_record

from helpers.ground_truth import estimator as le
from helpers.ground_truth import roofline


def test_spearman_is_scipys_rank_correlation_ties_included():
    rng = np.random.default_rng(5)
    predicted = pd.Series(np.round(rng.gamma(2.0, 3.0, size=40), 0))  # rounded: ties on both sides
    measured = pd.Series(np.round(predicted * rng.uniform(0.5, 1.5, size=40), 0))
    assert le.spearman(predicted, measured) == pytest.approx(stats.spearmanr(predicted, measured).statistic)
    assert le.spearman(pd.Series([1.0, 2.0, 3.0]), pd.Series([30.0, 20.0, 10.0])) == pytest.approx(-1.0)
    assert np.isnan(le.spearman(pd.Series([1.0, 2.0]), pd.Series([1.0, 2.0])))  # too few to rank


def test_within_pct_counts_predictions_within_ten_percent_inclusive():
    assert le.within_pct(pd.Series([0.0, 9.9, 10.0, 10.1, 50.0])) == pytest.approx(60.0)


def test_a_left_out_precision_is_predicted_at_the_same_fraction_of_its_own_peak():
    rng = np.random.default_rng(2)
    fp32 = [synthetic_record(f"m{i}", b, rng) for i in range(3) for b in (1, 8)]
    group = le.RooflineEstimator.fit(fp32).groups["onnxruntime/fp32"]
    doubled = roofline.transferred(group, 2 * group.theoretical_peak_flops)
    assert doubled.roofline.peak_flops_per_ms == pytest.approx(2 * group.roofline.peak_flops_per_ms)
    assert (doubled.roofline.bandwidth_bytes_per_ms, doubled.scale) == (
        group.roofline.bandwidth_bytes_per_ms,
        group.scale,
    )
    assert doubled.to_dict()["peak_fraction"] == pytest.approx(group.to_dict()["peak_fraction"])


def test_leave_one_batch_size_and_one_precision_out_on_an_exact_roofline():
    """Latencies that follow one roofline at every batch size and, scaled by the peak, at both precisions: each
    split predicts every record, the roofline baseline nearly exactly (its fit is exact up to the optimizer), the
    latency estimator (another law: additive terms, not a max) within a few percent."""
    rng = np.random.default_rng(4)
    fp32 = [synthetic_record(f"m{i}", b, rng, end_to_end=False) for i in range(3) for b in (1, 8)]
    fp16 = [dataclasses.replace(r, precision="fp16") for r in fp32]  # same peak: the transfer is the identity
    records = fp32 + fp16
    for held_out in ("batch_size", "precision", "model"):
        validation = le.leave_one_out(records, held_out, "subgraph_sum")
        assert len(validation) == len(records) and set(validation["held_out"]) == {held_out}
        summary = le.lomo_summary(validation)
        assert list(summary.columns) == ["held_out", "hardware_id", "runtime", "precision", *le.SUMMARY_METRICS]
        assert (summary["roofline_median_ape_pct"] < 1).all(), summary
        assert (summary["roofline_within_10_pct"] == 100).all() and (summary["roofline_spearman"] > 0.99).all()
        assert (summary["median_ape_pct"] < 5).all() and (summary["spearman"] > 0.95).all(), summary


def test_a_split_needs_two_values_and_a_known_name():
    rng = np.random.default_rng(3)
    records = [synthetic_record("a", 1, rng), synthetic_record("b", 1, rng)]
    with pytest.raises(ValueError, match="at least two batch_sizes"):
        le.leave_one_out(records, "batch_size")
    with pytest.raises(ValueError, match="cannot hold out 'runtime'"):
        le.leave_one_out(records, "runtime")
