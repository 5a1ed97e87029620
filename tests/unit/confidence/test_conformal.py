"""helpers.confidence.conformal: the finite-sample guarantees on synthetic exchangeable data, hand-computed
scores / thresholds, serialization, refusals, and a cross-check against MAPIE on the same probabilities.

Monte-Carlo tolerance: a mean over R seeded re-splits is compared with its theoretical value up to 4
standard errors (SE = std over the re-splits / sqrt(R)); re-splitting one fixed pool makes calibration and
test points exchangeable, so the pool-conditional expected coverage is exactly r / (n + 1) for distinct scores.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from helpers.confidence.conformal import (
    ClasswiseRejection,
    ConformalPredictor,
    choose_raps_params,
    compare_rejection,
    conformal_quantile,
    fit_classwise_rejection,
    fit_conformal,
    label_ranks,
    min_calibration_size,
    resplit,
    score_matrix,
    selective_metrics,
    set_metrics,
)
from helpers.metrics.calibration import softmax

ALPHA = 0.1


def synthetic(n: int, seed: int, strengths=(3.0, 2.5, 2.0, 1.5, 0.3)):
    """i.i.d. (probabilities, label) pairs, k = len(strengths); a small strength makes a class hard."""
    rng = np.random.default_rng(seed)
    k = len(strengths)
    y = rng.integers(0, k, n)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), y] += np.asarray(strengths)[y]
    return softmax(z), y


def mc_band(values: np.ndarray) -> float:
    return 4 * values.std() / math.sqrt(len(values))


# ---- quantile and scores, by hand ----


def test_quantile_is_the_finite_sample_order_statistic_and_infinite_when_n_is_too_small():
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 20.0))  # 1..19, n = 19
    assert conformal_quantile(scores, 0.1) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(scores, 0.5) == 10.0  # ceil(20 * 0.5) = 10
    assert conformal_quantile(scores[:8], 0.1) == math.inf  # ceil(9 * 0.9) = 9 > 8
    for alpha in (0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.9):
        n = min_calibration_size(alpha)
        assert math.isfinite(conformal_quantile(np.zeros(n), alpha))
        assert n == 1 or conformal_quantile(np.zeros(n - 1), alpha) == math.inf


def test_scores_by_hand_including_ties_and_the_raps_penalty():
    p = np.array([[0.5, 0.3, 0.2], [0.4, 0.2, 0.4]])
    np.testing.assert_allclose(score_matrix(p, "lac"), 1 - p)
    np.testing.assert_allclose(score_matrix(p, "aps"), [[0, 0.5, 0.8], [0, 0.8, 0.4]])  # tie: class 0 ranks first
    np.testing.assert_allclose(score_matrix(p, "aps", u=1.0), [[0.5, 0.8, 1.0], [0.4, 1.0, 0.8]])
    np.testing.assert_allclose(score_matrix(p, "aps", u=np.array([0.5, 0.0]))[0], [0.25, 0.65, 0.9])
    np.testing.assert_allclose(score_matrix(p, "raps", k_reg=1, lam=0.1), [[0, 0.6, 1.0], [0, 1.0, 0.5]])
    np.testing.assert_array_equal(label_ranks(p), [[1, 2, 3], [1, 3, 2]])


def test_deterministic_sets_always_hold_the_top_label_and_randomized_ones_are_reproducible():
    p, y = synthetic(3000, 1)
    det = fit_conformal(p[:1000], y[:1000], ALPHA, "aps")
    sets = det.predict_sets(p[1000:])
    assert sets[np.arange(2000), p[1000:].argmax(1)].all()
    rnd = fit_conformal(p[:1000], y[:1000], ALPHA, "aps", randomized=True, seed=3)
    np.testing.assert_array_equal(rnd.predict_sets(p[1000:]), rnd.predict_sets(p[1000:]))
    other = rnd.predict_sets(p[1000:], rng=np.random.default_rng(99))
    assert (other != rnd.predict_sets(p[1000:])).any()
    assert rnd.thresholds != fit_conformal(p[:1000], y[:1000], ALPHA, "aps", randomized=True, seed=4).thresholds


# ---- coverage guarantees over re-splits ----


@pytest.mark.parametrize(
    ("score", "randomized"), [("lac", False), ("aps", False), ("aps", True), ("raps", False), ("raps", True)]
)
def test_marginal_coverage_averages_to_the_finite_sample_value_within_the_band(score, randomized):
    p, y = synthetic(250, 2)
    split = itertools.count()  # a fresh randomization per split: one fixed u vector is not exchangeable

    def evaluate(cal, test):
        model = fit_conformal(p[cal], y[cal], ALPHA, score, randomized=randomized, seed=next(split), k_reg=1, lam=0.1)
        return {"coverage": set_metrics(model.predict_sets(p[test]), y[test], p[test])["coverage"]}

    n_splits, n_cal = 2000, 50
    runs = resplit(len(y), evaluate, n_splits=n_splits, cal_fraction=n_cal / len(y), seed=0)["coverage"]
    mean, tol = runs["mean"], 4 * runs["std"] / math.sqrt(n_splits)
    exact = math.ceil((n_cal + 1) * (1 - ALPHA)) / (n_cal + 1)  # 46 / 51
    assert 1 - ALPHA - tol <= mean <= 1 - ALPHA + 1 / (n_cal + 1) + tol
    assert abs(mean - exact) <= tol, (mean, exact, tol)  # off by one rank would be 1/51 = 0.0196 away


def test_mondrian_covers_every_class_where_marginal_misses_the_hard_one():
    p, y = synthetic(2000, 3)

    def evaluate(cal, test):
        return {
            name: set_metrics(
                fit_conformal(p[cal], y[cal], ALPHA, "lac", mondrian=m).predict_sets(p[test]), y[test], p[test]
            )["class_coverage"]
            for name, m in (("marginal", False), ("mondrian", True))
        }

    runs = [evaluate(*np.split(np.random.default_rng(s).permutation(2000), [1000])) for s in range(200)]
    mondrian, marginal = (np.array([r[name] for r in runs]) for name in ("mondrian", "marginal"))
    for c in range(5):
        assert mondrian[:, c].mean() >= 1 - ALPHA - mc_band(mondrian[:, c]), c
    assert marginal[:, 4].mean() < 1 - ALPHA - 0.05  # the hard class: marginal conformal does not promise it


def test_raps_without_penalty_is_aps_and_a_large_penalty_caps_set_size_at_k_reg():
    p, y = synthetic(4000, 4, strengths=(1.0, 1.0, 0.8, 0.6, 0.4))
    cal, test = slice(0, 2000), slice(2000, None)
    aps = fit_conformal(p[cal], y[cal], ALPHA, "aps")
    raps0 = fit_conformal(p[cal], y[cal], ALPHA, "raps", k_reg=1, lam=0.0)
    np.testing.assert_array_equal(raps0.predict_sets(p[test]), aps.predict_sets(p[test]))
    # lam > 1 with k_reg the conformal rank quantile: >= r calibration scores are <= 1, so q <= 1 < any
    # score of a label ranked below k_reg (a guaranteed property, unlike "RAPS is smaller than APS")
    k_reg = int(conformal_quantile(label_ranks(p[cal])[np.arange(2000), y[cal]], ALPHA))
    raps = fit_conformal(p[cal], y[cal], ALPHA, "raps", k_reg=k_reg, lam=1.5)
    assert raps.predict_sets(p[test]).sum(1).max() <= k_reg < aps.predict_sets(p[test]).sum(1).max()
    assert set_metrics(raps.predict_sets(p[test]), y[test], p[test])["coverage"] >= 1 - ALPHA - 0.02


def test_choose_raps_params_takes_the_rank_quantile_and_the_smallest_sets():
    p, y = synthetic(1000, 5)
    lams = (0.0, 0.05, 0.5)
    k_reg, lam = choose_raps_params(p, y, ALPHA, lams)
    assert k_reg == conformal_quantile(label_ranks(p)[np.arange(1000), y], ALPHA) and lam in lams
    sizes = {v: fit_conformal(p, y, ALPHA, "raps", k_reg=k_reg, lam=v).predict_sets(p).sum(1).mean() for v in lams}
    assert sizes[lam] == min(sizes.values())


# ---- metrics and re-splits ----


def test_set_metrics_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    y = np.array([0, 1, 0, 1])  # true-label ranks: 1, 2, 3, 1
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=bool)
    m = set_metrics(sets, y, p, rank_edges=(1, 2))
    assert m["coverage"] == 0.5 and m["mean_size"] == 1.5
    np.testing.assert_array_equal(m["class_coverage"], [0.5, 0.5, np.nan])
    assert m["difficulty"] == ["1", "2-3"]
    np.testing.assert_array_equal(m["size_by_difficulty"], [1.0, 2.0])
    np.testing.assert_array_equal(m["coverage_by_difficulty"], [0.5, 0.5])


def test_resplit_spread_is_seeded_and_element_wise():
    def evaluate(cal, test):
        return {"first": float(cal[0]), "pair": np.array([len(cal), len(test)]), "names": ["a"]}

    a, b = (resplit(10, evaluate, n_splits=30, cal_fraction=0.3, seed=1) for _ in range(2))
    assert a["first"] == b["first"] and a["names"] == ["a"]
    np.testing.assert_array_equal(a["pair"]["mean"], [3, 7])
    assert a["first"]["min"] < a["first"]["max"] and a["first"]["std"] > 0


# ---- class-wise conformal risk control ----


def test_classwise_thresholds_by_hand():
    # predicted 0 (7 images): wrong at confidences 0.9 and 0.7; alpha 0.25 -> (errors + 1) / 8 <= 0.25 allows 1
    conf0 = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6])
    y0 = np.array([0, 1, 0, 0, 1, 0, 0])
    p0 = np.stack([conf0, 1 - conf0], 1)
    p1 = np.array([[0.3, 0.7], [0.2, 0.8]])  # predicted 1, both right, but 2 images: (0 + 1) / 3 > 0.25
    rule = fit_classwise_rejection(np.vstack([p0, p1]), np.concatenate([y0, [1, 1]]), alpha=0.25)
    assert rule.thresholds == (np.nextafter(0.7, 1), math.inf) and rule.n_cal == (7, 2)
    np.testing.assert_array_equal(rule.accept(p0), conf0 > 0.7)
    all_right = fit_classwise_rejection(p0[[0, 2, 3, 5, 6]], y0[[0, 2, 3, 5, 6]], alpha=0.25)
    assert all_right.thresholds == (0.0, math.inf)


def test_classwise_rule_controls_each_predicted_class_error_over_resplits():
    """E[1{accepted and wrong} | predicted j] <= alpha; with ~100 calibration images per predicted class the
    finite-sample +1 moves the risk by ~(1 - alpha) / 101, which the class-averaged check resolves."""
    p, y = synthetic(10_000, 6, strengths=(2.0, 1.8, 1.6, 1.4, 1.2))
    alpha = 0.05

    def evaluate(cal, test):
        error = selective_metrics(p[test], y[test], fit_classwise_rejection(p[cal], y[cal], alpha).accept(p[test]))
        return {"class_error": error["class_error"], "average": error["class_error"].mean()}

    n_splits, n_cal = 400, 500
    spread = resplit(len(y), evaluate, n_splits=n_splits, cal_fraction=n_cal / len(y), seed=0)
    base_error = 1 - np.array([(y[p.argmax(1) == c] == c).mean() for c in range(5)])
    assert (base_error > 5 * alpha).all()  # every class needs rejection: the bound binds
    n_j = n_cal * np.bincount(p.argmax(1), minlength=5) / len(y)
    for name in ("class_error", "average"):
        mean, tol = spread[name]["mean"], 4 * spread[name]["std"] / math.sqrt(n_splits)
        assert (mean <= alpha + tol).all(), (name, mean, tol)
        assert (mean >= alpha - 2 / (n_j + 1) - tol).all(), (name, mean, tol)  # CRC's lower bound: not vacuous


def test_selective_metrics_and_the_global_comparison_by_hand():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1, 0])  # predictions 0, 0, 0, 1, 1: wrong are rows 1, 2, 4
    m = selective_metrics(p, y, np.array([True, False, True, True, False]))
    assert m["coverage"] == 0.6 and m["selective_accuracy"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(m["miss_rate"], [1 / 2, 2 / 3])  # class 0: row 4 misclassified; class 1: rows 1, 2
    np.testing.assert_allclose(m["class_error"], [1 / 3, 0])  # predicted 0: row 2 accepted and wrong
    np.testing.assert_allclose(m["class_selective_risk"], [1 / 2, 0])
    rule = ClasswiseRejection(alpha=0.1, num_classes=2, thresholds=(0.85, 0.5), n_cal=(3, 2))
    both = compare_rejection(p, y, rule, global_threshold=0.7)
    classwise, global_ = both["classwise"], both["global"]  # accepted: rows 0, 3, 4 and rows 0, 2, 3
    assert classwise["coverage"] == global_["coverage"] == 0.6
    np.testing.assert_allclose(classwise["class_error"], [0, 1 / 2])  # row 4 accepted, predicted 1, wrong
    np.testing.assert_allclose(global_["class_error"], [1 / 3, 0])  # row 2 accepted, predicted 0, wrong
    np.testing.assert_allclose(classwise["miss_rate"], global_["miss_rate"])


# ---- serialization and refusals ----


def test_json_round_trips_keep_the_predictions():
    p, y = synthetic(600, 7)
    for model in (
        fit_conformal(p, y, ALPHA, "raps", mondrian=True, randomized=True, seed=5, k_reg=2, lam=0.2),
        fit_classwise_rejection(p[:30], y[:30], 0.05),  # small class groups: some thresholds are +inf
    ):
        text = json.dumps(model.to_dict(), allow_nan=False)
        back = type(model).from_dict(json.loads(text))
        assert back == model

        def decide(m):
            return m.predict_sets(p) if isinstance(m, ConformalPredictor) else m.accept(p)

        np.testing.assert_array_equal(decide(back), decide(model))
    assert math.inf in fit_classwise_rejection(p[:30], y[:30], 0.05).thresholds


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, y: fit_conformal(np.log(p), y), "softmax"),
        (lambda p, y: fit_conformal(p[:, 0], y), r"shape \[n >= 1, k >= 2\]"),
        (lambda p, y: fit_conformal(p, y + 1), "outside"),
        (lambda p, y: fit_conformal(p, y[:-1]), "labels has 299 entries"),
        (lambda p, y: fit_conformal(p, y, alpha=1.0), r"alpha must be a number in \(0, 1\)"),
        (lambda p, y: fit_conformal(p, y, alpha=True), "alpha"),
        (lambda p, y: fit_conformal(p[:8], y[:8]), "needs >= 9"),
        (lambda p, y: fit_conformal(p, y, 0.01, mondrian=True), r"classes \[.*\] have"),
        (lambda p, y: fit_conformal(p, y, score="top_k"), "unknown score"),
        (lambda p, y: fit_conformal(p, y, score="lac", randomized=True), "aps / raps"),
        (lambda p, y: fit_conformal(p, y, score="raps", k_reg=-1), "k_reg"),
        (lambda p, y: fit_conformal(p, y).predict_sets(p[:, :3] / p[:, :3].sum(1, keepdims=True)), "fitted on 5"),
        (lambda p, y: score_matrix(p, "aps", u=1.5), r"u must lie in \[0, 1\]"),
        (lambda p, y: ConformalPredictor.from_dict({"score": "lac"}), "needs exactly the keys"),
        (lambda p, y: ClasswiseRejection(0.1, 5, (0.5,) * 4, (10,) * 5), "one threshold and one count per class"),
        (lambda p, y: choose_raps_params(p[:5], y[:5]), "too few for alpha"),
        (lambda p, y: set_metrics(np.ones((3, 5), bool), y, p), "sets must have the shape"),
        (lambda p, y: resplit(10, lambda c, t: {}, cal_fraction=1.0), "cal_fraction"),
    ],
)
def test_bad_inputs_are_refused_with_a_message_that_says_what_to_do(call, message):
    p, y = synthetic(300, 8)
    with pytest.raises(ValueError, match=message):
        call(p, y)


# ---- cross-check against MAPIE on the same probabilities ----


@pytest.fixture(scope="module")
def mapie_case():
    """MAPIE 1.x on probabilities: a prefit classifier whose predict_proba returns its input rows."""
    pytest.importorskip("mapie")
    from sklearn.base import BaseEstimator, ClassifierMixin

    class GivenProbabilities(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.arange(np.asarray(X).shape[1])
            return self

        def predict_proba(self, X):
            return np.asarray(X)

        def predict(self, X):
            return np.asarray(X).argmax(1)

    p, y = synthetic(3000, 9, strengths=(1.5, 1.2, 1.0, 0.8, 0.6))  # continuous: no ties between scores
    return GivenProbabilities().fit(p, y), p[:1000], y[:1000], p[1000:]


def mapie_sets(mapie_case, score, include_last_label=True, seed=3):
    from mapie.classification import SplitConformalClassifier

    estimator, p_cal, y_cal, p_test = mapie_case
    model = SplitConformalClassifier(
        estimator, confidence_level=1 - ALPHA, conformity_score=score, prefit=True, random_state=seed
    ).conformalize(p_cal, y_cal)
    _, sets = model.predict_set(p_test, conformity_score_params={"include_last_label": include_last_label})
    return model, model._mapie_classifier.conformity_score_function_, sets[:, :, 0]


def test_lac_threshold_and_sets_equal_mapie(mapie_case):
    _, p_cal, y_cal, p_test = mapie_case
    _, score, sets = mapie_sets(mapie_case, "lac")
    ours = fit_conformal(p_cal, y_cal, ALPHA, "lac")
    assert ours.thresholds[0] == pytest.approx(score.quantiles_[0], abs=1e-12)
    np.testing.assert_array_equal(ours.predict_sets(p_test), sets)


@pytest.mark.parametrize("include_last_label", [True, "randomized", False])
def test_aps_scores_threshold_and_sets_equal_mapie(mapie_case, include_last_label):
    """MAPIE's APS calibration scores are always randomized, cumsum through y - U p_y with U from
    RandomState(random_state): ours with u = 1 - U. At prediction, include_last_label=True is our u = 0,
    "randomized" is u = 1 - U' (U' drawn again from RandomState(random_state)), False is u = 1 except that
    MAPIE never returns an empty set (it keeps the top label where ours is empty)."""
    _, p_cal, y_cal, p_test = mapie_case
    model, score, sets = mapie_sets(mapie_case, "aps", include_last_label)
    u_cal = 1 - np.random.RandomState(3).uniform(size=len(y_cal))
    cal = score_matrix(p_cal, "aps", u=u_cal)[np.arange(len(y_cal)), y_cal]
    np.testing.assert_allclose(cal, model.conformity_scores.ravel(), rtol=0, atol=1e-12)
    q = conformal_quantile(cal, ALPHA)
    assert q == pytest.approx(score.quantiles_[0], abs=1e-12)
    u_test = {True: 0.0, "randomized": 1 - np.random.RandomState(3).uniform(size=len(p_test)), False: 1.0}
    ours = score_matrix(p_test, "aps", u=u_test[include_last_label]) <= q
    kept = ours.any(1)
    np.testing.assert_array_equal(ours[kept], sets[kept])
    assert kept.all() or include_last_label is False
    if include_last_label is True:  # and our fitted deterministic sets are subsets of MAPIE's (smaller q)
        assert (fit_conformal(p_cal, y_cal, ALPHA, "aps").predict_sets(p_test) <= sets).all()


@pytest.mark.parametrize("include_last_label", [True, "randomized"])
def test_raps_threshold_equals_mapie_and_sets_agree_where_conventions_match(mapie_case, include_last_label):
    """MAPIE fits RAPS on a stratified part of the calibration set (the rest chooses k_reg and lam), with
    the APS randomization. Thresholds equal ours on that part with its k_reg, lam and u = 1 - U. Sets:
    "randomized" follows the paper's rule (ours) wherever the label that crosses q ranks <= k_reg + 1 (MAPIE
    divides by p - lam (L - k_reg)^+ + lam 1{L > k_reg} instead of p beyond); True keeps that crossing
    label, whose penalty our u = 0 score counts, so ours are subsets, equal where it ranks <= k_reg."""
    from sklearn.model_selection import StratifiedShuffleSplit

    _, p_cal, y_cal, p_test = mapie_case
    model, score, sets = mapie_sets(mapie_case, "raps", include_last_label)
    k_reg, lam = int(score.k_star[0]), float(score.lambda_star)
    split = StratifiedShuffleSplit(n_splits=1, test_size=len(score.X_raps), random_state=3)
    part, _ = next(split.split(p_cal, y_cal))
    u_cal = 1 - np.random.RandomState(3).uniform(size=len(part))
    cal = score_matrix(p_cal[part], "raps", u=u_cal, k_reg=k_reg, lam=lam)[np.arange(len(part)), y_cal[part]]
    np.testing.assert_allclose(
        cal, model.conformity_scores.ravel() + lam * np.maximum(0, score.cutoff - k_reg), atol=1e-12
    )
    q = conformal_quantile(cal, ALPHA)
    assert q == pytest.approx(score.quantiles_[0], abs=1e-12)
    crossing = (score_matrix(p_test, "raps", u=1.0, k_reg=k_reg, lam=lam) < q).sum(
        1
    ) + 1  # rank of the label crossing q
    if include_last_label == "randomized":
        ours = (
            score_matrix(p_test, "raps", u=1 - np.random.RandomState(3).uniform(size=len(p_test)), k_reg=k_reg, lam=lam)
            <= q
        )
        same = crossing <= k_reg + 1
    else:
        ours = score_matrix(p_test, "raps", k_reg=k_reg, lam=lam) <= q
        assert (ours <= sets).all()
        same = crossing <= k_reg
    assert same.mean() > 0.5
    np.testing.assert_array_equal(ours[same], sets[same])
