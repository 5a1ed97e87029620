"""The latency ground-truth schema (v2.0): what one measurement of one model on one machine holds.

Owns the record dataclasses, their JSON form (``to_dict`` / ``from_dict``), their validation --
errors name the file and the field -- and the statistics computed from raw samples. Where the
files live is ``layout``'s, how v1.0 and other writers' files are read and upgraded ``foreign``'s.

A :class:`MeasurementRecord` is one (model, runtime, precision, batch size) on one machine:

* ``subgraphs`` -- one :class:`SubgraphMeasurement` per executed subgraph (``helpers.ground_truth.measure_*``
  defines the decomposition), each with its FLOPs, bytes moved, latency statistics and
  efficiency against the precision's theoretical peak;
* ``model_summary`` -- totals over the subgraphs, plus the latency of the whole model measured as
  one call (``end_to_end_latency``), which is *not* the sum of the subgraphs (that sum leaves
  out the runtime's own work between kernels), and optionally the calling thread's on-CPU time
  for the same calls (``end_to_end_cpu_time``, unaffected by other processes);
* the v2.0 additions to v1.0: ``batch_size``, ``input_shape``, ``model_summary``,
  ``system_state``, ``run_id`` (one UUID per measurement session) and ``run_index`` (the
  record's position within that session, in measuring order);
* ``runtime`` -- ``onnxruntime``, ``torch`` or ``openvino``, or ``unknown`` for another tool's file that does
  not say and does not show which (the store's reader infers it from what a file says: see
  ``helpers.ground_truth.foreign.infer_runtime``); a measurement of any runtime but onnxruntime is stored
  under the model key ``<model>-<runtime>`` so several runtimes of one precision can sit side by side
  (:attr:`MeasurementRecord.key`).

Latencies are milliseconds; confidence intervals are two-sided 95% Student-t intervals of the
mean. Unknown keys in a file are ignored (newer writers may add fields); missing required keys,
wrong types and invalid values are errors.

Files written by other tools are read through ``helpers.ground_truth.foreign.read_measurement``,
which normalizes them explicitly (``MeasurementRecord.normalization`` lists every change) -- see
``docs/ground_truth.md``. ``measurement_date`` may be naive (no time zone: local time of the
measuring machine); it is kept as written and :attr:`MeasurementRecord.date_zone_known` is False.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from scipy import stats

from helpers.run import atomic

SCHEMA_VERSION = "2.0"
MEASUREMENT_TYPE = "efficiency"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RUNTIMES = ("onnxruntime", "torch", "openvino")
UNKNOWN_RUNTIME = "unknown"  # a file that does not say, and does not show, which runtime measured it
CONFIDENCE = 0.95

T = TypeVar("T")


class SchemaError(ValueError):
    """A ground-truth document that breaks the schema: names the field (and the file, when known)."""

    def __init__(self, field_name: str, problem: str, source: str | None = None):
        self.field_name, self.problem, self.source = field_name, problem, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}field {field_name!r} {problem}")

    def within(self, prefix: str) -> SchemaError:
        """The same error for field(s) nested under ``prefix``."""
        names = ", ".join(prefix + name for name in self.field_name.split(", "))
        return SchemaError(names, self.problem, self.source)

    def in_file(self, source: str | Path) -> SchemaError:
        return SchemaError(self.field_name, self.problem, str(source))


def validate_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise SchemaError("precision", f"is {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    return precision


def new_run_id() -> str:
    return str(uuid.uuid4())


def _describe(values: Sequence[float], what: str) -> dict[str, Any]:
    """mean, sample std, min, max, 95% t-interval of the mean and count of a 1-D sample."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains NaN or infinite values; drop the failed measurements first")
    n = int(x.size)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
    return {
        "mean": mean,
        "std": std,
        "min": float(x.min()),
        "max": float(x.max()),
        "ci_lower": mean - half,
        "ci_upper": mean + half,
        "samples": n,
    }


@dataclass(frozen=True)
class _SampleSummary:
    """Seven numbers summarising a sample: mean, std, min, max, 95% CI of the mean, count."""

    min_samples: ClassVar[int] = 1
    mean: float
    std: float
    min: float
    max: float
    ci_lower: float
    ci_upper: float
    samples: int

    def __post_init__(self):
        if self.samples < self.min_samples:
            raise SchemaError("samples", f"must be >= {self.min_samples}, got {self.samples}")
        if self.std < 0:
            raise SchemaError("std", f"must be >= 0, got {self.std}")
        if self.min > self.max:
            raise SchemaError("min", f"({self.min}) exceeds max ({self.max})")

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean (0 for a zero mean)."""
        return self.std / self.mean if self.mean else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        return read_dataclass(cls, data)


@dataclass(frozen=True)
class LatencyStats(_SampleSummary):
    """Latency statistics in milliseconds, with optional percentiles."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.min < 0:
            raise SchemaError("min", f"a latency cannot be negative, got {self.min}")

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        summary = _describe(samples_ms, "latency samples")
        p50, p90, p99 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [50, 90, 99])
        return cls(**summary, p50=float(p50), p90=float(p90), p99=float(p99))


@dataclass(frozen=True)
class EfficiencyStats(_SampleSummary):
    """Achieved FLOP/s as a ratio of the theoretical peak, one value per latency sample.

    ``samples`` 0 (all values 0) is a subgraph without FLOPs: it has no efficiency.
    """

    min_samples: ClassVar[int] = 0

    @classmethod
    def from_samples(cls, ratios: Sequence[float]) -> EfficiencyStats:
        return cls(**_describe(ratios, "efficiency samples"))


@dataclass(frozen=True)
class SubgraphMeasurement:
    """One executed subgraph: its work (FLOPs, bytes), its latency and its efficiency."""

    subgraph_id: str
    fusion_pattern: str
    operation_type: str
    flops: int
    total_bytes: int
    arithmetic_intensity: float
    theoretical_peak_flops: float
    measured_latency: LatencyStats
    achieved_flops: float
    efficiency: EfficiencyStats
    node_names: list[str]
    source_model: str

    def __post_init__(self):
        for name in ("flops", "total_bytes"):
            if getattr(self, name) < 0:
                raise SchemaError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.theoretical_peak_flops <= 0:
            raise SchemaError("theoretical_peak_flops", f"must be > 0, got {self.theoretical_peak_flops}")

    @classmethod
    def from_samples(
        cls,
        *,
        subgraph_id: str,
        fusion_pattern: str,
        operation_type: str,
        flops: int,
        total_bytes: int,
        theoretical_peak_flops: float,
        latency_ms: Sequence[float],
        node_names: Sequence[str],
        source_model: str,
    ) -> SubgraphMeasurement:
        """Statistics from raw per-call latencies (ms); zero latencies are rejected."""
        latency = np.asarray(latency_ms, dtype=np.float64)
        if latency.size and latency.min() <= 0:
            raise ValueError(f"subgraph {subgraph_id}: latencies must be > 0 ms, got min {latency.min()}")
        measured = LatencyStats.from_samples(latency)
        return cls(
            subgraph_id=subgraph_id,
            fusion_pattern=fusion_pattern,
            operation_type=operation_type,
            flops=int(flops),
            total_bytes=int(total_bytes),
            arithmetic_intensity=flops / total_bytes if total_bytes else 0.0,
            theoretical_peak_flops=float(theoretical_peak_flops),
            measured_latency=measured,
            achieved_flops=flops / (measured.mean / 1e3),
            efficiency=EfficiencyStats.from_samples(flops / (latency / 1e3) / theoretical_peak_flops),
            node_names=list(node_names),
            source_model=source_model,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SubgraphMeasurement:
        return read_dataclass(cls, data)


@dataclass(frozen=True)
class ModelSummary:
    """Totals over a record's subgraphs, and the whole model's latency measured as one call.

    ``total_latency_ms`` sums the subgraphs' mean latencies and ``total_latency_std_ms``
    combines their stds as independent (root of summed variances). ``throughput_fps`` is
    ``batch_size`` images per end-to-end call (per summed subgraph time when there is no
    end-to-end measurement, as for v1.0 files). ``end_to_end_cpu_time`` (optional) is the
    on-CPU time of the calling thread for the same calls: for a single-threaded run it is the
    latency the call would have on an idle machine, whatever else competed for the CPU.
    """

    total_flops: int
    total_bytes: int
    total_latency_ms: float
    total_latency_std_ms: float
    num_subgraphs: int
    throughput_fps: float
    end_to_end_latency: LatencyStats | None = None
    end_to_end_cpu_time: LatencyStats | None = None

    @classmethod
    def from_subgraphs(
        cls,
        subgraphs: Sequence[SubgraphMeasurement],
        batch_size: int,
        end_to_end_latency: LatencyStats | None = None,
        end_to_end_cpu_time: LatencyStats | None = None,
    ) -> ModelSummary:
        if not subgraphs:
            raise ValueError("a model summary needs at least one subgraph")
        total_ms = sum(s.measured_latency.mean for s in subgraphs)
        call_ms = end_to_end_latency.mean if end_to_end_latency is not None else total_ms
        return cls(
            total_flops=sum(s.flops for s in subgraphs),
            total_bytes=sum(s.total_bytes for s in subgraphs),
            total_latency_ms=total_ms,
            total_latency_std_ms=math.sqrt(sum(s.measured_latency.std**2 for s in subgraphs)),
            num_subgraphs=len(subgraphs),
            throughput_fps=batch_size * 1e3 / call_ms,
            end_to_end_latency=end_to_end_latency,
            end_to_end_cpu_time=end_to_end_cpu_time,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSummary:
        return read_dataclass(cls, data)


@dataclass(frozen=True)
class SystemState:
    """Machine state at measurement time; a field is None when it could not be read."""

    gpu_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_mode: str | None = None
    temperature_c: float | None = None
    cpu_freq_mhz: float | None = None
    cpu_governor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SystemState:
        return read_dataclass(cls, data)


@dataclass(frozen=True)
class MeasurementRecord:
    """One (model, runtime, precision, batch size) measured on one machine: schema v2.0."""

    schema_version: str
    measurement_type: str
    model: str
    hardware_id: str
    device: str
    precision: str
    thermal_profile: str | None  # null: not recorded (CPUs, in files of other tools)
    theoretical_peak_flops: float
    measurement_date: str
    tool_version: str
    subgraphs: list[SubgraphMeasurement]
    batch_size: int
    input_shape: list[int] | None
    model_summary: ModelSummary
    system_state: SystemState | None
    run_id: str
    run_index: int
    runtime: str = field(default="onnxruntime")
    normalization: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.schema_version != SCHEMA_VERSION:
            raise SchemaError("schema_version", f"is {self.schema_version!r}, expected {SCHEMA_VERSION!r}")
        if self.measurement_type != MEASUREMENT_TYPE:
            raise SchemaError("measurement_type", f"is {self.measurement_type!r}, expected {MEASUREMENT_TYPE!r}")
        validate_precision(self.precision)
        if self.runtime not in (*RUNTIMES, UNKNOWN_RUNTIME):
            raise SchemaError(
                "runtime", f"is {self.runtime!r}; valid runtimes: {', '.join(RUNTIMES)} (or {UNKNOWN_RUNTIME!r})"
            )
        for name in ("model", "hardware_id"):
            if not getattr(self, name) or "/" in getattr(self, name):
                raise SchemaError(name, f"must be a non-empty name without '/', got {getattr(self, name)!r}")
        _validate_date(self.measurement_date)
        if self.batch_size < 1:
            raise SchemaError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.input_shape is not None and (not self.input_shape or self.input_shape[0] != self.batch_size):
            raise SchemaError("input_shape", f"{self.input_shape} must start with batch_size {self.batch_size}")
        if not self.subgraphs or len(self.subgraphs) != self.model_summary.num_subgraphs:
            raise SchemaError(
                "subgraphs",
                f"has {len(self.subgraphs)} entries but model_summary.num_subgraphs "
                f"is {self.model_summary.num_subgraphs} (needs at least one)",
            )
        try:
            uuid.UUID(self.run_id)
        except ValueError:
            raise SchemaError("run_id", f"is not a UUID: {self.run_id!r}") from None
        if self.run_index < 0:
            raise SchemaError("run_index", f"must be >= 0, got {self.run_index}")

    @property
    def date_zone_known(self) -> bool:
        """False for a naive ``measurement_date`` (local time of an unknown zone, kept as written)."""
        return datetime.fromisoformat(self.measurement_date).tzinfo is not None

    @property
    def key(self) -> str:
        """The model key naming the record's file: the model, suffixed ``-<runtime>`` unless onnxruntime."""
        return self.model if self.runtime == "onnxruntime" else f"{self.model}-{self.runtime}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``normalization`` only when reading changed something (the project's files lack it)."""
        data = dataclasses.asdict(self)
        if not data["normalization"]:
            del data["normalization"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> MeasurementRecord:
        """Read a v2.0 document; a v1.0 one is an error pointing at the store's reader."""
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(
                "schema_version",
                f"is {data.get('schema_version')!r}, this reader takes "
                f"{SCHEMA_VERSION!r}; read v1.0 files with helpers.ground_truth.foreign.read_measurement "
                "(it upgrades them) or migrate them with `calib ground-truth migrate`",
            )
        return read_dataclass(cls, data)

    def save(self, path: str | Path) -> Path:
        """Write the record as canonical JSON, atomically."""
        return atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> MeasurementRecord:
        """Read a v2.0 record file; errors name the file and the field."""
        data = read_json_document(path)
        try:
            return cls.from_dict(data)
        except SchemaError as error:
            raise error.in_file(path) from None


def _validate_date(text: str) -> None:
    """An ISO 8601 date; naive ones are accepted (zone unknown: ``MeasurementRecord.date_zone_known``)."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise SchemaError("measurement_date", f"is not an ISO 8601 date: {text!r}") from None


def read_json_document(path: str | Path) -> dict:
    """A JSON object from ``path``; a missing file or broken JSON is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"measurement file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "fix or re-measure the file"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; is it a measurement JSON file?") from None
    if not isinstance(data, dict):
        raise SchemaError("<document>", f"must be a JSON object, got {type(data).__name__}", str(path))
    return data


def read_dataclass(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from a JSON object, checking every field against its type hint.

    Fields without a default are required (their key must be present; ``X | None`` fields may be
    null). Nested dataclasses, lists and dicts are read recursively; errors name the full field path.
    """
    if not isinstance(data, dict):
        raise SchemaError("<object>", f"must be a JSON object, got {type(data).__name__}")
    fields, required = _fields(cls)
    missing = [name for name in required if name not in data]
    if missing:
        raise SchemaError(", ".join(missing), "is missing" if len(missing) == 1 else "are missing")
    return cls(**{name: read_value(hint, data[name], name) for name, hint in fields if name in data})


@functools.cache
def _fields(cls: type) -> tuple[tuple[tuple[str, Any], ...], tuple[str, ...]]:
    """((name, type hint) of every field, names of the required ones) of a dataclass, computed once."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    required = tuple(
        f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    return tuple((f.name, hints[f.name]) for f in fields), required


@functools.cache
def _shape(hint: Any) -> tuple[str, Any]:
    """How to read values of type ``hint``: ("optional" | "dataclass" | "dict" | "list" | "scalar", inner type)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return ("optional" if type(None) in args else "union", inner)
    if dataclasses.is_dataclass(hint):
        return "dataclass", hint
    if origin is dict:
        return "dict", args[1]
    if origin is list:
        return "list", args[0]
    return "scalar", hint


def read_value(hint: Any, value: Any, path: str) -> Any:
    """``value`` checked against type ``hint`` (dataclass, list, dict, optional, scalar); errors name ``path``."""
    kind, inner = _shape(hint)
    if kind in ("optional", "union"):
        if value is None and kind == "optional":
            return None
        return read_value(inner, value, path)
    if value is None:
        raise SchemaError(path, "is null but required")
    if kind == "dataclass":
        try:
            return read_dataclass(inner, value)
        except SchemaError as error:
            raise error.within(f"{path}.") from None
    if kind == "dict":
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be an object, got {type(value).__name__}")
        return {key: read_value(inner, item, f"{path}.{key}") for key, item in value.items()}
    if kind == "list":
        if not isinstance(value, list):
            raise SchemaError(path, f"must be a list, got {type(value).__name__}")
        return [read_value(inner, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if hint is float:
        if type(value) is float and math.isfinite(value) or type(value) is int:
            return float(value)
        raise SchemaError(path, f"must be a finite number, got {value!r}")
    if hint is int:
        if type(value) is not int:
            raise SchemaError(path, f"must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise SchemaError(path, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"no JSON reader for type {hint!r} (field {path})")
