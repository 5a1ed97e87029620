"""Selective prediction: answer only when the calibrated confidence is high enough.

A prediction is *accepted* when its top-label confidence (max softmax of the calibrated logits,
e.g. ``logits / T``) is ``>= threshold``. Per threshold: coverage (fraction accepted),
selective risk (error rate on the accepted), accuracy on the accepted, and the MCC of the
accept/reject decision against correctness: accepted & correct = TP, accepted & wrong = FP,
rejected & wrong = TN, rejected & correct = FN. Owns the threshold sweep, the choice of a
threshold on validation data (``CRITERIA``), its evaluation with bootstrap CIs on another split,
the risk-coverage curve with AURC / E-AURC, and the two figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from helpers.metrics.calibration import top_label
from helpers.metrics.classification import bootstrap_ci, mcc_from_confusion
from helpers.run.params import typed_config

CRITERIA = ("max_mcc", "target_coverage", "target_risk")


def _rates(tp, fp, tn, fn) -> dict:
    """Coverage, selective risk, accuracy on accepted (NaN if none accepted), decision MCC."""
    tp, fp, tn, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, tn, fn))
    accepted = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(accepted > 0, fp / accepted, np.nan)
    confusion = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2)  # [truth, decision]
    return {
        "coverage": accepted / (tp + fp + tn + fn),
        "selective_risk": risk,
        "accuracy": 1 - risk,
        "mcc": mcc_from_confusion(confusion),
    }


def _decision_rates(accept: np.ndarray, correct: np.ndarray) -> dict:
    """``_rates`` of one accept/reject decision vector."""
    return _rates(
        (accept & correct).sum(), (accept & ~correct).sum(), (~accept & ~correct).sum(), (~accept & correct).sum()
    )


def threshold_sweep(logits, labels, thresholds=None) -> pd.DataFrame:
    """One row per threshold (default: every distinct confidence, which covers every possible
    accept set): threshold, coverage, selective_risk, accuracy, mcc, accepted, tp, fp, tn, fn."""
    conf, correct = top_label(logits, labels)
    thresholds = np.unique(conf) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.isfinite(thresholds).all():
        raise ValueError("thresholds must be a non-empty 1-D array of finite confidences")
    order = np.argsort(conf, kind="stable")
    rejected = np.searchsorted(conf[order], thresholds, side="left")  # count with conf < t
    correct_below = np.concatenate([[0], np.cumsum(correct[order])])
    fn = correct_below[rejected]
    tn = rejected - fn
    tp = correct.sum() - fn
    fp = len(conf) - rejected - tp
    return pd.DataFrame(
        {"threshold": thresholds, **_rates(tp, fp, tn, fn), "accepted": tp + fp, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold; ``met`` is False when the criterion could not be satisfied, and
    then ``threshold`` is the closest achievable one and ``message`` says so."""

    criterion: str
    target: float | None
    met: bool
    message: str
    threshold: float
    coverage: float
    selective_risk: float | None
    mcc: float

    def to_dict(self) -> dict:
        return asdict(self)


def check_criterion(criterion: str, target: float | None = None) -> None:
    """Raise ValueError unless ``criterion`` is one of CRITERIA and, except for max_mcc, ``target``
    is a coverage / risk in [0, 1]."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {list(CRITERIA)}")
    if criterion != "max_mcc" and (target is None or not 0 <= target <= 1):
        raise ValueError(f"criterion {criterion!r} needs a target in [0, 1], got {target!r}")


@dataclass(frozen=True)
class SelectiveConfig:
    """Phase 07's typed config (``phase.config``), validated when built: the threshold rule (``criterion`` and its
    ``goal``), whose calibrated logits set it, the conformal levels and the resampling."""

    criterion: str = "max_mcc"
    target: float = 0.0  # the coverage or risk a target criterion reaches (max_mcc has none: ``goal``)
    selective_model: str = "fp32"
    n_boot: int = 1000
    set_alpha: float = 0.1
    risk_alpha: float = 0.1
    resplits: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_criterion(self.criterion, self.goal)
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot}")
        for key in ("set_alpha", "risk_alpha"):  # the conformal sets' and the class-wise rule's levels
            if not 0 < getattr(self, key) < 1:
                raise ValueError(
                    f"{key} must be in (0, 1) (a miscoverage or risk level such as 0.1), got {getattr(self, key)}"
                )
        if self.resplits < 1:
            raise ValueError(
                f"resplits must be >= 1 (random val/test re-splits for the conformal spread), got {self.resplits}"
            )

    @property
    def goal(self) -> float | None:
        """The target the criterion must reach; None for max_mcc."""
        return None if self.criterion == "max_mcc" else self.target


def check_params(params: dict, config: dict | None = None) -> SelectiveConfig:
    """Phase 07's precheck: its typed config, and (given the run's config) that ``selective_model`` is FP32 or one
    of phase 04's INT8 variants."""
    typed = typed_config(SelectiveConfig, params)
    if config and "04_quantize" in config:
        models = ["fp32", *config["04_quantize"]["calibration_methods"]]
        if typed.selective_model not in models:
            raise ValueError(
                f"selective_model {typed.selective_model!r} is not a model of this run; choose one "
                f"of {models} (fp32 or an entry of 04_quantize.calibration_methods)"
            )
    return typed


def choose_threshold(sweep: pd.DataFrame, criterion: str = "max_mcc", target: float | None = None) -> ThresholdChoice:
    """Pick a threshold from a validation ``threshold_sweep``.

    max_mcc: highest decision MCC (ties: highest coverage). target_coverage: the highest
    threshold whose coverage >= target. target_risk: the highest coverage whose selective
    risk <= target; if no threshold reaches it, the lowest-risk threshold with ``met=False``.
    """
    check_criterion(criterion, target)
    if len(sweep) == 0:
        raise ValueError("the threshold sweep is empty; build it with threshold_sweep(val logits)")
    if (sweep["accepted"] == 0).all():
        raise ValueError("no threshold in the sweep accepts any sample; sweep lower thresholds")
    thr, cov, risk, mcc = (sweep[c].to_numpy() for c in ("threshold", "coverage", "selective_risk", "mcc"))
    met = True
    if criterion == "max_mcc":
        row = _argmax_among(cov, mcc == mcc.max())
        message = "highest decision MCC on this split"
    elif criterion == "target_coverage":
        ok = cov >= target
        met = bool(ok.any())
        row = _argmax_among(thr, ok) if met else _argmax_among(cov, cov == cov.max())
        message = (
            f"coverage >= {target} met at the highest such threshold"
            if met
            else f"target coverage {target} cannot be met with these thresholds: the highest "
            f"coverage is {cov[row]:.4f}; reporting that closest achievable threshold"
        )
    else:
        ok = risk <= target  # NaN risk (nothing accepted) is never ok
        met = bool(ok.any())
        row = _argmax_among(cov, ok) if met else _argmax_among(cov, risk == np.nanmin(risk))
        message = (
            f"selective risk <= {target} met at the highest such coverage"
            if met
            else f"target risk {target} cannot be met on this split: the lowest achievable "
            f"selective risk is {risk[row]:.4f}; reporting that closest achievable threshold"
        )
    choice = sweep.iloc[row]
    message += (
        f" (threshold {choice.threshold:.6g}, coverage {choice.coverage:.4f}, "
        f"risk {choice.selective_risk:.4f}, MCC {choice.mcc:.4f})"
    )
    return ThresholdChoice(
        criterion=criterion,
        target=target,
        met=met,
        message=message,
        threshold=float(choice.threshold),
        coverage=float(choice.coverage),
        selective_risk=_finite_or_none(choice.selective_risk),
        mcc=float(choice.mcc),
    )


def _argmax_among(values: np.ndarray, candidates: np.ndarray) -> int:
    """Row of the largest value among the candidate rows (the first one on ties)."""
    rows = np.flatnonzero(candidates)
    return int(rows[np.argmax(values[rows])])


def _finite_or_none(x) -> float | None:
    return float(x) if math.isfinite(x) else None


def evaluate_threshold(
    logits, labels, threshold: float, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Coverage, selective risk, accuracy and decision MCC of ``threshold`` on a split, each with
    a seeded percentile-bootstrap interval (``ci``); None where undefined (nothing accepted)."""
    conf, correct = top_label(logits, labels)
    accept = conf >= threshold
    names = ("coverage", "selective_risk", "accuracy", "mcc")

    def stats(idx):
        rates = _decision_rates(accept[idx], correct[idx])
        return np.array([rates[name] for name in names], dtype=np.float64)

    point = stats(np.arange(len(conf)))
    low, high = bootstrap_ci(stats, len(conf), n_boot=n_boot, seed=seed, level=level, desc="selective bootstrap")
    return {
        "threshold": float(threshold),
        "n": int(len(conf)),
        "accepted": int(accept.sum()),
        **{name: _finite_or_none(v) for name, v in zip(names, point)},
        "ci_level": level,
        "ci": {name: [_finite_or_none(lo), _finite_or_none(hi)] for name, lo, hi in zip(names, low, high)},
    }


def select_and_evaluate(
    val_logits,
    val_labels,
    test_logits,
    test_labels,
    criterion: str = "max_mcc",
    target: float | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame, ThresholdChoice]:
    """Choose a threshold on VALIDATION logits, evaluate it on TEST: (report, val sweep, choice).

    The report holds the choice (threshold, criterion, target, met, message), its validation
    coverage / risk / MCC, the test evaluation with bootstrap CIs and the test AURC / E-AURC.
    An unmet target is recorded (``met`` False), not raised.
    """
    check_criterion(criterion, target)
    sweep = threshold_sweep(val_logits, val_labels)
    choice = choose_threshold(sweep, criterion, target)
    report = {
        "threshold": choice.threshold,
        "criterion": criterion,
        "target": target,
        "met": choice.met,
        "message": choice.message,
        "val": {"coverage": choice.coverage, "selective_risk": choice.selective_risk, "mcc": choice.mcc},
        "test": evaluate_threshold(test_logits, test_labels, choice.threshold, n_boot=n_boot, seed=seed),
        "test_aurc": aurc(test_logits, test_labels),
    }
    return report, sweep, choice


def select_for_models(
    calibrated: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, np.ndarray],
    models: Sequence[str],
    criterion: str = "max_mcc",
    target: float | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame, dict]:
    """``select_and_evaluate`` for each of ``models`` (calibrated ``{model: {split: logits}}``, threshold fitted on
    val, evaluated on test). Returns the reports, one sweep table with a ``model`` column, and the choices."""
    missing = [m for m in models if m not in calibrated]
    if missing:
        raise ValueError(f"no calibrated logits for {missing}; available: {sorted(calibrated)}")
    reports, sweeps, choices = {}, [], {}
    for model in models:
        reports[model], sweep, choices[model] = select_and_evaluate(
            calibrated[model]["val"],
            labels["val"],
            calibrated[model]["test"],
            labels["test"],
            criterion,
            target,
            n_boot=n_boot,
            seed=seed,
        )
        sweeps.append(sweep.assign(model=model))
    return reports, pd.concat(sweeps, ignore_index=True), choices


def criterion_lines(reports: Mapping[str, dict]) -> str:
    """One line per model: whether its criterion was met, and the choice's message."""
    return "\n".join(
        f"{model}: criterion {'met' if r['met'] else 'NOT MET'}: {r['message']}" for model, r in reports.items()
    )


def models_risk_coverage_figure(
    labels: np.ndarray, calibrated: Mapping[str, Mapping[str, np.ndarray]], reports: Mapping[str, dict]
):
    """Test risk-coverage curves of the calibrated models that have a report, each with its chosen threshold."""
    return risk_coverage_figure(
        labels,
        {f"{m} (calibrated)": calibrated[m]["test"] for m in reports},
        {f"{m} (calibrated)": r["threshold"] for m, r in reports.items()},
    )


def report_table(reports: Mapping[str, dict]) -> pd.DataFrame:
    """One row per model from ``select_and_evaluate`` reports: threshold, met, validation and test
    coverage / selective risk / MCC (test with 95% CIs), test AURC and E-AURC."""
    rows = {}
    for model, r in reports.items():
        test = r["test"]
        rows[model] = {
            "threshold": r["threshold"],
            "met": r["met"],
            "val_coverage": r["val"]["coverage"],
            "val_risk": r["val"]["selective_risk"],
            "val_mcc": r["val"]["mcc"],
            **{
                f"test_{name}": _with_ci(test[key], test["ci"][key])
                for name, key in (("coverage", "coverage"), ("risk", "selective_risk"), ("mcc", "mcc"))
            },
            "test_aurc": r["test_aurc"]["aurc"],
            "test_e_aurc": r["test_aurc"]["e_aurc"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")  # not rounded: an AURC of 9.7e-05 must stay one


def _populated_coverage(ax) -> float:
    """The smallest coverage, over the axes' curves, at which some curve's selective risk is above 0, less a margin."""
    starts = []
    for line in ax.get_lines():
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        if len(x) > 1 and np.any(y > 0):
            starts.append(x[np.argmax(y > 0)])
    return max(0.0, min(starts) - 0.05) if starts else 0.0


def _with_ci(value, bounds) -> str:
    if value is None:
        return "undefined (nothing accepted)"
    low, high = ("nan" if b is None else f"{b:.4f}" for b in bounds)
    return f"{value:.4f} [{low}, {high}]"


def _risk_curve(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Selective risk of the k most confident samples, k = 1..n (ties: expected risk)."""
    order = np.argsort(-conf, kind="stable")
    neg_conf = -conf[order]
    errors_before = np.concatenate([[0], np.cumsum(~correct[order])])
    start = np.searchsorted(neg_conf, neg_conf, side="left")
    end = np.searchsorted(neg_conf, neg_conf, side="right")
    k = np.arange(1, len(conf) + 1)
    group_error_rate = (errors_before[end] - errors_before[start]) / (end - start)
    return (errors_before[start] + (k - start) * group_error_rate) / k


def _optimal_risk(correct: np.ndarray) -> np.ndarray:
    """The risk curve of the optimal ranking: every correct prediction before every error."""
    k = np.arange(1, len(correct) + 1)
    return np.maximum(0, k - correct.sum()) / k


def risk_coverage_curve(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    """(coverage k/n, selective risk of the k most confident) for k = 1..n.

    Within a group of tied confidences the risk is its expectation over random orderings of the
    group (errors grow linearly through it), so the curve does not depend on sample order.
    """
    conf, correct = top_label(logits, labels)
    return np.arange(1, len(conf) + 1) / len(conf), _risk_curve(conf, correct)


def aurc(logits, labels) -> dict:
    """AURC (mean selective risk over coverages k/n), the AURC of the optimal ranking (all
    correct predictions first) and E-AURC = AURC - optimal AURC (Geifman et al., 2019)."""
    conf, correct = top_label(logits, labels)
    value, optimal = float(_risk_curve(conf, correct).mean()), float(_optimal_risk(correct).mean())
    return {"aurc": value, "optimal_aurc": optimal, "e_aurc": value - optimal}


def risk_coverage_figure(
    labels, logits_by_name: Mapping[str, np.ndarray], threshold: float | Mapping[str, float] | None = None
):
    """Risk-coverage curves (one per entry) with the optimal curve; ``threshold`` marks, on each
    curve, the operating point of that threshold on that data -- one threshold for every curve,
    or ``{name: threshold}`` for each curve its own (e.g. each model's chosen threshold)."""
    import matplotlib.pyplot as plt

    if not logits_by_name:
        raise ValueError("logits_by_name is empty; pass e.g. {'calibrated': logits / T}")
    per_curve = threshold if isinstance(threshold, Mapping) else {name: threshold for name in logits_by_name}
    unknown = sorted(set(per_curve) - set(logits_by_name))
    if unknown:
        raise ValueError(f"thresholds given for {unknown}, which are not curves ({sorted(logits_by_name)})")
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, logits in logits_by_name.items():
        coverage, risk = risk_coverage_curve(logits, labels)
        scores = aurc(logits, labels)
        (line,) = ax.plot(coverage, risk, label=f"{name} (AURC {scores['aurc']:.3g}, E-AURC {scores['e_aurc']:.3g})")
        if per_curve.get(name) is not None:
            conf, correct = top_label(logits, labels)
            point = _decision_rates(conf >= per_curve[name], correct)
            ax.plot(
                point["coverage"],
                point["selective_risk"],
                "o",
                color=line.get_color(),
                label=f"{name}: threshold {per_curve[name]:.4g}",
            )
    _, correct = top_label(next(iter(logits_by_name.values())), labels)
    ax.plot(coverage, _optimal_risk(correct), "k:", label="optimal ranking")
    title = "risk-coverage" + ("" if threshold is None else " (markers: operating points)")
    low = min(_populated_coverage(ax), 0.9)  # zoom to where the curves have risk > 0 (all the action on easy data)
    ax.set(xlim=(low, 1.0 + 0.02 * (1 - low)), ylim=(0, None), xlabel="coverage", ylabel="selective risk", title=title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def threshold_sweep_figure(sweep: pd.DataFrame, choice: ThresholdChoice | None = None):
    """Decision MCC, coverage and selective risk against the threshold; the choice is marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for column, style in (("mcc", "-"), ("coverage", "--"), ("selective_risk", ":")):
        ax.plot(sweep["threshold"], sweep[column], style, label=column)
    if choice is not None:
        ax.axvline(choice.threshold, color="tab:red", lw=1)
        ax.plot(
            [choice.threshold] * 2,
            [choice.mcc, choice.coverage],
            "o",
            color="tab:red",
            label=f"{choice.criterion}: t = {choice.threshold:.4g}" + ("" if choice.met else " (target not met)"),
        )
    ax.set(
        xlabel="confidence threshold",
        ylabel="value (MCC; coverage and risk as fractions)",
        ylim=(min(0, sweep["mcc"].min()) - 0.02, 1.02),
        title="threshold sweep",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
