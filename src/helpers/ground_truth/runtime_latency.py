"""Phase 05 across runtimes: model x runtime x precision x batch into the store, and throughput against the peaks.

:func:`measure_openvino` is OpenVINO's counterpart of ``latency.measure_onnx`` (same record, same
interleaving of plain and profiled calls; subgraphs are the layers OpenVINO executes, from its own
profiler). :func:`measure_runtimes` measures a run's FP32 and INT8 files on every runtime x
precision this machine runs (bf16: the FP32 file under OpenVINO's bf16 hint, where the CPU has it)
and writes nothing: :func:`records_with` is the store as it will be, for the estimator, and
:func:`publish` -- phase 05's last step -- stores every record with its ``runtime``, so a phase that
fails leaves the store as it was. :func:`peak_table` puts each record's throughput next
to this machine's measured GEMM peak of its precision (``helpers.runtime.peak``) and next to the
roofline estimator's prediction for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers import runtime
from helpers.ground_truth import latency
from helpers.ground_truth.estimator import RooflineEstimator, end_to_end_ms, group_of, write_efficiency_curves
from helpers.ground_truth.records import MeasurementRecord, SubgraphMeasurement, new_run_id
from helpers.ground_truth.store import (
    Configuration,
    GroundTruthLoader,
    HardwareAliases,
    apply_alias,
    default_data_dir,
    hardware_profile_path,
    rebuild_manifest,
    record_path,
    save_measurement,
)


def check_params(params: dict, config: dict | None = None) -> None:
    """Validate phase 05's runtime parameters before any kernel starts."""
    for key, valid in (("runtimes", runtime.RUNTIMES), ("precisions", runtime.PRECISIONS)):
        chosen = params[key]
        if not chosen or isinstance(chosen, str) or any(c not in valid for c in chosen):
            raise ValueError(f"{key} must be a non-empty list from {list(valid)}, got {chosen!r}")
    if params["threads"] < 1 or any(not isinstance(b, int) or b < 1 for b in params["batch_sizes"]):
        raise ValueError(
            f"threads and every batch size must be >= 1, got threads={params['threads']!r}, "
            f"batch_sizes={params['batch_sizes']!r}"
        )


def measure_openvino(
    onnx_path: str | Path,
    *,
    model: str,
    precision: str,
    batch_size: int,
    hardware,
    settings: latency.MeasurementSettings | None = None,
    run_id: str | None = None,
    run_index: int = 0,
) -> latency.Measurement:
    """Measure an ONNX model (fp32, bf16, or int8 QDQ) with OpenVINO on the CPU (``helpers.runtime``).

    Subgraphs: one per layer OpenVINO executes after its fusions, timed by its profiler
    (``PERF_COUNT``, a second compilation at the measured batch) in calls alternating with the plain
    timed calls; FLOPs and bytes from ``helpers.runtime.sessions.openvino_layer_work``. A layer
    faster than the profiler's 1 us resolution is recorded at 1 us.
    """
    settings = settings or latency.MeasurementSettings()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    session = runtime.open_session(
        onnx_path, "openvino", precision=precision, threads=settings.threads, batch_size=batch_size
    )
    shape = (batch_size, *session.input_shape)
    batch = latency.random_images(shape, settings.seed)
    profiler = session.profiler(batch)
    passes = []

    def profiled():
        profiler.call()
        passes.append(profiler.last_ms())

    end_to_end = latency._interleaved(lambda: session.run(batch), profiled, settings.warmup, settings.repeats)
    matrix = np.maximum(np.array(passes[settings.warmup :]).T, latency.PROFILER_RESOLUTION_MS)
    peak = hardware.theoretical_peak_flops[precision]
    subgraphs = [
        SubgraphMeasurement.from_samples(
            subgraph_id=f"{i:03d}",
            fusion_pattern=f"{w.layer_type}:{w.kernel}",
            operation_type=_operation_type(w),
            flops=w.flops,
            total_bytes=w.total_bytes,
            theoretical_peak_flops=peak,
            latency_ms=matrix[i],
            node_names=[n for n in w.fused if n] or [w.name],
            source_model=model,
        )
        for i, w in enumerate(profiler.work)
    ]
    record = latency._build_record(
        model=model,
        runtime="openvino",
        precision=precision,
        batch_size=batch_size,
        input_shape=shape,
        subgraphs=subgraphs,
        end_to_end=end_to_end,
        hardware=hardware,
        settings=settings,
        run_id=run_id,
        run_index=run_index,
    )
    return latency._finish(record, end_to_end, matrix, settings)


def _operation_type(work) -> str:
    kind = work.layer_type
    if "Convolution" in kind:
        return "conv"
    if kind.startswith("FullyConnected") or kind == "MatMul":
        return "matmul"
    if kind == "Pooling":
        return "pool"
    if kind.startswith("Reduce"):
        return "reduce"
    return "layout" if work.flops == 0 else "elementwise"


def measure_runtimes(
    model: str,
    files: Mapping[str, str | Path],
    *,
    runtimes: Sequence[str] = runtime.RUNTIMES,
    precisions: Sequence[str] = runtime.PRECISIONS,
    batch_sizes: Sequence[int] = (1,),
    store: str | Path | None = None,
    settings: latency.MeasurementSettings = latency.QUICK_SETTINGS,
    progress: bool = True,
) -> latency.SweepResult:
    """Measure ``files`` (``{"fp32": path, "int8": path}``) on every runtime x precision x batch size.

    bf16 runs the fp32 file. A runtime/precision this machine cannot run, or a batch size the file's
    fixed batch axis refuses, is skipped with the reason. Nothing is written to ``store`` (its hardware
    profile is read, or measured): :func:`publish` stores the result.
    """
    unknown = sorted(set(runtimes) - set(runtime.RUNTIMES)) + sorted(set(precisions) - set(runtime.PRECISIONS))
    if unknown:
        raise ValueError(f"unknown runtimes/precisions {unknown}; valid: {runtime.RUNTIMES}, {runtime.PRECISIONS}")
    paths = {
        p: Path(files["int8" if p == "int8" else "fp32"])
        for p in precisions
        if ("int8" if p == "int8" else "fp32") in files
    }
    missing = sorted(str(p) for p in paths.values() if not p.is_file())
    if missing:
        raise FileNotFoundError(f"ONNX models to measure do not exist: {', '.join(missing)}")
    root = Path(store or default_data_dir())
    hardware = latency.store_hardware_profile(root, save=False)
    result = latency.SweepResult(store=root, run_id=new_run_id(), hardware=hardware)
    jobs = []
    for batch_size in batch_sizes:
        for precision, path in paths.items():
            fixed = latency.fixed_batch_size(path)
            for name in runtimes:
                ok, why = runtime.support(name, precision)
                if not ok:
                    result.skipped.append(f"{model} {name} {precision}: {why}")
                elif fixed not in (None, batch_size):
                    result.skipped.append(f"{model} {precision} b{batch_size}: {path} has a fixed batch of {fixed}")
                else:
                    jobs.append((name, precision, batch_size))
    result.skipped = list(dict.fromkeys(result.skipped))
    for index, (name, precision, batch_size) in enumerate(tqdm(jobs, desc=f"latency {model}", disable=not progress)):
        measure = measure_openvino if name == "openvino" else latency.measure_onnx
        measurement = measure(
            paths[precision],
            model=model,
            precision=precision,
            batch_size=batch_size,
            hardware=hardware,
            settings=settings,
            run_id=result.run_id,
            run_index=index,
        )
        result.add(measurement, record_path(root, measurement.record))
        result.pending.append(measurement)
    return result


def records_with(result: latency.SweepResult) -> list[MeasurementRecord]:
    """What ``GroundTruthLoader(result.store).load_all(hardware_id)`` returns once :func:`publish` has stored
    ``result``: the store's records for this machine (its canonical id, where the store aliases it), with the
    sweep's in place of the configurations it measured (the newest record of a configuration is the one used)."""
    if not result.records:
        return []
    loader = GroundTruthLoader(result.store)
    hardware_id = loader.aliases.canonical(result.records[0].hardware_id)
    stored = loader.load_all(hardware_id) if hardware_id in loader.list_hardware() else []
    measured = [apply_alias(r, loader.aliases) for r in result.records]
    replaced = {Configuration.of(m) for m in measured}
    kept = [r for r in stored if Configuration.of(r) not in replaced]
    return sorted(kept + measured, key=Configuration.of)


def publish(result: latency.SweepResult) -> list[Path]:
    """Store a sweep of :func:`measure_runtimes`: the machine's profile where the store lacks it, each record with
    its raw samples, the rebuilt manifest of its directory and the efficiency curves of its (canonical) machine.
    Phase 05 calls it last."""
    if not result.pending:
        return []
    hardware_id = result.hardware.hardware_id
    profile = hardware_profile_path(result.store, hardware_id)
    if not profile.is_file():
        result.hardware.save(profile)
    for measurement in result.pending:
        save_measurement(measurement.record, result.store, measurement.samples, update_manifest=False)
    rebuild_manifest(result.store, hardware_id)
    write_efficiency_curves(result.store, HardwareAliases.load(result.store).canonical(hardware_id))
    result.pending = []
    return result.paths


def peak_table(
    records: Sequence[MeasurementRecord], peaks: Mapping[str, dict], estimator: RooflineEstimator | None = None
) -> pd.DataFrame:
    """Per record: images/s, achieved FLOP/s as a fraction of the measured peak of its precision, and the
    roofline estimator's predicted latency and fraction (NaN where the estimator lacks the group)."""
    rows = []
    for record in records:
        measured_ms = end_to_end_ms(record) or record.model_summary.end_to_end_latency.p50
        peak = peaks[record.precision]["flops_per_s"]
        fraction = record.model_summary.total_flops / (measured_ms / 1e3) / peak
        predicted_ms = (
            estimator.predict(record)
            if estimator is not None and group_of(record) in estimator.groups
            else float("nan")
        )
        rows.append(
            {
                "model": record.model,
                "runtime": record.runtime,
                "precision": record.precision,
                "batch_size": record.batch_size,
                "images_per_s": record.batch_size / (measured_ms / 1e3),
                "fraction_of_measured_peak": fraction,
                "roofline_predicted_ms": predicted_ms,
                "roofline_fraction_of_peak": record.model_summary.total_flops / (predicted_ms / 1e3) / peak,
                "measured_ms": measured_ms,
                "peak_by": f"{peaks[record.precision]['by']}, n = {peaks[record.precision].get('n', '?')}",
            }
        )
    return pd.DataFrame(rows)
