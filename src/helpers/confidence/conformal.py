"""Conformal prediction sets and class-wise conformal risk control, on calibrated probabilities.

Owns: the nonconformity scores (LAC, APS, RAPS), the split-conformal quantile, fitting set predictors
on a calibration split (marginal or Mondrian per class), their evaluation and spread over random
re-splits, and a class-wise selective-rejection rule chosen by conformal risk control. Every function
takes calibrated *probabilities* [n, k] (``softmax(logits / T)``, see helpers.metrics.calibration).

Split conformal (Vovk et al., 2005): with a score s(x, y) (large = the label fits badly) and the n
calibration scores s_i = s(x_i, y_i), take q = the ceil((n + 1)(1 - alpha))-th smallest s_i and predict
C(x) = {y : s(x, y) <= q}. If the test point is exchangeable with the calibration points,
P(Y in C(X)) >= 1 - alpha, and <= 1 - alpha + 1 / (n + 1) when the scores have no ties. When
ceil((n + 1)(1 - alpha)) > n, i.e. n < (1 - alpha) / alpha, q is +inf (every label in every set):
``conformal_quantile`` returns that, ``fit_conformal`` refuses it. Mondrian (class-conditional)
conformal takes one q_c per class from the calibration points of class c: P(Y in C(X) | Y = c) >= 1 - alpha.

Scores, with labels ranked by decreasing probability (ties: lower class index first), rank o(x, y)
counted from 1, and u in [0, 1]:
- ``lac``  (Sadinle et al., 2019): 1 - p_y.
- ``aps``  (Romano et al., 2020): sum of p_j ranked above y, + u * p_y.
- ``raps`` (Angelopoulos et al., 2021): the APS score + lam * max(0, o(x, y) - k_reg).
u is the tie-breaking randomization. The default is deterministic, u = 0: a label's score is the mass
ranked above it, so the top label is always in the set and sets are never empty (this may over-cover
when the scores tie, e.g. at 0 for all top-1 hits). ``randomized=True`` draws one u ~ U(0, 1) per row
from a seeded numpy Generator (calibration: ``default_rng((seed, 0))``, prediction: ``(seed, 1)``), the
papers' randomized scores: coverage within the band above even with ties, but sets can be empty.

Class-wise selective rejection (conformal risk control, Angelopoulos et al., 2022): accept a prediction
of class j when its top-1 confidence is >= t_j. For the calibration images predicted as j (n_j of them)
the loss L_i(t) = 1{accepted and wrong} is bounded by 1 and non-increasing in t; t_j is the smallest
threshold with (sum_i L_i(t_j) + 1) / (n_j + 1) <= alpha. Guarantee, for a test image exchangeable with
the calibration ones: E[1{accepted and wrong} | predicted j] <= alpha, in expectation over the
calibration draw. That is the joint error rate among all images predicted j (rejected ones count as no
error), so the error among the *accepted* ones is bounded only by alpha / (their acceptance rate); it is
not a high-probability bound, and no miss-rate bound. With n_j < 1 / alpha - 1 no threshold qualifies
and class j is always rejected (t_j = +inf, stored as None in JSON).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from helpers.metrics.classification import check_labels

SCORES = ("lac", "aps", "raps")


def check_probs(probs, num_classes: int | None = None, name: str = "probs") -> np.ndarray:
    """Return ``probs`` as float64 [n >= 1, k >= 2], every entry in [0, 1] and every row summing to 1 (1e-6)."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape [n >= 1, k >= 2] (one row of class probabilities per image), got {p.shape}"
        )
    if num_classes is not None and p.shape[1] != num_classes:
        raise ValueError(f"{name} has {p.shape[1]} classes, but this was fitted on {num_classes}")
    if not np.issubdtype(p.dtype, np.floating) or not np.isfinite(p).all():
        raise ValueError(f"{name} must be finite floating-point probabilities (dtype {p.dtype})")
    p = p.astype(np.float64, copy=False)
    worst = float(np.abs(p.sum(axis=1) - 1).max())
    if p.min() < 0 or p.max() > 1 + 1e-6 or worst > 1e-6:
        raise ValueError(
            f"{name} are not probabilities (min {p.min():.4g}, max {p.max():.4g}, rows sum to 1 within {worst:.3g}); "
            "if these are logits, pass helpers.metrics.calibration.softmax(logits / T)"
        )
    return p


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1) (the allowed miscoverage / risk), got {alpha!r}")
    return float(alpha)


def min_calibration_size(alpha: float) -> int:
    """The smallest n with a finite conformal quantile: ceil((n + 1)(1 - alpha)) <= n."""
    alpha = check_alpha(alpha)
    n = max(1, math.floor((1 - alpha) / alpha) - 1)
    while math.ceil((n + 1) * (1 - alpha)) > n:
        n += 1
    return n


def conformal_quantile(scores, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score (MAPIE's convention too), or +inf if that exceeds n."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    rank = math.ceil((len(s) + 1) * (1 - check_alpha(alpha)))
    return math.inf if rank > len(s) else float(np.partition(s, rank - 1)[rank - 1])


def label_ranks(probs) -> np.ndarray:
    """[n, k] rank of every label, 1 = most probable (ties: lower class index first)."""
    p = check_probs(probs)
    order = np.argsort(-p, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, p.shape[1] + 1), p.shape), axis=1)
    return ranks


def score_matrix(probs, score: str = "lac", *, u=0.0, k_reg: int = 1, lam: float = 0.0) -> np.ndarray:
    """[n, k] nonconformity score of every candidate label (see the module docstring); ``u``: a scalar or
    one value per row in [0, 1] (APS / RAPS only); ``k_reg``, ``lam``: the RAPS penalty."""
    _check_score(score, k_reg, lam)
    p = check_probs(probs)
    if score == "lac":
        return 1.0 - p
    u = np.broadcast_to(np.asarray(u, dtype=np.float64), (len(p),))
    if u.min() < 0 or u.max() > 1:
        raise ValueError("u must lie in [0, 1] (0: deterministic, U(0, 1) draws: randomized)")
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    above = np.concatenate([np.zeros((len(p), 1)), np.cumsum(ranked, axis=1)[:, :-1]], axis=1)
    ranked_scores = above + u[:, None] * ranked
    if score == "raps":
        ranked_scores += lam * np.maximum(0, np.arange(1, p.shape[1] + 1) - k_reg)
    out = np.empty_like(p)
    np.put_along_axis(out, order, ranked_scores, axis=1)
    return out


def _check_score(score: str, k_reg, lam) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {list(SCORES)}")
    if isinstance(k_reg, bool) or not isinstance(k_reg, (int, np.integer)) or k_reg < 0:
        raise ValueError(f"k_reg must be an integer >= 0 (RAPS penalises the ranks past k_reg), got {k_reg!r}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0 (RAPS penalty per rank), got {lam!r}")


class _Serializable:
    """to_dict / from_dict for the frozen dataclasses below; +inf thresholds travel as None (valid JSON)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = [None if math.isinf(t) else t for t in d["thresholds"]]
        return {key: list(v) if isinstance(v, tuple) else v for key, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(f"{cls.__name__} needs exactly the keys {sorted(names)}, got {sorted(d)}")
        d = {key: tuple(v) if isinstance(v, list) else v for key, v in d.items()}
        d["thresholds"] = tuple(math.inf if t is None else float(t) for t in d["thresholds"])
        return cls(**d)


@dataclass(frozen=True)
class ConformalPredictor(_Serializable):
    """A fitted split-conformal set predictor: ``thresholds`` holds one q (marginal) or one q_c per class
    (Mondrian); ``n_cal`` the calibration counts behind them."""

    score: str
    alpha: float
    mondrian: bool
    randomized: bool
    seed: int
    k_reg: int
    lam: float
    num_classes: int
    thresholds: tuple[float, ...]
    n_cal: tuple[int, ...]

    def __post_init__(self):
        _check_score(self.score, self.k_reg, self.lam)
        check_alpha(self.alpha)
        if len(self.thresholds) != (self.num_classes if self.mondrian else 1):
            raise ValueError(
                f"{len(self.thresholds)} thresholds do not fit mondrian={self.mondrian}, k={self.num_classes}"
            )

    def predict_sets(self, probs, rng: np.random.Generator | None = None) -> np.ndarray:
        """[n, k] bool: label j is in row i's set. A randomized predictor draws u from ``rng``
        (default ``default_rng((seed, 1))``, so a call is reproducible)."""
        p = check_probs(probs, self.num_classes)
        u = 0.0
        if self.randomized:
            u = (rng if rng is not None else np.random.default_rng((self.seed, 1))).uniform(size=len(p))
        return score_matrix(p, self.score, u=u, k_reg=self.k_reg, lam=self.lam) <= np.asarray(self.thresholds)


def fit_conformal(
    probs,
    labels,
    alpha: float = 0.1,
    score: str = "aps",
    *,
    mondrian: bool = False,
    randomized: bool = False,
    seed: int = 0,
    k_reg: int = 1,
    lam: float = 0.01,
) -> ConformalPredictor:
    """Fit a set predictor on the calibration (val) split; refuses a split too small for ``alpha``."""
    _check_score(score, k_reg, lam)
    if randomized and score == "lac":
        raise ValueError("randomized applies to the aps / raps scores only; use randomized=False with lac")
    p = check_probs(probs)
    y = _check_labels_for(labels, p)
    u = np.random.default_rng((seed, 0)).uniform(size=len(p)) if randomized else 0.0
    cal = score_matrix(p, score, u=u, k_reg=k_reg, lam=lam)[np.arange(len(y)), y]
    groups = [y == c for c in range(p.shape[1])] if mondrian else [np.ones(len(y), dtype=bool)]
    n_cal = tuple(int(g.sum()) for g in groups)
    need = min_calibration_size(alpha)
    short = [c for c, n in enumerate(n_cal) if n < need]
    if short:
        what = (
            f"classes {short} have {[n_cal[c] for c in short]} calibration samples" if mondrian else f"n = {n_cal[0]}"
        )
        raise ValueError(
            f"{what}; alpha = {alpha} needs >= {need} per {'class' if mondrian else 'fit'} for a finite threshold "
            "(with fewer, every label is in every set): raise alpha, add calibration data or use mondrian=False"
        )
    return ConformalPredictor(
        score=score,
        alpha=float(alpha),
        mondrian=mondrian,
        randomized=randomized,
        seed=int(seed),
        k_reg=int(k_reg),
        lam=float(lam),
        num_classes=p.shape[1],
        thresholds=tuple(conformal_quantile(cal[g], alpha) for g in groups),
        n_cal=n_cal,
    )


def _check_labels_for(labels, p: np.ndarray) -> np.ndarray:
    y = check_labels(labels, p.shape[1])
    if len(y) != len(p):
        raise ValueError(f"labels has {len(y)} entries but probs has {len(p)} rows; pass the labels of these images")
    return y


def choose_raps_params(probs, labels, alpha: float = 0.1, lams=(0.001, 0.01, 0.1, 0.2, 0.5)) -> tuple[int, float]:
    """RAPS's (k_reg, lam) as in Angelopoulos et al. (2021): k_reg = the conformal (1 - alpha) quantile of
    the true label's rank; lam = the one of ``lams`` giving the smallest mean set size here. Tune on a part
    of val kept out of ``fit_conformal``: tuning on the calibration points themselves breaks exchangeability."""
    p = check_probs(probs)
    y = _check_labels_for(labels, p)
    k_reg = conformal_quantile(label_ranks(p)[np.arange(len(y)), y], alpha)
    if math.isinf(k_reg):
        raise ValueError(
            f"{len(y)} tuning samples are too few for alpha = {alpha}: need >= {min_calibration_size(alpha)}"
        )
    k_reg = int(k_reg)
    sizes = [fit_conformal(p, y, alpha, "raps", k_reg=k_reg, lam=lam).predict_sets(p).sum(1).mean() for lam in lams]
    return k_reg, float(lams[int(np.argmin(sizes))])


def set_metrics(sets, labels, probs, rank_edges=(1, 2, 3, 4)) -> dict:
    """Coverage, mean set size, per-class coverage [k] and, by difficulty, mean set size and coverage per
    group of the true label's rank under ``probs`` (1 = the top-1 prediction is right): groups start at
    ``rank_edges``, the last one runs to k; ``difficulty`` names them. A group without images gives NaN."""
    p = check_probs(probs)
    y = _check_labels_for(labels, p)
    sets = np.asarray(sets, dtype=bool)
    if sets.shape != p.shape:
        raise ValueError(f"sets must have the shape of probs {p.shape}, got {sets.shape}")
    covered, size = sets[np.arange(len(y)), y], sets.sum(axis=1)
    rank = label_ranks(p)[np.arange(len(y)), y]
    edges = [e for e in rank_edges if e <= p.shape[1]] + [p.shape[1] + 1]
    groups = [(rank >= lo) & (rank < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    return {
        "coverage": float(covered.mean()),
        "mean_size": float(size.mean()),
        "class_coverage": np.array([covered[y == c].mean() if (y == c).any() else np.nan for c in range(p.shape[1])]),
        "difficulty": [str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])],
        "size_by_difficulty": np.array([size[g].mean() if g.any() else np.nan for g in groups]),
        "coverage_by_difficulty": np.array([covered[g].mean() if g.any() else np.nan for g in groups]),
    }


def resplit(
    n: int,
    evaluate: Callable[[np.ndarray, np.ndarray], dict],
    *,
    n_splits: int = 100,
    cal_fraction: float = 0.5,
    seed: int = 0,
    strata=None,
) -> dict:
    """Spread of ``evaluate(cal_idx, test_idx)``'s numeric metrics over ``n_splits`` random splits of
    range(n) (seeded permutations; round(cal_fraction * n) calibration indices): {metric: {mean, std, min,
    max}}, element-wise for array metrics (NaN entries ignored); non-numeric entries are kept as is.
    Give a randomized predictor a new seed per split: one fixed u vector over a fixed pool is not exchangeable.
    With ``strata`` (one label per index) every split is stratified: round(cal_fraction * n_s) calibration
    indices of each stratum s, as a stratified val split has (a Mondrian fit needs every class in it)."""
    n_cal = round(cal_fraction * n)
    if not (0 < n_cal < n and n_splits >= 1):
        raise ValueError(
            f"need n_splits >= 1 and 0 < cal_fraction * n < n, got n_splits={n_splits}, n_cal={n_cal} of {n}"
        )
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(np.asarray(strata) == s) for s in np.unique(strata)]
    runs = []
    for _ in range(n_splits):
        perms = [g[rng.permutation(len(g))] for g in groups]
        cuts = [round(cal_fraction * len(g)) for g in groups]
        cal = np.sort(np.concatenate([p[:c] for p, c in zip(perms, cuts)]))
        test = np.sort(np.concatenate([p[c:] for p, c in zip(perms, cuts)]))
        runs.append(evaluate(cal, test))
    out = {}
    for key, first in runs[0].items():
        if isinstance(first, (str, list)):
            out[key] = first
            continue
        values = np.array([r[key] for r in runs], dtype=np.float64)
        with warnings.catch_warnings():  # an all-NaN entry (a class absent from every split) stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out[key] = {
                name: f(values, axis=0)
                for name, f in (("mean", np.nanmean), ("std", np.nanstd), ("min", np.nanmin), ("max", np.nanmax))
            }
    return out


@dataclass(frozen=True)
class ClasswiseRejection(_Serializable):
    """Per predicted class j, accept when the top-1 confidence is >= ``thresholds[j]`` (+inf: never);
    ``n_cal[j]``: the calibration images predicted as j. Guarantee: see the module docstring."""

    alpha: float
    num_classes: int
    thresholds: tuple[float, ...]
    n_cal: tuple[int, ...]

    def __post_init__(self):
        check_alpha(self.alpha)
        if not len(self.thresholds) == len(self.n_cal) == self.num_classes:
            raise ValueError(f"need one threshold and one count per class ({self.num_classes}), got {self.to_dict()}")

    def accept(self, probs) -> np.ndarray:
        p = check_probs(probs, self.num_classes)
        return p.max(axis=1) >= np.asarray(self.thresholds)[p.argmax(axis=1)]


def fit_classwise_rejection(probs, labels, alpha: float = 0.1) -> ClasswiseRejection:
    """Per predicted class, the smallest threshold whose conformal risk bound (errors accepted + 1) / (n_j + 1)
    is <= alpha (Angelopoulos et al., 2022); accepting means confidence >= t, i.e. > the highest confidence
    among the errors it must reject, so t is the next float above that confidence."""
    alpha = check_alpha(alpha)
    p = check_probs(probs)
    y = _check_labels_for(labels, p)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    thresholds, n_cal = [], []
    for j in range(p.shape[1]):
        group = pred == j
        allowed = math.floor(alpha * (group.sum() + 1) - 1 + 1e-9)  # errors that may stay accepted
        wrong = np.sort(conf[group & (y != j)])[::-1]  # error confidences, highest first
        if allowed < 0:
            thresholds.append(math.inf)
        elif allowed >= len(wrong):
            thresholds.append(0.0)
        else:
            thresholds.append(float(np.nextafter(wrong[allowed], np.inf)))
        n_cal.append(int(group.sum()))
    return ClasswiseRejection(alpha, p.shape[1], tuple(thresholds), tuple(n_cal))


def selective_metrics(probs, labels, accept) -> dict:
    """One accept/reject decision per image: coverage (share accepted), selective accuracy (right among the
    accepted; NaN if none), and per class [k]: ``miss_rate`` = share of the class's images (true label)
    rejected or misclassified; ``class_error`` = share of the images *predicted* as the class that are
    accepted and wrong (what ``fit_classwise_rejection`` controls); ``class_selective_risk`` = share wrong
    among the accepted predicted as the class. NaN where a class has no images."""
    p = check_probs(probs)
    y = _check_labels_for(labels, p)
    accept = np.asarray(accept, dtype=bool)
    if accept.shape != y.shape:
        raise ValueError(f"accept must have one entry per image ({y.shape}), got {accept.shape}")
    pred = p.argmax(axis=1)
    correct, k = pred == y, p.shape[1]

    def share(num, den):
        return np.array([num[c].sum() / den[c].sum() if den[c].any() else np.nan for c in range(k)])

    by_true, by_pred = [y == c for c in range(k)], [pred == c for c in range(k)]
    return {
        "coverage": float(accept.mean()),
        "selective_accuracy": float(correct[accept].mean()) if accept.any() else math.nan,
        "miss_rate": share([g & ~(accept & correct) for g in by_true], by_true),
        "class_error": share([g & accept & ~correct for g in by_pred], by_pred),
        "class_selective_risk": share([g & accept & ~correct for g in by_pred], [g & accept for g in by_pred]),
    }


def compare_rejection(probs, labels, rule: ClasswiseRejection, global_threshold: float) -> dict:
    """``selective_metrics`` of the class-wise rule and of one global confidence threshold on the same images."""
    conf = check_probs(probs, rule.num_classes).max(axis=1)
    return {
        "classwise": selective_metrics(probs, labels, rule.accept(probs)),
        "global": selective_metrics(probs, labels, conf >= global_threshold),
    }
