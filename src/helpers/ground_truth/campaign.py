"""The measurement campaign: build -> quantize -> measure -> store, for every model x variant x batch size.

Owns the sweep of ``params/ground_truth.yaml`` (:class:`SweepConfig`: models, precision/runtime
variants, batch sizes, measurement settings), behind ``calib ground-truth measure``:
:func:`run_sweep` builds each model (``helpers.models``, untrained: latency does not depend on the
weights), exports it to ONNX, quantizes it to int8 (:func:`quantize_int8`, calibrated on seeded
random images), measures every variant (``measure_onnxruntime``, ``measure_torch``, ``measure_openvino``:
bf16 on OpenVINO is the fp32 file under its bf16 hint, int8 the QDQ file), stores each
record with its raw samples and rebuilds the machine's manifest. The machine's profile is measured
into the store first (:func:`store_hardware_profile`). :class:`SweepResult` is what a campaign
stored, skipped and warned about; phase 05's own campaign over a run's files is
``runtime_latency.measure_runtimes``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import torch
import yaml
from torch import nn
from tqdm import tqdm

from helpers import runtime as runtimes
from helpers.ground_truth.hardware import HardwareProfile, hardware_id, profile_hardware, system_state
from helpers.ground_truth.layout import default_data_dir, hardware_profile_path
from helpers.ground_truth.measure_onnxruntime import measure_onnx
from helpers.ground_truth.measure_openvino import measure_openvino
from helpers.ground_truth.measure_torch import bf16_support, measure_torch
from helpers.ground_truth.measurement import Measurement, MeasurementSettings
from helpers.ground_truth.records import MeasurementRecord, new_run_id
from helpers.ground_truth.store import rebuild_manifest, save_measurement, write_lock
from helpers.models.architectures import ARCHITECTURES, build_model
from helpers.models.onnx_export import export_onnx
from helpers.quantize import ort as quantize_ort

VARIANTS = (
    ("fp32", "onnxruntime"),
    ("fp32", "torch"),
    ("int8", "onnxruntime"),
    ("bf16", "torch"),
    ("fp32", "openvino"),
    ("bf16", "openvino"),
    ("int8", "openvino"),
)
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
    measure = measure_openvino if runtime == "openvino" else measure_onnx
    path = onnx_paths["int8" if precision == "int8" else "fp32"]  # bf16: the fp32 file under OpenVINO's hint
    return measure(path, model=spec.name, precision=precision, batch_size=batch_size, **common)


def supported_variants(variants: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """(the variants this machine runs natively, one line per skipped variant with why): torch's bf16 needs
    ``measure_torch.bf16_support``, the ONNX runtimes ``helpers.runtime.support`` (installed, bf16 native)."""
    kept, skipped = [], []
    for precision, name in variants:
        if name == "torch":
            ok, why = bf16_support() if precision == "bf16" else (True, "")
        else:
            ok, why = runtimes.support(name, precision)
        if ok:
            kept.append((precision, name))
        else:
            skipped.append(f"{precision}/{name}: {why}")
    return kept, skipped


def run_sweep(config: SweepConfig, store: str | Path | None = None, progress: bool = True) -> SweepResult:
    """Measure every model x supported variant x batch size, store each record, rebuild the manifest."""
    root = Path(store or config.store or default_data_dir())
    hardware = store_hardware_profile(root, remeasure=True)
    result = SweepResult(store=root, run_id=new_run_id())
    variants, result.skipped = supported_variants(config.variants)
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
    if any(precision == "int8" for precision, _ in variants):
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
