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

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.metrics.classification import check_labels


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
    logits = logits.astype(np.float64, copy=False)
    if not np.isfinite(logits.sum()) and not (finite := np.isfinite(logits)).all():
        n_nan, n_inf = int(np.isnan(logits).sum()), int(np.isinf(logits).sum())
        raise ValueError(
            f"logits contain {n_nan} NaN and {n_inf} Inf value(s) in "
            f"{int((~finite.all(axis=1)).sum())} of {len(logits)} rows; "
            "fix the model / export that produced them before measuring calibration"
        )
    if logits.min() >= 0 and np.allclose(logits.sum(axis=1), 1.0, rtol=0, atol=1e-4):
        raise ValueError(
            "these look like probabilities, not logits (every row is non-negative "
            "and sums to 1); pass the pre-softmax logits of the model"
        )
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
    top = logits.argmax(axis=1)
    peak = np.take_along_axis(logits, top[:, None], axis=1)
    return 1.0 / np.exp(logits - peak).sum(axis=1), top == labels


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


def ece_bootstrap_ci(
    logits, labels, n_bins: int = 15, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ECE (``ece_bootstrap``: all resamples in one pass, seeded).

    Binned ECE is biased upward on small samples; the interval shows sampling spread around
    that biased estimator, so it need not contain the point ECE (``debiased_ece`` corrects it).
    """
    if n_boot <= 0:
        raise ValueError(f"n_boot must be > 0, got {n_boot}")
    conf, correct = top_label(logits, labels)
    alpha = (1 - level) / 2
    low, high = np.quantile(ece_bootstrap(conf, correct, n_bins, n_boot=n_boot, seed=seed), [alpha, 1 - alpha])
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
    return pd.DataFrame(
        {"lower": edges[:-1], "upper": edges[1:], "count": count, "mean_confidence": mean_conf, "accuracy": acc}
    )


def calibration_summary(logits, labels, n_bins: int = 15, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """JSON-ready dict of every metric here, plus accuracy, with the honest statistics of the ECE:
    its bootstrap 95% CI, the debiased estimates, and the null band of a perfectly calibrated model
    with the same confidences (median, 95th percentile, p-value and the verdict in words)."""
    conf, correct = top_label(logits, labels)
    ece = float(np.dot(*_bin_gaps(bin_index(conf, n_bins), conf, correct, n_bins)))
    alpha = 0.025
    boot = ece_bootstrap(conf, correct, n_bins, n_boot=n_boot, seed=seed)
    debiased = debiased_ece(conf, correct, n_bins)
    return {
        "n": int(len(conf)),
        "n_bins": n_bins,
        "accuracy": float(correct.mean()),
        "mean_confidence": float(conf.mean()),
        "ece": ece,
        "ece_ci95": [float(q) for q in np.quantile(boot, [alpha, 1 - alpha])],
        "ece_debiased": debiased["l1"],
        "ce_l2_debiased": debiased["l2"],
        "null": calibration_verdict(ece, null_ece(conf, n_bins, n_null=n_boot, seed=seed + 1), len(conf)),
        "smece": smooth_ece(conf, correct)["smece"],
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


def honest_columns(summary: dict, suffix: str = "") -> dict:
    """The columns every calibration table shows for one ``calibration_summary``: ECE with its 95% CI,
    the debiased ECE, the null band's 95th percentile, the p-value and the verdict."""
    null = summary["null"]
    return {
        f"ece{suffix}": summary["ece"],
        f"ece{suffix}_ci95": _interval(summary["ece_ci95"]),
        f"ece{suffix}_debiased": summary["ece_debiased"],
        f"null{suffix}_p95": null["p95"],
        f"p{suffix}": null["p_value"],
        f"verdict{suffix}": VERDICTS[0] if null["indistinguishable"] else VERDICTS[1],
    }


def calibration_table(summaries: Mapping[str, dict]) -> pd.DataFrame:
    """One row per ``calibration_summary`` (e.g. per method): accuracy, the honest ECE columns, smooth ECE, ACE, MCE,
    classwise ECE, NLL, Brier, and n (the verdicts hold at that sample size)."""
    rows = {
        name: {
            "n": s["n"],
            "accuracy": s["accuracy"],
            **honest_columns(s),
            "smece": s["smece"],
            "ace": s["ace"],
            "mce": s["mce"],
            "classwise_ece": s["classwise_ece"],
            "nll": s["nll"],
            "brier": s["brier"],
        }
        for name, s in summaries.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


def before_after_table(results: Mapping[str, dict], maps: Mapping[str, str]) -> pd.DataFrame:
    """One row per model from ``{model: {"pre_calibration": summary, "post_calibration": summary}}``:
    the calibration map (``maps[model]``, e.g. "temperature_scaling T=1.52"), accuracy before and after
    (per-class maps change the argmax), the honest ECE columns before and after, NLL and Brier."""
    rows = {}
    for model, result in results.items():
        pre, post = result["pre_calibration"], result["post_calibration"]
        rows[model] = {
            "map": maps[model],
            "accuracy_pre": pre["accuracy"],
            "accuracy_post": post["accuracy"],
            **honest_columns(pre, "_pre"),
            **honest_columns(post, "_post"),
            "nll_pre": pre["nll"],
            "nll_post": post["nll"],
            "brier_pre": pre["brier"],
            "brier_post": post["brier"],
        }
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


def _interval(bounds) -> str:
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _panel_count(logits_by_name: Mapping[str, np.ndarray]) -> int:
    if not logits_by_name:
        raise ValueError("logits_by_name is empty; pass e.g. {'uncalibrated': logits}")
    return len(logits_by_name)


def reliability_diagram(
    labels,
    logits_by_name: Mapping[str, np.ndarray],
    n_bins: int = 15,
    ece_ci95: Mapping[str, Sequence[float]] | None = None,
):
    """One column per entry (e.g. {"before": logits, "after": logits / T}): accuracy per bin
    against the diagonal, the gap to mean confidence as an outline, ECE in % (with its 95% CI when
    ``ece_ci95`` has the entry), the count on sparse bins, and the bin counts (log scale) underneath."""
    import matplotlib.pyplot as plt

    cols = _panel_count(logits_by_name)
    fig, axes = plt.subplots(
        2, cols, figsize=(4.2 * cols, 5.6), squeeze=False, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1 / n_bins
    for col, (name, logits) in enumerate(logits_by_name.items()):
        table = reliability_table(logits, labels, n_bins)
        top, bottom = axes[0, col], axes[1, col]
        used = table["count"] > 0
        top.bar(
            table["lower"][used],
            table["accuracy"][used],
            width=width,
            align="edge",
            color="tab:blue",
            edgecolor="black",
            label="accuracy",
        )
        top.bar(
            table["lower"][used],
            (table["mean_confidence"] - table["accuracy"])[used],
            bottom=table["accuracy"][used],
            width=width,
            align="edge",
            fill=False,
            edgecolor="tab:red",
            linewidth=1.4,
            label="gap to confidence",
        )
        sparse = used & (table["count"] < max(10, 0.01 * table["count"].sum()))
        for lower, acc, count in zip(table["lower"][sparse], table["accuracy"][sparse], table["count"][sparse]):
            top.text(lower + width / 2, min(acc, 0.92) + 0.02, f"n={int(count)}", ha="center", fontsize=6)
        top.plot([0, 1], [0, 1], "k--", lw=1)
        ece = 100 * expected_calibration_error(logits, labels, n_bins)
        ci = (ece_ci95 or {}).get(name)
        ci_text = f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci is not None else ""
        top.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}\nECE = {ece:.2f}%{ci_text}", ylabel="accuracy")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(
            table["lower"][used], table["count"][used], width=width, align="edge", color="grey", edgecolor="black"
        )
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
        ax.hist(
            conf,
            bins=np.arange(n_bins + 1) / n_bins,
            weights=np.full(len(conf), 1 / len(conf)),
            color="tab:blue",
            edgecolor="black",
        )
        ax.axvline(correct.mean(), color="black", ls="--", label=f"accuracy {correct.mean():.3f}")
        ax.axvline(conf.mean(), color="tab:red", ls="--", label=f"mean conf. {conf.mean():.3f}")
        ax.set(xlim=(0, 1), title=name, xlabel="confidence", ylabel="fraction of samples")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _cell_stats(bins, conf, correct, n_bins):
    """Per (bin, correct) cell: count, confidence sum and confidence sum of squares ([2, n_bins] each)."""
    cell = bins * 2 + correct
    count = np.bincount(cell, minlength=2 * n_bins).reshape(n_bins, 2).T
    s1 = np.bincount(cell, weights=conf, minlength=2 * n_bins).reshape(n_bins, 2).T
    s2 = np.bincount(cell, weights=conf * conf, minlength=2 * n_bins).reshape(n_bins, 2).T
    return count, s1, s2


def ece_bootstrap(conf, correct, n_bins: int = 15, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the top-label ECE, all drawn in one vectorised pass.

    A resample is summarised by how many draws land in each (bin, correct) cell and by the sum of
    the confidences drawn in each cell. This is the Poisson bootstrap (each row drawn Poisson(1)
    times, so a cell of c rows gets Poisson(c) draws, independently; the replicate's size varies
    around n, and its ECE divides by that size); it agrees with the classic multinomial resampling to
    O(1/n) and costs half as many random draws. The confidence sum of m draws from a cell is drawn
    from its normal limit (mean m * mean, variance m * variance of the cell), which inside a bin of
    width 1/n_bins moves the ECE far less than the counts do. Cost: O(n) + O(n_boot * n_bins).
    """
    conf, correct = np.asarray(conf, np.float64), np.asarray(correct).astype(np.int64)
    count, s1, s2 = _cell_stats(bin_index(conf, n_bins), conf, correct, n_bins)
    rng = np.random.default_rng(seed)
    m = rng.poisson(count, size=(n_boot, 2, n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, s1 / count, 0.0)
        var = np.where(count > 0, np.maximum(s2 / count - mean**2, 0.0), 0.0)
    conf_sum = m * mean + np.sqrt(m * var) * rng.standard_normal(m.shape)
    return np.abs(conf_sum.sum(axis=1) - m[:, 1]).sum(axis=1) / np.maximum(m.sum(axis=(1, 2)), 1)


def null_ece(conf, n_bins: int = 15, *, n_null: int = 1000, seed: int = 0, sub_bins: int = 8) -> np.ndarray:
    """ECEs a PERFECTLY calibrated model with these confidences shows at this n (``n_null`` draws).

    Each label is drawn correct with probability equal to its confidence; the ECE of those labels
    is the estimator's floor. The correct count of a bin (a Poisson-binomial sum) is drawn as a sum
    of binomials over ``sub_bins`` equal-width sub-bins at their mean confidence: the variance it
    drops, sum (c - sub-bin mean)^2, is below n / (12 (n_bins sub_bins)^2). Cost O(n) + O(n_null n_bins sub_bins).
    """
    conf = np.asarray(conf, np.float64)
    n = len(conf)
    fine = bin_index(conf, n_bins * sub_bins)
    count = np.bincount(fine, minlength=n_bins * sub_bins)
    total = np.bincount(fine, weights=conf, minlength=n_bins * sub_bins)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    hits = np.random.default_rng(seed).binomial(count, np.clip(mean, 0, 1), size=(n_null, len(count)))
    per_bin = (total - hits).reshape(n_null, n_bins, sub_bins).sum(axis=2)
    return np.abs(per_bin).sum(axis=1) / n


def debiased_ece(conf, correct, n_bins: int = 15) -> dict:
    """Kumar et al. (2019) debiased calibration errors of the top label, equal-width bins.

    ``l1``: 2 ECE - E[ECE'] where, per bin, the accuracy is replaced by its normal sampling
    distribution N(acc, acc (1 - acc) / n_b) -- their ``normal_debiased_ce`` with the expectation
    taken in closed form (folded normal) instead of by resampling. ``l2``: the unbiased estimate of
    the squared calibration error, sum_b w_b [(acc - conf)^2 - acc (1 - acc) / (n_b - 1)], square
    root of its positive part. Both may fall below the plug-in ECE; neither is a bound.
    """
    from scipy.stats import norm

    conf, correct = np.asarray(conf, np.float64), np.asarray(correct, np.float64)
    bins = bin_index(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    used = count > 0
    n_b = count[used]
    acc = np.bincount(bins, weights=correct, minlength=n_bins)[used] / n_b
    gap = acc - np.bincount(bins, weights=conf, minlength=n_bins)[used] / n_b
    weight = n_b / n_b.sum()
    sigma = np.sqrt(acc * (1 - acc) / n_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        folded = np.where(
            sigma > 0,
            sigma * np.sqrt(2 / np.pi) * np.exp(-(gap**2) / (2 * sigma**2)) + gap * (1 - 2 * norm.cdf(-gap / sigma)),
            np.abs(gap),
        )
        sq = np.where(n_b > 1, gap**2 - acc * (1 - acc) / (n_b - 1), gap**2)
    plugin = weight @ np.abs(gap)
    return {"l1": float(2 * plugin - weight @ folded), "l2": float(np.sqrt(max(weight @ sq, 0.0)))}


NULL_LEVEL = 0.05  # p-value below which the ECE is called distinguishable from perfect calibration
# The verdict's words, p >= NULL_LEVEL first: tables print them alone, calibration_verdict in a sentence.
VERDICTS = ("indistinguishable from calibrated", "miscalibrated")


def calibration_verdict(ece: float, null: np.ndarray, n: int) -> dict:
    """The observed ECE against the null band: median, 95th percentile, p-value and the words."""
    p = float((1 + np.sum(null >= ece)) / (1 + len(null)))
    same = p >= NULL_LEVEL
    words = (
        f"{VERDICTS[0]} at this sample size (n = {n}, p = {p:.3f})"
        if same
        else f"{VERDICTS[1]} beyond sampling noise at this sample size (n = {n}, p = {p:.3f})"
    )
    return {
        "median": float(np.median(null)),
        "p95": float(np.quantile(null, 0.95)),
        "p_value": p,
        "indistinguishable": same,
        "verdict": words,
    }


def smooth_ece(conf, correct, *, grid: int = 400, iterations: int = 20) -> dict:
    """SmoothECE (Blasiok & Nakkiran, 2023): a binning-free calibration error of the top label.

    The residuals c - y are smoothed with a Gaussian kernel of width sigma reflected at 0 and 1;
    smECE_sigma is the mass-weighted mean |smoothed residual|, i.e. sum_t |sum_i K(t, c_i)(c_i - y_i)|
    / sum_t sum_i K(t, c_i) over a uniform grid t of [0, 1]. The bandwidth is the fixed point
    smECE_sigma = sigma (smECE falls as sigma grows), found by bisection. The samples are deposited
    on ``grid`` cells first (linear interpolation), so the cost is O(n + grid^2) per bisection step.
    """
    conf, residual = np.asarray(conf, np.float64), np.asarray(conf, np.float64) - np.asarray(correct, np.float64)
    points = np.linspace(0, 1, grid + 1)
    pos = conf * grid
    lo = np.minimum(pos.astype(np.int64), grid - 1)
    frac = pos - lo
    mass = np.bincount(lo, 1 - frac, grid + 1) + np.bincount(lo + 1, frac, grid + 1)
    res = np.bincount(lo, (1 - frac) * residual, grid + 1) + np.bincount(lo + 1, frac * residual, grid + 1)

    def at(sigma: float) -> float:
        d = points[:, None] - points[None, :]
        kernel = sum(
            np.exp(-0.5 * (x / sigma) ** 2)
            for x in (d, points[:, None] + points[None, :], points[:, None] - (2 - points[None, :]))
        )
        return float(np.abs(kernel @ res).sum() / (kernel @ mass).sum())

    low, high = 1e-4, 1.0
    if at(high) >= high:
        return {"smece": at(high), "sigma": high}
    for _ in range(iterations):
        mid = (low + high) / 2
        low, high = (mid, high) if at(mid) > mid else (low, mid)
    return {"smece": at(high), "sigma": high}
