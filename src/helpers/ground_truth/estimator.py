"""A roofline latency estimator fitted on the ground truth, and its leave-one-model-out validation.

Model, per group = (runtime, precision)::

    subgraph_ms = max(FLOPs / P, bytes / B) + c         P effective peak (FLOP/ms), B effective
                                                        bandwidth (byte/ms), c overhead per subgraph
                                                        (one (P, B, c) per operation type with
                                                        ``by_operation_type``)
    end_to_end_ms = a * sum(subgraph_ms) + b * n + C    n subgraphs; a, b, C: the runtime's work
                                                        between kernels and per call, net of the
                                                        profiler's own cost per node

Target (``target``): ``end_to_end`` -- the model's latency measured as one call, what the project's
own sweep records -- or ``subgraph_sum`` -- the sum of the subgraphs' mean latencies
(``model_summary.total_latency_ms``), which is all that v1.0 files and other tools' files measure:
then the estimator predicts that sum (``a=1, b=C=0``) and its subgraph statistic is the mean, the
statistic the target sums. :func:`target_for` picks ``end_to_end`` when every record has it.

Fit, per group (and operation type): ``P, B, c`` by robust least squares
(``scipy.optimize.least_squares``, soft-L1 loss, parameters in log space so they stay positive,
``P`` at most the theoretical peak, the best of a few starting points: ``max`` makes the cost
non-convex) of every stored subgraph's error as a fraction of its record's subgraph total -- the
subgraphs that make up a model's latency weigh most. Then ``a, b, C`` by least squares of the
*relative* error of the end-to-end latency (latencies span three decades), given at least 4 timed records. One roofline
per group by default: with a handful of models, per-type fits did not carry over to a left-out
model (leave-one-model-out error 29-35% against 22-27% on the project's own small sweeps). With
10-15 models per machine (the real files of ``../shared``) per-type fits win (median 10-12% against
8-16%, ``benchmarks/bench_ground_truth.py``); an operation type seen in fewer than
``MIN_TYPE_MODELS`` training models uses the group's shared roofline.

What a measurement "is": the minimum of its samples (:func:`typical_ms`), and for the end-to-end
latency the on-CPU time when the record has it (:func:`end_to_end_ms`). Both remove the time
other processes took from a shared CPU, which is not a property of the model or the machine;
on an idle machine they equal the wall-clock latency.

Validation (:func:`leave_one_model_out`): for each model, fit on every other model's records and
predict its target latencies; the table holds one row per (model, runtime, precision, batch)
with the absolute percentage error, beside the naive baseline total FLOPs / theoretical peak.
With ``end_to_end``, records without one (v1.0) take part in fitting the subgraph parameters only.
Given the store's repeats (``GroundTruthLoader.load_repeats``), the measured value of a configuration
measured more than once is the median over its repeats, and the row says how far they spread
(``repeat_spread_pct``: (max - min) / median): the noise floor below which no estimator error means
anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from helpers.ground_truth.layout import efficiency_curves_dir
from helpers.ground_truth.records import LatencyStats, MeasurementRecord, SubgraphMeasurement
from helpers.ground_truth.store import Configuration, GroundTruthLoader
from helpers.run import atomic

TARGETS = ("end_to_end", "subgraph_sum")
# (fraction of the theoretical peak, byte/ms, ms per subgraph): a compute-bound and a memory/overhead-bound
# start; on the real files of ../shared six more starts changed no LOMO figure
STARTS = ((0.02, 1e6, 1e-1), (0.2, 1e8, 1e-3))
MIN_TYPE_MODELS = 2


def typical_ms(stats: LatencyStats) -> float:
    """The latency a sample stands for: its minimum (best of N, as ``timeit`` argues: slower calls
    measure other processes interfering, not the model)."""
    return stats.min


def end_to_end_ms(record: MeasurementRecord) -> float | None:
    """A record's contention-free end-to-end latency: the on-CPU time when recorded, else wall clock."""
    summary = record.model_summary
    stats = summary.end_to_end_cpu_time or summary.end_to_end_latency
    return typical_ms(stats) if stats is not None else None


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target is {target!r}; valid targets: {', '.join(TARGETS)}")
    return target


def target_for(records: Sequence[MeasurementRecord]) -> str:
    """``end_to_end`` when every record has an end-to-end latency, else ``subgraph_sum``."""
    return "end_to_end" if all(end_to_end_ms(r) is not None for r in records) else "subgraph_sum"


def measured_ms(record: MeasurementRecord, target: str) -> float | None:
    """What the estimator predicts for a record: its end-to-end latency, or its summed subgraph means."""
    if _check_target(target) == "end_to_end":
        return end_to_end_ms(record)
    return record.model_summary.total_latency_ms


def subgraph_ms(stats: LatencyStats, target: str) -> float:
    """A subgraph's latency as the fit sees it: typical (minimum) for ``end_to_end``, mean for ``subgraph_sum``."""
    return typical_ms(stats) if target == "end_to_end" else stats.mean


def naive_ms(record: MeasurementRecord) -> float:
    """The naive baseline: total FLOPs at the theoretical peak, in ms."""
    return record.model_summary.total_flops / record.theoretical_peak_flops * 1e3


def group_of(record: MeasurementRecord) -> str:
    return f"{record.runtime}/{record.precision}"


@dataclass(frozen=True)
class Roofline:
    """One roofline: effective peak (FLOP/ms), effective bandwidth (byte/ms), overhead per subgraph (ms)."""

    peak_flops_per_ms: float
    bandwidth_bytes_per_ms: float
    overhead_ms: float

    def predict(self, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        return np.maximum(flops / self.peak_flops_per_ms, nbytes / self.bandwidth_bytes_per_ms) + self.overhead_ms


@dataclass(frozen=True)
class GroupParams:
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

    def predict(self, record: MeasurementRecord) -> float:
        return (
            self.scale * float(self.predict_subgraphs(record.subgraphs).sum())
            + self.per_subgraph_ms * len(record.subgraphs)
            + self.call_overhead_ms
        )

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
    if target == "subgraph_sum" or len(timed) < 4:
        return partial
    x = np.array([partial.predict(r) for r in timed])
    n = np.array([len(r.subgraphs) for r in timed], dtype=np.float64)
    y = np.array([end_to_end_ms(r) for r in timed])
    design = np.column_stack([x, n, np.ones_like(x)]) / y[:, None]  # relative errors: weight 1/y
    (scale, per_subgraph, call), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    return dataclasses.replace(
        partial, scale=float(scale), per_subgraph_ms=float(per_subgraph), call_overhead_ms=float(call)
    )


@dataclass(frozen=True)
class RooflineEstimator:
    """Fitted roofline parameters per (runtime, precision) group, for one target."""

    groups: dict[str, GroupParams]
    target: str = "end_to_end"

    @classmethod
    def fit(
        cls, records: Sequence[MeasurementRecord], target: str = "end_to_end", by_operation_type: bool = False
    ) -> RooflineEstimator:
        if not records:
            raise ValueError("cannot fit an estimator on no records; measure some with `calib ground-truth measure`")
        _check_target(target)
        by_group: dict[str, list[MeasurementRecord]] = {}
        for record in records:
            by_group.setdefault(group_of(record), []).append(record)
        return cls({group: _fit_group(rs, target, by_operation_type) for group, rs in sorted(by_group.items())}, target)

    def predict(self, record: MeasurementRecord) -> float:
        """Predicted target latency (ms) of a record's model, from its subgraphs' FLOPs, bytes (and types)."""
        group = group_of(record)
        if group not in self.groups:
            raise KeyError(f"the estimator was fitted without {group} measurements; fitted: {', '.join(self.groups)}")
        return self.groups[group].predict(record)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters per group; the effective peak also as a fraction of the theoretical one."""
        return {name: group.to_dict() for name, group in self.groups.items()}


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
    "naive_median_ape_pct",
    "naive_p90_ape_pct",
    "naive_within_10_pct",
    "naive_spearman",
    "median_repeat_spread_pct",
)
WITHIN_PCT = 10.0  # the tolerance of the "within" share: predictions within +-10% of the measurement


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


def nearest_precision_params(estimator: RooflineEstimator, record: MeasurementRecord) -> GroupParams | None:
    """For a record whose precision was left out of the fit: the parameters of the same runtime's fitted precision
    with the nearest theoretical peak, :func:`transferred` to the record's peak; None when its runtime was not
    fitted at all."""
    same_runtime = [g for name, g in sorted(estimator.groups.items()) if name.split("/")[0] == record.runtime]
    if not same_runtime:
        return None
    nearest = min(same_runtime, key=lambda g: abs(np.log(g.theoretical_peak_flops / record.theoretical_peak_flops)))
    return transferred(nearest, record.theoretical_peak_flops)


def leave_one_out(
    records: Sequence[MeasurementRecord],
    held_out: str = "model",
    target: str = "end_to_end",
    by_operation_type: bool = False,
    repeats: Mapping[Configuration, Sequence[MeasurementRecord]] | None = None,
) -> pd.DataFrame:
    """One row per record with a ``target`` latency: measured vs predicted by the estimator fitted on the records
    whose ``held_out`` (``model``, ``batch_size`` or ``precision``) differs from its own, and the naive baseline
    (:func:`naive_ms`). A left-out precision is predicted from the nearest fitted one
    (:func:`nearest_precision_params`).
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
        estimator = RooflineEstimator.fit(
            [r for r in records if getattr(r, held_out) != value], target, by_operation_type
        )
        for record in records:
            measured, count, spread = repeat_spread(record, target, repeats)
            params = estimator.groups.get(group_of(record))
            if params is None and held_out == "precision":
                params = nearest_precision_params(estimator, record)
            if getattr(record, held_out) != value or measured is None or params is None:
                continue  # params None: nothing measured in its group (or runtime) left to predict from
            predicted, naive = params.predict(record), naive_ms(record)
            rows.append(
                {
                    "held_out": held_out,
                    "hardware_id": record.hardware_id,
                    "model": record.model,
                    "runtime": record.runtime,
                    "precision": record.precision,
                    "batch_size": record.batch_size,
                    "measured_ms": measured,
                    "predicted_ms": predicted,
                    "ape_pct": abs(predicted - measured) / measured * 100,
                    "naive_ms": naive,
                    "naive_ape_pct": abs(naive - measured) / measured * 100,
                    "repeats": count,
                    "repeat_spread_pct": spread,
                }
            )
    columns = [
        "held_out",
        "hardware_id",
        "model",
        "runtime",
        "precision",
        "batch_size",
        "measured_ms",
        "predicted_ms",
        "ape_pct",
        "naive_ms",
        "naive_ape_pct",
        "repeats",
        "repeat_spread_pct",
    ]
    return pd.DataFrame(rows, columns=columns).sort_values(columns[:6], ignore_index=True)


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
    +-10% and Spearman's rank correlation of predicted with measured latency, the same for the naive baseline, and
    the median spread across repeats where configurations were measured more than once (NaN where none was)."""

    def row(rows: pd.DataFrame) -> dict:
        return {  # keys: SUMMARY_METRICS
            "models": rows["model"].nunique(),
            "predictions": len(rows),
            "median_ape_pct": rows["ape_pct"].median(),
            "p90_ape_pct": rows["ape_pct"].quantile(0.9),
            "within_10_pct": within_pct(rows["ape_pct"]),
            "spearman": spearman(rows["predicted_ms"], rows["measured_ms"]),
            "naive_median_ape_pct": rows["naive_ape_pct"].median(),
            "naive_p90_ape_pct": rows["naive_ape_pct"].quantile(0.9),
            "naive_within_10_pct": within_pct(rows["naive_ape_pct"]),
            "naive_spearman": spearman(rows["naive_ms"], rows["measured_ms"]),
            "median_repeat_spread_pct": rows["repeat_spread_pct"].median(),
        }

    keys = ["held_out", "hardware_id", "runtime", "precision"]
    return pd.DataFrame(
        [{**dict(zip(keys, key)), **row(rows)} for key, rows in validation.groupby(keys, sort=False)],
        columns=[*keys, *SUMMARY_METRICS],
    ).astype({"models": int, "predictions": int})


def estimator_report(records: Sequence[MeasurementRecord]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """estimator.json content and the LOMO validation table (None when it cannot be computed).

    The estimator is fitted on all ``records``; the leave-one-model-out summary (median APE, MAPE
    per model and per runtime/precision/batch) needs two models sharing a runtime/precision group,
    and otherwise says why it is absent instead of failing.
    """
    models = sorted({r.model for r in records})
    report: dict[str, Any] = {
        "models": models,
        "records": len(records),
        "groups": RooflineEstimator.fit(records).to_dict(),
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
    """Log-log scatter of predicted against measured end-to-end latency, one marker per group."""
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
        title=f"roofline estimator, LOMO: median APE {validation['ape_pct'].median():.1f}%",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def efficiency_curves(records: Sequence[MeasurementRecord], bins_per_decade: int = 4) -> pd.DataFrame:
    """Median subgraph efficiency per (runtime, precision, operation type, arithmetic-intensity bin).

    A subgraph's efficiency is its FLOPs over its typical latency (:func:`typical_ms`), over the
    theoretical peak. Bins are ``bins_per_decade`` per decade of FLOP/byte, labelled by their
    geometric centre; subgraphs without FLOPs (layout) are left out.
    """
    rows = [
        {
            "runtime": r.runtime,
            "precision": r.precision,
            "operation_type": s.operation_type,
            "log_intensity": np.log10(s.arithmetic_intensity),
            "efficiency": s.flops / (typical_ms(s.measured_latency) / 1e3) / s.theoretical_peak_flops,
        }
        for r in records
        for s in r.subgraphs
        if s.flops > 0 and s.arithmetic_intensity > 0
    ]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(
            columns=["runtime", "precision", "operation_type", "arithmetic_intensity", "efficiency_median", "count"]
        )
    table["bin"] = np.floor(table["log_intensity"] * bins_per_decade)
    curves = (
        table.groupby(["runtime", "precision", "operation_type", "bin"])["efficiency"]
        .agg(efficiency_median="median", count="size")
        .reset_index()
    )
    curves["arithmetic_intensity"] = 10 ** ((curves.pop("bin") + 0.5) / bins_per_decade)
    return curves


def efficiency_curves_figure(curves: pd.DataFrame, title: str):
    """Median efficiency against arithmetic intensity, one line per (runtime, operation type), log-log."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (runtime, kind), rows in curves.groupby(["runtime", "operation_type"]):
        ax.plot(
            rows["arithmetic_intensity"],
            rows["efficiency_median"] * 100,
            marker="o",
            ms=3,
            label=kind if curves["runtime"].nunique() == 1 else f"{runtime} {kind}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="arithmetic intensity (FLOP/byte)",
        ylabel="median efficiency (% of theoretical peak)",
        title=title,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_efficiency_curves(root: str | Path, hardware_id: str) -> list[Path]:
    """Rewrite ``efficiency_curves/<precision>/curves.json`` and ``curves.png`` of a machine from its records.

    Each ``curves.json`` holds, per runtime, the efficiency curves per operation type and the roofline
    fitted on the machine's records of that runtime and precision (target :func:`target_for`). Any
    hardware id of the store works, its files read in place; nothing else is written. Call it after
    adding measurements.
    """
    import matplotlib.pyplot as plt

    records = GroundTruthLoader(root).load_all(hardware_id)
    target = target_for(records)
    estimator = RooflineEstimator.fit(records, target).to_dict()
    curves = efficiency_curves(records)
    written = []
    for precision, rows in curves.groupby("precision"):
        folder = efficiency_curves_dir(root, hardware_id, precision)
        document = {
            "hardware_id": hardware_id,
            "precision": precision,
            "target": target,
            "statistic": "median over subgraphs of FLOPs / minimum latency / theoretical peak",
            "runtimes": {
                runtime: {
                    "roofline": estimator[f"{runtime}/{precision}"],
                    "curves": {
                        kind: part[["arithmetic_intensity", "efficiency_median", "count"]].to_dict(orient="list")
                        for kind, part in by_runtime.groupby("operation_type")
                    },
                }
                for runtime, by_runtime in rows.groupby("runtime")
            },
        }
        written.append(atomic.write_json(folder / "curves.json", document))
        figure = efficiency_curves_figure(rows, f"{hardware_id} {precision}: efficiency per operation type")
        written.append(atomic.save_figure(figure, folder / "curves.png"))
        plt.close(figure)
    return written
