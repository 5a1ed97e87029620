"""Measurement with onnxruntime on the CPU: an ONNX model (fp32, or int8 QDQ) -> one record.

One subgraph = one node of the graph onnxruntime executes *after* its graph optimizations
(default level, ``ORT_ENABLE_ALL``): Conv+BatchNorm+Relu fused into one ``FusedConv`` or NCHWc
``Conv`` is one subgraph; a QDQ-wrapped Conv fused into ``QLinearConv`` is one. Its latency samples
are the profiler's ``<node>_kernel_time`` events, one per measured call (warm-up calls are dropped
by matching events to the ``model_run`` spans), from profiled calls alternating with the plain
timed calls (``measurement.interleaved``). The profiler reports whole microseconds, so a node
faster than that reads 0; it is recorded at the 1 us resolution. FLOPs and bytes
(``onnx_ops``) come from the optimized graph (dumped at session creation): initializer shapes and
dtypes from the graph, every other tensor's shape and dtype from onnxruntime's own shape inference
as executed (the profile's ``output_type_shape``; the ONNX shape-inference pass does not know
onnxruntime's fused and NCHWc operators).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from helpers.ground_truth.hardware import HardwareProfile
from helpers.ground_truth.measurement import (
    DEFAULT_SETTINGS,
    PROFILER_RESOLUTION_MS,
    Measurement,
    MeasurementSettings,
    SubgraphWork,
    build_measurement,
    interleaved,
    random_images,
)
from helpers.ground_truth.onnx_ops import TensorInfo, fusion_pattern, node_flops, operation_type, profile_tensor

ONNX_PRECISIONS = ("fp32", "int8")


def _session(
    path: Path, settings: MeasurementSettings, profile_prefix: str | None = None, optimized_path: Path | None = None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # the NCHWc "hardware specific" notice on dumping is expected
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_input_shape(session: ort.InferenceSession, batch_size: int) -> tuple[str, tuple[int, ...]]:
    """(input name, concrete NHWC shape at ``batch_size``); checks the model takes one 4-D input."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(f"expected one NHWC image input, got {[(i.name, i.shape) for i in inputs]}")
    batch, *rest = inputs[0].shape
    if not all(isinstance(d, int) for d in rest):
        raise ValueError(f"input {inputs[0].name!r} must have fixed height, width and channels, got {inputs[0].shape}")
    if isinstance(batch, int) and batch != batch_size:
        raise ValueError(
            f"the model's batch dimension is fixed at {batch}, cannot measure batch {batch_size}; "
            "export it with a dynamic batch axis"
        )
    return inputs[0].name, (batch_size, *rest)


def _profiled_node_times(events: list[dict], warmup: int) -> tuple[list[str], dict[str, dict], np.ndarray]:
    """(node names in execution order, each node's first event args, ms matrix nodes x measured calls)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    order: dict[str, int] = {}
    args: dict[str, dict] = {}
    times: dict[tuple[str, int], float] = {}
    for event in sorted(kernels, key=lambda e: e["ts"]):
        run = next((i for i, (start, end) in enumerate(runs) if start <= event["ts"] <= end), None)
        if run is None:
            continue
        name = event["name"].removesuffix("_kernel_time")
        order.setdefault(name, len(order))
        args.setdefault(name, event["args"])
        times[name, run] = times.get((name, run), 0.0) + event["dur"] / 1e3
    names = sorted(order, key=order.get)
    matrix = np.array([[times.get((n, r), 0.0) for r in range(len(runs))] for n in names])
    return names, args, np.maximum(matrix, PROFILER_RESOLUTION_MS)


def _run_profiled(
    path: Path, feed: dict[str, np.ndarray], settings: MeasurementSettings
) -> tuple[tuple[np.ndarray, np.ndarray], list[dict], onnx.GraphProto]:
    """End-to-end (wall, CPU) ms, the profiler's events and the optimized graph, from interleaved calls."""
    with tempfile.TemporaryDirectory(prefix="calib-latency-") as work:
        optimized = Path(work) / "optimized.onnx"
        plain = _session(path, settings)
        profiled = _session(path, settings, profile_prefix=str(Path(work) / "profile"), optimized_path=optimized)
        end_to_end = interleaved(
            lambda: plain.run(None, feed), lambda: profiled.run(None, feed), settings.warmup, settings.repeats
        )
        events = json.loads(Path(profiled.end_profiling()).read_text())
        graph = onnx.load(str(optimized)).graph
    return end_to_end, events, graph


def _node_work(
    events: list[dict], graph: onnx.GraphProto, feed: dict[str, np.ndarray], warmup: int
) -> tuple[list[SubgraphWork], np.ndarray]:
    """Each executed node's work, in execution order, and its ms matrix (nodes x measured calls)."""
    names, args, matrix = _profiled_node_times(events, warmup)
    nodes = {n.name: n for n in graph.node}
    tensors: dict[str, TensorInfo] = {name: TensorInfo(a.shape, a.dtype.itemsize) for name, a in feed.items()}
    tensors |= {
        init.name: TensorInfo(tuple(init.dims), numpy_helper.to_array(init).dtype.itemsize)
        for init in graph.initializer
    }
    for name in names:
        tensors |= dict(zip([o for o in nodes[name].output if o], map(profile_tensor, args[name]["output_type_shape"])))
    work = []
    for name in names:
        node = nodes[name]
        inputs = [tensors.get(i) if i else None for i in node.input]
        outputs = [tensors[o] for o in node.output if o]
        if any(t is None for t, i in zip(inputs, node.input) if i):
            raise RuntimeError(
                f"node {name} ({node.op_type}): inputs {list(node.input)} not all resolved; "
                "the profile and the optimized graph disagree"
            )
        work.append(
            SubgraphWork(
                fusion_pattern=fusion_pattern(node),
                operation_type=operation_type(node.op_type),
                flops=node_flops(node, inputs, outputs),
                total_bytes=sum(t.nbytes for t in inputs if t is not None) + sum(t.nbytes for t in outputs),
                node_names=[name],
            )
        )
    return work, matrix


def measure_onnx(
    onnx_path: str | Path,
    *,
    model: str,
    precision: str,
    batch_size: int,
    hardware: HardwareProfile,
    settings: MeasurementSettings = DEFAULT_SETTINGS,
    run_id: str | None = None,
    run_index: int = 0,
) -> Measurement:
    """Measure an ONNX model (fp32, or int8 QDQ) with onnxruntime on the CPU."""
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"onnxruntime measurements take precision {' or '.join(ONNX_PRECISIONS)}, got {precision!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    input_name, shape = onnx_input_shape(_session(path, settings), batch_size)
    feed = {input_name: random_images(shape, settings.seed)}
    end_to_end, events, graph = _run_profiled(path, feed, settings)
    work, matrix = _node_work(events, graph, feed, settings.warmup)
    return build_measurement(
        model=model,
        runtime="onnxruntime",
        precision=precision,
        batch_size=batch_size,
        input_shape=shape,
        work=work,
        subgraph_ms=matrix,
        end_to_end=end_to_end,
        hardware=hardware,
        settings=settings,
        run_id=run_id,
        run_index=run_index,
    )
