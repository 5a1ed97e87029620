"""The latency estimator fitted on the ground truth, and its validation against the FLOPs baseline and the roofline.

Model, per group = (runtime, precision), per executed subgraph::

    subgraph_ms = o[type] + k * (nodes - 1) + bytes / B + FLOPs * e(log10(FLOPs / bytes))

* ``o[type]`` -- the launch/framework overhead of one subgraph of its operation type (a type seen in
  fewer than ``MIN_TYPE_MODELS`` training models shares one ``other`` overhead);
* ``k`` -- the overhead of every further node fused into the subgraph (a framework that runs a fused
  subgraph node by node pays per node: 0.2 ms for one node, 1.5-3.4 ms for 2-6 on the sample's Jetson);
* ``B`` -- the effective bandwidth;
* ``e`` -- milliseconds per FLOP as a function of arithmetic intensity, piecewise linear in
  ``log10(FLOP/byte)`` between knots at quantiles of the training subgraphs' intensities (flat beyond
  them): the efficiency curve, ``1 / (e * peak)`` at each knot. With the overhead terms it is also a
  curve in work size: a subgraph's efficiency ``FLOPs / (subgraph_ms * peak)`` rises with its FLOPs
  towards the curve's value, as the store's efficiency curves show.

With the ``end_to_end`` target the subgraph sum is calibrated to the measured call
(``targets.fit_end_to_end``). Every coefficient is >= 0 (a cost), fitted together by non-negative
least squares (``scipy.optimize.nnls``: convex, one solution, no starting points) of each subgraph's
error as a fraction of its record's measured subgraph total, so the subgraphs that make up a model's
latency weigh most and every record alike.

Fitted choices, each by a stated procedure on the training records only:

* the number of knots, from :data:`KNOT_CHOICES` (1: one FLOP rate for every intensity), by
  leave-one-model-out *within* the training records: the count whose held-out predictions have the
  least mean absolute log error (with fewer than ``MIN_SELECTION_MODELS`` models: 1);
* how a precision the estimator was not fitted on is predicted (:data:`TRANSFER_RULES`): from the same
  runtime's fitted precision of the nearest theoretical peak, either at the same fraction of its own
  peak (``peak``: the FLOP rate scaled by the ratio of the peaks, as for a precision the device runs
  natively) or at the same speed (``same``: as for a precision the device emulates, or a runtime whose
  subgraphs are launch-bound), the rule that predicts the fitted precisions from each other best (with
  one fitted precision: ``peak``). Each fitted precision has its own group, so a precision the device
  emulates is fitted at the efficiency it reaches, never assumed to reach its theoretical peak.

No constant is tuned by hand per machine; :data:`KNOT_CHOICES` and the rules are the same everywhere.

Validation (:func:`leave_one_out`): hold out each model (or batch size, or precision) in turn, fit on the
rest, predict its records; one row per record with the absolute percentage error of the estimator, of
the roofline (``roofline.RooflineEstimator``, the earlier estimator) and of the naive baseline (total
FLOPs / theoretical peak). With ``end_to_end``, records without one (v1.0) take part in fitting the
subgraph costs only. Given the store's repeats (``GroundTruthLoader.load_repeats``), the measured value
of a configuration measured more than once is the median over its repeats, and the row says how far they
spread (``repeat_spread_pct``: (max - min) / median): the noise floor below which no estimator error
means anything. :func:`lomo_summary` adds the share within +-10% and Spearman's rank correlation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from helpers.ground_truth.curves import write_efficiency_curves as write_efficiency_curves
from helpers.ground_truth.records import MeasurementRecord, SubgraphMeasurement
from helpers.ground_truth.roofline import MIN_TYPE_MODELS, EndToEnd
from helpers.ground_truth.roofline import RooflineEstimator as RooflineEstimator
from helpers.ground_truth.store import Configuration
from helpers.ground_truth.targets import (
    MIN_TIMED_RECORDS,
    end_to_end_ms,
    fit_end_to_end,
    fitting_groups,
    group_of,
    measured_ms,
    naive_ms,
    subgraph_ms,
)

KNOT_CHOICES = (1, 2, 3, 4, 6)  # knots of the efficiency curve the fit chooses among
MIN_SELECTION_MODELS = 3  # models needed to choose the knots by leave-one-model-out within the training records
TRANSFER_RULES = ("peak", "same")  # how a precision that was not fitted is predicted (module docstring)
OTHER = "other"  # the overhead shared by operation types seen in too few training models


# ---------------------------------------------------------------------------------------------- subgraph cost


@dataclass(frozen=True)
class SubgraphCost:
    """One group's cost of a subgraph (ms): overheads per operation type and per fused node, bytes, FLOPs."""

    overhead_ms: dict[str, float]  # per operation type; OTHER for the types seen in too few training models
    node_overhead_ms: float
    ms_per_byte: float
    knots: tuple[float, ...]  # log10(FLOP/byte)
    ms_per_flop: tuple[float, ...]  # at each knot; linear in between, flat beyond

    def parts(self, flops: np.ndarray, nbytes: np.ndarray, nodes: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """One row per subgraph of the given FLOPs, bytes, fused nodes and operation types: what its overheads (per
        type and per fused node), its bytes and its FLOPs cost (ms); a row sums to :meth:`predict`."""
        fallback = self.overhead_ms.get(OTHER, float(np.median(list(self.overhead_ms.values()))))
        overhead = np.array([self.overhead_ms.get(kind, fallback) for kind in kinds], dtype=np.float64)
        rate = _hats(_log_intensity(flops, nbytes, self.knots[0]), self.knots) @ np.array(self.ms_per_flop)
        return np.column_stack(
            [overhead + self.node_overhead_ms * (nodes - 1), self.ms_per_byte * nbytes, rate * flops]
        )

    def predict(self, flops: np.ndarray, nbytes: np.ndarray, nodes: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """Cost of each subgraph of the given FLOPs, bytes, fused nodes and operation types."""
        return self.parts(flops, nbytes, nodes, kinds).sum(axis=1)

    def at_flop_rate(self, factor: float) -> SubgraphCost:
        """The same cost with every FLOP ``factor`` times as fast."""
        return dataclasses.replace(self, ms_per_flop=tuple(v / factor for v in self.ms_per_flop))


def _log_intensity(flops: np.ndarray, nbytes: np.ndarray, default: float) -> np.ndarray:
    """log10(FLOP/byte) per subgraph; ``default`` where there are no FLOPs (their FLOP cost is 0 anyway)."""
    safe = np.where(flops > 0, flops, 1.0) / np.maximum(nbytes, 1.0)
    return np.where(flops > 0, np.log10(safe), default)


def _hats(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """Linear-interpolation weights of ``x`` on ``knots`` (rows sum to 1; flat beyond the outer knots)."""
    knots = np.asarray(knots, dtype=np.float64)
    if len(knots) == 1:
        return np.ones((len(x), 1))
    x = np.clip(x, knots[0], knots[-1])
    right = np.clip(np.searchsorted(knots, x, side="right"), 1, len(knots) - 1)
    fraction = (x - knots[right - 1]) / (knots[right] - knots[right - 1])
    weights = np.zeros((len(x), len(knots)))
    weights[np.arange(len(x)), right - 1] = 1 - fraction
    weights[np.arange(len(x)), right] += fraction
    return weights


class _Subgraphs:
    """A group's records as arrays, one row per subgraph, for fitting on subsets of records (cross-validation)."""

    def __init__(self, records: Sequence[MeasurementRecord], target: str):
        self.records = list(records)
        subgraphs = [(i, s) for i, r in enumerate(self.records) for s in r.subgraphs]
        self.record = np.array([i for i, _ in subgraphs], dtype=np.int64)
        self.flops = np.array([s.flops for _, s in subgraphs], dtype=np.float64)
        self.nbytes = np.array([s.total_bytes for _, s in subgraphs], dtype=np.float64)
        self.nodes = np.array([max(len(s.node_names), 1) for _, s in subgraphs], dtype=np.float64)
        self.kinds = np.array([s.operation_type for _, s in subgraphs], dtype=object)
        self.ms = np.array([subgraph_ms(s.measured_latency, target) for _, s in subgraphs], dtype=np.float64)
        self.total = np.bincount(self.record, weights=self.ms, minlength=len(self.records))
        self.models = np.array([r.model for r in self.records], dtype=object)

    def fit(self, use: np.ndarray, knot_count: int) -> SubgraphCost:
        """The cost fitted on the records ``use`` (a mask over records) with ``knot_count`` knots."""
        rows = use[self.record]
        flops, nbytes, nodes, kinds = self.flops[rows], self.nbytes[rows], self.nodes[rows], self.kinds[rows]
        models_of = self.models[self.record[rows]]
        seen = {k: len(set(models_of[kinds == k])) for k in sorted(set(kinds))}
        own = [k for k, count in seen.items() if count >= MIN_TYPE_MODELS]
        labels = np.where(np.isin(kinds, own), kinds, OTHER)
        types = own + ([OTHER] if (labels == OTHER).any() else [])
        computing = flops > 0
        intensity = _log_intensity(flops, nbytes, 0.0)
        quantiles = np.quantile(intensity[computing], np.linspace(0, 1, knot_count)) if computing.any() else [0.0]
        knots = tuple(float(v) for v in np.unique(quantiles))
        design = np.column_stack(
            [
                *[(labels == k).astype(np.float64) for k in types],
                nodes - 1,
                nbytes,
                _hats(_log_intensity(flops, nbytes, knots[0]), knots) * flops[:, None],
            ]
        )
        weight = 1 / self.total[self.record[rows]]
        weighted = design * weight[:, None]
        scale = np.abs(weighted).max(axis=0)
        scale[scale == 0] = 1.0
        coef, _ = nnls(weighted / scale, self.ms[rows] * weight)
        coef = coef / scale
        n = len(types)
        return SubgraphCost(
            overhead_ms={k: float(c) for k, c in zip(types, coef[:n])},
            node_overhead_ms=float(coef[n]),
            ms_per_byte=float(coef[n + 1]),
            knots=knots,
            ms_per_flop=tuple(float(c) for c in coef[n + 2 :]),
        )

    def predicted_sums(self, cost: SubgraphCost, which: np.ndarray) -> np.ndarray:
        """Predicted subgraph sum of each record of ``which`` (a mask over records), in record order."""
        rows = which[self.record]
        each = cost.predict(self.flops[rows], self.nbytes[rows], self.nodes[rows], self.kinds[rows])
        return np.bincount(self.record[rows], weights=each, minlength=len(self.records))[which]


# ---------------------------------------------------------------------------------------------- one group


@dataclass(frozen=True)
class LatencyGroup(EndToEnd):
    """A (runtime, precision) group: its subgraph cost, its end-to-end calibration, and how its knots were chosen."""

    cost: SubgraphCost
    scale: float
    per_subgraph_ms: float
    call_overhead_ms: float
    theoretical_peak_flops: float
    knots_chosen_by: str

    def predict_subgraphs(self, subgraphs: Sequence[SubgraphMeasurement]) -> np.ndarray:
        return self.cost.predict(*_work(subgraphs))

    def record_parts(self, record: MeasurementRecord) -> np.ndarray:
        """A record's predicted latency split into what its overheads, bytes and FLOPs cost (ms, summing to
        :meth:`predict`); the end-to-end calibration's terms per subgraph and per call count as overhead."""
        parts = self.scale * self.cost.parts(*_work(record.subgraphs)).sum(axis=0)
        parts[0] += self.per_subgraph_ms * len(record.subgraphs) + self.call_overhead_ms
        return parts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: overheads, bandwidth (None: bytes cost nothing), and the efficiency curve as fractions of
        the theoretical peak at each knot (None: FLOPs cost nothing there)."""
        cost = self.cost
        return {
            "operation_overhead_ms": dict(sorted(cost.overhead_ms.items())),
            "node_overhead_ms": cost.node_overhead_ms,
            "bandwidth_bytes_per_ms": 1 / cost.ms_per_byte if cost.ms_per_byte > 0 else None,
            "efficiency_curve": {
                "log10_flops_per_byte": list(cost.knots),
                "peak_fraction": [1e3 / (v * self.theoretical_peak_flops) if v > 0 else None for v in cost.ms_per_flop],
            },
            "knots_chosen_by": self.knots_chosen_by,
            "scale": self.scale,
            "per_subgraph_ms": self.per_subgraph_ms,
            "call_overhead_ms": self.call_overhead_ms,
        }


def _work(subgraphs: Sequence[SubgraphMeasurement]) -> tuple[np.ndarray, ...]:
    """(FLOPs, bytes, fused nodes, operation types) of each subgraph: what a subgraph cost is a function of."""
    return (
        np.array([s.flops for s in subgraphs], dtype=np.float64),
        np.array([s.total_bytes for s in subgraphs], dtype=np.float64),
        np.array([max(len(s.node_names), 1) for s in subgraphs], dtype=np.float64),
        np.array([s.operation_type for s in subgraphs], dtype=object),
    )


def _fit_at(table: _Subgraphs, use: np.ndarray, target: str, knot_count: int, chosen_by: str) -> LatencyGroup:
    """A group fitted on the records ``use`` of ``table`` with ``knot_count`` knots (and its end-to-end calibration
    when ``target`` is ``end_to_end`` and at least ``MIN_TIMED_RECORDS`` of them have one)."""
    cost = table.fit(use, knot_count)
    peak = table.records[int(np.flatnonzero(use)[0])].theoretical_peak_flops
    group = LatencyGroup(cost, 1.0, 0.0, 0.0, peak, chosen_by)
    timed = use & np.array([end_to_end_ms(r) is not None for r in table.records])
    if target == "subgraph_sum" or timed.sum() < MIN_TIMED_RECORDS:
        return group
    records = [r for r, t in zip(table.records, timed) if t]
    scale, per_subgraph, call = fit_end_to_end(
        table.predicted_sums(cost, timed),
        np.array([len(r.subgraphs) for r in records], dtype=np.float64),
        np.array([end_to_end_ms(r) for r in records]),
    )
    return dataclasses.replace(group, scale=scale, per_subgraph_ms=per_subgraph, call_overhead_ms=call)


def _log_errors(group: LatencyGroup, records: Sequence[MeasurementRecord], target: str) -> list[float]:
    """|log(predicted / measured)| of each record with a ``target`` latency: the score of the fitted choices (infinite
    for a prediction <= 0, which an end-to-end calibration with a negative term can give)."""
    errors = []
    for record in records:
        if measured := measured_ms(record, target):
            predicted = group.predict(record)
            errors.append(abs(np.log(predicted / measured)) if predicted > 0 else np.inf)
    return errors


def _choose_knots(table: _Subgraphs, use: np.ndarray, target: str) -> tuple[int, str]:
    """(knot count, how it was chosen) for the records ``use``: the count of :data:`KNOT_CHOICES` whose
    leave-one-model-out predictions *within those records* have the least mean absolute log error."""
    models = sorted(set(table.models[use]))
    if len(models) < MIN_SELECTION_MODELS:
        return 1, f"default: {len(models)} model(s), fewer than {MIN_SELECTION_MODELS} to choose by"
    scores = {}
    for count in KNOT_CHOICES:
        errors = []
        for model in models:
            held = use & (table.models == model)
            group = _fit_at(table, use & ~held, target, count, "")
            errors += _log_errors(group, [r for r, h in zip(table.records, held) if h], target)
        scores[count] = float(np.mean(errors)) if errors else np.inf
    best = min(KNOT_CHOICES, key=lambda c: (scores[c], c))
    return best, f"leave-one-model-out over {len(models)} training models: {best} of {list(KNOT_CHOICES)}"


def fit_group(records: Sequence[MeasurementRecord], target: str, knots: int | None = None) -> LatencyGroup:
    """One group's estimator on ``records``: with ``knots`` given, that many knots; else :func:`_choose_knots`."""
    table = _Subgraphs(records, target)
    use = np.ones(len(table.records), dtype=bool)
    count, chosen_by = (knots, "given") if knots is not None else _choose_knots(table, use, target)
    return _fit_at(table, use, target, count, chosen_by)


# ---------------------------------------------------------------------------------------------- the estimator


def transfer(group: LatencyGroup, theoretical_peak_flops: float, rule: str) -> LatencyGroup:
    """``group`` for a precision of another theoretical peak: at the same fraction of the peak (``peak``) or at the
    same speed (``same``); overheads, bandwidth and calibration kept."""
    if rule not in TRANSFER_RULES:
        raise ValueError(f"transfer rule {rule!r}; valid: {', '.join(TRANSFER_RULES)}")
    factor = theoretical_peak_flops / group.theoretical_peak_flops if rule == "peak" else 1.0
    return dataclasses.replace(
        group, cost=group.cost.at_flop_rate(factor), theoretical_peak_flops=theoretical_peak_flops
    )


def choose_transfer(
    groups: Mapping[str, LatencyGroup], records: Sequence[MeasurementRecord], target: str
) -> dict[str, tuple[str, str]]:
    """Per runtime: (rule, how it was chosen) -- the rule of :data:`TRANSFER_RULES` that predicts each fitted
    precision's records from every other fitted precision's group with the least mean absolute log error."""
    chosen = {}
    for runtime in sorted({name.split("/")[0] for name in groups}):
        names = [name for name in sorted(groups) if name.split("/")[0] == runtime]
        if len(names) < 2:
            chosen[runtime] = ("peak", "default: one fitted precision")
            continue
        scores = {}
        for rule in TRANSFER_RULES:
            errors = []
            for source in names:
                for target_name in names:
                    if source != target_name:
                        own = [r for r in records if group_of(r) == target_name]
                        moved = transfer(groups[source], own[0].theoretical_peak_flops, rule)
                        errors += _log_errors(moved, own, target)
            scores[rule] = float(np.mean(errors)) if errors else np.inf
        best = min(TRANSFER_RULES, key=lambda r: scores[r])
        chosen[runtime] = (best, f"predicts {', '.join(names)} from each other best")
    return chosen


@dataclass(frozen=True)
class LatencyEstimator:
    """Fitted subgraph costs per (runtime, precision) group, for one target, and the transfer rule per runtime."""

    groups: dict[str, LatencyGroup]
    target: str = "end_to_end"
    transfer_rules: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, records: Sequence[MeasurementRecord], target: str = "end_to_end", knots: int | None = None
    ) -> LatencyEstimator:
        """Fit every group of ``records``; ``knots`` fixes the knot count (default: chosen per group)."""
        groups = {name: fit_group(rs, target, knots) for name, rs in fitting_groups(records, target).items()}
        return cls(groups, target, choose_transfer(groups, records, target))

    def predict(self, record: MeasurementRecord) -> float:
        """Predicted target latency (ms) of a record's model, from its subgraphs' work, nodes and types."""
        group = group_of(record)
        if group not in self.groups:
            raise KeyError(f"the estimator was fitted without {group} measurements; fitted: {', '.join(self.groups)}")
        return self.groups[group].predict(record)

    def transferred(self, name: str, theoretical_peak_flops: float) -> LatencyGroup:
        """Group ``name`` for a precision of another theoretical peak, by its runtime's fitted rule."""
        rule = self.transfer_rules.get(name.split("/")[0], ("peak", ""))[0]
        return transfer(self.groups[name], theoretical_peak_flops, rule)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters per group, each with the transfer rule of its runtime."""
        return {
            name: {**group.to_dict(), "transfer_rule": self.transfer_rules[name.split("/")[0]][0]}
            for name, group in self.groups.items()
        }


# ---------------------------------------------------------------------------------------------- validation


def repeat_spread(
    record: MeasurementRecord, target: str, repeats: Mapping[Configuration, Sequence[MeasurementRecord]] | None
) -> tuple[float | None, int, float]:
    """(measured value, number of repeats, their spread in %) of a record's configuration: with several repeats
    the median of their ``target`` latencies and (max - min) / median; else the record's own value, 1, NaN."""
    values = [v for r in (repeats or {}).get(Configuration.of(record), [record]) if (v := measured_ms(r, target))]
    if len(values) < 2:
        return measured_ms(record, target), 1, float("nan")
    median = float(np.median(values))
    return median, len(values), (max(values) - min(values)) / median * 100


HELD_OUT = ("model", "batch_size", "precision")  # what a leave-one-out validation holds out (:func:`leave_one_out`)
SUMMARY_METRICS = (
    "models",
    "predictions",
    "median_ape_pct",
    "p90_ape_pct",
    "within_10_pct",
    "spearman",
    "roofline_median_ape_pct",
    "roofline_p90_ape_pct",
    "roofline_within_10_pct",
    "roofline_spearman",
    "naive_median_ape_pct",
    "naive_p90_ape_pct",
    "naive_within_10_pct",
    "naive_spearman",
    "median_repeat_spread_pct",
)
WITHIN_PCT = 10.0  # the tolerance of the "within" share: predictions within +-10% of the measurement
COLUMNS = (
    "held_out",
    "hardware_id",
    "model",
    "runtime",
    "precision",
    "batch_size",
    "measured_ms",
    "predicted_ms",
    "ape_pct",
    "roofline_ms",
    "roofline_ape_pct",
    "naive_ms",
    "naive_ape_pct",
    "repeats",
    "repeat_spread_pct",
)


def validation_row(
    held_out: str,
    record: MeasurementRecord,
    measured: float,
    predicted: float,
    roofline: float,
    naive: float,
    repeats: int = 1,
    spread: float = float("nan"),
) -> dict[str, Any]:
    """One row of a validation table (:data:`COLUMNS`): a held-out record's measured latency beside the estimator's,
    the roofline's and the FLOPs/peak prediction, each with its absolute percentage error."""
    return {
        "held_out": held_out,
        "hardware_id": record.hardware_id,
        "model": record.model,
        "runtime": record.runtime,
        "precision": record.precision,
        "batch_size": record.batch_size,
        "measured_ms": measured,
        "predicted_ms": predicted,
        "ape_pct": abs(predicted - measured) / measured * 100,
        "roofline_ms": roofline,
        "roofline_ape_pct": abs(roofline - measured) / measured * 100,
        "naive_ms": naive,
        "naive_ape_pct": abs(naive - measured) / measured * 100,
        "repeats": repeats,
        "repeat_spread_pct": spread,
    }


def nearest_precision_params(estimator, record: MeasurementRecord):
    """For a record whose precision was left out of the fit: the group of the same runtime's fitted precision with
    the nearest theoretical peak, transferred to the record's peak by ``estimator.transferred`` (a
    :class:`LatencyEstimator` or ``RooflineEstimator``); None when its runtime was not fitted at all."""
    same_runtime = [name for name in sorted(estimator.groups) if name.split("/")[0] == record.runtime]
    if not same_runtime:
        return None
    peak = record.theoretical_peak_flops
    nearest = min(same_runtime, key=lambda n: abs(np.log(estimator.groups[n].theoretical_peak_flops / peak)))
    return estimator.transferred(nearest, peak)


def leave_one_out(
    records: Sequence[MeasurementRecord],
    held_out: str = "model",
    target: str = "end_to_end",
    by_operation_type: bool = False,
    repeats: Mapping[Configuration, Sequence[MeasurementRecord]] | None = None,
) -> pd.DataFrame:
    """One row per record with a ``target`` latency: measured vs predicted by the :class:`LatencyEstimator` fitted on
    the records whose ``held_out`` (``model``, ``batch_size`` or ``precision``) differs from its own, beside the
    roofline fitted on the same records (``by_operation_type``: one roofline per operation type) and the naive
    baseline (``targets.naive_ms``). A left-out precision is predicted from the nearest fitted one
    (:func:`nearest_precision_params`). Nothing of a held-out record reaches the fit, its fitted choices included.
    Records of one machine (``hardware_id`` is a column), one per configuration (the fit uses them); ``repeats``
    (every measurement per configuration) make the measured value the median over the repeats and add their count
    and spread (:func:`repeat_spread`)."""
    if held_out not in HELD_OUT:
        raise ValueError(f"cannot hold out {held_out!r}; one of {', '.join(HELD_OUT)}")
    values = sorted({getattr(r, held_out) for r in records})
    if len(values) < 2:
        raise ValueError(f"leave-one-{held_out}-out needs at least two {held_out}s, got {values}")
    rows = []
    for value in values:
        training = [r for r in records if getattr(r, held_out) != value]
        estimators = (
            LatencyEstimator.fit(training, target),
            RooflineEstimator.fit(training, target, by_operation_type),
        )
        for record in records:
            if getattr(record, held_out) != value:
                continue
            measured, count, spread = repeat_spread(record, target, repeats)
            params = [e.groups.get(group_of(record)) for e in estimators]
            if held_out == "precision":
                params = [nearest_precision_params(e, record) for e in estimators]
            if measured is None or None in params:
                continue  # None: nothing measured in its group (or runtime) left to predict from
            predicted, roofline = (p.predict(record) for p in params)
            rows.append(
                validation_row(held_out, record, measured, predicted, roofline, naive_ms(record), count, spread)
            )
    return pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(list(COLUMNS[:6]), ignore_index=True)


def leave_one_model_out(
    records: Sequence[MeasurementRecord],
    target: str = "end_to_end",
    by_operation_type: bool = False,
    repeats: Mapping[Configuration, Sequence[MeasurementRecord]] | None = None,
) -> pd.DataFrame:
    """:func:`leave_one_out` holding out each model in turn."""
    return leave_one_out(records, "model", target, by_operation_type, repeats)


def spearman(predicted: pd.Series, measured: pd.Series) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties averaged); NaN under 3 pairs."""
    if len(predicted) < 3:
        return float("nan")
    return float(predicted.rank().corr(measured.rank()))


def within_pct(ape_pct: pd.Series, tolerance: float = WITHIN_PCT) -> float:
    """The share (%) of predictions within +-``tolerance`` % of the measurement."""
    return float((ape_pct <= tolerance).mean() * 100)


def lomo_summary(validation: pd.DataFrame) -> pd.DataFrame:
    """Per (held out, hardware, runtime, precision): models, predictions, median and p90 APE, the share within
    +-10% and Spearman's rank correlation of predicted with measured latency, the same for the roofline and the
    naive baseline, and the median spread across repeats where configurations were measured more than once
    (NaN where none was)."""

    def metrics(rows: pd.DataFrame, prefix: str, predicted: str) -> dict:
        ape = rows[f"{prefix}ape_pct"]
        return {
            f"{prefix}median_ape_pct": ape.median(),
            f"{prefix}p90_ape_pct": ape.quantile(0.9),
            f"{prefix}within_10_pct": within_pct(ape),
            f"{prefix}spearman": spearman(rows[predicted], rows["measured_ms"]),
        }

    def row(rows: pd.DataFrame) -> dict:
        return {  # keys: SUMMARY_METRICS
            "models": rows["model"].nunique(),
            "predictions": len(rows),
            **metrics(rows, "", "predicted_ms"),
            **metrics(rows, "roofline_", "roofline_ms"),
            **metrics(rows, "naive_", "naive_ms"),
            "median_repeat_spread_pct": rows["repeat_spread_pct"].median(),
        }

    keys = ["held_out", "hardware_id", "runtime", "precision"]
    return pd.DataFrame(
        [{**dict(zip(keys, key)), **row(rows)} for key, rows in validation.groupby(keys, sort=False)],
        columns=[*keys, *SUMMARY_METRICS],
    ).astype({"models": int, "predictions": int})


def estimator_report(records: Sequence[MeasurementRecord]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """estimator.json content and the LOMO validation table (None when it cannot be computed).

    The estimator (:class:`LatencyEstimator`) is fitted on all ``records``; the leave-one-model-out summary
    (median APE, MAPE per model and per runtime/precision/batch) needs two models sharing a runtime/precision
    group, and otherwise says why it is absent instead of failing.
    """
    models = sorted({r.model for r in records})
    report: dict[str, Any] = {
        "models": models,
        "records": len(records),
        "groups": LatencyEstimator.fit(records).to_dict(),
    }
    validation = leave_one_model_out(records) if len(models) >= 2 else None
    if validation is None or validation.empty:
        report["lomo"] = {
            "available": False,
            "reason": f"leave-one-model-out needs two models measured in one runtime/precision; the "
            f"store holds {models}. Add models with `calib ground-truth measure`",
        }
        return report, None
    by_group = validation.groupby(["runtime", "precision", "batch_size"])["ape_pct"].mean()
    report["lomo"] = {
        "available": True,
        "predictions": len(validation),
        "median_ape_pct": float(validation["ape_pct"].median()),
        "mape_pct": float(validation["ape_pct"].mean()),
        "mape_pct_by_model": validation.groupby("model")["ape_pct"].mean().to_dict(),
        "mape_pct_by_group": {f"{rt}/{p}/b{b}": v for (rt, p, b), v in by_group.items()},
    }
    return report, validation


def mape_table(validation: pd.DataFrame) -> pd.DataFrame:
    """MAPE (%) per model (rows) and runtime/precision/batch (columns) from a validation table."""
    return validation.pivot_table(index="model", columns=["runtime", "precision", "batch_size"], values="ape_pct")


def predicted_vs_measured_figure(validation: pd.DataFrame):
    """Log-log scatter of predicted against measured latency, one marker per group."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for (runtime, precision), rows in validation.groupby(["runtime", "precision"]):
        ax.scatter(rows["measured_ms"], rows["predicted_ms"], label=f"{runtime} {precision}", s=18)
    lo = min(validation["measured_ms"].min(), validation["predicted_ms"].min()) / 1.5
    hi = max(validation["measured_ms"].max(), validation["predicted_ms"].max()) * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="predicted = measured")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="measured end-to-end latency (ms)",
        ylabel="predicted (ms), model left out",
        title=f"latency estimator, LOMO: median APE {validation['ape_pct'].median():.1f}%",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
