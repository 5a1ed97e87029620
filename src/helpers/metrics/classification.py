"""Classification metrics from integer labels and predictions: the one module that computes them.

Accuracy (with a Wilson 95% interval), multi-class MCC (Gorodkin's R_K), per-class accuracy,
the confusion matrix, a JSON-ready summary and a confusion-matrix figure. Also the two interval
tools every phase shares: ``wilson_interval`` and a seeded percentile ``bootstrap_ci``.
Every public function validates its inputs with ``check_labels`` before any work.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np
from tqdm import tqdm


def check_labels(labels, num_classes: int, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a non-empty 1-D int64 array with values in [0, num_classes)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}; flatten it or pass class indices")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one sample")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer class indices, got dtype {arr.dtype}; "
            "cast with .astype(np.int64) (or take argmax of scores first)"
        )
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} value(s) outside [0, {num_classes}) "
            f"(min {arr.min()}, max {arr.max()}); check num_classes / the class list"
        )
    return arr.astype(np.int64)


def _check_pair(labels, preds, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    labels, preds = np.asarray(labels), np.asarray(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds differ in shape: {labels.shape} vs {preds.shape}")
    if num_classes is None:
        if labels.size == 0:
            raise ValueError("labels is empty; metrics need at least one sample")
        num_classes = int(max(labels.max(), preds.max())) + 1
    return check_labels(labels, num_classes), check_labels(preds, num_classes, "preds"), num_classes


def accuracy(labels, preds) -> float:
    """Fraction of predictions equal to the label."""
    labels, preds, _ = _check_pair(labels, preds, None)
    return float(np.mean(labels == preds))


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and n successes)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got successes={successes}, n={n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact bounds at the extremes
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(low), float(high)


def accuracy_with_ci(labels, preds, level: float = 0.95) -> dict:
    """Accuracy with its Wilson interval: ``{"accuracy", "ci_low", "ci_high", "n", "level"}``."""
    labels, preds, _ = _check_pair(labels, preds, None)
    correct = int(np.sum(labels == preds))
    low, high = wilson_interval(correct, labels.size, level)
    return {"accuracy": correct / labels.size, "ci_low": low, "ci_high": high, "n": int(labels.size), "level": level}


def confusion_matrix(labels, preds, num_classes: int | None = None) -> np.ndarray:
    """int64 [K, K] counts, rows = true class, columns = predicted class."""
    labels, preds, k = _check_pair(labels, preds, num_classes)
    return np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def mcc_from_confusion(cm: np.ndarray) -> np.ndarray | float:
    """Gorodkin's R_K from confusion matrices [..., K, K] (K=2 gives the binary MCC).

    Returns 0 where the denominator vanishes (a constant truth or prediction), as sklearn does.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum(axis=(-2, -1))
    correct = np.trace(cm, axis1=-2, axis2=-1)
    true_sums, pred_sums = cm.sum(axis=-1), cm.sum(axis=-2)
    cov_tp = correct * n - np.sum(true_sums * pred_sums, axis=-1)
    cov_pp = n * n - np.sum(pred_sums * pred_sums, axis=-1)
    cov_tt = n * n - np.sum(true_sums * true_sums, axis=-1)
    denom = np.sqrt(cov_pp * cov_tt)
    out = np.divide(cov_tp, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(out) if out.ndim == 0 else out


def mcc(labels, preds, num_classes: int | None = None) -> float:
    """Multi-class Matthews correlation coefficient (Gorodkin's R_K), in [-1, 1]."""
    return mcc_from_confusion(confusion_matrix(labels, preds, num_classes))


def per_class_accuracy(labels, preds, num_classes: int | None = None) -> np.ndarray:
    """Recall of each class (correct / support); NaN for a class with no samples."""
    cm = confusion_matrix(labels, preds, num_classes)
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)


def classification_summary(labels, preds, class_names: Sequence[str]) -> dict:
    """JSON-ready summary: n, accuracy + Wilson 95% CI, MCC, per-class accuracy/support, confusion."""
    k = len(class_names)
    cm = confusion_matrix(labels, preds, k)
    per_class = per_class_accuracy(labels, preds, k)
    acc = accuracy_with_ci(labels, preds)
    return {
        "n": acc["n"],
        "accuracy": acc["accuracy"],
        "accuracy_ci95": [acc["ci_low"], acc["ci_high"]],
        "mcc": mcc_from_confusion(cm),
        "class_names": list(class_names),
        "per_class": {
            name: {"accuracy": None if np.isnan(a) else float(a), "support": int(s)}
            for name, a, s in zip(class_names, per_class, cm.sum(axis=1))
        },
        "confusion_matrix": cm.tolist(),
    }


def summary_table(summaries: dict[str, dict]):
    """One row per split/model from :func:`classification_summary` results: n, accuracy (95% CI), MCC."""
    import pandas as pd

    rows = {
        name: {
            "n": s["n"],
            "accuracy": s["accuracy"],
            "ci95 low": s["accuracy_ci95"][0],
            "ci95 high": s["accuracy_ci95"][1],
            "MCC": s["mcc"],
        }
        for name, s in summaries.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray | float],
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    desc: str = "bootstrap",
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n_boot`` resamples of n rows.

    ``statistic`` maps an index array (rows drawn with replacement) to a value or a vector of
    values; NaN results (e.g. a rate with an empty denominator) are ignored per component.
    Seeded with ``numpy.random.default_rng(seed)``: same inputs, same interval.
    """
    if n <= 0 or n_boot <= 0:
        raise ValueError(f"bootstrap needs n > 0 samples and n_boot > 0, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    draws = np.array(
        [statistic(rng.integers(0, n, size=n)) for _ in tqdm(range(n_boot), desc=desc, leave=False)], dtype=np.float64
    )
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN component gives NaN bounds
        low, high = np.nanquantile(draws, [alpha, 1 - alpha], axis=0)
    return low, high


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "", normalize: bool = True):
    """Heat map of a confusion matrix (row-normalized by default) annotated with counts."""
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {k} class names")
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) if normalize else cm
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class" if normalize else "count")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    if k <= 20:
        threshold = shown.max() / 2
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if shown[i, j] > threshold else "black",
                )
    fig.tight_layout()
    return fig
