"""One measurement, whatever the runtime: its settings, its timing loop, and the one record builder.

Owns what every runtime's measurement shares (``measure_onnxruntime``, ``measure_torch``,
``measure_openvino`` each time their own subgraphs, then call :func:`build_measurement`):

* :class:`MeasurementSettings` -- how hard to measure: calls timed, calls discarded first, threads,
  input seed, the coefficient of variation above which a warning is raised;
* :func:`random_images` -- the seeded float32 NHWC inputs uniform in [0, 255) (the input contract);
* :func:`interleaved` -- the timing loop: a plain timed call alternating with an instrumented one
  (profiler or hooks), so the end-to-end and per-subgraph samples see the same machine. Each plain
  call is timed with ``perf_counter_ns`` (wall clock) and ``thread_time_ns`` (the thread's on-CPU
  time, which leaves out the time other processes held the core);
* :class:`SubgraphWork` -- what a runtime knows of one executed subgraph before its timings: its
  fusion pattern, operation type, FLOPs, bytes and node names;
* :func:`build_measurement` -- the one place a :class:`~helpers.ground_truth.records.MeasurementRecord`
  is built from a measurement: subgraphs from their work and timings, the model summary, the
  machine's state, the tool version, and the raw samples and warnings (a high CV, or a thread kept
  off the CPU by other processes) returned beside it as a :class:`Measurement`.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from helpers.ground_truth.hardware import HardwareProfile, system_state
from helpers.ground_truth.records import (
    MEASUREMENT_TYPE,
    SCHEMA_VERSION,
    LatencyStats,
    MeasurementRecord,
    ModelSummary,
    SubgraphMeasurement,
    new_run_id,
)
from helpers.run.run_record import now as utc_now

PROFILER_RESOLUTION_MS = 1e-3  # the profilers report whole microseconds: a faster subgraph is recorded at 1 us


@dataclass(frozen=True)
class MeasurementSettings:
    """How hard to measure: calls timed, calls discarded first, threads, input seed, CV warning level."""

    repeats: int = 50
    warmup: int = 10
    threads: int = 1
    seed: int = 0
    cv_warning: float = 0.10

    def __post_init__(self):
        if self.repeats < 2 or self.warmup < 0 or self.threads < 1 or self.cv_warning <= 0:
            raise ValueError(f"need repeats >= 2, warmup >= 0, threads >= 1, cv_warning > 0; got {self}")


DEFAULT_SETTINGS = MeasurementSettings()


@dataclass
class Measurement:
    """A record, its raw samples (stored beside it as npz) and the warnings raised while measuring."""

    record: MeasurementRecord
    samples: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)


class SubgraphWork(NamedTuple):
    """One executed subgraph as its runtime describes it, before its timings are attached."""

    fusion_pattern: str
    operation_type: str
    flops: int
    total_bytes: int
    node_names: list[str]


def random_images(shape: Sequence[int], seed: int) -> np.ndarray:
    """Seeded float32 NHWC inputs uniform in [0, 255): the input contract's range."""
    return np.random.default_rng(seed).uniform(0, 255, size=tuple(shape)).astype(np.float32)


def interleaved(
    plain: Callable[[], object], instrumented: Callable[[], object], warmup: int, repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """Alternate a timed plain call with an instrumented one: the plain calls' (wall, thread CPU) ms.

    Alternating puts both kinds of call under the same conditions (a process starting beside
    them slows both), so the end-to-end and per-subgraph samples stay comparable. The thread's
    CPU time leaves out the time other processes held the core.
    """
    wall, cpu = np.empty(warmup + repeats), np.empty(warmup + repeats)
    for i in range(warmup + repeats):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        plain()
        cpu[i] = (time.thread_time_ns() - start_cpu) / 1e6
        wall[i] = (time.perf_counter_ns() - start) / 1e6
        instrumented()
    return wall[warmup:], cpu[warmup:]


def tool_version(runtime: str) -> str:
    """``calib-lab <version>; <runtime> <version>``: the store's reader infers the runtime from it."""
    try:
        own = importlib.metadata.version("calib-lab")
    except importlib.metadata.PackageNotFoundError:
        own = "source"
    if runtime == "onnxruntime":
        import onnxruntime

        backend = onnxruntime.__version__
    elif runtime == "torch":
        import torch

        backend = torch.__version__
    else:
        backend = importlib.metadata.version(runtime)
    return f"calib-lab {own}; {runtime} {backend}"


def build_measurement(
    *,
    model: str,
    runtime: str,
    precision: str,
    batch_size: int,
    input_shape: Sequence[int],
    work: Sequence[SubgraphWork],
    subgraph_ms: np.ndarray,
    end_to_end: tuple[np.ndarray, np.ndarray],
    hardware: HardwareProfile,
    settings: MeasurementSettings,
    run_id: str | None = None,
    run_index: int = 0,
) -> Measurement:
    """The record of one measurement, with its raw samples and warnings.

    ``work[i]`` is the i-th executed subgraph and ``subgraph_ms[i]`` its latencies (ms, one per
    measured call); ``end_to_end`` the plain calls' (wall, thread CPU) ms from :func:`interleaved`.
    The thread's CPU time is kept only for single-threaded runs (it misses pool threads).
    """
    peak = hardware.theoretical_peak_flops[precision]
    subgraphs = [
        SubgraphMeasurement.from_samples(
            subgraph_id=f"{i:03d}",
            fusion_pattern=w.fusion_pattern,
            operation_type=w.operation_type,
            flops=w.flops,
            total_bytes=w.total_bytes,
            theoretical_peak_flops=peak,
            latency_ms=subgraph_ms[i],
            node_names=w.node_names,
            source_model=model,
        )
        for i, w in enumerate(work)
    ]
    state, _ = system_state()
    wall_ms, cpu_ms = end_to_end
    cpu_time = LatencyStats.from_samples(cpu_ms) if settings.threads == 1 else None
    summary = ModelSummary.from_subgraphs(subgraphs, batch_size, LatencyStats.from_samples(wall_ms), cpu_time)
    record = MeasurementRecord(
        schema_version=SCHEMA_VERSION,
        measurement_type=MEASUREMENT_TYPE,
        model=model,
        hardware_id=hardware.hardware_id,
        device=hardware.cpu_model + (f" + {hardware.gpu_name}" if hardware.gpu_name else ""),
        precision=precision,
        thermal_profile=state.power_mode or state.cpu_governor or "unknown",
        theoretical_peak_flops=peak,
        measurement_date=utc_now(),
        tool_version=tool_version(runtime),
        subgraphs=subgraphs,
        batch_size=batch_size,
        input_shape=[int(d) for d in input_shape],
        model_summary=summary,
        system_state=state,
        run_id=run_id or new_run_id(),
        run_index=run_index,
        runtime=runtime,
    )
    samples = {
        "end_to_end_ms": wall_ms,
        "subgraph_ms": subgraph_ms,
        "subgraph_ids": np.array([s.subgraph_id for s in subgraphs]),
    }
    what = f"{record.key} {precision} b{batch_size}"
    warnings = []
    if summary.end_to_end_latency.cv > settings.cv_warning:
        warnings.append(
            f"{what}: end-to-end latency CV {summary.end_to_end_latency.cv:.1%} exceeds "
            f"{settings.cv_warning:.0%}; another heavy process may be running -- re-measure on an "
            "idle machine"
        )
    if cpu_time is not None:
        samples["end_to_end_cpu_ms"] = cpu_ms
        off_cpu = 1 - cpu_time.p50 / summary.end_to_end_latency.p50
        if off_cpu > settings.cv_warning:
            warnings.append(
                f"{what}: the measuring thread was off the CPU for {off_cpu:.0%} of the median call; "
                "other processes competed for the core (end_to_end_cpu_time is unaffected)"
            )
    return Measurement(record, samples, warnings)
