"""helpers.metrics: cross-checked against scikit-learn, intervals against their definitions."""

from __future__ import annotations

import json
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn import metrics as skm

from helpers.metrics.classification import (
    accuracy,
    accuracy_with_ci,
    bootstrap_ci,
    classification_summary,
    confusion_matrix,
    confusion_matrix_figure,
    mcc,
    mcc_from_confusion,
    per_class_accuracy,
    wilson_interval,
)
from helpers.run import atomic


def noisy_predictions(seed: int, n: int, k: int, flip: float):
    """Labels and predictions that agree except for a fraction ``flip`` of random errors."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < flip, rng.integers(0, k, n), labels)
    return labels, preds


@pytest.mark.parametrize("seed,k,flip", [(0, 2, 0.3), (1, 3, 0.5), (2, 10, 0.2), (3, 10, 0.95), (4, 7, 1.0)])
def test_mcc_and_confusion_match_sklearn_on_random_data(seed, k, flip):
    labels, preds = noisy_predictions(seed, 500, k, flip)
    assert mcc(labels, preds, k) == pytest.approx(skm.matthews_corrcoef(labels, preds), abs=1e-12)
    np.testing.assert_array_equal(
        confusion_matrix(labels, preds, k), skm.confusion_matrix(labels, preds, labels=range(k))
    )
    assert accuracy(labels, preds) == pytest.approx(skm.accuracy_score(labels, preds))


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, for the all-one-class case
@pytest.mark.parametrize(
    "labels,preds",
    [
        ([2, 2, 2, 2], [2, 2, 2, 2]),  # all one class, perfect: degenerate, sklearn says 0
        ([0, 0, 0, 0], [1, 2, 1, 0]),  # constant truth
        ([0, 1, 2, 1], [1, 1, 1, 1]),  # constant prediction
        ([0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 0, 1]),  # perfect
        ([0, 1, 0, 1], [1, 0, 1, 0]),  # perfectly inverted binary: -1
        ([0, 0, 1, 1, 4], [0, 1, 1, 1, 4]),  # classes 2 and 3 absent
    ],
)
def test_mcc_degenerate_cases_match_sklearn(labels, preds):
    labels, preds = np.array(labels), np.array(preds)
    assert mcc(labels, preds, 5) == pytest.approx(skm.matthews_corrcoef(labels, preds), abs=1e-12)
    np.testing.assert_array_equal(
        confusion_matrix(labels, preds, 5), skm.confusion_matrix(labels, preds, labels=range(5))
    )


def test_mcc_from_confusion_is_vectorized_over_a_stack():
    pairs = [noisy_predictions(seed, 300, 4, 0.4) for seed in range(5)]
    stack = np.stack([confusion_matrix(y, p, 4) for y, p in pairs])
    np.testing.assert_allclose(mcc_from_confusion(stack), [skm.matthews_corrcoef(y, p) for y, p in pairs], atol=1e-12)


def test_per_class_accuracy_is_recall_with_nan_for_absent_classes():
    labels, preds = noisy_predictions(5, 400, 6, 0.5)
    labels[labels == 4] = 0  # class 4 now has no samples
    expected = skm.recall_score(labels, preds, labels=range(6), average=None, zero_division=np.nan)
    np.testing.assert_allclose(per_class_accuracy(labels, preds, 6), expected, equal_nan=True)
    assert np.isnan(per_class_accuracy(labels, preds, 6)[4])


@pytest.mark.parametrize("successes,n", [(0, 10), (3, 10), (81, 263), (1000, 1000)])
def test_wilson_bounds_invert_the_score_test(successes, n):
    """The Wilson bounds are the p0 where |p_hat - p0| = z * sqrt(p0 (1 - p0) / n)."""
    z = NormalDist().inv_cdf(0.975)
    p_hat = successes / n
    low, high = wilson_interval(successes, n)
    assert 0 <= low <= p_hat <= high <= 1
    for p0 in (low, high):
        if 0 < p0 < 1:
            assert abs(p_hat - p0) == pytest.approx(z * np.sqrt(p0 * (1 - p0) / n), rel=1e-9)
    assert (low == 0) == (successes == 0) and (high == 1) == (successes == n)


def test_accuracy_with_ci_agrees_with_a_bootstrap_of_the_same_data():
    labels, preds = noisy_predictions(6, 2000, 10, 0.3)
    result = accuracy_with_ci(labels, preds)
    correct = (labels == preds).astype(float)
    low, high = bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), n_boot=500, seed=1)
    assert result["accuracy"] == pytest.approx(correct.mean())
    assert result["ci_low"] == pytest.approx(low, abs=0.006)
    assert result["ci_high"] == pytest.approx(high, abs=0.006)


def test_bootstrap_is_seeded_and_handles_vector_statistics():
    values = np.random.default_rng(0).normal(size=300)

    def stats(idx):
        return np.array([values[idx].mean(), values[idx].std()])

    first = bootstrap_ci(stats, 300, n_boot=200, seed=3)
    np.testing.assert_array_equal(first, bootstrap_ci(stats, 300, n_boot=200, seed=3))
    assert not np.array_equal(first, bootstrap_ci(stats, 300, n_boot=200, seed=4))
    assert (first[0] < first[1]).all()
    with pytest.raises(ValueError, match="n > 0"):
        bootstrap_ci(stats, 0)


def test_classification_summary_is_consistent_and_json_ready(tmp_path):
    labels, preds = noisy_predictions(7, 300, 4, 0.4)
    labels[labels == 3] = 2  # class "d" absent from the labels
    summary = classification_summary(labels, preds, ["a", "b", "c", "d"])
    assert summary["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert summary["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, preds))
    assert summary["accuracy_ci95"][0] < summary["accuracy"] < summary["accuracy_ci95"][1]
    assert summary["per_class"]["d"] == {"accuracy": None, "support": 0}
    assert sum(c["support"] for c in summary["per_class"].values()) == summary["n"] == 300
    path = atomic.write_json(tmp_path / "summary.json", summary)
    assert json.loads(path.read_text())["confusion_matrix"] == summary["confusion_matrix"]


@pytest.mark.parametrize(
    "labels,preds,num_classes,message",
    [
        ([0, 1, 2], [0, 1], 3, "differ in shape"),
        ([0, 1, 3], [0, 1, 1], 3, r"outside \[0, 3\)"),
        ([0, -1, 1], [0, 1, 1], 3, "outside"),
        ([], [], 3, "empty"),
        ([], [], None, "empty"),
        ([0.0, 1.0], [0, 1], 3, "integer class indices"),
        ([[0, 1]], [[0, 1]], 3, "1-D"),
    ],
)
def test_bad_labels_are_refused_with_a_clear_message(labels, preds, num_classes, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.array(labels), np.array(preds), num_classes)


def test_confusion_matrix_figure_renders_and_checks_shape(tmp_path):
    labels, preds = noisy_predictions(8, 200, 3, 0.3)
    fig = confusion_matrix_figure(confusion_matrix(labels, preds, 3), ["x", "y", "z"], title="t")
    assert isinstance(fig, Figure)
    assert atomic.save_figure(fig, tmp_path / "cm.png").stat().st_size > 0
    with pytest.raises(ValueError, match="does not match 2 class names"):
        confusion_matrix_figure(np.zeros((3, 3)), ["x", "y"])
