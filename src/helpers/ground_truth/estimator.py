"""A roofline latency estimator fitted on the ground truth, and its leave-one-model-out validation.

Model, per group = (runtime, precision)::

    subgraph_ms = max(FLOPs / P, bytes / B) + c         P effective peak (FLOP/ms), B effective
                                                        bandwidth (byte/ms), c overhead per subgraph
    end_to_end_ms = a * sum(subgraph_ms) + b * n + C    n subgraphs; a, b, C: the runtime's work
                                                        between kernels and per call, net of the
                                                        profiler's own cost per node

Fit, per group: ``P, B, c`` by robust least squares (``scipy.optimize.least_squares``, soft-L1
loss, parameters in log space so they stay positive, ``P`` at most the theoretical peak) of every
stored subgraph's error as a fraction of its record's subgraph total -- the subgraphs that make
up a model's latency weigh most. Then ``a, b, C`` by least squares of the *relative* error of the
end-to-end latency (latencies span three decades), given at least 4 timed records. One roofline
per group, not one per operation type: with a handful of models, the per-type fits did not carry
over to a left-out model (leave-one-model-out error 29-35% against 22-27% on the sweeps measured
while writing this).

What a measurement "is": the minimum of its samples (:func:`typical_ms`), and for the end-to-end
latency the on-CPU time when the record has it (:func:`end_to_end_ms`). Both remove the time
other processes took from a shared CPU, which is not a property of the model or the machine;
on an idle machine they equal the wall-clock latency.

Validation (:func:`leave_one_model_out`): for each model, fit on every other model's records and
predict its end-to-end latencies; the table holds one row per (model, runtime, precision,
batch) with the absolute percentage error. Records without an end-to-end latency (v1.0) take
part in fitting the subgraph parameters only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from helpers.ground_truth.records import LatencyStats, MeasurementRecord, SubgraphMeasurement
from helpers.ground_truth.store import GroundTruthLoader, efficiency_curves_dir
from helpers.run import atomic

INITIAL_OVERHEAD_MS = 1e-3


def typical_ms(stats: LatencyStats) -> float:
    """The latency a sample stands for: its minimum (best of N, as ``timeit`` argues: slower calls
    measure other processes interfering, not the model)."""
    return stats.min


def end_to_end_ms(record: MeasurementRecord) -> float | None:
    """A record's contention-free end-to-end latency: the on-CPU time when recorded, else wall clock."""
    summary = record.model_summary
    stats = summary.end_to_end_cpu_time or summary.end_to_end_latency
    return typical_ms(stats) if stats is not None else None


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
    """A (runtime, precision) group: its subgraph roofline and its end-to-end calibration."""

    roofline: Roofline
    scale: float
    per_subgraph_ms: float
    call_overhead_ms: float
    theoretical_peak_flops: float

    def predict_subgraphs(self, subgraphs: Sequence[SubgraphMeasurement]) -> np.ndarray:
        flops = np.array([s.flops for s in subgraphs], dtype=np.float64)
        nbytes = np.array([s.total_bytes for s in subgraphs], dtype=np.float64)
        return self.roofline.predict(flops, nbytes)

    def predict(self, record: MeasurementRecord) -> float:
        return (self.scale * float(self.predict_subgraphs(record.subgraphs).sum())
                + self.per_subgraph_ms * len(record.subgraphs) + self.call_overhead_ms)

    def to_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self.roofline),
                "peak_fraction": self.roofline.peak_flops_per_ms * 1e3 / self.theoretical_peak_flops,
                "scale": self.scale, "per_subgraph_ms": self.per_subgraph_ms,
                "call_overhead_ms": self.call_overhead_ms}


def _subgraph_arrays(records: Sequence[MeasurementRecord]) -> tuple[np.ndarray, ...]:
    """(FLOPs, bytes, typical ms, the record's typical subgraph total) of every subgraph."""
    rows = []
    for record in records:
        measured = [typical_ms(s.measured_latency) for s in record.subgraphs]
        rows += [(s.flops, s.total_bytes, ms, sum(measured)) for s, ms in zip(record.subgraphs, measured)]
    return tuple(np.array(column, dtype=np.float64) for column in zip(*rows))


def _fit_roofline(records: Sequence[MeasurementRecord], peak_flops_per_ms: float) -> Roofline:
    """Robust least squares over every subgraph; the effective peak stays <= the theoretical.

    Each subgraph's error counts as a fraction of its record's measured subgraph total, so the
    subgraphs that make up most of a model's latency weigh most, and every record alike.
    """
    flops, nbytes, measured, total = _subgraph_arrays(records)

    def residuals(theta):
        return (Roofline(*np.exp(theta)).predict(flops, nbytes) - measured) / total

    theta0 = np.log([0.1 * peak_flops_per_ms, 1e7, INITIAL_OVERHEAD_MS])
    upper = [np.log(peak_flops_per_ms), np.inf, np.inf]
    fit = least_squares(residuals, theta0, bounds=(-np.inf, upper), loss="soft_l1", f_scale=0.02, method="trf")
    return Roofline(*(float(v) for v in np.exp(fit.x)))


def _fit_group(records: list[MeasurementRecord]) -> GroupParams:
    peak = records[0].theoretical_peak_flops
    partial = GroupParams(_fit_roofline(records, peak / 1e3), 1.0, 0.0, 0.0, peak)
    timed = [r for r in records if end_to_end_ms(r) is not None]
    if len(timed) < 4:
        return partial
    x = np.array([partial.predict(r) for r in timed])
    n = np.array([len(r.subgraphs) for r in timed], dtype=np.float64)
    y = np.array([end_to_end_ms(r) for r in timed])
    design = np.column_stack([x, n, np.ones_like(x)]) / y[:, None]  # relative errors: weight 1/y
    (scale, per_subgraph, call), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    return dataclasses.replace(partial, scale=float(scale), per_subgraph_ms=float(per_subgraph),
                               call_overhead_ms=float(call))


@dataclass(frozen=True)
class RooflineEstimator:
    """Fitted roofline parameters per (runtime, precision) group."""

    groups: dict[str, GroupParams]

    @classmethod
    def fit(cls, records: Sequence[MeasurementRecord]) -> RooflineEstimator:
        if not records:
            raise ValueError("cannot fit an estimator on no records; measure some with `calib ground-truth measure`")
        by_group: dict[str, list[MeasurementRecord]] = {}
        for record in records:
            by_group.setdefault(group_of(record), []).append(record)
        return cls({group: _fit_group(rs) for group, rs in sorted(by_group.items())})

    def predict(self, record: MeasurementRecord) -> float:
        """Predicted end-to-end latency (ms) of a record's model, from its subgraphs' FLOPs and bytes."""
        group = group_of(record)
        if group not in self.groups:
            raise KeyError(f"the estimator was fitted without {group} measurements; fitted: {', '.join(self.groups)}")
        return self.groups[group].predict(record)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters per group; the effective peak also as a fraction of the theoretical one."""
        return {name: group.to_dict() for name, group in self.groups.items()}


def leave_one_model_out(records: Sequence[MeasurementRecord]) -> pd.DataFrame:
    """One row per record with an end-to-end latency: measured vs predicted with its model left out."""
    models = sorted({r.model for r in records})
    if len(models) < 2:
        raise ValueError(f"leave-one-model-out needs at least two models, got {models}")
    rows = []
    for model in models:
        estimator = RooflineEstimator.fit([r for r in records if r.model != model])
        for record in records:
            if record.model != model or end_to_end_ms(record) is None:
                continue
            if group_of(record) not in estimator.groups:
                continue  # no other model was measured in this group: nothing to predict from
            measured = end_to_end_ms(record)
            predicted = estimator.predict(record)
            rows.append({"model": model, "runtime": record.runtime, "precision": record.precision,
                         "batch_size": record.batch_size, "measured_ms": measured, "predicted_ms": predicted,
                         "ape_pct": abs(predicted - measured) / measured * 100})
    columns = ["model", "runtime", "precision", "batch_size", "measured_ms", "predicted_ms", "ape_pct"]
    return pd.DataFrame(rows, columns=columns).sort_values(columns[:4], ignore_index=True)


def estimator_report(records: Sequence[MeasurementRecord]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """estimator.json content and the LOMO validation table (None when it cannot be computed).

    The estimator is fitted on all ``records``; the leave-one-model-out summary (median APE, MAPE
    per model and per runtime/precision/batch) needs two models sharing a runtime/precision group,
    and otherwise says why it is absent instead of failing.
    """
    models = sorted({r.model for r in records})
    report: dict[str, Any] = {"models": models, "records": len(records),
                              "groups": RooflineEstimator.fit(records).to_dict()}
    validation = leave_one_model_out(records) if len(models) >= 2 else None
    if validation is None or validation.empty:
        report["lomo"] = {"available": False,
                          "reason": f"leave-one-model-out needs two models measured in one runtime/precision; the "
                                    f"store holds {models}. Add models with `calib ground-truth measure`"}
        return report, None
    by_group = validation.groupby(["runtime", "precision", "batch_size"])["ape_pct"].mean()
    report["lomo"] = {"available": True, "predictions": len(validation),
                      "median_ape_pct": float(validation["ape_pct"].median()),
                      "mape_pct": float(validation["ape_pct"].mean()),
                      "mape_pct_by_model": validation.groupby("model")["ape_pct"].mean().to_dict(),
                      "mape_pct_by_group": {f"{rt}/{p}/b{b}": v for (rt, p, b), v in by_group.items()}}
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
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured end-to-end latency (ms)",
           ylabel="predicted (ms), model left out",
           title=f"roofline estimator, LOMO: median APE {validation['ape_pct'].median():.1f}%")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def efficiency_curves(records: Sequence[MeasurementRecord], bins_per_decade: int = 4) -> pd.DataFrame:
    """Median subgraph efficiency per (runtime, precision, operation type, arithmetic-intensity bin).

    A subgraph's efficiency is its FLOPs over its typical latency (:func:`typical_ms`), over the
    theoretical peak. Bins are ``bins_per_decade`` per decade of FLOP/byte, labelled by their
    geometric centre; subgraphs without FLOPs (layout) are left out.
    """
    rows = [{"runtime": r.runtime, "precision": r.precision, "operation_type": s.operation_type,
             "log_intensity": np.log10(s.arithmetic_intensity),
             "efficiency": s.flops / (typical_ms(s.measured_latency) / 1e3) / s.theoretical_peak_flops}
            for r in records for s in r.subgraphs if s.flops > 0 and s.arithmetic_intensity > 0]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["runtime", "precision", "operation_type", "arithmetic_intensity",
                                     "efficiency_median", "count"])
    table["bin"] = np.floor(table["log_intensity"] * bins_per_decade)
    curves = (table.groupby(["runtime", "precision", "operation_type", "bin"])["efficiency"]
              .agg(efficiency_median="median", count="size").reset_index())
    curves["arithmetic_intensity"] = 10 ** ((curves.pop("bin") + 0.5) / bins_per_decade)
    return curves


def write_efficiency_curves(root: str | Path, hardware_id: str) -> list[Path]:
    """Rewrite ``efficiency_curves/<precision>/<runtime>.json`` of a machine from all its records.

    Each holds the efficiency curves per operation type and the roofline fitted on the machine's
    records of that runtime and precision. Call it after adding measurements.
    """
    records = GroundTruthLoader(root).load_all(hardware_id)
    estimator = RooflineEstimator.fit(records).to_dict()
    curves = efficiency_curves(records)
    written = []
    for (runtime, precision), rows in curves.groupby(["runtime", "precision"]):
        document = {"hardware_id": hardware_id, "runtime": runtime, "precision": precision,
                    "roofline": estimator[f"{runtime}/{precision}"],
                    "curves": {kind: part.drop(columns=["runtime", "precision", "operation_type"])
                               .to_dict(orient="list") for kind, part in rows.groupby("operation_type")}}
        written.append(atomic.write_json(efficiency_curves_dir(root, hardware_id, precision) / f"{runtime}.json",
                                         document))
    return written
