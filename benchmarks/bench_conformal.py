"""Conformal prediction sets and class-wise conformal risk control on CIFAR-10, beside MAPIE and the global threshold.

    python benchmarks/bench_conformal.py [--logits FILE] [--cifar-dir DIR] [--h5 FILE] [--model fp32|int8]
        [--alpha 0.1] [--crc-alpha 0.1] [--splits 100]

MLPerf Tiny ResNet-8 logits on the 10,000 JPEG CIFAR-10 test images (``bench_calibration.model_logits``;
``--logits`` caches them as npz). As in bench_calibration, one stratified half (seed 0) is the run's val
half: temperature scaling is fitted there. The other half is the run's test half, split ``--splits`` times
at random into conformal val / test (2500 / 2500, seeded): every fit below sees only that val part, so
calibration and test points are exchangeable. MAPIE (test-only peer; pip install mapie==1.6.0) gets the
same probabilities and the same val part (its RAPS holds out 10% of it to choose k_reg and lam; ours
does the same with ``choose_raps_params``).

Targets (issue 26): marginal coverage at alpha = 0.1 on average within [0.90, 0.90 + 1 / (n_val + 1)];
every class's mean Mondrian coverage >= 0.88; mean APS / RAPS set size <= MAPIE's on the same
probabilities; the class-wise CRC rule's per-class error <= its level, with per-class miss rates beside the
global max-MCC threshold's.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import numpy as np
from bench_calibration import ROOT, model_logits
from sklearn.model_selection import train_test_split

from helpers.confidence import temperature_scaling
from helpers.confidence.conformal import (
    choose_raps_params,
    compare_rejection,
    fit_classwise_rejection,
    fit_conformal,
    resplit,
    set_metrics,
)
from helpers.confidence.selective import choose_threshold, threshold_sweep
from helpers.metrics.calibration import softmax

OURS = {  # name -> fit_conformal options (RAPS's k_reg / lam are chosen per split)
    "LAC": {"score": "lac"},
    "APS": {"score": "aps"},
    "RAPS": {"score": "raps"},
    "APS randomized": {"score": "aps", "randomized": True},
    "LAC Mondrian": {"score": "lac", "mondrian": True},
    "APS Mondrian": {"score": "aps", "mondrian": True},
}


def load_logits(args) -> dict[str, np.ndarray]:
    cache = Path(args.logits) if args.logits else None
    if cache and cache.is_file():
        with np.load(cache) as f:
            return {k: f[k] for k in f.files}
    logits = model_logits(args.cifar_dir, args.h5, args.model == "int8")
    if cache:
        np.savez(cache, **logits)
    return logits


def mapie_sizes(p_cal, y_cal, p_test, y_test, alpha: float, seed: int) -> dict:
    """Coverage and mean set size of MAPIE's APS and RAPS with its default include_last_label=True, and of
    its APS with include_last_label="randomized" (the counterpart of our randomized APS)."""
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class GivenProbabilities(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.arange(np.asarray(X).shape[1])
            return self

        def predict_proba(self, X):
            return np.asarray(X)

        def predict(self, X):
            return np.asarray(X).argmax(1)

    out = {}
    for name in ("aps", "raps"):
        model = SplitConformalClassifier(
            GivenProbabilities().fit(p_cal, y_cal), 1 - alpha, name, prefit=True, random_state=seed
        ).conformalize(p_cal, y_cal)
        for rule, suffix in ((True, ""), ("randomized", " randomized")):
            if rule == "randomized" and name == "raps":
                continue  # MAPIE's randomized RAPS departs from the paper's rule (see tests/unit/confidence)
            sets = model.predict_set(p_test, conformity_score_params={"include_last_label": rule})[1][:, :, 0]
            out[f"MAPIE {name.upper()}{suffix}"] = {
                "coverage": float(sets[np.arange(len(y_test)), y_test].mean()),
                "mean_size": float(sets.sum(1).mean()),
            }
    return out


def evaluate_split(probs, logits, labels, alpha, crc_alpha, with_mapie, counter):
    def evaluate(cal, test):
        seed = next(counter)  # a fresh randomization per split
        out = {}
        for name, options in OURS.items():
            fit_on, extra = cal, {}
            if options["score"] == "raps":  # 10% of val chooses k_reg and lam, the rest fits (as MAPIE)
                tune, fit_on = np.split(np.random.default_rng(seed).permutation(cal), [len(cal) // 10])
                extra = dict(zip(("k_reg", "lam"), choose_raps_params(probs[tune], labels[tune], alpha)))
            model = fit_conformal(probs[fit_on], labels[fit_on], alpha, seed=seed, **options, **extra)
            out[name] = set_metrics(model.predict_sets(probs[test]), labels[test], probs[test])
        if with_mapie:
            out.update(mapie_sizes(probs[cal], labels[cal], probs[test], labels[test], alpha, seed))
        rule = fit_classwise_rejection(probs[cal], labels[cal], crc_alpha)
        global_t = choose_threshold(threshold_sweep(logits[cal], labels[cal]), "max_mcc").threshold
        both = compare_rejection(probs[test], labels[test], rule, global_t)
        for rule_name, metrics in both.items():
            out[rule_name] = metrics
        out["classwise"]["threshold"] = np.array(rule.thresholds)
        out["global"]["threshold"] = global_t
        return {f"{group}/{key}": value for group, metrics in out.items() for key, value in metrics.items()}

    return evaluate


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-dir", default=str(ROOT / ".cache" / "cifar-10-batches-py"))
    parser.add_argument("--h5", default=str(ROOT.parent / "shared" / "models" / "mlperf_tiny_resnet8_pretrained.h5"))
    parser.add_argument("--logits", help="npz cache of the test logits (written if missing)")
    parser.add_argument("--model", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--crc-alpha", type=float, default=0.1, help="level of the class-wise rejection rule")
    parser.add_argument("--splits", type=int, default=100)
    args = parser.parse_args()

    logits_by_model = load_logits(args)
    labels, raw = logits_by_model["labels"], logits_by_model[args.model].astype(np.float64)
    val, test = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0)
    ts = temperature_scaling.fit(raw[val], labels[val])
    logits, y = ts.apply(raw[test]), labels[test]
    probs = softmax(logits)
    try:
        import mapie

        peer = f"MAPIE {mapie.__version__}"
    except ImportError:
        peer = None
        print("MAPIE not installed: pip install mapie==1.6.0 (test-only peer); peer columns skipped")
    evaluate = evaluate_split(probs, logits, y, args.alpha, args.crc_alpha, peer is not None, itertools.count())
    spread = resplit(len(y), evaluate, n_splits=args.splits, cal_fraction=0.5, seed=0)
    n_val = round(0.5 * len(y))
    k = probs.shape[1]

    print(
        f"{args.model}: T = {ts.temperature:.4f} fitted on {len(val)} val images; test half {len(y)} images "
        f"(accuracy {(probs.argmax(1) == y).mean():.4f}), {args.splits} random splits into {n_val} conformal val / "
        f"{len(y) - n_val} test; alpha = {args.alpha}" + (f"; peer {peer}" if peer else "")
    )
    band = (1 - args.alpha, 1 - args.alpha + 1 / (n_val + 1))
    exact = math.ceil((n_val + 1) * (1 - args.alpha)) / (n_val + 1)
    print(f"\nexpected coverage band [{band[0]:.5f}, {band[1]:.5f}] (exact for tie-free scores: {exact:.5f})")
    print(f"{'method':<22}{'coverage mean [min, max] (MC s.e.)':>40}{'mean size (std)':>18}{'min class cov':>15}")
    methods = [m for m in [*OURS, "MAPIE APS", "MAPIE RAPS", "MAPIE APS randomized"] if f"{m}/coverage" in spread]
    for m in methods:
        cov, size = spread[f"{m}/coverage"], spread[f"{m}/mean_size"]
        se = cov["std"] / math.sqrt(args.splits)
        cls = spread.get(f"{m}/class_coverage")
        cls_text = f"{np.min(cls['mean']):>15.4f}" if cls else f"{'-':>15}"
        print(
            f"{m:<22}{cov['mean']:>13.5f} [{cov['min']:.4f}, {cov['max']:.4f}] ({se:.5f}){size['mean']:>10.3f} "
            f"({size['std']:.3f}){cls_text}"
        )
    print("\nmean set size by difficulty (rank of the true label under the calibrated probabilities; 1 = top-1 right)")
    groups = spread["APS/difficulty"]
    print(f"{'method':<16}" + "".join(f"{'rank ' + g:>11}" for g in groups))
    for m in OURS:
        print(f"{m:<16}" + "".join(f"{v:>11.3f}" for v in spread[f"{m}/size_by_difficulty"]["mean"]))
    print(f"\nMondrian per-class coverage (mean over splits), classes 0..{k - 1}")
    for m in ("LAC Mondrian", "APS Mondrian"):
        print(f"{m:<16}" + " ".join(f"{v:.4f}" for v in spread[f"{m}/class_coverage"]["mean"]))

    print("\ntargets")
    for m in ("LAC", "APS", "RAPS", "APS randomized"):
        mean = spread[f"{m}/coverage"]["mean"]
        se = spread[f"{m}/coverage"]["std"] / math.sqrt(args.splits)
        print(
            f"  {m} marginal coverage {mean:.5f} in [{band[0]:.5f}, {band[1]:.5f}]: {verdict(band[0] <= mean <= band[1])}"
            f" (within 2 MC s.e. = {2 * se:.5f} of the band: {verdict(band[0] - 2 * se <= mean <= band[1] + 2 * se)})"
        )
    for m in ("LAC Mondrian", "APS Mondrian"):
        worst = float(np.min(spread[f"{m}/class_coverage"]["mean"]))
        print(f"  {m}: every class's mean coverage >= 0.88 (lowest {worst:.4f}): {verdict(worst >= 0.88)}")
    if peer:
        for name in ("APS", "RAPS", "APS randomized"):
            ours, theirs = spread[f"{name}/mean_size"]["mean"], spread[f"MAPIE {name}/mean_size"]["mean"]
            same = " (the same randomized rule: equal in law)" if name == "APS randomized" else ""
            print(f"  mean {name} set size ours {ours:.4f} <= {peer} {theirs:.4f}: {verdict(ours <= theirs)}{same}")

    print(
        f"\nclass-wise rejection by conformal risk control at level {args.crc_alpha} (controls, per predicted class j, "
        "P(accepted and wrong | predicted j)) vs the global max-MCC threshold, both chosen on the conformal val part"
    )
    for rule in ("classwise", "global"):
        print(
            f"  {rule:<10} coverage {spread[f'{rule}/coverage']['mean']:.4f}, selective accuracy "
            f"{spread[f'{rule}/selective_accuracy']['mean']:.4f}"
        )
    print(
        f"  global threshold: mean {spread['global/threshold']['mean']:.4f} (std {spread['global/threshold']['std']:.4f})"
    )
    header = ("class", "t_j", "error cw", "error gl", "sel.risk cw", "sel.risk gl", "miss cw", "miss gl")
    print("  " + "".join(f"{h:>12}" for h in header))
    columns = [
        spread["classwise/threshold"]["mean"],
        *(
            spread[f"{r}/{m}"]["mean"]
            for m in ("class_error", "class_selective_risk", "miss_rate")
            for r in ("classwise", "global")
        ),
    ]
    for c in range(k):
        print("  " + f"{c:>12}" + "".join(f"{col[c]:>12.4f}" for col in columns))
    error = spread["classwise/class_error"]
    tol = 2 * error["std"] / math.sqrt(args.splits)
    worst = int(np.argmax(error["mean"]))
    print(
        "  (error: P(accepted and wrong | predicted j); sel.risk: wrong among the accepted predicted j; miss: share of "
        "true class j rejected or misclassified; cw: class-wise rule, gl: global threshold)"
    )
    print(
        f"  target: every class's mean error <= {args.crc_alpha} (up to 2 MC s.e.; highest mean: class {worst} "
        f"{error['mean'][worst]:.4f}): {verdict(bool((error['mean'] - tol <= args.crc_alpha).all()))}; "
        f"strictly: {verdict(bool((error['mean'] <= args.crc_alpha).all()))}"
    )
    misclassified = np.array([(probs.argmax(1)[y == c] != c).mean() for c in range(k)])
    print(
        f"  per-class miss rate is not what the rule controls: it is >= the class's misclassification rate "
        f"({', '.join(f'{v:.3f}' for v in misclassified)}), above {args.crc_alpha} for "
        f"{int((misclassified > args.crc_alpha).sum())} of {k} classes whatever the thresholds"
    )


if __name__ == "__main__":
    figures.run(main)
