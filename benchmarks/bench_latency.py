"""Latency ground truth: estimator accuracy and measurement repeatability, in one run.

    .venv/bin/python benchmarks/bench_latency.py [--params params/ground_truth.yaml] [--repeats N]
                                                 [--models ...] [--out DIR]

Runs the sweep of the profile twice, into two fresh stores (the project's calibration_data/ is
not touched), then prints

(a) the latency estimator's leave-one-model-out error on end-to-end latency, fitted and
    validated on the first sweep: median APE over every (model, runtime, precision, batch)
    (target <= 10%), with the per-model/precision/batch MAPE table. The latency predicted and
    compared is the estimator's: the contention-free end-to-end latency
    (``latency_estimator.end_to_end_ms``: the minimum on-CPU time of the call);
(b) repeatability: for every configuration, the coefficient of variation of its end-to-end
    latency across the two sweeps, median over configurations (target <= 5%) -- for the
    contention-free latency and, beside it, for the wall-clock median, which also measures
    whatever else ran on the machine.

``--out DIR`` also writes the validation table (CSV) and the predicted-vs-measured figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import figures  # noqa: E402  (sibling: docs/FIGURES.md, regenerated from this run's output)

from helpers.ground_truth.campaign import SweepConfig, run_sweep  # noqa: E402
from helpers.ground_truth.estimator import leave_one_model_out, mape_table, predicted_vs_measured_figure  # noqa: E402
from helpers.ground_truth.hardware import hardware_id  # noqa: E402
from helpers.ground_truth.targets import end_to_end_ms  # noqa: E402
from helpers.run import atomic  # noqa: E402

MAPE_TARGET_PCT, CV_TARGET_PCT = 10.0, 5.0


def _cv_pct(first: pd.Series, second: pd.Series) -> pd.Series:
    pair = np.column_stack([first, second])
    return pd.Series(pair.std(axis=1, ddof=1) / pair.mean(axis=1) * 100, index=first.index)


def repeatability(first, second) -> pd.DataFrame:
    """Per configuration: both sweeps' latencies (contention-free, wall median) and their CVs (%)."""

    def table(records):
        return pd.DataFrame(
            {
                (r.model, r.runtime, r.precision, r.batch_size): {
                    "free_ms": end_to_end_ms(r),
                    "wall_p50_ms": r.model_summary.end_to_end_latency.p50,
                }
                for r in records
            }
        ).T

    a, b = table(first), table(second)
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    out = pd.DataFrame(
        {
            "free_ms_1": a["free_ms"],
            "free_ms_2": b["free_ms"],
            "free_cv_pct": _cv_pct(a["free_ms"], b["free_ms"]),
            "wall_p50_ms_1": a["wall_p50_ms"],
            "wall_p50_ms_2": b["wall_p50_ms"],
            "wall_p50_cv_pct": _cv_pct(a["wall_p50_ms"], b["wall_p50_ms"]),
        }
    )
    out.index.names = ["model", "runtime", "precision", "batch_size"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params" / "ground_truth.yaml")
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default: the profile's)")
    parser.add_argument("--models", nargs="+", help="only these models of the profile")
    parser.add_argument("--out", type=Path, help="write validation.csv and predicted_vs_measured.png here")
    args = parser.parse_args()
    config = SweepConfig.from_yaml(args.params)
    if args.repeats:
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, repeats=args.repeats))
    if args.models:
        config = dataclasses.replace(config, models=tuple(m for m in config.models if m.name in args.models))

    sweeps, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for i in (1, 2):
            start = time.perf_counter()
            sweeps.append(run_sweep(config, store=Path(tmp) / f"sweep_{i}"))
            seconds.append(time.perf_counter() - start)
    first, second = sweeps

    validation = leave_one_model_out(first.records)
    repeat = repeatability(first.records, second.records)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 40)
    print(
        f"\nmachine {hardware_id()}; {len(first.records)} configurations per sweep; sweeps took "
        f"{seconds[0]:.0f} s and {seconds[1]:.0f} s; skipped: {first.skipped or 'none'}"
    )
    print("\nLOMO absolute percentage error of end-to-end latency, per model x runtime/precision/batch:")
    print(mape_table(validation).round(1).to_string())
    print("\nmedian APE per runtime/precision:")
    print(validation.groupby(["runtime", "precision"])["ape_pct"].median().round(1).to_string())
    print("\nrepeatability across the two sweeps (end-to-end latency, ms, and CV %):")
    print(repeat.round(3).to_string())
    mape, cv, wall_cv = (
        validation["ape_pct"].median(),
        repeat["free_cv_pct"].median(),
        repeat["wall_p50_cv_pct"].median(),
    )
    warnings = first.warnings + second.warnings
    print(
        f"\nload average now: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; "
        f"{sum('CV' in w for w in warnings)} measurements flagged for a high CV, "
        f"{sum('off the CPU' in w for w in warnings)} for time off the CPU"
    )
    print(
        f"(a) estimator LOMO median MAPE, end-to-end (contention-free): {mape:.1f}%  "
        f"(target <= {MAPE_TARGET_PCT:.0f}%: {'met' if mape <= MAPE_TARGET_PCT else 'NOT met'})"
    )
    print(
        f"(b) repeatability, median CV across 2 sweeps: contention-free {cv:.1f}% (target <= "
        f"{CV_TARGET_PCT:.0f}%: {'met' if cv <= CV_TARGET_PCT else 'NOT met'}; "
        f"{np.mean(repeat['free_cv_pct'] <= CV_TARGET_PCT):.0%} of configurations within); "
        f"wall-clock median {wall_cv:.1f}% ({np.mean(repeat['wall_p50_cv_pct'] <= CV_TARGET_PCT):.0%} within)"
    )
    if args.out:
        atomic.write_text(args.out / "validation.csv", validation.to_csv(index=False))
        atomic.save_figure(predicted_vs_measured_figure(validation), args.out / "predicted_vs_measured.png")


if __name__ == "__main__":
    figures.run(main)
