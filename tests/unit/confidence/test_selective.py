"""helpers.confidence.selective: decision MCC vs scikit-learn, AURC vs hand-computed small cases."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import matthews_corrcoef

from helpers.confidence.selective import (
    aurc,
    check_criterion,
    choose_threshold,
    evaluate_threshold,
    report_table,
    risk_coverage_curve,
    risk_coverage_figure,
    select_and_evaluate,
    select_for_models,
    threshold_sweep,
    threshold_sweep_figure,
)
from helpers.metrics.calibration import softmax
from helpers.run import atomic


def noisy_logits(seed: int, n: int = 1500, k: int = 5):
    """Logits whose confidence carries signal about correctness, with some ties in confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += rng.uniform(0, 3, n)
    logits[:50] = logits[50:100]  # duplicated rows: tied confidences
    labels[:50] = rng.integers(0, k, 50)
    return np.round(logits, 2), labels


def two_class_cases(correct_by_rank, tied_ranks=()):
    """Logits with descending confidence by rank (equal for ``tied_ranks``) and labels making
    rank i correct iff ``correct_by_rank[i]``."""
    scores = np.arange(len(correct_by_rank), 0, -1, dtype=np.float64)
    for i in tied_ranks:
        scores[i] = scores[tied_ranks[0]]
    logits = np.stack([scores, np.zeros_like(scores)], axis=1)  # predicted class: 0
    return logits, np.where(np.asarray(correct_by_rank, dtype=bool), 0, 1)


def test_sweep_decision_mcc_and_rates_match_direct_computation():
    logits, labels = noisy_logits(0)
    sweep = threshold_sweep(logits, labels)
    conf = softmax(logits).max(axis=1)
    correct = logits.argmax(axis=1) == labels
    assert len(sweep) == len(np.unique(conf)) < len(conf)
    for row in sweep.iloc[::7].itertuples():
        accept = conf >= row.threshold
        assert row.mcc == pytest.approx(matthews_corrcoef(correct, accept), abs=1e-12)
        assert row.coverage == accept.mean()
        assert row.selective_risk == pytest.approx(1 - correct[accept].mean())
        assert (row.tp, row.fp, row.tn, row.fn) == (
            (accept & correct).sum(),
            (accept & ~correct).sum(),
            (~accept & ~correct).sum(),
            (~accept & correct).sum(),
        )


def test_aurc_by_hand_with_distinct_confidences():
    logits, labels = two_class_cases([1, 0, 1, 1, 0])
    coverage, risk = risk_coverage_curve(logits, labels)
    np.testing.assert_allclose(coverage, [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 1 / 4, 2 / 5])
    scores = aurc(logits, labels)
    assert scores["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4 + 2 / 5) / 5)
    assert scores["optimal_aurc"] == pytest.approx((1 / 4 + 2 / 5) / 5)  # order 1, 1, 1, 0, 0
    assert scores["e_aurc"] == pytest.approx((1 / 2 + 1 / 3) / 5)


def test_aurc_by_hand_with_tied_confidences_is_order_free():
    # ranks 1 and 2 tie, one right one wrong: expected errors after rank 1 is 0.5
    logits, labels = two_class_cases([1, 1, 0, 0], tied_ranks=(1, 2))
    expected = (0 + 0.5 / 2 + 1 / 3 + 2 / 4) / 4
    assert aurc(logits, labels)["aurc"] == pytest.approx(expected)
    swapped = [0, 2, 1, 3]
    assert aurc(logits[swapped], labels[swapped])["aurc"] == pytest.approx(expected)


def test_perfect_ranking_has_zero_e_aurc():
    logits, labels = two_class_cases([1, 1, 1, 0, 0, 0])
    scores = aurc(logits, labels)
    assert scores["e_aurc"] == pytest.approx(0.0, abs=1e-15)
    assert scores["aurc"] == pytest.approx((1 / 4 + 2 / 5 + 3 / 6) / 6)


def test_max_mcc_choice_is_the_sklearn_argmax():
    logits, labels = noisy_logits(1, n=300)
    sweep = threshold_sweep(logits, labels)
    choice = choose_threshold(sweep)
    conf = softmax(logits).max(axis=1)
    correct = logits.argmax(axis=1) == labels
    mccs = [matthews_corrcoef(correct, conf >= t) for t in sweep.threshold]
    assert choice.met and choice.criterion == "max_mcc"
    assert choice.mcc == pytest.approx(max(mccs), abs=1e-12)
    assert choice.threshold == sweep.threshold[int(np.argmax(mccs))]


def test_target_coverage_and_target_risk_pick_the_boundary_threshold():
    sweep = threshold_sweep(*noisy_logits(2))
    by_coverage = choose_threshold(sweep, "target_coverage", 0.7)
    assert by_coverage.met and by_coverage.coverage >= 0.7
    assert (sweep.coverage[sweep.threshold > by_coverage.threshold] < 0.7).all()
    by_risk = choose_threshold(sweep, "target_risk", 0.1)
    assert by_risk.met and by_risk.selective_risk <= 0.1
    assert (sweep.selective_risk[sweep.coverage > by_risk.coverage] > 0.1).all()


def test_unreachable_target_risk_reports_the_closest_achievable():
    logits, labels = two_class_cases([0, 1, 1, 0, 1])  # the most confident prediction is wrong
    sweep = threshold_sweep(logits, labels)
    choice = choose_threshold(sweep, "target_risk", 0.0)
    assert not choice.met
    # risks by coverage 1/5 .. 5/5: 1/1, 1/2, 1/3, 2/4, 2/5 -> the best is the top three
    assert "cannot be met" in choice.message and "0.3333" in choice.message
    assert choice.selective_risk == pytest.approx(1 / 3)
    assert choice.coverage == pytest.approx(0.6)
    assert json.loads(atomic.dumps_json(choice.to_dict()))["met"] is False


def test_bad_criteria_and_empty_split_are_refused():
    sweep = threshold_sweep(*noisy_logits(3, n=200))
    with pytest.raises(ValueError, match=r"\['max_mcc', 'target_coverage', 'target_risk'\]"):
        choose_threshold(sweep, "max_f1")
    with pytest.raises(ValueError, match="needs a target"):
        choose_threshold(sweep, "target_risk")
    with pytest.raises(ValueError, match="empty"):
        threshold_sweep(np.zeros((0, 5)), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="accepts any sample"):
        choose_threshold(threshold_sweep(*noisy_logits(3, n=200), thresholds=[1.5]))


def test_evaluate_threshold_with_seeded_bootstrap_intervals(tmp_path):
    logits, labels = noisy_logits(4)
    conf = softmax(logits).max(axis=1)
    correct = logits.argmax(axis=1) == labels
    result = evaluate_threshold(logits, labels, 0.6, n_boot=300, seed=0)
    accept = conf >= 0.6
    assert result["coverage"] == accept.mean()
    assert result["selective_risk"] == pytest.approx(1 - correct[accept].mean())
    assert result["mcc"] == pytest.approx(matthews_corrcoef(correct, accept))
    for name in ("coverage", "selective_risk", "accuracy", "mcc"):
        low, high = result["ci"][name]
        assert low < result[name] < high
    assert result == evaluate_threshold(logits, labels, 0.6, n_boot=300, seed=0)
    assert result != evaluate_threshold(logits, labels, 0.6, n_boot=300, seed=1)
    nothing = evaluate_threshold(logits, labels, 1.5, n_boot=20)
    assert nothing["accepted"] == 0 and nothing["selective_risk"] is None
    atomic.write_json(tmp_path / "test_eval.json", nothing)  # JSON-ready: no NaN


def test_figures_render(tmp_path):
    logits, labels = noisy_logits(5, n=400)
    sweep = threshold_sweep(logits, labels)
    choice = choose_threshold(sweep, "target_risk", 0.0001)
    figures = {
        "rc": risk_coverage_figure(labels, {"raw": logits, "T=2": logits / 2}, 0.5),
        "sweep": threshold_sweep_figure(sweep, choice),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure)
        assert atomic.save_figure(fig, tmp_path / f"{name}.png").stat().st_size > 0


def test_select_on_val_evaluate_on_test_and_report_an_unmet_target(tmp_path):
    logits, labels = noisy_logits(6, n=1200)
    val, test = slice(0, 600), slice(600, None)
    report, sweep, choice = select_and_evaluate(logits[val], labels[val], logits[test], labels[test], n_boot=50, seed=0)
    assert choice == choose_threshold(threshold_sweep(logits[val], labels[val]))
    assert len(sweep) == len(np.unique(softmax(logits[val]).max(axis=1)))
    again = evaluate_threshold(logits[val], labels[val], report["threshold"], n_boot=10)
    assert again["mcc"] == pytest.approx(report["val"]["mcc"]) and again["coverage"] == report["val"]["coverage"]
    assert report["test"] == evaluate_threshold(logits[test], labels[test], report["threshold"], n_boot=50, seed=0)
    assert report["test_aurc"] == aurc(logits[test], labels[test])
    logits[0], labels[0] = [100.0, 0, 0, 0, 0], 1  # the most confident val prediction is wrong: risk 0 unreachable
    unmet, _, _ = select_and_evaluate(
        logits[val], labels[val], logits[test], labels[test], "target_risk", 0.0, n_boot=20
    )
    assert unmet["met"] is False and "cannot be met" in unmet["message"]
    table = report_table({"max_mcc": report, "risk 0": unmet})
    assert list(table.index) == ["max_mcc", "risk 0"] and not table.loc["risk 0", "met"]
    atomic.write_json(tmp_path / "threshold.json", {"a": report, "b": unmet})  # JSON-ready


def test_check_criterion_refuses_before_any_work():
    check_criterion("max_mcc")
    check_criterion("target_coverage", 0.9)
    with pytest.raises(ValueError, match="needs a target"):
        check_criterion("target_coverage", 1.5)
    with pytest.raises(ValueError, match="unknown criterion"):
        check_criterion("accuracy", 0.5)


def test_risk_coverage_markers_sit_at_each_curves_own_threshold():
    logits, labels = noisy_logits(7, n=400)
    curves = {"raw": logits, "T=2": logits / 2}
    fig = risk_coverage_figure(labels, curves, {"raw": 0.9, "T=2": 0.5})
    markers = {line.get_label(): line.get_xydata()[0] for line in fig.axes[0].lines if line.get_marker() == "o"}
    for name, t in (("raw", 0.9), ("T=2", 0.5)):
        expected = evaluate_threshold(curves[name], labels, t, n_boot=1)
        assert tuple(markers[f"{name}: threshold {t:.4g}"]) == pytest.approx(
            (expected["coverage"], expected["selective_risk"])
        )
    with pytest.raises(ValueError, match="not curves"):
        risk_coverage_figure(labels, curves, {"other": 0.5})


def test_select_for_models_is_select_and_evaluate_per_model():
    val, val_labels = noisy_logits(1)
    test, test_labels = noisy_logits(2)
    calibrated = {"fp32": {"val": val, "test": test}, "minmax": {"val": val * 0.5, "test": test * 0.5}}
    labels = {"val": val_labels, "test": test_labels}
    reports, sweeps, choices = select_for_models(calibrated, labels, ["minmax", "fp32"], n_boot=50, seed=3)
    assert list(reports) == ["minmax", "fp32"] and list(sweeps["model"].unique()) == ["minmax", "fp32"]
    for model in reports:
        alone, sweep, choice = select_and_evaluate(
            calibrated[model]["val"], val_labels, calibrated[model]["test"], test_labels, n_boot=50, seed=3
        )
        assert reports[model] == alone and choices[model] == choice
        assert sweeps[sweeps["model"] == model].drop(columns="model").reset_index(drop=True).equals(sweep)
    with pytest.raises(ValueError, match=r"no calibrated logits for \['entropy'\]"):
        select_for_models(calibrated, labels, ["entropy"])
