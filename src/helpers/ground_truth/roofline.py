"""The roofline estimator, the project's first latency estimator, kept as the baseline the latency estimator is
measured against (``calib ground-truth validate``'s ``roofline_*`` columns) and as phase 05's view of throughput
against the peak (``runtime_latency.peak_table``, the efficiency curves' ``roofline``).

Model, per group = (runtime, precision)::

    subgraph_ms = max(FLOPs / P, bytes / B) + c         P effective peak (FLOP/ms), B effective
                                                        bandwidth (byte/ms), c overhead per subgraph
                                                        (one (P, B, c) per operation type with
                                                        ``by_operation_type``)

and, with the ``end_to_end`` target, the calibration of ``targets.fit_end_to_end``.

Fit, per group (and operation type): ``P, B, c`` by robust least squares
(``scipy.optimize.least_squares``, soft-L1 loss, parameters in log space so they stay positive,
``P`` at most the theoretical peak, the best of a few starting points: ``max`` makes the cost
non-convex) of every stored subgraph's error as a fraction of its record's subgraph total -- the
subgraphs that make up a model's latency weigh most. An operation type seen in fewer than
``MIN_TYPE_MODELS`` training models uses the group's shared roofline. A precision it was not fitted on
is predicted at the same fraction of its own theoretical peak (:func:`transferred`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from helpers.ground_truth.records import MeasurementRecord, SubgraphMeasurement
from helpers.ground_truth.targets import (
    MIN_TIMED_RECORDS,
    end_to_end_ms,
    fit_end_to_end,
    fitting_groups,
    group_of,
    subgraph_ms,
)

# (fraction of the theoretical peak, byte/ms, ms per subgraph): a compute-bound and a memory/overhead-bound
# start; on the real files of ../shared six more starts changed no LOMO figure
STARTS = ((0.02, 1e6, 1e-1), (0.2, 1e8, 1e-3))
MIN_TYPE_MODELS = (
    2  # an operation type has parameters of its own when seen in this many training models (both estimators)
)


@dataclass(frozen=True)
class Roofline:
    """One roofline: effective peak (FLOP/ms), effective bandwidth (byte/ms), overhead per subgraph (ms)."""

    peak_flops_per_ms: float
    bandwidth_bytes_per_ms: float
    overhead_ms: float

    def predict(self, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        return np.maximum(flops / self.peak_flops_per_ms, nbytes / self.bandwidth_bytes_per_ms) + self.overhead_ms


class EndToEnd:
    """The end-to-end calibration both estimators share: ``scale`` x the sum of the subgraphs' predictions
    (``predict_subgraphs``), plus ``per_subgraph_ms`` per subgraph and ``call_overhead_ms`` per call."""

    def predict(self, record: MeasurementRecord) -> float:
        return (
            self.scale * float(self.predict_subgraphs(record.subgraphs).sum())
            + self.per_subgraph_ms * len(record.subgraphs)
            + self.call_overhead_ms
        )


@dataclass(frozen=True)
class GroupParams(EndToEnd):
    """A (runtime, precision) group: its subgraph roofline(s) and its end-to-end calibration."""

    roofline: Roofline
    scale: float
    per_subgraph_ms: float
    call_overhead_ms: float
    theoretical_peak_flops: float
    by_type: dict[str, Roofline] = dataclasses.field(default_factory=dict)

    def predict_subgraphs(self, subgraphs: Sequence[SubgraphMeasurement]) -> np.ndarray:
        flops = np.array([s.flops for s in subgraphs], dtype=np.float64)
        nbytes = np.array([s.total_bytes for s in subgraphs], dtype=np.float64)
        predicted = self.roofline.predict(flops, nbytes)
        kinds = np.array([s.operation_type for s in subgraphs])
        for kind, roofline in self.by_type.items():
            mask = kinds == kind
            predicted[mask] = roofline.predict(flops[mask], nbytes[mask])
        return predicted

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.roofline),
            "peak_fraction": self.roofline.peak_flops_per_ms * 1e3 / self.theoretical_peak_flops,
            "scale": self.scale,
            "per_subgraph_ms": self.per_subgraph_ms,
            "call_overhead_ms": self.call_overhead_ms,
            "by_operation_type": {kind: dataclasses.asdict(r) for kind, r in sorted(self.by_type.items())},
        }


def _subgraph_table(records: Sequence[MeasurementRecord], target: str) -> pd.DataFrame:
    """FLOPs, bytes, ms (:func:`subgraph_ms`), the record's subgraph total, operation type and model per subgraph."""
    rows = []
    for record in records:
        measured = [subgraph_ms(s.measured_latency, target) for s in record.subgraphs]
        rows += [
            (s.flops, s.total_bytes, ms, sum(measured), s.operation_type, record.model)
            for s, ms in zip(record.subgraphs, measured)
        ]
    return pd.DataFrame(rows, columns=["flops", "bytes", "ms", "total", "operation_type", "model"])


def _fit_roofline(table: pd.DataFrame, peak_flops_per_ms: float) -> Roofline:
    """Robust least squares over the subgraphs of ``table``; the effective peak stays <= the theoretical.

    Each subgraph's error counts as a fraction of its record's measured subgraph total, so the
    subgraphs that make up most of a model's latency weigh most, and every record alike. The best
    of :data:`STARTS` is kept (the ``max`` makes the cost non-convex).
    """
    flops, nbytes, measured, total = (table[c].to_numpy(np.float64) for c in ("flops", "bytes", "ms", "total"))

    def residuals(theta):
        return (Roofline(*np.exp(theta)).predict(flops, nbytes) - measured) / total

    upper = [np.log(peak_flops_per_ms), np.inf, np.inf]
    fits = [
        least_squares(
            residuals,
            np.log([fraction * peak_flops_per_ms, bandwidth, overhead]),
            bounds=(-np.inf, upper),
            loss="soft_l1",
            f_scale=0.02,
            method="trf",
        )
        for fraction, bandwidth, overhead in STARTS
    ]
    best = min(fits, key=lambda fit: fit.cost)
    return Roofline(*(float(v) for v in np.exp(best.x)))


def _fit_group(records: list[MeasurementRecord], target: str, by_operation_type: bool) -> GroupParams:
    peak = records[0].theoretical_peak_flops
    table = _subgraph_table(records, target)
    by_type = {}
    if by_operation_type:
        for kind, rows in table.groupby("operation_type"):
            if rows["model"].nunique() >= MIN_TYPE_MODELS:
                by_type[kind] = _fit_roofline(rows, peak / 1e3)
    partial = GroupParams(_fit_roofline(table, peak / 1e3), 1.0, 0.0, 0.0, peak, by_type)
    timed = [r for r in records if end_to_end_ms(r) is not None]
    if target == "subgraph_sum" or len(timed) < MIN_TIMED_RECORDS:
        return partial
    scale, per_subgraph, call = fit_end_to_end(
        np.array([partial.predict(r) for r in timed]),
        np.array([len(r.subgraphs) for r in timed], dtype=np.float64),
        np.array([end_to_end_ms(r) for r in timed]),
    )
    return dataclasses.replace(partial, scale=scale, per_subgraph_ms=per_subgraph, call_overhead_ms=call)


@dataclass(frozen=True)
class RooflineEstimator:
    """Fitted roofline parameters per (runtime, precision) group, for one target."""

    groups: dict[str, GroupParams]
    target: str = "end_to_end"

    @classmethod
    def fit(
        cls, records: Sequence[MeasurementRecord], target: str = "end_to_end", by_operation_type: bool = False
    ) -> RooflineEstimator:
        groups = fitting_groups(records, target)
        return cls({group: _fit_group(rs, target, by_operation_type) for group, rs in groups.items()}, target)

    def predict(self, record: MeasurementRecord) -> float:
        """Predicted target latency (ms) of a record's model, from its subgraphs' FLOPs, bytes (and types)."""
        group = group_of(record)
        if group not in self.groups:
            raise KeyError(f"the estimator was fitted without {group} measurements; fitted: {', '.join(self.groups)}")
        return self.groups[group].predict(record)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters per group; the effective peak also as a fraction of the theoretical one."""
        return {name: group.to_dict() for name, group in self.groups.items()}

    def transferred(self, name: str, theoretical_peak_flops: float) -> GroupParams:
        """Group ``name`` for a precision of another theoretical peak: :func:`transferred`."""
        return transferred(self.groups[name], theoretical_peak_flops)


def transferred(group: GroupParams, theoretical_peak_flops: float) -> GroupParams:
    """``group``'s parameters for a precision it was not fitted on: every roofline's effective peak rescaled by the
    ratio of the two precisions' theoretical peaks (the same fraction of the peak); bandwidth and overheads kept."""
    ratio = theoretical_peak_flops / group.theoretical_peak_flops

    def rescale(roofline: Roofline) -> Roofline:
        return dataclasses.replace(roofline, peak_flops_per_ms=roofline.peak_flops_per_ms * ratio)

    return dataclasses.replace(
        group,
        roofline=rescale(group.roofline),
        theoretical_peak_flops=theoretical_peak_flops,
        by_type={kind: rescale(r) for kind, r in group.by_type.items()},
    )
