"""What a latency estimator predicts, and what a measurement "is": targets, statistics, the end-to-end calibration.

Target (``target``): ``end_to_end`` -- the model's latency measured as one call, what the project's
own sweep records -- or ``subgraph_sum`` -- the sum of the subgraphs' mean latencies
(``model_summary.total_latency_ms``), which is all that v1.0 files and other tools' files measure.
:func:`target_for` picks ``end_to_end`` when every record has it.

What a measurement "is": the minimum of its samples (:func:`typical_ms`), and for the end-to-end
latency the on-CPU time when the record has it (:func:`end_to_end_ms`). Both remove the time
other processes took from a shared CPU, which is not a property of the model or the machine;
on an idle machine they equal the wall-clock latency. A subgraph's latency as a fit sees it
(:func:`subgraph_ms`) is its typical latency for ``end_to_end`` and its mean -- the statistic the
target sums -- for ``subgraph_sum``.

Every estimator predicts a record's subgraphs and sums them; with ``end_to_end``, the sum is then
calibrated to the measured call (:func:`fit_end_to_end`): ``end_to_end_ms = a * sum + b * n + C`` with
``n`` subgraphs, ``a, b, C`` the runtime's work between kernels and per call, net of the profiler's own
cost per node. The naive baseline (:func:`naive_ms`) is total FLOPs at the theoretical peak.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers.ground_truth.records import LatencyStats, MeasurementRecord

TARGETS = ("end_to_end", "subgraph_sum")
MIN_TIMED_RECORDS = 4  # records with an end-to-end latency needed to fit its calibration (3 unknowns)


def typical_ms(stats: LatencyStats) -> float:
    """The latency a sample stands for: its minimum (best of N, as ``timeit`` argues: slower calls
    measure other processes interfering, not the model)."""
    return stats.min


def end_to_end_ms(record: MeasurementRecord) -> float | None:
    """A record's contention-free end-to-end latency: the on-CPU time when recorded, else wall clock."""
    summary = record.model_summary
    stats = summary.end_to_end_cpu_time or summary.end_to_end_latency
    return typical_ms(stats) if stats is not None else None


def check_target(target: str) -> str:
    """``target``, if it is one of :data:`TARGETS`; else a ValueError naming the valid ones."""
    if target not in TARGETS:
        raise ValueError(f"target is {target!r}; valid targets: {', '.join(TARGETS)}")
    return target


def target_for(records: Sequence[MeasurementRecord]) -> str:
    """``end_to_end`` when every record has an end-to-end latency, else ``subgraph_sum``."""
    return "end_to_end" if all(end_to_end_ms(r) is not None for r in records) else "subgraph_sum"


def measured_ms(record: MeasurementRecord, target: str) -> float | None:
    """What the estimator predicts for a record: its end-to-end latency, or its summed subgraph means."""
    if check_target(target) == "end_to_end":
        return end_to_end_ms(record)
    return record.model_summary.total_latency_ms


def subgraph_ms(stats: LatencyStats, target: str) -> float:
    """A subgraph's latency as the fit sees it: typical (minimum) for ``end_to_end``, mean for ``subgraph_sum``."""
    return typical_ms(stats) if target == "end_to_end" else stats.mean


def naive_ms(record: MeasurementRecord) -> float:
    """The naive baseline: total FLOPs at the theoretical peak, in ms."""
    return record.model_summary.total_flops / record.theoretical_peak_flops * 1e3


def group_of(record: MeasurementRecord) -> str:
    """The (runtime, precision) group an estimator fits a record in: ``<runtime>/<precision>``."""
    return f"{record.runtime}/{record.precision}"


def fitting_groups(records: Sequence[MeasurementRecord], target: str) -> dict[str, list[MeasurementRecord]]:
    """``records`` by their :func:`group_of`, sorted by group: what every estimator fits one model per group on
    (refuses no records and an unknown ``target`` first)."""
    if not records:
        raise ValueError("cannot fit an estimator on no records; measure some with `calib ground-truth measure`")
    check_target(target)
    by_group: dict[str, list[MeasurementRecord]] = {}
    for record in records:
        by_group.setdefault(group_of(record), []).append(record)
    return dict(sorted(by_group.items()))


def fit_end_to_end(
    subgraph_sums: np.ndarray, subgraph_counts: np.ndarray, measured: np.ndarray
) -> tuple[float, float, float]:
    """(a, b, C) of ``end_to_end_ms = a * subgraph_sum + b * n + C`` by least squares of the *relative* error
    (latencies span three decades): given predicted subgraph sums, subgraph counts and measured latencies."""
    design = np.column_stack([subgraph_sums, subgraph_counts, np.ones_like(subgraph_sums)]) / measured[:, None]
    (scale, per_subgraph, call), *_ = np.linalg.lstsq(design, np.ones_like(measured), rcond=None)
    return float(scale), float(per_subgraph), float(call)
