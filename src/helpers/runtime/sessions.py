"""One inference interface over two CPU runtimes: onnxruntime and OpenVINO, both reading the same .onnx file.

:func:`open_session` ``(path, runtime, precision=, threads=, batch_size=)`` returns a :class:`Session`
whose settings are explicit and recorded (:meth:`Session.describe`):

* ``runtime`` -- ``onnxruntime`` (``CPUExecutionProvider``, ``intra_op_num_threads=threads``, one
  inter-op thread, sequential execution) or ``openvino`` (the ``openvino`` package's CPU plugin,
  ``INFERENCE_NUM_THREADS=threads``, ``PERFORMANCE_HINT=LATENCY``: one stream, so a call uses every
  thread it was given; ``ENABLE_CPU_PINNING=False``: on a shared machine a thread pinned to a busy core
  waits for it -- measured 2-3x slower small calls on this 2-core host under load).
* ``precision`` -- what the file is run at:

  ``fp32``  a float model, float32 arithmetic. OpenVINO gets ``INFERENCE_PRECISION_HINT=f32``: its
            CPU default on bf16-capable CPUs (``avx512_bf16`` / AMX) is bf16, which is not FP32.
  ``bf16``  a float model run with bf16 arithmetic: OpenVINO only (``INFERENCE_PRECISION_HINT=bf16``),
            and only where OpenVINO reports native bf16 for the CPU (``avx512_bf16`` / AMX); onnxruntime's CPU
            provider has no bf16 kernels, so it is refused there with the reason.
  ``int8``  a QDQ file (QuantizeLinear/DequantizeLinear pairs, as phase 04 writes): both runtimes fuse
            the pairs into integer kernels; OpenVINO runs what stays in float at f32 (the f32 hint).

  A precision that does not match the file (``int8`` on a float file, ``fp32``/``bf16`` on a QDQ file)
  is an error: the name in results must say what ran.
* ``batch_size`` -- :meth:`Session.logits` runs images in chunks of this size (the last one smaller).
  Both runtimes keep the file's dynamic batch axis; OpenVINO compiles a kernel set per shape it sees.

Same file, same settings, same images and chunks -> the same logits from call to call, per runtime
(tested). The two runtimes' logits differ: FP32 by ~1e-5, INT8 QDQ by up to ~1 logit (different
rounding of the fused requantization), which is why phase 04 checks accuracy per runtime.

:meth:`Session.layer_times` runs the runtime's own profiler (onnxruntime's JSON trace, OpenVINO's
``PERF_COUNT``) on one batch and returns one row per executed layer: what it fused, the kernel that
ran (``brgconv_avx512_I8``...), its precision and its time.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from helpers.models.inference import batched_logits
from helpers.models.onnx_export import INPUT_NAME
from helpers.run import atomic

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


class RuntimeUnavailable(RuntimeError):
    """A runtime/precision pair this machine or this install cannot run, with the reason."""


NO_NATIVE_BF16 = "OpenVINO reports no native bf16 on this CPU (no avx512_bf16 / AMX): it is not offered"


def support(runtime: str, precision: str, *, native_bf16: bool | None = None) -> tuple[bool, str]:
    """(whether ``runtime`` can run ``precision`` here, why). Checks names first, then the install and CPU.

    ``native_bf16`` is the answer of the CPU capability check for bf16 (:func:`cpu_bf16`): None asks this
    machine; True or False states it (a caller deciding for another CPU, or a test of the path without bf16).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False, "the openvino package is not installed (pip install 'openvino>=2026.4')"
    if precision != "bf16":
        return True, "supported"
    if runtime == "onnxruntime":
        return False, "onnxruntime's CPU provider has no bf16 kernels; run bf16 with runtime='openvino'"
    if native_bf16 is None:
        return cpu_bf16()
    return (True, "native bf16 (stated by the caller)") if native_bf16 else (False, NO_NATIVE_BF16)


def cpu_bf16() -> tuple[bool, str]:
    """The CPU capability check for bf16: (whether OpenVINO runs bf16 natively here, why)."""
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return False, NO_NATIVE_BF16
    failure = openvino_bf16_build_failure()
    if failure:
        return False, f"OpenVINO lists BF16 (from CPUID) but cannot build bf16 kernels here: {failure}"
    return True, "native bf16 (OpenVINO's CPU OPTIMIZATION_CAPABILITIES lists BF16)"


@functools.cache
def openvino_bf16_build_failure() -> str | None:
    """Why OpenVINO fails to compile a small bf16 MatMul here (the last line of its error), or None.

    OpenVINO reads bf16 support from CPUID, but oneDNN builds the kernels: with oneDNN's ISA capped
    (``ONEDNN_MAX_CPU_ISA=AVX2``, the regression's simulated second machine) the listed precision has
    no kernels, so compiling any bf16 model fails. One probe per process decides it for every caller.
    """
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([4, 32], np.float32, name=INPUT_NAME)
    probe = ov.Model([ops.matmul(x, ops.constant(np.ones((32, 16), np.float32)), False, False)], [x], "bf16_probe")
    try:
        ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    except RuntimeError as exc:
        return ([line for line in str(exc).splitlines() if line.strip()][-1:] or [type(exc).__name__])[0]
    return None


def available(precision: str) -> list[str]:
    """The runtimes that can run ``precision`` on this machine, in RUNTIMES order."""
    return [r for r in RUNTIMES if support(r, precision)[0]]


def is_qdq(path: str | Path) -> bool:
    """Whether an ONNX file is a QDQ-quantized model (it holds QuantizeLinear/DequantizeLinear nodes)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in QDQ_OPS for node in graph.node)


@dataclass(frozen=True)
class LayerTime:
    """One executed layer of one profiled call: the runtime's name, type, kernel, precision, time."""

    name: str
    layer_type: str
    kernel: str
    precision: str
    ms: float
    fused: tuple[str, ...] = ()


class Session:
    """A compiled model: ``run`` one float32 NHWC batch, ``logits`` of uint8 images, ``describe`` the settings."""

    runtime = ""

    def __init__(self, path: Path, precision: str, threads: int, batch_size: int, input_shape: tuple[int, ...]):
        self.path, self.precision, self.threads, self.batch_size = path, precision, threads, batch_size
        self.input_shape = input_shape  # one sample's shape

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_named(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model on one float32 NHWC batch, by name (a bundled graph has several)."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def layer_times(self, batch: np.ndarray, calls: int = 3) -> list[LayerTime]:
        raise NotImplementedError

    def logits(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """float32 logits of uint8 NHWC ``images`` (``helpers.data.preprocess`` here), ``batch_size`` at a time."""
        return batched_logits(
            self.run, images, self.batch_size, desc=self.runtime, progress=progress, shape=self.input_shape
        )

    def describe(self) -> dict:
        """The settings, as recorded next to every result this session produced."""
        row = {
            "runtime": self.runtime,
            "version": self.version(),
            "precision": self.precision,
            "threads": self.threads,
            "batch_size": self.batch_size,
        }
        if self.runtime == "openvino":
            row["inference_precision_hint"] = OPENVINO_HINTS[self.precision]
        return row


class OnnxRuntimeSession(Session):
    runtime = "onnxruntime"

    def __init__(self, path: Path, precision: str, threads: int, batch_size: int, input_shape: tuple[int, ...]):
        super().__init__(path, precision, threads, batch_size, input_shape)
        self._session = self._create()

    def _create(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {INPUT_NAME: batch})[0]

    def run_named(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(None, {INPUT_NAME: batch})))

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def layer_times(self, batch: np.ndarray, calls: int = 3) -> list[LayerTime]:
        """Per executed node (after onnxruntime's fusions), median over ``calls`` profiled calls."""
        with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
            session = self._create(profile_prefix=str(Path(tmp) / "profile"))
            session.run(None, {INPUT_NAME: batch})  # warm-up; its events are dropped below
            for _ in range(calls):
                session.run(None, {INPUT_NAME: batch})
            events = atomic.read_json(session.end_profiling(), "onnxruntime's profile of this session: run it again")
        nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        names = list(dict.fromkeys(e["name"] for e in nodes))
        rows = []
        for name in names:
            mine = [e for e in nodes if e["name"] == name][-calls:]
            args = mine[0]["args"]
            rows.append(
                LayerTime(
                    name=name.removesuffix("_kernel_time"),
                    layer_type=args.get("op_name", ""),
                    kernel=args.get("provider", ""),
                    precision=_ort_precision(args),
                    ms=float(np.median([e["dur"] for e in mine])) / 1e3,
                )
            )
        return rows


def _ort_precision(args: dict) -> str:
    types = [next(iter(t)) for t in args.get("input_type_shape", []) if t]
    return "int8" if any(t in ("int8", "uint8") for t in types) else (types[0] if types else "")


def openvino_config(precision: str, threads: int, perf_count: bool = False) -> dict:
    """The CPU plugin's settings for ``precision`` at ``threads``: one stream, the precision hint, no pinning."""
    return {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision],
        "ENABLE_CPU_PINNING": False,
        "PERF_COUNT": perf_count,
    }


def settings(runtime: str, precision: str, threads: int) -> dict:
    """What a client sets to run a file at ``precision`` on ``runtime`` as :func:`open_session` does (data for
    bundle.json): onnxruntime's session options and provider, or OpenVINO's CPU plugin config."""
    if runtime == "openvino":
        config = openvino_config(precision, threads)
        del config["PERF_COUNT"]
        return {"device": "CPU", "config": config}
    return {
        "providers": ["CPUExecutionProvider"],
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
    }


class OpenVinoSession(Session):
    runtime = "openvino"

    def __init__(self, path: Path, precision: str, threads: int, batch_size: int, input_shape: tuple[int, ...]):
        super().__init__(path, precision, threads, batch_size, input_shape)
        self._compiled = self._compile()
        self._request = self._compiled.create_infer_request()

    def _compile(self, perf_count: bool = False):
        import openvino as ov

        core = ov.Core()
        return core.compile_model(
            core.read_model(str(self.path)), "CPU", openvino_config(self.precision, self.threads, perf_count)
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._request.infer({0: batch})[0].copy()

    def run_named(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self._request.infer({0: batch})
        return {port.get_any_name(): result[port].copy() for port in self._compiled.outputs}

    def version(self) -> str:
        import openvino as ov

        return ov.__version__

    def profiler(self, batch: np.ndarray) -> OpenVinoProfiler:
        """A second compilation of the model with PERF_COUNT, its shape fixed to ``batch``'s."""
        return OpenVinoProfiler(self, batch)

    def layer_times(self, batch: np.ndarray, calls: int = 3) -> list[LayerTime]:
        """Per executed layer (OpenVINO's fused graph), median of ``calls`` profiled calls (PERF_COUNT)."""
        compiled = self._compile(perf_count=True)
        request = compiled.create_infer_request()
        request.infer({0: batch})
        samples: dict[str, list[float]] = {}
        info = {}
        for _ in range(calls):
            request.infer({0: batch})
            for entry in request.get_profiling_info():
                if entry.status.name == "EXECUTED":
                    samples.setdefault(entry.node_name, []).append(entry.real_time.total_seconds() * 1e3)
                    info[entry.node_name] = entry
        fused = {
            op.get_friendly_name(): tuple(str(op.get_rt_info()["originalLayersNames"].astype(str)).split(","))
            for op in compiled.get_runtime_model().get_ordered_ops()
        }
        return [
            LayerTime(
                name=name,
                layer_type=info[name].node_type,
                kernel=info[name].exec_type,
                precision=_ov_precision(info[name].exec_type),
                ms=float(np.median(times)),
                fused=fused.get(name, ()),
            )
            for name, times in samples.items()
        ]


class OpenVinoProfiler:
    """``call()`` runs one profiled inference; ``last_ms()`` gives each executed layer's time in it (ms), in
    the order of ``work`` (:func:`openvino_layer_work`: FLOPs, bytes and kernel at this batch)."""

    def __init__(self, session: OpenVinoSession, batch: np.ndarray):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(session.path))
        model.reshape({0: list(batch.shape)})
        self._compiled = core.compile_model(model, "CPU", openvino_config(session.precision, session.threads, True))
        self._request = self._compiled.create_infer_request()
        self._batch = batch
        self.call()
        executed = {e.node_name for e in self._request.get_profiling_info() if e.status.name == "EXECUTED"}
        self.work = openvino_layer_work(self._compiled, executed)

    def call(self) -> None:
        self._request.infer({0: self._batch})

    def last_ms(self) -> np.ndarray:
        times = {e.node_name: e.real_time.total_seconds() * 1e3 for e in self._request.get_profiling_info()}
        return np.array([times.get(w.name, 0.0) for w in self.work])


def _ov_precision(exec_type: str) -> str:
    tail = exec_type.rsplit("_", 1)[-1].lower()
    return {"i8": "int8", "u8": "int8", "f32": "fp32", "bf16": "bf16"}.get(tail, tail)


BACKENDS = {"onnxruntime": OnnxRuntimeSession, "openvino": OpenVinoSession}


def image_shape(path: Path) -> tuple[int, ...]:
    """One sample's (H, W, C); checks the file has the project's contract: one 4-D input named ``images``."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ValueError(
            f"{path} has inputs {[i.name for i in inputs]}; models exported here take one NHWC input "
            f"named {INPUT_NAME!r}"
        )
    return tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim[1:])


def open_session(
    path: str | Path, runtime: str = "onnxruntime", *, precision: str = "fp32", threads: int = 1, batch_size: int = 32
) -> Session:
    """A session for the ONNX file ``path`` on ``runtime`` at ``precision`` (module docstring); checked first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if not isinstance(threads, int) or threads < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"threads and batch_size must be integers >= 1, got threads={threads!r}, batch_size={batch_size!r}"
        )
    ok, why = support(runtime, precision)
    if not ok:
        raise RuntimeUnavailable(f"{runtime} cannot run {precision} here: {why}")
    quantized = is_qdq(path)
    if quantized != (precision == "int8"):
        raise ValueError(
            f"{path} is {'a QDQ (int8)' if quantized else 'a float'} model but precision={precision!r}; "
            f"use precision={'int8' if quantized else 'fp32 or bf16'} for it"
        )
    return BACKENDS[runtime](path, precision, threads, batch_size, image_shape(path))


def paired_timings(calls: dict[str, callable], rounds: int = 7, calls_per_round: int = 10) -> dict[str, np.ndarray]:
    """Seconds per call of each named callable: ``rounds`` rounds, each timing every callable in turn
    (``calls_per_round`` calls after one untimed call), so all see the same machine load. Returns
    the per-round means; compare medians."""
    import time

    if rounds < 1 or calls_per_round < 1:
        raise ValueError(f"rounds and calls_per_round must be >= 1, got {rounds}, {calls_per_round}")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call()
            start = time.perf_counter()
            for _ in range(calls_per_round):
                call()
            times[name].append((time.perf_counter() - start) / calls_per_round)
    return {name: np.array(values) for name, values in times.items()}


def random_batch(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Seeded float32 NHWC inputs uniform in [0, 255): the input contract's range."""
    return np.random.default_rng(seed).uniform(0, 255, size=tuple(shape)).astype(np.float32)


@dataclass(frozen=True)
class LayerWork:
    """One layer OpenVINO executes: its name, type, kernel, precision, FLOPs and bytes at a fixed batch."""

    name: str
    layer_type: str
    kernel: str
    precision: str
    flops: int
    total_bytes: int
    fused: tuple[str, ...]


_OV_ITEMSIZE = {"f32": 4, "bf16": 2, "f16": 2, "i8": 1, "u8": 1, "i32": 4, "i64": 8, "u1": 1, "boolean": 1}
_OV_LAYOUT = {"Reorder", "Reshape", "Transpose", "Convert", "Concatenation", "Split", "Gather", "StridedSlice"}


def _shape_size(shape) -> int:
    return int(np.prod([int(d) for d in shape], dtype=np.int64)) if len(shape) else 1


def openvino_layer_work(compiled, executed: set[str]) -> list[LayerWork]:
    """FLOPs and bytes of every executed layer of a compiled OpenVINO model with static shapes.

    From the runtime model (the graph OpenVINO executes after its fusions): convolutions
    ``2 x N x H_out x W_out x |weights|`` (the weights are input 1); fully connected / MatMul
    ``2 x |output| x K``; pooling and reductions ``|input|``; layout layers (reorders, reshapes,
    converts) 0; everything else ``|output|``. Bytes: every input (weights included) and output, at the
    element size of the layer's output precision (an approximation where a layer converts). The same
    conventions as ``helpers.ground_truth``'s onnxruntime subgraphs. ``executed``: the layer names the
    profiler reported as executed (constants and inputs are not).
    """
    rows = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if op.get_friendly_name() not in executed:
            continue
        layer_type = info["layerType"].astype(str)
        inputs = [tuple(op.input(i).get_shape()) for i in range(op.get_input_size())]
        outputs = [tuple(op.output(i).get_shape()) for i in range(op.get_output_size())]
        precisions = info["outputPrecisions"].astype(str).split(",")
        itemsize = _OV_ITEMSIZE.get(precisions[0].strip().lower(), 4)
        out = outputs[0]
        if layer_type in ("Convolution", "GroupConvolution", "Deconvolution"):
            flops = 2 * (_shape_size(out) // out[1]) * _shape_size(inputs[1])
        elif layer_type.startswith("FullyConnected") or layer_type == "MatMul":
            flops = 2 * _shape_size(out) * int(inputs[0][-1])
        elif layer_type in ("Pooling", "Reduce", "ReduceMean", "MaxPool", "AvgPool"):
            flops = _shape_size(inputs[0])
        elif layer_type in _OV_LAYOUT:
            flops = 0
        else:
            flops = _shape_size(out)
        nbytes = itemsize * (sum(_shape_size(s) for s in inputs) + sum(_shape_size(s) for s in outputs))
        rows.append(
            LayerWork(
                name=op.get_friendly_name(),
                layer_type=layer_type,
                kernel=info["primitiveType"].astype(str),
                precision=precisions[0].strip(),
                flops=flops,
                total_bytes=nbytes,
                fused=tuple(info["originalLayersNames"].astype(str).split(",")),
            )
        )
    return rows
