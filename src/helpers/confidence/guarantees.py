"""What phase 07 fits beyond its threshold, and phase 08 deploys: rules with finite-sample guarantees.

On the selective model's calibrated VAL logits (phase 06), :func:`fit` fits the conformal set predictors
of :data:`SET_METHODS` at level ``alpha_sets`` (coverage >= 1 - alpha; Mondrian: for every class) and the
class-wise rejection rule of conformal risk control at ``alpha_risk`` (per predicted class j,
P(accepted and wrong | predicted j) <= alpha_risk); :func:`evaluate` measures them on TEST beside the
global max-MCC threshold; :func:`spread` repeats fit-and-measure over random re-splits of val + test
pooled, the spread the guarantees speak of (they hold on average over calibration draws). The maths and
their exact statements are in :mod:`helpers.confidence.conformal`. :func:`under_shift` fits the sets on
each domain's val split and measures them on each domain's test split (coverage under shift).

The bundle's ``prediction_set`` output is :data:`DEPLOYED_SET` (a probability threshold per class, so it
is a comparison in the ONNX graph: :mod:`helpers.confidence.onnx_graph`); its ``accept`` output is the
global threshold or the class-wise rule (phase 08's ``accept_rule``). Tables keep fixed rows: one per
set method, one per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.confidence import conformal
from helpers.metrics.calibration import softmax

SET_METHODS = {  # name -> fit_conformal options; every table has exactly these rows, in this order
    "LAC": {"score": "lac"},
    "LAC Mondrian": {"score": "lac", "mondrian": True},
    "APS": {"score": "aps"},
    "APS Mondrian": {"score": "aps", "mondrian": True},
    "RAPS": {"score": "raps", "k_reg": 1, "lam": 0.01},
}
DEPLOYED_SET = "LAC Mondrian"  # per-class coverage >= 1 - alpha, and a plain probability threshold per class
ACCEPT_RULES = ("global", "classwise")  # what the bundle's accept output may compute (phase 08's accept_rule)


def check_accept_rule(rule: str) -> None:
    if rule not in ACCEPT_RULES:
        raise ValueError(f"accept_rule must be one of {list(ACCEPT_RULES)} (the bundle's accept output), got {rule!r}")


@dataclass(frozen=True)
class Guarantees:
    """The fitted rules of one model, and the global threshold they are compared with."""

    model: str
    alpha_sets: float
    alpha_risk: float
    global_threshold: float
    sets: dict[str, conformal.ConformalPredictor]
    rejection: conformal.ClasswiseRejection

    def set_thresholds(self) -> list[float]:
        """:data:`DEPLOYED_SET` as probability thresholds per class: class c is in the set iff p_c >= 1 - q_c."""
        return [1.0 - q for q in self.sets[DEPLOYED_SET].thresholds]

    def accept_thresholds(self, rule: str) -> float | list[float | None]:
        """The accept rule ``rule`` as bundle.json holds it: the global threshold, or one per class (None:
        the class is never accepted)."""
        check_accept_rule(rule)
        if rule == "global":
            return self.global_threshold
        return [None if np.isinf(t) else float(t) for t in self.rejection.thresholds]

    def document(self) -> dict:
        """``conformal.json``: the rules (thresholds inf stored as None) and what each guarantees."""
        return {
            "model": self.model,
            "alpha_sets": self.alpha_sets,
            "alpha_risk": self.alpha_risk,
            "global_threshold": self.global_threshold,
            "deployed_set": DEPLOYED_SET,
            "sets": {name: predictor.to_dict() for name, predictor in self.sets.items()},
            "rejection": self.rejection.to_dict(),
            "guarantees": {
                "sets": f"P(true label in the set) >= {1 - self.alpha_sets:g} (Mondrian: for every class), on average "
                "over calibration draws, for test images exchangeable with val",
                "rejection": f"per predicted class j, P(accepted and wrong | predicted j) <= {self.alpha_risk:g} "
                "(conformal risk control), on average over calibration draws",
            },
        }

    @classmethod
    def from_document(cls, doc: dict) -> Guarantees:
        return cls(
            model=doc["model"],
            alpha_sets=doc["alpha_sets"],
            alpha_risk=doc["alpha_risk"],
            global_threshold=doc["global_threshold"],
            sets={name: conformal.ConformalPredictor.from_dict(d) for name, d in doc["sets"].items()},
            rejection=conformal.ClasswiseRejection.from_dict(doc["rejection"]),
        )


def fit(
    model: str, val_logits, val_labels, global_threshold: float, *, alpha_sets: float = 0.1, alpha_risk: float = 0.1
) -> Guarantees:
    """Every set method and the class-wise rejection fitted on the calibrated VAL logits of ``model``."""
    probs = softmax(np.asarray(val_logits, np.float64))
    return Guarantees(
        model=model,
        alpha_sets=float(alpha_sets),
        alpha_risk=float(alpha_risk),
        global_threshold=float(global_threshold),
        sets={name: conformal.fit_conformal(probs, val_labels, alpha_sets, **o) for name, o in SET_METHODS.items()},
        rejection=conformal.fit_classwise_rejection(probs, val_labels, alpha_risk),
    )


def evaluate(guarantees: Guarantees, test_logits, test_labels) -> dict:
    """On TEST: ``set_metrics`` of every set method, and the class-wise rule beside the global threshold."""
    probs = softmax(np.asarray(test_logits, np.float64))
    return {
        "sets": {
            name: conformal.set_metrics(predictor.predict_sets(probs), test_labels, probs)
            for name, predictor in guarantees.sets.items()
        },
        "rejection": conformal.compare_rejection(probs, test_labels, guarantees.rejection, guarantees.global_threshold),
    }


def measured(evaluation: dict) -> dict:
    """``evaluate``'s figures as JSON (NaN -- a class without images -- as None), for ``conformal.json``."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, np.ndarray)):
            return [plain(v) for v in value]
        if isinstance(value, (float, np.floating)):
            return None if np.isnan(value) else float(value)
        return value

    return plain(evaluation)


def spread(guarantees: Guarantees, logits: dict, labels: dict, *, n_splits: int = 100, seed: int = 0) -> dict:
    """Coverage, mean set size and the lowest class coverage of every set method over ``n_splits`` random
    re-splits of val + test pooled (stratified, the same val share), refitted each time: {method: {metric: spread}}."""
    pooled = softmax(np.concatenate([logits["val"], logits["test"]]).astype(np.float64))
    y = np.concatenate([labels["val"], labels["test"]])
    fraction = len(labels["val"]) / len(y)
    out = {}
    for name, options in SET_METHODS.items():

        def once(cal, test, options=options):
            predictor = conformal.fit_conformal(pooled[cal], y[cal], guarantees.alpha_sets, **options)
            metrics = conformal.set_metrics(predictor.predict_sets(pooled[test]), y[test], pooled[test])
            return {
                "coverage": metrics["coverage"],
                "mean_size": metrics["mean_size"],
                "min_class_coverage": float(np.nanmin(metrics["class_coverage"])),
            }

        out[name] = conformal.resplit(len(y), once, n_splits=n_splits, cal_fraction=fraction, seed=seed, strata=y)
    return out


def under_shift(shift_logits: dict, calibration, *, alpha_sets: float = 0.1) -> list[dict]:
    """Coverage under shift: every set method fitted on each domain's val split and measured on each domain's
    test split, for the deployed FP32 model (after adaptation) calibrated by ``calibration`` (phase 06's chosen
    map, a ``CalibrationMap``). ``shift_logits``: ``{domain: {"val"|"test": {"after", "labels", ...}}}`` (phase
    02b). The guarantee holds where val and test are exchangeable (the same domain); the other rows show what is
    left of it across domains. One row per (fitted on, measured on, method), in that order."""
    rows = []
    probs = {
        (domain, split): (softmax(calibration.apply(sets[split]["after"])), sets[split]["labels"])
        for domain, sets in shift_logits.items()
        for split in ("val", "test")
    }
    for fitted_on in shift_logits:
        val_probs, val_labels = probs[(fitted_on, "val")]
        predictors = {
            n: conformal.fit_conformal(val_probs, val_labels, alpha_sets, **o) for n, o in SET_METHODS.items()
        }
        for measured_on in shift_logits:
            test_probs, test_labels = probs[(measured_on, "test")]
            for name, predictor in predictors.items():
                m = conformal.set_metrics(predictor.predict_sets(test_probs), test_labels, test_probs)
                rows.append(
                    {
                        "fitted on": f"{fitted_on} val",
                        "measured on": f"{measured_on} test",
                        "set": name,
                        "coverage": m["coverage"],
                        "mean_size": m["mean_size"],
                        "min_class_coverage": float(np.nanmin(m["class_coverage"])),
                    }
                )
    return rows


def shift_table(rows: list[dict]) -> pd.DataFrame:
    """:func:`under_shift`'s rows as a table indexed by (fitted on, measured on, set)."""
    return pd.DataFrame(rows).set_index(["fitted on", "measured on", "set"]).round(4)


def sets_table(evaluation: dict, spreads: dict, alpha: float) -> pd.DataFrame:
    """One row per set method (fixed): test coverage, set size, lowest class coverage, and their re-split spread."""
    rows = {}
    for name in SET_METHODS:
        metrics, s = evaluation["sets"][name], spreads[name]
        rows[name] = {
            "test_coverage": metrics["coverage"],
            "resplit_coverage": f"{s['coverage']['mean']:.3f} [{s['coverage']['min']:.3f}, {s['coverage']['max']:.3f}]",
            "mean_size": metrics["mean_size"],
            "resplit_mean_size": f"{s['mean_size']['mean']:.2f} [{s['mean_size']['min']:.2f}, {s['mean_size']['max']:.2f}]",
            "min_class_coverage": float(np.nanmin(metrics["class_coverage"])),
            "resplit_min_class_coverage": f"{s['min_class_coverage']['mean']:.3f}",
            **{f"size_rank_{d}": v for d, v in zip(metrics["difficulty"], metrics["size_by_difficulty"])},
        }
    frame = pd.DataFrame(rows).T
    frame.index.name = f"set (alpha = {alpha:g})"
    return frame


def rejection_table(evaluation: dict, guarantees: Guarantees, class_names) -> pd.DataFrame:
    """One row per class (fixed): the class-wise rule's threshold, and for both rules the per-class error the
    class-wise rule controls, the selective risk and the miss rate (rejected or wrong)."""
    cw, gl = evaluation["rejection"]["classwise"], evaluation["rejection"]["global"]
    return pd.DataFrame(
        {
            "classwise_threshold": list(guarantees.rejection.thresholds),
            "error_classwise": cw["class_error"],
            "error_global": gl["class_error"],
            "selective_risk_classwise": cw["class_selective_risk"],
            "selective_risk_global": gl["class_selective_risk"],
            "miss_rate_classwise": cw["miss_rate"],
            "miss_rate_global": gl["miss_rate"],
        },
        index=pd.Index([str(c) for c in class_names], name="class"),
    )


def rules_table(evaluation: dict, guarantees: Guarantees) -> pd.DataFrame:
    """One row per accept rule (fixed: class-wise, global): coverage, selective accuracy, the worst class
    error (what the class-wise rule bounds by alpha_risk) and the mean and worst miss rate."""
    rows = {}
    for rule, label in (
        ("classwise", f"class-wise (risk control, alpha = {guarantees.alpha_risk:g})"),
        ("global", "global max-MCC threshold"),
    ):
        m = evaluation["rejection"][rule]
        rows[label] = {
            "coverage": m["coverage"],
            "selective_accuracy": m["selective_accuracy"],
            "worst_class_error": float(np.nanmax(m["class_error"])),
            "mean_miss_rate": float(np.nanmean(m["miss_rate"])),
            "worst_miss_rate": float(np.nanmax(m["miss_rate"])),
        }
    return pd.DataFrame(rows).T.rename_axis("accept rule")


def figure(evaluation: dict, guarantees: Guarantees, class_names, *, domain: str):
    """Set size by difficulty per method, and per-class coverage and miss rate beside the targets; the titles name
    the ``domain`` ("source" or "target") whose test set was measured."""
    import matplotlib.pyplot as plt

    fig, (sizes, coverage, misses) = plt.subplots(1, 3, figsize=(15, 3.6))
    for name, metrics in evaluation["sets"].items():
        sizes.plot(metrics["difficulty"], metrics["size_by_difficulty"], marker="o", label=name)
    sizes.set(xlabel="rank of the true label (1: top-1 right)", ylabel="mean set size", title="set size by difficulty")
    sizes.legend(fontsize=7)
    x = np.arange(len(class_names))
    for offset, name in ((-0.2, "LAC"), (0.2, DEPLOYED_SET)):
        coverage.bar(x + offset, evaluation["sets"][name]["class_coverage"], width=0.4, label=name)
    coverage.axhline(
        1 - guarantees.alpha_sets, color="k", lw=1, ls="--", label=f"1 - alpha = {1 - guarantees.alpha_sets:g}"
    )
    coverage.set(xticks=x, xticklabels=class_names, ylim=(0, 1.05), title=f"per-class coverage ({domain} test)")
    coverage.legend(fontsize=7, loc="lower right")
    for offset, rule in ((-0.2, "classwise"), (0.2, "global")):
        misses.bar(x + offset, evaluation["rejection"][rule]["miss_rate"], width=0.4, label=f"{rule} rule")
    misses.set(xticks=x, xticklabels=class_names, title=f"per-class miss rate (rejected or wrong, {domain} test)")
    misses.legend(fontsize=7)
    fig.tight_layout()
    return fig
