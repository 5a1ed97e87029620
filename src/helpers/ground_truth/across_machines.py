"""Across machines: predict one machine's latencies from the other machines' measurements plus what is taken from it.

What the estimator takes from the target machine, and nothing else:

* its **peaks**: the theoretical peak per precision (``theoretical_peak_flops``, which every record carries)
  and, where its store has its profile (``hardware.json``: ``calib ground-truth measure`` writes it), the
  measured fp32 GEMM rate and memory bandwidth (:class:`MeasuredPeaks`) -- used only where the source
  machine has them too (the sample's files have none);
* with ``k > 0``: the **measured latencies of k calibration records** per (runtime, precision) group
  (:data:`CALIBRATION_RECORDS` = 10, the handful HELP adapts a new device from), drawn at random
  (seeded; :data:`DRAWS` draws, each validated on the group's other records);
* of every record it predicts, only what any prediction takes: its subgraphs' FLOPs, bytes, fused nodes
  and operation types (the model's graph as the runtime runs it), never a latency.

The procedure, per (runtime, precision) group of the target machine (:func:`across_machines`):

1. each other machine's records fit a :class:`~helpers.ground_truth.estimator.LatencyEstimator` by its own
   stated procedure (knots, transfer rule); each of its (runtime, precision) groups is a candidate
   *source* (:func:`fit_sources`);
2. a source predicts a target record in three parts -- overheads (per subgraph, per fused node, per
   call), bytes, FLOPs (``LatencyGroup.record_parts``) -- with the FLOP part moved to the target's peak
   (source peak / target peak: the same fraction of the peak; with both machines' measured GEMM rates, the
   same fraction of the peak times the GEMM's achieved fraction) and, with both machines' measured
   bandwidths, the bytes part by their ratio (:meth:`MeasuredPeaks.factors`);
3. ``k = 0`` (peaks only): the three parts summed, from the first source by (same runtime and precision,
   same precision, same runtime, any), then the nearest theoretical peak (:func:`nearest_source`);
4. ``k > 0``: each candidate's three parts get non-negative weights fitted on the calibration records
   (:func:`calibrate`: non-negative least squares of the relative error -- a machine's overheads,
   bandwidth and compute scale apart). One more candidate is the estimator fitted on the k calibration
   records alone (:data:`OWN_KNOTS` knots: k records cannot place a curve). The candidate whose
   leave-one-out error *within the calibration records* is least (mean absolute log error; the own
   candidate refitted without the left-out record) predicts the rest.

Nothing is tuned per machine: ``k``, the draws and the seed are the same everywhere. Baselines in the
same rows: ``naive`` (total FLOPs at the target's peak) and ``roofline`` -- with ``k > 0`` the
``roofline.RooflineEstimator`` fitted on the k calibration records alone (what the target's own
measurements give without the other machines), with ``k = 0`` the chosen source's roofline moved to
the target's peak (``roofline.transferred``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from helpers.ground_truth.estimator import COLUMNS, LatencyEstimator, LatencyGroup, fit_group, validation_row
from helpers.ground_truth.hardware import HardwareProfile
from helpers.ground_truth.records import MeasurementRecord
from helpers.ground_truth.roofline import GroupParams, RooflineEstimator, transferred
from helpers.ground_truth.targets import fitting_groups, measured_ms, naive_ms, target_for

CALIBRATION_RECORDS = 10  # k: measured records per target group the estimator may use (HELP adapts from 10)
DRAWS = 20  # random calibration sets per target group (seeded), each validated on the group's other records
ACROSS_COLUMNS = (*COLUMNS, "source", "draw")
OWN_KNOTS = 1  # knots of the estimator fitted on the k calibration records alone (one FLOP rate)
PARTS = ("overhead", "bytes", "flops")  # what a source's prediction is split into (LatencyGroup.record_parts)


@dataclass(frozen=True)
class MeasuredPeaks:
    """A machine's measured fp32 GEMM rate and memory bandwidth (its ``hardware.json``), beside its theoretical
    fp32 peak; None where not measured."""

    gemm_flops: float | None = None
    bandwidth_bytes_per_s: float | None = None
    theoretical_fp32_flops: float | None = None

    @classmethod
    def of(cls, profile: HardwareProfile | None) -> MeasuredPeaks:
        if profile is None:
            return cls()
        fp32 = profile.theoretical_peak_flops.get("fp32")
        return cls(profile.measured_gemm_flops, profile.measured_bandwidth_bytes_per_s, fp32)

    def achieved(self) -> float | None:
        """The fraction of the theoretical fp32 peak the measured GEMM reaches (None: not measured)."""
        if self.gemm_flops and self.theoretical_fp32_flops:
            return self.gemm_flops / self.theoretical_fp32_flops
        return None

    def factors(self, target: MeasuredPeaks) -> tuple[float, float]:
        """(FLOP part, bytes part) factors from a source machine with these peaks to ``target``: the ratio of the
        GEMMs' achieved fractions and of the bandwidths, each 1 unless both machines measured it."""
        flops = 1.0
        if (mine := self.achieved()) and (theirs := target.achieved()):
            flops = mine / theirs
        both = self.bandwidth_bytes_per_s and target.bandwidth_bytes_per_s
        return flops, (self.bandwidth_bytes_per_s / target.bandwidth_bytes_per_s if both else 1.0)


@dataclass(frozen=True, eq=False)
class Source:
    """A (runtime, precision) group of another machine: its fitted estimator group and roofline (hashed by identity)."""

    hardware_id: str
    name: str  # <runtime>/<precision>
    group: LatencyGroup
    roofline: GroupParams
    peaks: MeasuredPeaks = MeasuredPeaks()

    def parts(self, records: Sequence[MeasurementRecord], peak: float, target: MeasuredPeaks) -> np.ndarray:
        """(records, 3): each record's predicted overheads, bytes and FLOPs (ms) on a machine of theoretical ``peak``
        and measured peaks ``target`` (module docstring, step 2)."""
        rows = np.array([self.group.record_parts(r) for r in records], dtype=np.float64).reshape(-1, len(PARTS))
        flops, nbytes = self.peaks.factors(target)
        rows[:, 1] *= nbytes
        rows[:, 2] *= self.group.theoretical_peak_flops / peak * flops
        return rows

    @property
    def label(self) -> str:
        return f"{self.hardware_id}:{self.name}"


def fit_sources(
    machines: Mapping[str, Sequence[MeasurementRecord]],
    by_operation_type: bool = True,
    peaks: Mapping[str, MeasuredPeaks] | None = None,
) -> list[Source]:
    """Every (machine, runtime, precision) group of ``machines``, fitted on all of that machine's records (its own
    target: ``targets.target_for``), with the machine's measured ``peaks`` where given."""
    sources = []
    for hardware_id, records in sorted(machines.items()):
        target = target_for(records)
        estimator = LatencyEstimator.fit(records, target)
        rooflines = RooflineEstimator.fit(records, target, by_operation_type)
        measured = (peaks or {}).get(hardware_id, MeasuredPeaks())
        sources += [Source(hardware_id, n, g, rooflines.groups[n], measured) for n, g in estimator.groups.items()]
    return sources


def nearest_source(sources: Sequence[Source], runtime: str, precision: str, peak: float) -> Source:
    """The source a target group takes without calibration: same runtime and precision, else same precision, else
    same runtime, else any; among those the nearest theoretical peak (then by name, for a stable choice)."""

    def key(source: Source):
        own_runtime, own_precision = source.name.split("/")
        kinship = [(True, True), (False, True), (True, False), (False, False)].index(
            (own_runtime == runtime, own_precision == precision)
        )
        return kinship, abs(np.log(source.group.theoretical_peak_flops / peak)), source.label

    return min(sources, key=key)


def calibrate(parts: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Non-negative weights of the three parts that best fit ``measured`` (least squares of the relative error)."""
    weights, _ = nnls(parts / measured[:, None], np.ones(len(measured)))
    return weights


def _leave_one_out_error(parts: np.ndarray, measured: np.ndarray) -> float:
    """Mean |log(predicted / measured)| of each calibration record predicted by the weights fitted on the others."""
    errors = []
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        predicted = float(parts[i] @ calibrate(parts[keep], measured[keep]))
        errors.append(abs(np.log(predicted / measured[i])) if predicted > 0 else np.inf)
    return float(np.mean(errors))


def _own_leave_one_out_error(records: Sequence[MeasurementRecord], measured: np.ndarray, target: str) -> float:
    """Mean |log(predicted / measured)| of each calibration record predicted by the estimator fitted on the others."""
    errors = []
    for i, record in enumerate(records):
        predicted = fit_group(records[:i] + records[i + 1 :], target, OWN_KNOTS).predict(record)
        errors.append(abs(np.log(predicted / measured[i])) if predicted > 0 else np.inf)
    return float(np.mean(errors))


def calibrated_predictions(
    parts: Mapping[Source, np.ndarray],
    records: Sequence[MeasurementRecord],
    used: np.ndarray,
    measured: np.ndarray,
    target: str,
    own_label: str,
) -> tuple[str, np.ndarray]:
    """(label of the chosen candidate, its prediction of every record of ``records``) given the calibration records
    ``used`` (a mask) and their ``measured`` latencies: each source's parts weighted by :func:`calibrate`, or the
    estimator fitted on the calibration records alone (``own_label``), whichever predicts the calibration
    records best, each left out in turn; ties by label."""
    calibration_records = [r for r, u in zip(records, used) if u]
    scores = {own_label: _own_leave_one_out_error(calibration_records, measured, target)}
    scores.update({s.label: _leave_one_out_error(p[used], measured) for s, p in parts.items()})
    best = min(scores, key=lambda label: (scores[label], label))
    if best == own_label:
        own = fit_group(calibration_records, target, OWN_KNOTS)
        return best, np.array([own.predict(r) for r in records])
    source = next(s for s in parts if s.label == best)
    return best, parts[source] @ calibrate(parts[source][used], measured)


def across_machines(
    machines: Mapping[str, Sequence[MeasurementRecord]],
    target_id: str,
    calibration: int = CALIBRATION_RECORDS,
    draws: int = DRAWS,
    seed: int = 0,
    by_operation_type: bool = True,
    sources: Sequence[Source] | None = None,
    peaks: Mapping[str, MeasuredPeaks] | None = None,
) -> pd.DataFrame:
    """Predict machine ``target_id``'s records from the other ``machines`` (hardware id -> records) plus its peaks
    and, per group, ``calibration`` measured records (module docstring). One row per (draw, predicted record):
    ``estimator.COLUMNS`` (``held_out`` = ``machine, k=<calibration>``) plus the ``source`` used and the ``draw``;
    ``estimator.lomo_summary`` summarises it. A group with no more than ``calibration`` records is skipped (nothing
    left to predict). ``peaks``: measured peaks per hardware id (:class:`MeasuredPeaks`; absent: theoretical
    only); ``sources``: the other machines' fitted groups (:func:`fit_sources`), when the caller has them."""
    if target_id not in machines:
        raise ValueError(f"no records of {target_id!r}; machines: {', '.join(sorted(machines))}")
    if calibration < 0 or draws < 1:
        raise ValueError(f"calibration must be >= 0 and draws >= 1, got {calibration} and {draws}")
    others = {h: r for h, r in machines.items() if h != target_id}
    if sources is None:
        if not others:
            raise ValueError(f"predicting {target_id} across machines needs another machine's records")
        sources = fit_sources(others, by_operation_type, peaks)
    if not sources or any(s.hardware_id == target_id for s in sources):
        raise ValueError(f"the sources must be other machines' groups than {target_id}'s, got {len(sources)}")
    target = target_for(machines[target_id])
    rng = np.random.default_rng(seed)
    rows = []
    for name, group in fitting_groups(machines[target_id], target).items():
        group = [r for r in group if measured_ms(r, target) is not None]
        if len(group) <= calibration:
            continue
        peak = group[0].theoretical_peak_flops
        measured_peaks = (peaks or {}).get(target_id, MeasuredPeaks())
        parts = {s: s.parts(group, peak, measured_peaks) for s in sources}
        runtime, precision = name.split("/")
        for draw in range(draws if calibration else 1):
            used = np.zeros(len(group), dtype=bool)
            used[rng.choice(len(group), calibration, replace=False)] = True
            calibration_records = [r for r, u in zip(group, used) if u]
            if calibration:
                measured = np.array([measured_ms(r, target) for r in calibration_records])  # the only latencies read
                label, predicted = calibrated_predictions(
                    parts, group, used, measured, target, f"{target_id}:{calibration} calibration records"
                )
                roofline = RooflineEstimator.fit(calibration_records, target, by_operation_type).groups[name]
            else:
                source = nearest_source(sources, runtime, precision, peak)
                label, predicted = source.label, parts[source].sum(axis=1)
                roofline = transferred(source.roofline, peak)
            for record, estimate in zip([r for r, u in zip(group, used) if not u], predicted[~used]):
                rows.append(_row(record, target, calibration, float(estimate), roofline.predict(record), label, draw))
    return pd.DataFrame(rows, columns=list(ACROSS_COLUMNS))


def _row(
    record: MeasurementRecord,
    target: str,
    calibration: int,
    predicted: float,
    roofline: float,
    source: str,
    draw: int,
) -> dict:
    row = validation_row(
        f"machine, k={calibration}", record, measured_ms(record, target), predicted, roofline, naive_ms(record)
    )
    return {**row, "source": source, "draw": draw}
