"""helpers.metrics.calibration: cross-checked against torchmetrics and scikit-learn."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from helpers.metrics.calibration import (
    adaptive_calibration_error,
    before_after_table,
    bin_index,
    brier_score,
    calibration_summary,
    classwise_calibration_error,
    confidence_histogram,
    ece_bootstrap_ci,
    expected_calibration_error,
    improvement,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
    reliability_table,
    softmax,
    validate_logits,
)
from helpers.run import atomic

EDGES = np.arange(16) / 15


def overconfident_logits(seed: int, n: int, k: int, temperature: float = 2.0):
    """Logits whose labels are drawn from softmax(z), reported as z * temperature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    cdf = np.cumsum(softmax(z), axis=1)
    labels = np.minimum((rng.random((n, 1)) > cdf).sum(axis=1), k - 1)
    return z * temperature, labels


def off_edges(values: np.ndarray, margin: float = 1e-5) -> np.ndarray:
    """Rows whose values are all farther than ``margin`` from every 15-bin edge."""
    distance = np.abs(values.reshape(len(values), -1, 1) - EDGES).min(axis=-1)
    return (distance > margin).all(axis=1)


@pytest.mark.parametrize("seed,k,temperature", [(0, 10, 2.0), (1, 3, 0.5), (2, 5, 1.0)])
def test_ece_and_mce_match_torchmetrics_away_from_bin_edges(seed, k, temperature):
    logits, labels = overconfident_logits(seed, 3000, k, temperature)
    keep = off_edges(softmax(logits).max(axis=1))
    logits, labels = logits[keep], labels[keep]
    probs, target = torch.from_numpy(softmax(logits)), torch.from_numpy(labels)
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        theirs = MulticlassCalibrationError(num_classes=k, n_bins=15, norm=norm)(probs, target)
        assert ours(logits, labels) == pytest.approx(float(theirs), abs=1e-6)


def test_classwise_ece_matches_torchmetrics_binary_ece_per_class():
    logits, labels = overconfident_logits(3, 3000, 4)
    keep = off_edges(softmax(logits))
    logits, labels = logits[keep], labels[keep]
    probs = torch.from_numpy(softmax(logits))
    per_class = [
        float(
            BinaryCalibrationError(n_bins=15, norm="l1")(probs[:, c], torch.from_numpy((labels == c).astype(np.int64)))
        )
        for c in range(4)
    ]
    assert classwise_calibration_error(logits, labels) == pytest.approx(np.mean(per_class), abs=1e-6)


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    np.testing.assert_array_equal(bin_index(EDGES, 15), [0] + list(range(15)))
    np.testing.assert_array_equal(bin_index(np.array([1e-9, 0.5, 1 / 15 + 1e-12]), 15), [0, 7, 1])
    # Three equal logits give a confidence of exactly 1/3 = 5/15: bin (4/15, 5/15], index 4.
    table = reliability_table(np.zeros((7, 3)), np.zeros(7, dtype=np.int64))
    assert table["count"].tolist() == [0] * 4 + [7] + [0] * 10
    assert table["upper"][4] == 1 / 3 == table["mean_confidence"][4]


def test_edge_convention_changes_ece_as_computed_by_hand():
    """Two samples: confidence exactly 1/3 = 5/15 (correct) and c in (5/15, 6/15) (wrong)."""
    logits = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    labels = np.array([0, 1])
    c = np.exp(0.1) / (np.exp(0.1) + 2)
    assert 5 / 15 < c < 6 / 15
    # ours: two bins, |1 - 1/3| and |0 - c|, each of weight 1/2
    assert expected_calibration_error(logits, labels) == pytest.approx((2 / 3 + c) / 2, abs=1e-12)
    # torchmetrics' [lo, hi) bins put both samples in one bin: |1/2 - (1/3 + c) / 2|
    theirs = MulticlassCalibrationError(num_classes=3, n_bins=15)(
        torch.from_numpy(softmax(logits)), torch.from_numpy(labels)
    )
    assert float(theirs) == pytest.approx(abs(0.5 - (1 / 3 + c) / 2), abs=1e-6)


def test_adaptive_ece_uses_equal_mass_bins():
    logits, labels = overconfident_logits(4, 150, 5)
    conf, pred = softmax(logits).max(axis=1), logits.argmax(axis=1)
    order = np.argsort(conf)
    gaps = [abs((pred[g] == labels[g]).mean() - conf[g].mean()) for g in np.split(order, 15)]
    assert adaptive_calibration_error(logits, labels) == pytest.approx(np.mean(gaps), abs=1e-12)


def test_nll_matches_sklearn_log_loss_and_brier_matches_the_formula():
    logits, labels = overconfident_logits(5, 500, 6)
    probs = softmax(logits)
    assert negative_log_likelihood(logits, labels) == pytest.approx(log_loss(labels, probs, labels=range(6)), rel=1e-10)
    direct = np.mean([sum((probs[i, c] - (labels[i] == c)) ** 2 for c in range(6)) for i in range(len(labels))])
    assert brier_score(logits, labels) == pytest.approx(direct, rel=1e-12)
    assert brier_score(logits, labels) == pytest.approx(
        brier_score_loss(labels, probs, labels=range(6), scale_by_half=False), rel=1e-12
    )


def test_nll_is_exact_for_extreme_logits():
    logits = np.array([[800.0, 0.0], [0.0, 800.0]])
    assert negative_log_likelihood(logits, np.array([0, 0])) == pytest.approx(400.0)


def test_reliability_table_matches_a_direct_binning():
    logits, labels = overconfident_logits(6, 800, 4)
    table = reliability_table(logits, labels)
    conf, correct = softmax(logits).max(axis=1), logits.argmax(axis=1) == labels
    assert table["count"].sum() == 800
    for row in table.itertuples():
        inside = (conf > row.lower) & (conf <= row.upper)
        assert row.count == inside.sum()
        if row.count:
            assert row.mean_confidence == pytest.approx(conf[inside].mean())
            assert row.accuracy == pytest.approx(correct[inside].mean())
        else:
            assert np.isnan(row.accuracy) and np.isnan(row.mean_confidence)


def test_ece_bootstrap_ci_is_seeded_and_narrows_with_more_data():
    logits, labels = overconfident_logits(7, 4000, 10)
    big = ece_bootstrap_ci(logits, labels, n_boot=200, seed=0)
    assert big == ece_bootstrap_ci(logits, labels, n_boot=200, seed=0)
    assert big != ece_bootstrap_ci(logits, labels, n_boot=200, seed=1)
    small = ece_bootstrap_ci(logits[:250], labels[:250], n_boot=200, seed=0)
    assert 0 <= big[0] < big[1] and big[1] - big[0] < small[1] - small[0]


def test_calibration_summary_is_json_ready(tmp_path):
    logits, labels = overconfident_logits(8, 300, 3)
    summary = calibration_summary(logits, labels, n_boot=50)
    assert summary["ece"] == expected_calibration_error(logits, labels)
    assert summary["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
    path = atomic.write_json(tmp_path / "calibration.json", summary)
    assert json.loads(path.read_text())["ece_ci95"] == summary["ece_ci95"]


@pytest.mark.parametrize(
    "logits,labels,message",
    [
        (np.array([[np.nan, 1.0], [np.inf, 0.0], [0.0, -np.inf]]), [0, 1, 0], "1 NaN and 2 Inf value.*3 of 3 rows"),
        (np.array([[0.2, 0.8], [0.5, 0.5]]), [0, 1], "look like probabilities"),
        (np.array([[0.0, 1.0], [2.0, 0.0]]), [0, 2], r"outside \[0, 2\)"),
        (np.array([[0.0, 1.0], [2.0, 0.0]]), [0], r"shape \(2,\)"),
        (np.zeros((0, 3)), np.zeros(0, dtype=np.int64), "empty"),
        (np.zeros(3), [0, 1, 2], r"\[N, K >= 2\]"),
        (np.array([[1, 2], [3, 4]]), [0, 1], "floating point"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        validate_logits(logits, np.asarray(labels))
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(logits, np.asarray(labels))


def test_figures_render_before_and_after(tmp_path):
    logits, labels = overconfident_logits(9, 500, 4)
    panels = {"uncalibrated": logits, "T = 2": logits / 2}
    for name, figure in (("reliability", reliability_diagram), ("hist", confidence_histogram)):
        fig = figure(labels, panels)
        assert isinstance(fig, Figure) and len(fig.axes) >= 2
        assert atomic.save_figure(fig, tmp_path / f"{name}.png").stat().st_size > 0
    with pytest.raises(ValueError, match="empty"):
        reliability_diagram(labels, {})


def test_improvement_and_before_after_table_of_a_temperature_fix():
    logits, labels = overconfident_logits(10, 2000, 4, temperature=2.0)
    pre = calibration_summary(logits, labels, n_boot=50)
    post = calibration_summary(logits / 2.0, labels, n_boot=50)  # the true temperature undoes the overconfidence
    gained = improvement(pre, post)
    assert gained["ece_reduction"] == pytest.approx(pre["ece"] - post["ece"]) and gained["ece_reduction"] > 0
    assert gained["nll_reduction"] > 0 and 0 < gained["ece_relative_reduction"] <= 1
    table = before_after_table({"m": {"pre_calibration": pre, "post_calibration": post}}, {"m": "T = 2"})
    row = table.loc["m"]
    assert row["ece_pre"] == round(pre["ece"], 4) and row["ece_post"] == round(post["ece"], 4)
    assert row["accuracy_pre"] == round(pre["accuracy"], 4) == row["accuracy_post"] and row["map"] == "T = 2"
    assert row["verdict_pre"] == "miscalibrated" and row["p_pre"] < 0.05
    assert row["verdict_post"] == "indistinguishable from calibrated" and row["p_post"] >= 0.05
    assert row["ece_post_ci95"].startswith("[") and row["nll_post"] < row["nll_pre"]
    with pytest.raises(ValueError, match="nll"):
        improvement({k: v for k, v in pre.items() if k != "nll"}, post)
