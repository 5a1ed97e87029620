"""Every validation protocol on every machine, in one table: what ``calib ground-truth validate`` and
``benchmarks/bench_ground_truth.py`` print.

Within a machine (``estimator.leave_one_out``): leave one model, one batch size, one precision out.
Across machines (``across_machines.across_machines``, with two or more machines): each machine predicted
from the others plus its peaks (``k=0``) and plus ``k`` calibration records per group. Each row of the
summary (``estimator.lomo_summary``) carries the machine's target and the seconds its protocol took.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from helpers.ground_truth import across_machines as am
from helpers.ground_truth import estimator as le
from helpers.ground_truth.records import MeasurementRecord
from helpers.ground_truth.store import Configuration, GroundTruthLoader
from helpers.ground_truth.targets import target_for


@dataclass
class Machines:
    """Records per hardware id gathered from one or more stores, with their repeats, measured peaks (from the
    machine's ``hardware.json``, where its store has one) and where each came from."""

    records: dict[str, list[MeasurementRecord]] = field(default_factory=dict)
    repeats: dict[str, Mapping[Configuration, Sequence[MeasurementRecord]]] = field(default_factory=dict)
    peaks: dict[str, am.MeasuredPeaks] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, loaders: Sequence[GroundTruthLoader]) -> Machines:
        """Every machine of every store; one hardware id in two stores is an error naming both."""
        machines = cls()
        for loader in loaders:
            for hardware_id in loader.list_hardware():
                if hardware_id in machines.stores:
                    raise ValueError(
                        f"{hardware_id} is in two stores ({machines.stores[hardware_id]} and {loader.root}); "
                        "give one of them"
                    )
                machines.records[hardware_id] = loader.load_all(hardware_id)
                machines.repeats[hardware_id] = loader.load_repeats(hardware_id)
                with contextlib.suppress(FileNotFoundError):  # another tool's files: theoretical peaks only
                    machines.peaks[hardware_id] = am.MeasuredPeaks.of(loader.load_hardware_profile(hardware_id))
                machines.stores[hardware_id] = str(loader.root)
        return machines


def every_protocol(
    machines: Machines,
    targets: Sequence[str] | None = None,
    by_operation_type: bool = True,
    calibration: int = am.CALIBRATION_RECORDS,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(summary, per-record table, notes) of every protocol on the machines ``targets`` (default: all); every
    machine of ``machines`` is a source of the across-machines protocol. A protocol with nothing to leave out
    (one batch size; one machine) is a note, not a row."""
    targets = list(targets or machines.records)
    unknown = sorted(set(targets) - set(machines.records))
    if unknown:
        raise ValueError(f"unknown hardware ids {unknown}; the stores hold {sorted(machines.records)}")
    summaries, tables, notes = [], [], []

    def add(validation: pd.DataFrame, target: str, seconds: float) -> None:
        if not validation.empty:
            summaries.append(le.lomo_summary(validation).assign(target=target, seconds=seconds))
            tables.append(validation)

    fitted = len(machines.records) > 1
    sources = am.fit_sources(machines.records, by_operation_type, machines.peaks) if fitted else []
    for hardware_id in targets:
        records = machines.records[hardware_id]
        target = target_for(records)
        for held_out in le.HELD_OUT:
            if len({getattr(r, held_out) for r in records}) < 2:
                notes.append(f"{hardware_id}: one {held_out} only, nothing to leave out")
                continue
            start = time.perf_counter()
            validation = le.leave_one_out(
                records, held_out, target, by_operation_type, machines.repeats.get(hardware_id)
            )
            add(validation, target, time.perf_counter() - start)
        if not sources:
            notes.append(
                f"{hardware_id}: the only machine, nothing to predict it from (add stores with other machines)"
            )
            continue
        others = [s for s in sources if s.hardware_id != hardware_id]
        for k in sorted({0, calibration}):
            start = time.perf_counter()
            validation = am.across_machines(
                machines.records,
                hardware_id,
                k,
                by_operation_type=by_operation_type,
                sources=others,
                peaks=machines.peaks,
            )
            add(validation, target, time.perf_counter() - start)
    if not summaries:
        return pd.DataFrame(), pd.DataFrame(), notes
    return pd.concat(summaries, ignore_index=True), pd.concat(tables, ignore_index=True), notes
