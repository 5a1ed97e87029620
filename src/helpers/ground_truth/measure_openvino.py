"""Measurement with OpenVINO on the CPU: an ONNX model (fp32, bf16 under OpenVINO's hint, int8 QDQ) -> one record.

One subgraph = one layer OpenVINO executes after its fusions, timed by its profiler (``PERF_COUNT``,
a second compilation at the measured batch, ``helpers.runtime``) in calls alternating with the plain
timed calls (``measurement.interleaved``); FLOPs and bytes from
``helpers.runtime.sessions.openvino_layer_work``. A layer faster than the profiler's 1 us resolution
is recorded at 1 us.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import runtime
from helpers.ground_truth.hardware import HardwareProfile
from helpers.ground_truth.measurement import (
    PROFILER_RESOLUTION_MS,
    Measurement,
    MeasurementSettings,
    SubgraphWork,
    build_measurement,
    interleaved,
    random_images,
)


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


def measure_openvino(
    onnx_path: str | Path,
    *,
    model: str,
    precision: str,
    batch_size: int,
    hardware: HardwareProfile,
    settings: MeasurementSettings | None = None,
    run_id: str | None = None,
    run_index: int = 0,
) -> Measurement:
    """Measure an ONNX model (fp32, bf16, or int8 QDQ) with OpenVINO on the CPU (``helpers.runtime``)."""
    settings = settings or MeasurementSettings()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    session = runtime.open_session(
        onnx_path, "openvino", precision=precision, threads=settings.threads, batch_size=batch_size
    )
    shape = (batch_size, *session.input_shape)
    batch = random_images(shape, settings.seed)
    profiler = session.profiler(batch)
    passes = []

    def profiled():
        profiler.call()
        passes.append(profiler.last_ms())

    end_to_end = interleaved(lambda: session.run(batch), profiled, settings.warmup, settings.repeats)
    return build_measurement(
        model=model,
        runtime="openvino",
        precision=precision,
        batch_size=batch_size,
        input_shape=shape,
        work=[
            SubgraphWork(
                f"{w.layer_type}:{w.kernel}",
                _operation_type(w),
                w.flops,
                w.total_bytes,
                [n for n in w.fused if n] or [w.name],
            )
            for w in profiler.work
        ],
        subgraph_ms=np.maximum(np.array(passes[settings.warmup :]).T, PROFILER_RESOLUTION_MS),
        end_to_end=end_to_end,
        hardware=hardware,
        settings=settings,
        run_id=run_id,
        run_index=run_index,
    )
