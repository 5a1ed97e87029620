"""Latency measurement: one model x runtime x precision x batch size -> one ground-truth record.

What is measured
    *End to end*: the whole model as one call (``session.run`` / ``module(x)``), timed with
    ``perf_counter_ns``, ``repeats`` times after ``warmup`` calls; the raw samples are kept. With
    one thread the call's on-CPU time (``thread_time_ns``) is kept too: on a shared machine it is
    the latency without the time other processes held the core.
    *Subgraphs*: the units the runtime actually executes, each with its FLOPs and bytes, timed by
    an instrumented call (profiler or hooks) that alternates with the plain timed call, so both
    see the same machine. A coefficient of variation of the end-to-end latency above
    ``cv_warning``, or a median call that spent more than that fraction off the CPU, is returned
    as a warning: something else was using the CPU.

Subgraphs, onnxruntime (fp32, int8)
    One subgraph = one node of the graph onnxruntime executes *after* its graph optimizations
    (default level, ``ORT_ENABLE_ALL``): Conv+BatchNorm+Relu fused into one ``FusedConv`` or
    NCHWc ``Conv`` is one subgraph; a QDQ-wrapped Conv fused into ``QLinearConv`` is one. Its
    latency samples are the profiler's ``<node>_kernel_time`` events, one per measured call
    (warm-up calls are dropped by matching events to the ``model_run`` spans). The profiler
    reports whole microseconds, so a node faster than that reads 0; it is recorded at the 1 us
    resolution. FLOPs and bytes come from the optimized graph (dumped at session creation):
    initializer shapes and dtypes from the graph, every other tensor's shape and dtype from
    onnxruntime's own shape inference as executed (the profile's ``output_type_shape``; the
    ONNX shape-inference pass does not know onnxruntime's fused and NCHWc operators). Bytes =
    every input (weights included) plus every output, at the element size actually run (uint8
    and int8 tensors 1 byte, float 4). FLOPs (:func:`node_flops`): convolutions
    ``2 x N x H_out x W_out x |weights|``; matrix products ``2 x |output| x K``; pooling
    ``|output| x |kernel|``; global pooling and reductions ``|input|``; elementwise, activation and
    (de)quantization nodes ``|output|``; layout nodes (transpose, reshape, reorder ...) 0. For
    integer kernels these count operations.

Subgraphs, torch (fp32, bf16 via CPU autocast)
    One subgraph = one call of a leaf ``nn.Module`` (a module without children; the inference
    no-ops ``Identity`` and ``Dropout`` are left out), timed by forward pre/post hooks, in call
    order; functional ops between modules (a residual ``+``, a ``flatten``) belong to no
    subgraph. FLOPs of each call from ``torch.utils.flop_counter`` (convolutions and matrix
    products); modules it does not count are elementwise (one operation per element of their
    largest tensor) unless pure layout (0). Bytes = inputs + outputs + the module's parameters,
    at the dtype each tensor had in the call (weights of autocast ops at the autocast dtype).

bf16 runs only where the CPU has native bf16 (``avx512_bf16`` or ``amx_bf16``); elsewhere it
is skipped with the reason. Inputs are seeded uniform 0-255 float32 NHWC, the input contract.

Entry points: :func:`measure_onnx`, :func:`measure_torch` (one record each);
:func:`helpers.ground_truth.runtime_latency.measure_runtimes` (phase 05: a run's own fp32/int8 ONNX
models on every runtime, few repetitions; ``runtime_latency.publish`` stores them);
:func:`run_sweep` (the full sweep of ``params/ground_truth.yaml``, behind ``calib ground-truth measure``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
import yaml
from onnx import numpy_helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from helpers.ground_truth.estimator import end_to_end_ms
from helpers.ground_truth.hardware import HardwareProfile, cpu_flags, hardware_id, profile_hardware, system_state
from helpers.ground_truth.records import (
    MEASUREMENT_TYPE,
    SCHEMA_VERSION,
    LatencyStats,
    MeasurementRecord,
    ModelSummary,
    SubgraphMeasurement,
    new_run_id,
)
from helpers.ground_truth.store import (
    default_data_dir,
    hardware_profile_path,
    rebuild_manifest,
    save_measurement,
    write_lock,
)
from helpers.models.architectures import ARCHITECTURES, build_model
from helpers.models.onnx_export import export_onnx
from helpers.quantize import ort as quantize_ort
from helpers.run.headline import speedup_text
from helpers.run.run_record import now as utc_now

PROFILER_RESOLUTION_MS = 1e-3
ONNX_PRECISIONS = ("fp32", "int8")
TORCH_PRECISIONS = ("fp32", "bf16")


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


@dataclass
class Measurement:
    """A record, its raw samples (stored beside it as npz) and the warnings raised while measuring."""

    record: MeasurementRecord
    samples: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)


def random_images(shape: Sequence[int], seed: int) -> np.ndarray:
    """Seeded float32 NHWC inputs uniform in [0, 255): the input contract's range."""
    return np.random.default_rng(seed).uniform(0, 255, size=tuple(shape)).astype(np.float32)


def _interleaved(plain, instrumented, warmup: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
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


def _tool_version(runtime: str) -> str:
    try:
        own = importlib.metadata.version("calib-lab")
    except importlib.metadata.PackageNotFoundError:
        own = "source"
    versions = {
        "onnxruntime": lambda: ort.__version__,
        "torch": lambda: torch.__version__,
        "openvino": lambda: importlib.metadata.version("openvino"),
    }
    backend = f"{runtime} {versions[runtime]()}"
    return f"calib-lab {own}; {backend}"


def _build_record(
    *,
    model: str,
    runtime: str,
    precision: str,
    batch_size: int,
    input_shape: Sequence[int],
    subgraphs: list[SubgraphMeasurement],
    end_to_end: tuple[np.ndarray, np.ndarray],
    hardware: HardwareProfile,
    settings: MeasurementSettings,
    run_id: str | None,
    run_index: int,
) -> MeasurementRecord:
    """The record; the thread's CPU time is kept only for single-threaded runs (it misses pool threads)."""
    state, _ = system_state()
    wall_ms, cpu_ms = end_to_end
    cpu_time = LatencyStats.from_samples(cpu_ms) if settings.threads == 1 else None
    summary = ModelSummary.from_subgraphs(subgraphs, batch_size, LatencyStats.from_samples(wall_ms), cpu_time)
    return MeasurementRecord(
        schema_version=SCHEMA_VERSION,
        measurement_type=MEASUREMENT_TYPE,
        model=model,
        hardware_id=hardware.hardware_id,
        device=hardware.cpu_model + (f" + {hardware.gpu_name}" if hardware.gpu_name else ""),
        precision=precision,
        thermal_profile=state.power_mode or state.cpu_governor or "unknown",
        theoretical_peak_flops=hardware.theoretical_peak_flops[precision],
        measurement_date=utc_now(),
        tool_version=_tool_version(runtime),
        subgraphs=subgraphs,
        batch_size=batch_size,
        input_shape=[int(d) for d in input_shape],
        model_summary=summary,
        system_state=state,
        run_id=run_id or new_run_id(),
        run_index=run_index,
        runtime=runtime,
    )


def _finish(
    record: MeasurementRecord,
    end_to_end: tuple[np.ndarray, np.ndarray],
    subgraph_ms: np.ndarray,
    settings: MeasurementSettings,
) -> Measurement:
    """Raw samples and warnings: a high CV, or a thread kept off the CPU by other processes."""
    samples = {
        "end_to_end_ms": end_to_end[0],
        "subgraph_ms": subgraph_ms,
        "subgraph_ids": np.array([s.subgraph_id for s in record.subgraphs]),
    }
    summary, what = record.model_summary, f"{record.key} {record.precision} b{record.batch_size}"
    warnings = []
    if summary.end_to_end_latency.cv > settings.cv_warning:
        warnings.append(
            f"{what}: end-to-end latency CV {summary.end_to_end_latency.cv:.1%} exceeds "
            f"{settings.cv_warning:.0%}; another heavy process may be running -- re-measure on an "
            "idle machine"
        )
    if summary.end_to_end_cpu_time is not None:
        samples["end_to_end_cpu_ms"] = end_to_end[1]
        off_cpu = 1 - summary.end_to_end_cpu_time.p50 / summary.end_to_end_latency.p50
        if off_cpu > settings.cv_warning:
            warnings.append(
                f"{what}: the measuring thread was off the CPU for {off_cpu:.0%} of the median call; "
                "other processes competed for the core (end_to_end_cpu_time is unaffected)"
            )
    return Measurement(record, samples, warnings)


# ---------------------------------------------------------------- onnxruntime


_DTYPE_BYTES = {
    "float": 4,
    "float16": 2,
    "bfloat16": 2,
    "double": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "bool": 1,
}
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv"}
MATMUL_OPS = {
    "Gemm",
    "FusedGemm",
    "QGemm",
    "MatMul",
    "FusedMatMul",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
}
POOL_OPS = {"MaxPool", "AveragePool", "QLinearAveragePool", "NhwcMaxPool"}
REDUCE_OPS = {
    "GlobalAveragePool",
    "GlobalMaxPool",
    "QLinearGlobalAveragePool",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "ReduceMin",
}
QUANTIZE_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
LAYOUT_OPS = {
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "ReorderInput",
    "ReorderOutput",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Pad",
    "Shape",
    "Expand",
    "Tile",
}


def operation_type(op_type: str) -> str:
    """The coarse class of an executed operator: conv, matmul, pool, reduce, quantize, layout, elementwise."""
    for kind, ops in (
        ("conv", CONV_OPS),
        ("matmul", MATMUL_OPS),
        ("pool", POOL_OPS),
        ("reduce", REDUCE_OPS),
        ("quantize", QUANTIZE_OPS),
        ("layout", LAYOUT_OPS),
    ):
        if op_type in ops:
            return kind
    return "elementwise"


@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]
    itemsize: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize


def _weight_input(op_type: str) -> int:
    return 3 if op_type in ("QLinearConv", "QLinearMatMul", "QGemm") else 1


def node_flops(node: onnx.NodeProto, inputs: list[_Tensor | None], outputs: list[_Tensor]) -> int:
    """FLOPs (operations, for integer kernels) of one executed node; see the module docstring."""
    kind, out = operation_type(node.op_type), outputs[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if kind == "conv":
        weight = inputs[_weight_input(node.op_type)]
        channels = out.shape[-1] if attrs.get("channels_last") else out.shape[1]
        return 2 * (out.size // channels) * weight.size
    if kind == "matmul":
        a = inputs[0]
        k = a.shape[-2] if attrs.get("transA") else a.shape[-1]
        return 2 * out.size * k
    if kind == "pool":
        return out.size * int(np.prod(attrs.get("kernel_shape", [1])))
    if kind == "reduce":
        return inputs[0].size
    if kind == "layout":
        return 0
    return out.size


def _fusion_pattern(node: onnx.NodeProto) -> str:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    domain = node.domain.rsplit(".", 1)[-1] if node.domain.endswith("nchwc") else ""
    pattern = f"{domain}:{node.op_type}" if domain else node.op_type
    if domain and node.op_type == "Conv" and len(node.input) > 3 and node.input[3]:
        pattern += "+Sum"
    if isinstance(attrs.get("activation"), bytes) and attrs["activation"]:
        pattern += "+" + attrs["activation"].decode()
    return pattern


def _profile_tensor(entry: dict) -> _Tensor:
    ((dtype, shape),) = entry.items()
    return _Tensor(tuple(int(d) for d in shape), _DTYPE_BYTES[dtype])


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
        end_to_end = _interleaved(
            lambda: plain.run(None, feed), lambda: profiled.run(None, feed), settings.warmup, settings.repeats
        )
        events = json.loads(Path(profiled.end_profiling()).read_text())
        graph = onnx.load(str(optimized)).graph
    return end_to_end, events, graph


def _onnx_subgraphs(
    events: list[dict], graph: onnx.GraphProto, feed: dict[str, np.ndarray], model: str, peak: float, warmup: int
) -> tuple[list[SubgraphMeasurement], np.ndarray]:
    names, args, matrix = _profiled_node_times(events, warmup)
    nodes = {n.name: n for n in graph.node}
    tensors: dict[str, _Tensor] = {name: _Tensor(a.shape, a.dtype.itemsize) for name, a in feed.items()}
    tensors |= {
        init.name: _Tensor(tuple(init.dims), numpy_helper.to_array(init).dtype.itemsize) for init in graph.initializer
    }
    for name in names:
        tensors |= dict(
            zip([o for o in nodes[name].output if o], map(_profile_tensor, args[name]["output_type_shape"]))
        )
    subgraphs = []
    for index, name in enumerate(names):
        node = nodes[name]
        inputs = [tensors.get(i) if i else None for i in node.input]
        outputs = [tensors[o] for o in node.output if o]
        if any(t is None for t, i in zip(inputs, node.input) if i):
            raise RuntimeError(
                f"node {name} ({node.op_type}): inputs {list(node.input)} not all resolved; "
                "the profile and the optimized graph disagree"
            )
        subgraphs.append(
            SubgraphMeasurement.from_samples(
                subgraph_id=f"{index:03d}",
                fusion_pattern=_fusion_pattern(node),
                operation_type=operation_type(node.op_type),
                flops=node_flops(node, inputs, outputs),
                total_bytes=sum(t.nbytes for t in inputs if t is not None) + sum(t.nbytes for t in outputs),
                theoretical_peak_flops=peak,
                latency_ms=matrix[index],
                node_names=[name],
                source_model=model,
            )
        )
    return subgraphs, matrix


def measure_onnx(
    onnx_path: str | Path,
    *,
    model: str,
    precision: str,
    batch_size: int,
    hardware: HardwareProfile,
    settings: MeasurementSettings = MeasurementSettings(),
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
    subgraphs, matrix = _onnx_subgraphs(
        events, graph, feed, model, hardware.theoretical_peak_flops[precision], settings.warmup
    )
    record = _build_record(
        model=model,
        runtime="onnxruntime",
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
    return _finish(record, end_to_end, matrix, settings)


# ---------------------------------------------------------------- torch

LAYOUT_MODULES = (nn.Flatten, nn.Unflatten, nn.ZeroPad2d)
NO_OP_MODULES = (nn.Identity, nn.Dropout)


def bf16_support(flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively, why)."""
    flags = cpu_flags() if flags is None else flags
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if native:
        return True, f"native bf16 ({', '.join(native)})"
    return False, "the CPU has neither avx512_bf16 nor amx_bf16; bf16 would be emulated, so it is not measured"


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _leaf_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children, except the no-ops of inference (Identity, Dropout)."""
    return [
        (name, m)
        for name, m in module.named_modules()
        if name and not list(m.children()) and not isinstance(m, NO_OP_MODULES)
    ]


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _module_work(module: nn.Module, args, output, counted_flops: int) -> tuple[int, int]:
    """(FLOPs, bytes) of one leaf-module call; see the module docstring."""
    outputs = _tensors(output)
    tensors = _tensors(args) + outputs
    cast_weights = isinstance(module, (nn.Conv2d, nn.Linear)) and outputs  # autocast runs them at the output dtype
    param_bytes = sum(
        p.numel() * (outputs[0].element_size() if cast_weights else p.element_size())
        for p in module.parameters(recurse=False)
    )
    nbytes = sum(t.numel() * t.element_size() for t in tensors) + param_bytes
    if counted_flops:
        return counted_flops, nbytes
    if isinstance(module, LAYOUT_MODULES):
        return 0, nbytes
    return max((t.numel() for t in tensors), default=0), nbytes


def _torch_call_work(module: nn.Module, images: torch.Tensor, precision: str) -> list[tuple[str, str, int, int]]:
    """(module name, type, FLOPs, bytes) of every leaf-module call in one forward pass, in order."""
    calls: list[tuple[str, str, int, int]] = []
    counters: dict[int, FlopCounterMode] = {}

    def before(name):
        def hook(mod, args):
            counters[id(mod)] = FlopCounterMode(display=False)
            counters[id(mod)].__enter__()

        return hook

    def after(name):
        def hook(mod, args, output):
            counter = counters.pop(id(mod))
            counter.__exit__(None, None, None)
            calls.append((name, type(mod).__name__, *_module_work(mod, args, output, counter.get_total_flops())))

        return hook

    with _hooks(module, before, after), torch.inference_mode(), _autocast(precision):
        module(images)
    return calls


@contextlib.contextmanager
def _hooks(module: nn.Module, before, after) -> Iterator[None]:
    handles = []
    for name, leaf in _leaf_modules(module):
        handles.append(leaf.register_forward_pre_hook(before(name)))
        handles.append(leaf.register_forward_hook(after(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _torch_timings(
    module: nn.Module, images: torch.Tensor, precision: str, settings: MeasurementSettings
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """(end-to-end (wall, CPU) ms, ms matrix of leaf-module calls in order x measured passes), interleaved."""
    starts: list[int] = []
    passes: list[list[float]] = []

    def before(name):
        return lambda mod, args: starts.append(time.perf_counter_ns())

    def after(name):
        return lambda mod, args, output: passes[-1].append((time.perf_counter_ns() - starts.pop()) / 1e6)

    def hooked():
        passes.append([])
        with _hooks(module, before, after):
            module(images)

    with torch.inference_mode(), _autocast(precision):
        end_to_end = _interleaved(lambda: module(images), hooked, settings.warmup, settings.repeats)
    return end_to_end, np.array(passes[settings.warmup :]).T


def measure_torch(
    module: nn.Module,
    *,
    model: str,
    precision: str,
    batch_size: int,
    image_shape: Sequence[int],
    hardware: HardwareProfile,
    settings: MeasurementSettings = MeasurementSettings(),
    run_id: str | None = None,
    run_index: int = 0,
) -> Measurement:
    """Measure a torch model eagerly on the CPU at fp32 or bf16 (autocast); ``image_shape`` is (H, W, C)."""
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"torch measurements take precision {' or '.join(TORCH_PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not (support := bf16_support())[0]:
        raise RuntimeError(support[1])
    if len(image_shape) != 3 or batch_size < 1:
        raise ValueError(f"need image_shape (H, W, C) and batch_size >= 1, got {image_shape}, {batch_size}")
    shape = (batch_size, *image_shape)
    images = torch.from_numpy(random_images(shape, settings.seed))
    was_training = module.training
    module.eval()
    try:
        with _torch_threads(settings.threads):
            work = _torch_call_work(module, images, precision)
            end_to_end, matrix = _torch_timings(module, images, precision, settings)
    finally:
        module.train(was_training)
    peak = hardware.theoretical_peak_flops[precision]
    subgraphs = [
        SubgraphMeasurement.from_samples(
            subgraph_id=f"{i:03d}",
            fusion_pattern=kind,
            operation_type=_torch_operation_type(kind),
            flops=flops,
            total_bytes=nbytes,
            theoretical_peak_flops=peak,
            latency_ms=matrix[i],
            node_names=[name],
            source_model=model,
        )
        for i, (name, kind, flops, nbytes) in enumerate(work)
    ]
    record = _build_record(
        model=model,
        runtime="torch",
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
    return _finish(record, end_to_end, matrix, settings)


def _torch_operation_type(module_type: str) -> str:
    if module_type.startswith("Conv"):
        return "conv"
    if module_type == "Linear":
        return "matmul"
    if module_type in ("MaxPool2d", "AvgPool2d"):
        return "pool"
    if module_type.startswith("Adaptive"):
        return "reduce"
    if module_type in {cls.__name__ for cls in LAYOUT_MODULES}:
        return "layout"
    return "elementwise"


# ---------------------------------------------------------------- sweeps

VARIANTS = (("fp32", "onnxruntime"), ("fp32", "torch"), ("int8", "onnxruntime"), ("bf16", "torch"))
QUICK_SETTINGS = MeasurementSettings(repeats=20, warmup=3)


@dataclass(frozen=True)
class ModelSpec:
    """A model of the sweep: its name in the store, its ``helpers.models`` architecture, its input."""

    name: str
    arch: str
    input_shape: tuple[int, int, int] | None = None

    def build(self, num_classes: int, seed: int) -> nn.Module:
        torch.manual_seed(seed)  # untrained weights: latency does not depend on their values
        return build_model(self.arch, num_classes, input_shape=self.input_shape).eval()

    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.input_shape or ARCHITECTURES[self.arch].default_input_shape)


@dataclass(frozen=True)
class SweepConfig:
    """The full sweep (``params/ground_truth.yaml``): models x variants x batch sizes."""

    models: tuple[ModelSpec, ...]
    variants: tuple[tuple[str, str], ...] = VARIANTS
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    num_classes: int = 10
    calibration_images: int = 32
    settings: MeasurementSettings = MeasurementSettings()
    store: str | None = None

    def __post_init__(self):
        if not self.models or not self.variants or not self.batch_sizes:
            raise ValueError("a sweep needs at least one model, one variant and one batch size")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(
                f"unknown variants {unknown}; valid precision/runtime pairs: {', '.join('/'.join(v) for v in VARIANTS)}"
            )
        if any(b < 1 for b in self.batch_sizes) or self.num_classes < 2 or self.calibration_images < 1:
            raise ValueError(f"batch sizes must be >= 1, num_classes >= 2, calibration_images >= 1: {self}")

    @classmethod
    def from_mapping(cls, data: dict) -> SweepConfig:
        """From the YAML form; unknown keys are an error listing the valid ones."""
        setting_keys = {"repeats", "warmup", "threads", "seed", "cv_warning"}
        own_keys = {"models", "variants", "batch_sizes", "num_classes", "calibration_images", "store"}
        unknown = set(data) - setting_keys - own_keys
        if unknown:
            raise ValueError(f"unknown sweep keys {sorted(unknown)}; valid: {sorted(setting_keys | own_keys)}")
        models = tuple(
            ModelSpec(m, m)
            if isinstance(m, str)
            else ModelSpec(m["name"], m["arch"], tuple(m["input_shape"]) if m.get("input_shape") else None)
            for m in data.get("models", ())
        )
        variants = tuple(tuple(v.split("/")) for v in data.get("variants", ["/".join(v) for v in VARIANTS]))
        return cls(
            models=models,
            variants=variants,
            batch_sizes=tuple(data.get("batch_sizes", (1, 8, 32))),
            num_classes=data.get("num_classes", 10),
            calibration_images=data.get("calibration_images", 32),
            settings=MeasurementSettings(**{k: data[k] for k in setting_keys & set(data)}),
            store=data.get("store"),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sweep profile {path} does not exist")
        return cls.from_mapping(yaml.safe_load(path.read_text()) or {})


@dataclass
class SweepResult:
    """What a sweep stored, what it skipped (with why), the warnings it raised, and why any system
    state field is unknown (``unknown_state``: field -> reason, from ``hardware.system_state``).

    A phase-05 sweep (``runtime_latency.measure_runtimes``) stores nothing while it measures: its
    ``paths`` are where ``runtime_latency.publish`` will put the ``pending`` measurements, and
    ``hardware`` is the machine's profile to store beside them.
    """

    store: Path
    run_id: str
    hardware: HardwareProfile | None = None
    pending: list[Measurement] = field(default_factory=list)
    unknown_state: dict[str, str] = field(default_factory=lambda: system_state()[1])
    records: list[MeasurementRecord] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, measurement: Measurement, path: Path) -> None:
        self.records.append(measurement.record)
        self.paths.append(path)
        self.warnings += measurement.warnings

    def table(self):
        """One row per stored record: end-to-end median and CV, subgraph count and sum."""
        return pd.DataFrame(
            [
                {
                    "model": r.model,
                    "runtime": r.runtime,
                    "precision": r.precision,
                    "batch_size": r.batch_size,
                    "end_to_end_p50_ms": r.model_summary.end_to_end_latency.p50,
                    "end_to_end_cv": r.model_summary.end_to_end_latency.cv,
                    "subgraphs": r.model_summary.num_subgraphs,
                    "subgraph_sum_ms": r.model_summary.total_latency_ms,
                }
                for r in self.records
            ]
        )


def store_hardware_profile(root: str | Path, remeasure: bool = False, save: bool = True) -> HardwareProfile:
    """This machine's profile from the store, measured (GEMM peak, bandwidth) when absent, and saved unless
    ``save`` is False (phase 05 saves it with its records, once it has completed)."""
    path = hardware_profile_path(root, hardware_id())
    if path.is_file() and not remeasure:
        return HardwareProfile.load(path)
    profile = profile_hardware(measure=True)
    if save:
        profile.save(path)
    return profile


def quantize_int8(
    fp32_path: str | Path, int8_path: str | Path, image_shape: Sequence[int], images: int = 32, seed: int = 0
) -> Path:
    """U8S8 per-channel QDQ int8 via ``helpers.quantize.ort``, calibrated on seeded random uint8 images."""
    int8_path = Path(int8_path)
    prepared = quantize_ort.prepare_model(fp32_path, int8_path.with_name(int8_path.stem + "_prepared.onnx"))
    calibration = np.random.default_rng(seed).integers(0, 256, size=(images, *image_shape), dtype=np.uint8)
    stats = quantize_ort.collect_calibration_statistics(prepared, calibration)
    quantize_ort.quantize_model(prepared, int8_path, stats, "minmax")
    return int8_path


def _measure_variant(
    spec: ModelSpec,
    module: nn.Module,
    onnx_paths: dict[str, Path],
    precision: str,
    runtime: str,
    batch_size: int,
    **common,
) -> Measurement:
    if runtime == "torch":
        return measure_torch(
            module,
            model=spec.name,
            precision=precision,
            batch_size=batch_size,
            image_shape=spec.image_shape(),
            **common,
        )
    return measure_onnx(onnx_paths[precision], model=spec.name, precision=precision, batch_size=batch_size, **common)


def run_sweep(config: SweepConfig, store: str | Path | None = None, progress: bool = True) -> SweepResult:
    """Measure every model x supported variant x batch size, store each record, rebuild the manifest."""
    root = Path(store or config.store or default_data_dir())
    hardware = store_hardware_profile(root, remeasure=True)
    result = SweepResult(store=root, run_id=new_run_id())
    variants = list(config.variants)
    if ("bf16", "torch") in variants and not (support := bf16_support())[0]:
        variants.remove(("bf16", "torch"))
        result.skipped.append(f"bf16/torch: {support[1]}")
    jobs = [(spec, b, v) for spec in config.models for b in config.batch_sizes for v in variants]
    with tempfile.TemporaryDirectory(prefix="calib-sweep-") as work:
        built: dict[str, tuple[nn.Module, dict[str, Path]]] = {}
        for index, (spec, batch_size, (precision, runtime)) in enumerate(
            tqdm(jobs, desc="ground truth", disable=not progress)
        ):
            if spec.name not in built:
                built.clear()  # one model's artifacts at a time
                built[spec.name] = _prepare_model(spec, config, Path(work), variants)
            module, onnx_paths = built[spec.name]
            measurement = _measure_variant(
                spec,
                module,
                onnx_paths,
                precision,
                runtime,
                batch_size,
                hardware=hardware,
                settings=config.settings,
                run_id=result.run_id,
                run_index=index,
            )
            with write_lock(root):
                path = save_measurement(measurement.record, root, measurement.samples, update_manifest=False)
            result.add(measurement, path)
    with write_lock(root):
        rebuild_manifest(root, hardware.hardware_id)
    return result


def _prepare_model(
    spec: ModelSpec, config: SweepConfig, work: Path, variants: list[tuple[str, str]]
) -> tuple[nn.Module, dict[str, Path]]:
    module = spec.build(config.num_classes, config.settings.seed)
    paths = {"fp32": export_onnx(module, work / f"{spec.name}.onnx", spec.image_shape())}
    if ("int8", "onnxruntime") in variants:
        paths["int8"] = quantize_int8(
            paths["fp32"],
            work / f"{spec.name}_int8.onnx",
            spec.image_shape(),
            config.calibration_images,
            config.settings.seed,
        )
    return module, paths


def fixed_batch_size(onnx_path: str | Path) -> int | None:
    """The batch size an ONNX model's first input is fixed at, or None for a dynamic batch axis."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    return batch.dim_value if batch.HasField("dim_value") else None


# ---------------------------------------------------------------- phase-05 results


def latency_report(result: SweepResult) -> dict:
    """latency.json content: per stored record its end-to-end latency (wall clock and on-CPU), throughput
    and subgraph count, the INT8/FP32 latency ratio per batch size, and what was skipped or flagged.

    Timings: the phase writing this is not byte-deterministic, by nature.
    """
    rows = []
    for record, path in sorted(zip(result.records, result.paths), key=lambda rp: rp[0].run_index):
        summary = record.model_summary
        rows.append(
            {
                "model": record.model,
                "runtime": record.runtime,
                "precision": record.precision,
                "batch_size": record.batch_size,
                "file": path.relative_to(result.store).as_posix(),
                "end_to_end_latency_ms": summary.end_to_end_latency.to_dict(),
                "end_to_end_cpu_time_ms": (
                    summary.end_to_end_cpu_time.to_dict() if summary.end_to_end_cpu_time else None
                ),
                "contention_free_ms": end_to_end_ms(record),
                "throughput_fps": summary.throughput_fps,
                "num_subgraphs": summary.num_subgraphs,
                "total_flops": summary.total_flops,
            }
        )
    return {
        "hardware_id": result.records[0].hardware_id if result.records else None,
        "run_id": result.run_id,
        "measurements": rows,
        "int8_over_fp32": int8_over_fp32(result.records),
        "skipped": result.skipped,
        "warnings": result.warnings,
    }


def int8_over_fp32(records: Sequence[MeasurementRecord]) -> dict[str, float]:
    """INT8 latency as a fraction of FP32 (contention-free, ``latency_estimator.end_to_end_ms``), per
    ``<model>/<runtime>/b<batch>`` measured at both precisions."""
    by_config = {(r.model, r.runtime, r.batch_size, r.precision): end_to_end_ms(r) for r in records}
    return {
        f"{m}/{rt}/b{b}": by_config[m, rt, b, "int8"] / fp32
        for (m, rt, b, p), fp32 in sorted(by_config.items())
        if p == "fp32" and (m, rt, b, "int8") in by_config
    }


def latency_figure(records: Sequence[MeasurementRecord]):
    """One panel per batch size: mean end-to-end latency per precision with its 95% CI (clipped at 0 ms),
    the contention-free latency as a dot, and INT8's speed-up over FP32 in the title."""
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("no records to plot; measure some first")
    batches = sorted({r.batch_size for r in records})
    ratios = int8_over_fp32(records)
    fig, axes = plt.subplots(1, len(batches), figsize=(3.6 * len(batches), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = sorted((r for r in records if r.batch_size == batch), key=lambda r: (r.model, r.runtime, r.precision))
        labels = [f"{r.precision}\n{r.model}" if len({r.model for r in rows}) > 1 else r.precision for r in rows]
        if len({r.runtime for r in rows}) > 1:  # name the runtime too (phase 05 measures several)
            labels = [f"{label}\n{r.runtime}" for label, r in zip(labels, rows)]
        stats = [r.model_summary.end_to_end_latency for r in rows]
        means = np.array([s.mean for s in stats])
        errors = np.array(
            [
                [s.mean - max(s.ci_lower, 0.0) for s in stats],  # a latency CI stops at 0 ms
                [s.ci_upper - s.mean for s in stats],
            ]
        )
        x = np.arange(len(rows))
        ax.bar(
            x,
            means,
            yerr=errors,
            capsize=4,
            color=["C0" if r.precision == "fp32" else "C1" for r in rows],
            label="mean wall clock, 95% CI",
        )
        ax.plot(x, [end_to_end_ms(r) for r in rows], "kD", ms=5, label="contention-free (min on-CPU)")
        speedup = "; ".join(  # ratio keys: <model>/<runtime>/b<batch>
            f"{k.rsplit('/', 2)[1]} {speedup_text(1 / v)}" for k, v in ratios.items() if k.endswith(f"/b{batch}") and v
        )
        ax.set(
            xticks=x,
            xticklabels=labels,
            ylabel="end-to-end latency per call (ms)",
            title=f"batch {batch}" + (f"\nINT8 vs FP32: {speedup} (contention-free)" if speedup else ""),
        )
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
