"""Confidence-calibration metrics of a classifier, computed from its logits and integer labels.

Binned metrics use the top-label confidence (max softmax probability) and, following Guo et al.
(2017), ``n_bins`` equal-width bins closed on the right, (lo, hi]: a confidence exactly on an
edge goes to the lower bin (torchmetrics puts it in the upper one). Owns: ECE, MCE, ACE
(equal-mass bins), classwise ECE, NLL, multi-class Brier score, a bootstrap CI for ECE, the
per-bin reliability table, and the reliability-diagram / confidence-histogram figures.

Every entry point takes *logits* and goes through ``validate_logits`` first: the calibrated
model's output is ``logits / T`` (or a vector-scaled variant), which is again a logit array.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.metrics.classification import bootstrap_ci, check_labels


def validate_logits(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    """Check (logits [N, K], labels [N]) and return them as float64 / int64 arrays.

    Refuses: a non-2-D or empty array, fewer than 2 classes, non-finite values (reported with
    counts), labels of another length or out of [0, K), and probabilities passed as logits
    (every row non-negative and summing to 1).
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape [N, K >= 2], got {logits.shape}")
    if logits.shape[0] == 0:
        raise ValueError("logits are empty (0 samples): this split has no data to measure")
    if not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(f"logits must be floating point, got dtype {logits.dtype}")
    logits = logits.astype(np.float64)
    finite = np.isfinite(logits)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(logits).sum()), int(np.isinf(logits).sum())
        raise ValueError(f"logits contain {n_nan} NaN and {n_inf} Inf value(s) in "
                         f"{int((~finite.all(axis=1)).sum())} of {len(logits)} rows; "
                         "fix the model / export that produced them before measuring calibration")
    if (logits >= 0).all() and np.allclose(logits.sum(axis=1), 1.0, rtol=0, atol=1e-4):
        raise ValueError("these look like probabilities, not logits (every row is non-negative "
                         "and sums to 1); pass the pre-softmax logits of the model")
    labels = np.asarray(labels)
    if labels.shape != (len(logits),):
        raise ValueError(f"labels must have shape ({len(logits)},) to match logits, got {labels.shape}")
    return logits, check_labels(labels, logits.shape[1])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted: exact for ties, no overflow)."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def top_label(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validated (confidence, correct): max softmax probability and whether argmax == label."""
    logits, labels = validate_logits(logits, labels)
    probs = softmax(logits)
    return probs.max(axis=1), probs.argmax(axis=1) == labels


def _check_n_bins(n_bins) -> None:
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def bin_index(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence; bins are (lo, hi], with 0 itself in the first bin."""
    _check_n_bins(n_bins)
    edges = np.arange(n_bins + 1) / n_bins
    return np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, n_bins - 1)


def _bin_gaps(bins, confidence, correct, n_bins) -> tuple[np.ndarray, np.ndarray]:
    """(weight, |accuracy - mean confidence|) of each non-empty bin."""
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    used = count > 0
    return count[used] / count.sum(), np.abs(correct_sum[used] - conf_sum[used]) / count[used]


def expected_calibration_error(logits, labels, n_bins: int = 15) -> float:
    """ECE: bin-weight-averaged |accuracy - confidence| over equal-width (lo, hi] bins."""
    conf, correct = top_label(logits, labels)
    weight, gap = _bin_gaps(bin_index(conf, n_bins), conf, correct, n_bins)
    return float(weight @ gap)


def maximum_calibration_error(logits, labels, n_bins: int = 15) -> float:
    """MCE: the largest |accuracy - confidence| over non-empty equal-width bins."""
    conf, correct = top_label(logits, labels)
    return float(_bin_gaps(bin_index(conf, n_bins), conf, correct, n_bins)[1].max())


def adaptive_calibration_error(logits, labels, n_bins: int = 15) -> float:
    """ECE over equal-mass bins: samples sorted by confidence, split into n_bins equal counts.

    This is the top-label "adaptive ECE"; Nixon et al.'s ACE additionally averages over classes.
    Ties are ordered stably by sample index, so the value is deterministic.
    """
    _check_n_bins(n_bins)
    conf, correct = top_label(logits, labels)
    rank = np.empty(len(conf), dtype=np.int64)
    rank[np.argsort(conf, kind="stable")] = np.arange(len(conf))
    weight, gap = _bin_gaps(rank * n_bins // len(conf), conf, correct, n_bins)
    return float(weight @ gap)


def classwise_calibration_error(logits, labels, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al., 2019): mean over classes k of the ECE of p_k vs [label == k]."""
    logits, labels = validate_logits(logits, labels)
    probs = softmax(logits)
    per_class = []
    for k in range(probs.shape[1]):
        weight, gap = _bin_gaps(bin_index(probs[:, k], n_bins), probs[:, k], labels == k, n_bins)
        per_class.append(weight @ gap)
    return float(np.mean(per_class))


def negative_log_likelihood(logits, labels) -> float:
    """Mean negative log-likelihood of the labels (cross-entropy), computed via log-softmax."""
    logits, labels = validate_logits(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def brier_score(logits, labels) -> float:
    """Multi-class Brier score: mean over samples of sum_k (p_k - [label == k])^2, in [0, 2]."""
    logits, labels = validate_logits(logits, labels)
    one_hot = np.eye(logits.shape[1])[labels]
    return float(((softmax(logits) - one_hot) ** 2).sum(axis=1).mean())


def ece_bootstrap_ci(logits, labels, n_bins: int = 15, *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ECE (rows resampled with replacement, seeded).

    Binned ECE is biased upward on small samples; the interval shows sampling spread around
    that biased estimator, so it need not contain the point ECE.
    """
    conf, correct = top_label(logits, labels)
    bins = bin_index(conf, n_bins)

    def ece_of(idx):
        weight, gap = _bin_gaps(bins[idx], conf[idx], correct[idx], n_bins)
        return weight @ gap

    low, high = bootstrap_ci(ece_of, len(conf), n_boot=n_boot, seed=seed, level=level,
                             desc="ECE bootstrap")
    return float(low), float(high)


def reliability_table(logits, labels, n_bins: int = 15) -> pd.DataFrame:
    """One row per equal-width bin: lower, upper, count, mean_confidence, accuracy (NaN if empty)."""
    conf, correct = top_label(logits, labels)
    bins = bin_index(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "mean_confidence": mean_conf, "accuracy": acc})


def calibration_summary(logits, labels, n_bins: int = 15, *, n_boot: int = 1000,
                        seed: int = 0) -> dict:
    """JSON-ready dict of every metric here (ECE with its bootstrap 95% CI), plus accuracy."""
    conf, correct = top_label(logits, labels)
    return {
        "n": int(len(conf)), "n_bins": n_bins, "accuracy": float(correct.mean()),
        "mean_confidence": float(conf.mean()),
        "ece": expected_calibration_error(logits, labels, n_bins),
        "ece_ci95": list(ece_bootstrap_ci(logits, labels, n_bins, n_boot=n_boot, seed=seed)),
        "mce": maximum_calibration_error(logits, labels, n_bins),
        "ace": adaptive_calibration_error(logits, labels, n_bins),
        "classwise_ece": classwise_calibration_error(logits, labels, n_bins),
        "nll": negative_log_likelihood(logits, labels),
        "brier": brier_score(logits, labels),
    }


SCORED_METRICS = ("ece", "mce", "ace", "classwise_ece", "nll", "brier")  # lower is better


def improvement(pre: dict, post: dict) -> dict:
    """``<metric>_reduction`` = pre - post (positive: calibration helped) for each metric of two
    ``calibration_summary`` dicts, plus ``ece_relative_reduction`` (share of the ECE removed)."""
    missing = [m for m in SCORED_METRICS if m not in pre or m not in post]
    if missing:
        raise ValueError(f"pre and post must be calibration_summary() dicts; {', '.join(missing)} missing")
    out = {f"{m}_reduction": pre[m] - post[m] for m in SCORED_METRICS}
    out["ece_relative_reduction"] = (pre["ece"] - post["ece"]) / pre["ece"] if pre["ece"] > 0 else 0.0
    return out


def before_after_table(results: Mapping[str, dict], temperatures: Mapping[str, float]) -> pd.DataFrame:
    """One row per model from ``{model: {"pre_calibration": summary, "post_calibration": summary}}``:
    accuracy, ECE before and after with 95% CIs, the temperature, NLL and Brier before and after."""
    rows = {}
    for model, result in results.items():
        pre, post = result["pre_calibration"], result["post_calibration"]
        rows[model] = {"accuracy": pre["accuracy"], "ece_pre": pre["ece"],
                       "ece_pre_ci95": _interval(pre["ece_ci95"]), "ece_post": post["ece"],
                       "ece_post_ci95": _interval(post["ece_ci95"]), "temperature": temperatures[model],
                       "nll_pre": pre["nll"], "nll_post": post["nll"],
                       "brier_pre": pre["brier"], "brier_post": post["brier"]}
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


def _interval(bounds) -> str:
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _panel_count(logits_by_name: Mapping[str, np.ndarray]) -> int:
    if not logits_by_name:
        raise ValueError("logits_by_name is empty; pass e.g. {'uncalibrated': logits}")
    return len(logits_by_name)


def reliability_diagram(labels, logits_by_name: Mapping[str, np.ndarray], n_bins: int = 15,
                        ece_ci95: Mapping[str, Sequence[float]] | None = None):
    """One column per entry (e.g. {"before": logits, "after": logits / T}): accuracy per bin
    against the diagonal, the gap to mean confidence as an outline, ECE in % (with its 95% CI when
    ``ece_ci95`` has the entry), the count on sparse bins, and the bin counts (log scale) underneath."""
    import matplotlib.pyplot as plt

    cols = _panel_count(logits_by_name)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 5.6), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    width = 1 / n_bins
    for col, (name, logits) in enumerate(logits_by_name.items()):
        table = reliability_table(logits, labels, n_bins)
        top, bottom = axes[0, col], axes[1, col]
        used = table["count"] > 0
        top.bar(table["lower"][used], table["accuracy"][used], width=width, align="edge",
                color="tab:blue", edgecolor="black", label="accuracy")
        top.bar(table["lower"][used], (table["mean_confidence"] - table["accuracy"])[used],
                bottom=table["accuracy"][used], width=width, align="edge", fill=False,
                edgecolor="tab:red", linewidth=1.4, label="gap to confidence")
        sparse = used & (table["count"] < max(10, 0.01 * table["count"].sum()))
        for lower, acc, count in zip(table["lower"][sparse], table["accuracy"][sparse], table["count"][sparse]):
            top.text(lower + width / 2, min(acc, 0.92) + 0.02, f"n={int(count)}", ha="center", fontsize=6)
        top.plot([0, 1], [0, 1], "k--", lw=1)
        ece = 100 * expected_calibration_error(logits, labels, n_bins)
        ci = (ece_ci95 or {}).get(name)
        ci_text = f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci is not None else ""
        top.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}\nECE = {ece:.2f}%{ci_text}", ylabel="accuracy")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(table["lower"][used], table["count"][used], width=width, align="edge", color="grey",
                   edgecolor="black")
        bottom.set_yscale("log")
        bottom.set(xlabel="confidence", ylabel="count (log)")
    fig.tight_layout()
    return fig


def confidence_histogram(labels, logits_by_name: Mapping[str, np.ndarray], n_bins: int = 15):
    """Histogram of top-label confidence per entry, with accuracy and mean confidence marked."""
    import matplotlib.pyplot as plt

    cols = _panel_count(logits_by_name)
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.4), squeeze=False, sharey=True)
    for ax, (name, logits) in zip(axes[0], logits_by_name.items()):
        conf, correct = top_label(logits, labels)
        ax.hist(conf, bins=np.arange(n_bins + 1) / n_bins, weights=np.full(len(conf), 1 / len(conf)),
                color="tab:blue", edgecolor="black")
        ax.axvline(correct.mean(), color="black", ls="--", label=f"accuracy {correct.mean():.3f}")
        ax.axvline(conf.mean(), color="tab:red", ls="--", label=f"mean conf. {conf.mean():.3f}")
        ax.set(xlim=(0, 1), title=name, xlabel="confidence", ylabel="fraction of samples")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
