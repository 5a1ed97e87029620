"""Where latency ground truth lives on disk: layout, manifest, loader, v1.0 files, migration.

Layout (``root`` defaults to ``calibration_data/`` at the project root)::

    <root>/<hardware_id>/
        hardware.json                                    the machine's profile (helpers.ground_truth.hardware)
        manifest.json                                    index of the measurements, rebuilt by scanning
        measurements/<precision>/<model key>_b<batch>.json   one MeasurementRecord (schema v2.0)
        measurements/<precision>/<model key>_b<batch>.npz    its raw samples (same stem)
        efficiency_curves/<precision>/                   data derived from the measurements

``precision`` is lower case; the model key is the model name, suffixed ``-torch`` for torch
measurements (``MeasurementRecord.key``).

Batch size in file names -- the one rule, :func:`split_batch_suffix`
    A file's stem is ``<model key>`` or ``<model key>_b<N>``, and the model key is read from the
    file's *content* (v1.0 and v2.0 records both carry ``model``). The name alone cannot say
    whether a trailing ``_b<N>`` is a batch: ``resnet_b16.json`` is model ``resnet`` at batch
    16 or model ``resnet_b16`` at batch 1, and names like ``efficientnet_b0`` end in ``_b<digit>``
    themselves. With the model known there is no ambiguity: the stem must equal the model key
    (no batch in the name: batch 1 for v1.0, which predates batching) or the model key plus one
    ``_b<N>``. So ``efficientnet_b0.json`` holding ``efficientnet_b0`` is batch 1,
    ``efficientnet_b1_b4.json`` holding ``efficientnet_b1`` is batch 4, and a stem that is
    neither (a renamed or misfiled record) is an error. A v2.0 file's name must agree with its
    ``batch_size``.

v1.0 files
    lack ``batch_size``, ``input_shape``, ``model_summary``, ``system_state``, ``run_id``,
    ``run_index``. :func:`read_measurement` upgrades them on the fly: batch from the name,
    model summary from the subgraphs (no end-to-end latency), no input shape or system state,
    ``run_index`` 0 and a ``run_id`` derived from the record's identity (uuid5), so upgrading
    twice gives the same bytes. They may sit in legacy layouts
    (``<hw>/<precision>/measurements/<model>.json``, ``<dir>/<hw>/<precision>/<model>_b<N>.json``);
    :func:`migrate` finds them anywhere under its sources -- hardware and precision come from the
    content -- and writes v2.0 into the layout above.

Manifest
    ``manifest.json`` is derived from the measurement files only (:func:`rebuild_manifest`);
    :meth:`GroundTruthLoader.check_manifest` reports where a manifest disagrees with the files.
"""
from __future__ import annotations

import re
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np

from helpers.ground_truth.hardware import HardwareProfile
from helpers.ground_truth.records import (
    SCHEMA_VERSION,
    MeasurementRecord,
    ModelSummary,
    SchemaError,
    SubgraphMeasurement,
    read_json_document,
    read_value,
    utc_now_iso,
    validate_precision,
)
from helpers.run import atomic
from helpers.run.project import project_root

MANIFEST = "manifest.json"
HARDWARE_PROFILE = "hardware.json"
MEASUREMENTS = "measurements"
EFFICIENCY_CURVES = "efficiency_curves"
V1_FIELDS = ("schema_version", "measurement_type", "model", "hardware_id", "device", "precision", "thermal_profile",
             "theoretical_peak_flops", "measurement_date", "tool_version", "subgraphs")
_V1_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "calib-lab/ground-truth/v1.0")


def default_data_dir() -> Path:
    """``calibration_data/`` at the project root when the package sits in a checkout, else in the cwd."""
    try:
        root = project_root()
    except RuntimeError:
        root = Path.cwd()
    return root / "calibration_data"


def measurement_path(root: str | Path, hardware_id: str, precision: str, key: str, batch_size: int) -> Path:
    return Path(root) / hardware_id / MEASUREMENTS / validate_precision(precision.lower()) / f"{key}_b{batch_size}.json"


def samples_path(record_path: str | Path) -> Path:
    """The raw-samples ``.npz`` beside a record file."""
    return Path(record_path).with_suffix(".npz")


def hardware_profile_path(root: str | Path, hardware_id: str) -> Path:
    return Path(root) / hardware_id / HARDWARE_PROFILE


def efficiency_curves_dir(root: str | Path, hardware_id: str, precision: str) -> Path:
    return Path(root) / hardware_id / EFFICIENCY_CURVES / validate_precision(precision.lower())


def split_batch_suffix(stem: str, model_key: str) -> int | None:
    """The batch size a file stem encodes for ``model_key``, or None when the stem is the bare key.

    The single rule for batch sizes in file names (module docstring): raises ValueError when
    the stem is neither ``model_key`` nor ``model_key_b<N>``.
    """
    if stem == model_key:
        return None
    match = re.fullmatch(re.escape(model_key) + r"_b([1-9][0-9]*)", stem)
    if match is None:
        raise ValueError(f"file name {stem!r} does not match its model {model_key!r}: expected "
                         f"{model_key}.json or {model_key}_b<batch>.json; rename the file or fix its 'model' field")
    return int(match.group(1))


def _require_v1_fields(data: dict) -> None:
    missing = [name for name in V1_FIELDS if name not in data]
    if missing:
        raise SchemaError(", ".join(missing), "is missing" if len(missing) == 1 else "are missing")


def upgrade_v1(data: dict, batch_size: int) -> MeasurementRecord:
    """A v2.0 record from a v1.0 document measured at ``batch_size`` (module docstring)."""
    _require_v1_fields(data)
    subgraphs = read_value(list[SubgraphMeasurement], data["subgraphs"], "subgraphs")
    if not subgraphs:
        raise SchemaError("subgraphs", "is empty; a measurement needs at least one subgraph")
    identity = "/".join(str(data[k]) for k in ("hardware_id", "precision", "model", "measurement_date"))
    upgraded = {**{name: data[name] for name in V1_FIELDS}, "schema_version": SCHEMA_VERSION,
                "batch_size": batch_size, "input_shape": None,
                "model_summary": ModelSummary.from_subgraphs(subgraphs, batch_size).to_dict(),
                "system_state": None, "run_id": str(uuid.uuid5(_V1_RUN_NAMESPACE, f"{identity}/b{batch_size}")),
                "run_index": 0}
    return MeasurementRecord.from_dict(upgraded)


def read_measurement(path: str | Path) -> MeasurementRecord:
    """A v1.0 or v2.0 record file as a v2.0 record; the name must agree with the content."""
    path = Path(path)
    data = read_json_document(path)
    try:
        if data.get("schema_version") == "1.0":
            _require_v1_fields(data)
            return upgrade_v1(data, split_batch_suffix(path.stem, read_value(str, data["model"], "model")) or 1)
        record = MeasurementRecord.from_dict(data)
        named_batch = split_batch_suffix(path.stem, record.key)
    except SchemaError as error:
        raise error.in_file(path) from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if named_batch not in (None, record.batch_size):
        raise ValueError(f"{path}: the name says batch {named_batch} but batch_size is {record.batch_size}; "
                         "rename the file or fix its batch_size")
    return record


def save_measurement(record: MeasurementRecord, root: str | Path | None = None,
                     samples: Mapping[str, np.ndarray] | None = None, update_manifest: bool = True) -> Path:
    """Write ``record`` (and its raw ``samples`` as npz) at its place in the store; refresh the manifest."""
    root = Path(root) if root is not None else default_data_dir()
    path = measurement_path(root, record.hardware_id, record.precision, record.key, record.batch_size)
    if samples is not None:
        atomic.save_npz(samples_path(path), **samples)
    record.save(path)
    if update_manifest:
        rebuild_manifest(root, record.hardware_id)
    return path


def _measurement_files(root: Path, hardware_id: str) -> list[Path]:
    return sorted((root / hardware_id / MEASUREMENTS).glob("*/*.json"))


def _manifest_entry(root: Path, hardware_id: str, path: Path) -> dict:
    record = read_measurement(path)
    if record.hardware_id != hardware_id or record.precision != path.parent.name:
        raise ValueError(f"{path} holds hardware {record.hardware_id!r}, precision {record.precision!r}: it is "
                         f"misfiled under {hardware_id}/{path.parent.name}; move it or run `calib ground-truth migrate`")
    return {"model": record.model, "runtime": record.runtime, "precision": record.precision,
            "batch_size": record.batch_size, "file": path.relative_to(root / hardware_id).as_posix(),
            "total_latency_ms": record.model_summary.total_latency_ms,
            "end_to_end_latency_ms": (record.model_summary.end_to_end_latency.mean
                                      if record.model_summary.end_to_end_latency else None),
            "total_flops": record.model_summary.total_flops, "num_subgraphs": record.model_summary.num_subgraphs,
            "measurement_date": record.measurement_date, "device": record.device}


def build_manifest(root: str | Path, hardware_id: str) -> dict:
    """The manifest of ``<root>/<hardware_id>`` computed from its measurement files (not written)."""
    root = Path(root)
    entries = [_manifest_entry(root, hardware_id, p) for p in _measurement_files(root, hardware_id)]
    devices = sorted({e.pop("device") for e in entries})
    coverage = {"models": sorted({e["model"] for e in entries}),
                "precisions": sorted({e["precision"] for e in entries}),
                "batch_sizes": sorted({e["batch_size"] for e in entries})}
    return {"schema_version": SCHEMA_VERSION, "hardware_id": hardware_id, "device": ", ".join(devices),
            "generated_date": utc_now_iso(),
            "summary": {"num_models": len(coverage["models"]), "num_precisions": len(coverage["precisions"]),
                        "num_batch_sizes": len(coverage["batch_sizes"]), "total_measurements": len(entries)},
            "measurements": entries, "coverage": coverage}


def rebuild_manifest(root: str | Path, hardware_id: str) -> dict:
    """Scan ``<root>/<hardware_id>``'s measurement files and write its manifest.json."""
    manifest = build_manifest(root, hardware_id)
    atomic.write_json(Path(root) / hardware_id / MANIFEST, manifest)
    return manifest


def manifest_problems(root: str | Path, hardware_id: str) -> list[str]:
    """How ``manifest.json`` disagrees with the measurement files (empty when it agrees)."""
    path = Path(root) / hardware_id / MANIFEST
    if not path.is_file():
        return [f"{path} is missing"]
    try:
        stored = read_json_document(path)
    except ValueError as error:
        return [str(error)]
    actual = build_manifest(root, hardware_id)
    problems = [f"{key}: manifest says {stored.get(key)!r}, files say {actual[key]!r}"
                for key in ("schema_version", "hardware_id", "device", "summary", "coverage")
                if stored.get(key) != actual[key]]
    listed = {e.get("file"): e for e in stored.get("measurements", []) if isinstance(e, dict)}
    present = {e["file"]: e for e in actual["measurements"]}
    problems += [f"{f}: listed but no such file" for f in sorted(set(listed) - set(present))]
    problems += [f"{f}: file not listed" for f in sorted(set(present) - set(listed))]
    problems += [f"{f}: entry differs from the file" for f in sorted(set(listed) & set(present))
                 if listed[f] != present[f]]
    return problems


class Configuration(NamedTuple):
    model: str
    runtime: str
    precision: str
    batch_size: int


class GroundTruthLoader:
    """Read access to a ground-truth store (default: ``calibration_data/`` at the project root)."""

    def __init__(self, data_dir: str | Path | None = None):
        self.root = Path(data_dir) if data_dir is not None else default_data_dir()

    def list_hardware(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if (d / MEASUREMENTS).is_dir())

    def _hardware_dir(self, hardware_id: str) -> Path:
        if hardware_id not in self.list_hardware():
            known = ", ".join(self.list_hardware()) or "none"
            raise FileNotFoundError(f"no ground truth for hardware {hardware_id!r} under {self.root} "
                                    f"(hardware measured: {known}); measure with `calib ground-truth measure`")
        return self.root / hardware_id

    def _entries(self, hardware_id: str) -> list[dict]:
        """Manifest entries; a scan (with a warning) when the manifest does not list exactly the files."""
        hw_dir = self._hardware_dir(hardware_id)
        files = {p.relative_to(hw_dir).as_posix() for p in _measurement_files(self.root, hardware_id)}
        try:
            entries = read_json_document(hw_dir / MANIFEST)["measurements"]
            if {e["file"] for e in entries} == files:
                return entries
        except (OSError, ValueError, KeyError, TypeError):
            pass
        warnings.warn(f"{hw_dir / MANIFEST} is missing or does not list the measurement files; scanning them "
                      f"instead. Fix with GroundTruthLoader({str(self.root)!r}).rebuild_manifest({hardware_id!r})",
                      stacklevel=3)
        return build_manifest(self.root, hardware_id)["measurements"]

    def list_configurations(self, hardware_id: str) -> list[Configuration]:
        return sorted(Configuration(e["model"], e["runtime"], e["precision"], e["batch_size"])
                      for e in self._entries(hardware_id))

    def list_models(self, hardware_id: str, precision: str | None = None) -> list[str]:
        if precision is not None:
            validate_precision(precision)
        return sorted({c.model for c in self.list_configurations(hardware_id)
                       if precision is None or c.precision == precision})

    def path(self, hardware_id: str, model: str, precision: str, batch_size: int,
             runtime: str = "onnxruntime") -> Path:
        key = model if runtime == "onnxruntime" else f"{model}-{runtime}"
        return measurement_path(self.root, hardware_id, precision, key, batch_size)

    def load(self, hardware_id: str, model: str, precision: str, batch_size: int,
             runtime: str = "onnxruntime") -> MeasurementRecord:
        """One record; FileNotFoundError says what was looked for and what exists."""
        self._hardware_dir(hardware_id)
        path = self.path(hardware_id, model, precision, batch_size, runtime)
        if not path.is_file():
            measured = [c for c in self.list_configurations(hardware_id) if c.model == model]
            have = ", ".join(f"{c.runtime} {c.precision} b{c.batch_size}" for c in measured)
            raise FileNotFoundError(
                f"no measurement of {model!r} ({runtime}, {precision}, batch {batch_size}) on {hardware_id}: "
                f"looked for {path}. " + (f"Measured for {model!r}: {have}." if have else
                                         f"Models measured: {', '.join(self.list_models(hardware_id)) or 'none'}."))
        return read_measurement(path)

    def load_model_summary(self, hardware_id: str, model: str, precision: str, batch_size: int,
                           runtime: str = "onnxruntime") -> ModelSummary:
        return self.load(hardware_id, model, precision, batch_size, runtime).model_summary

    def load_samples(self, hardware_id: str, model: str, precision: str, batch_size: int,
                     runtime: str = "onnxruntime") -> dict[str, np.ndarray]:
        """The raw samples stored beside a record: ``end_to_end_ms`` (wall clock), ``end_to_end_cpu_ms``
        (on-CPU time, single-threaded runs), ``subgraph_ms`` (subgraphs x calls), ``subgraph_ids``."""
        path = samples_path(self.path(hardware_id, model, precision, batch_size, runtime))
        if not path.is_file():
            raise FileNotFoundError(f"no raw samples at {path} (v1.0 and migrated records have none)")
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}

    def load_all(self, hardware_id: str, precision: str | None = None) -> list[MeasurementRecord]:
        hw_dir = self._hardware_dir(hardware_id)
        return [read_measurement(hw_dir / e["file"]) for e in sorted(self._entries(hardware_id),
                                                                      key=lambda e: e["file"])
                if precision is None or e["precision"] == validate_precision(precision)]

    def load_hardware_profile(self, hardware_id: str) -> HardwareProfile:
        path = hardware_profile_path(self.root, hardware_id)
        if not path.is_file():
            raise FileNotFoundError(f"no hardware profile at {path}; `calib ground-truth measure` writes it")
        return HardwareProfile.load(path)

    def rebuild_manifest(self, hardware_id: str) -> dict:
        return rebuild_manifest(self.root, self._hardware_dir(hardware_id).name)

    def check_manifest(self, hardware_id: str) -> list[str]:
        return manifest_problems(self.root, self._hardware_dir(hardware_id).name)


@dataclass
class MigrationReport:
    """What :func:`migrate` did (or would do, on a dry run): (source, destination or reason) pairs."""

    dry_run: bool
    migrated: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would migrate" if self.dry_run else "migrated"
        lines = [f"{verb} {len(self.migrated)}, skipped {len(self.skipped)}, failed {len(self.failed)}"]
        lines += [f"  {verb}: {src} -> {dest}" for src, dest in self.migrated]
        lines += [f"  skipped: {src}: {why}" for src, why in self.skipped]
        lines += [f"  FAILED: {src}: {why}" for src, why in self.failed]
        return "\n".join(lines)


def _candidate_files(sources: Iterable[Path]) -> list[Path]:
    found = set()
    for source in sources:
        files = [source] if source.is_file() else source.rglob("*.json")
        found |= {f for f in files
                  if f.name not in (MANIFEST, HARDWARE_PROFILE) and EFFICIENCY_CURVES not in f.parts}
    return sorted(found)


def migrate(sources: Iterable[str | Path], dest: str | Path, dry_run: bool = False) -> MigrationReport:
    """Copy v1.0/v2.0 records found under ``sources`` into ``dest``'s layout as v2.0, then rebuild manifests.

    Several records for one (hardware, precision, model key, batch) keep the newest
    ``measurement_date``; the rest are reported as skipped duplicates, as is a record the
    destination already holds, identical or newer. Raw-sample ``.npz`` files beside a record
    travel with it. ``dry_run`` reads everything and writes nothing.
    """
    sources = [Path(s) for s in sources]
    absent = [str(s) for s in sources if not s.exists()]
    if absent or not sources:
        raise FileNotFoundError(f"migration sources do not exist: {', '.join(absent) or '(none given)'}")
    dest = Path(dest)
    report = MigrationReport(dry_run=dry_run)
    winners: dict[Path, tuple[Path, MeasurementRecord]] = {}
    for path in _candidate_files(sources):
        try:
            record = read_measurement(path)
        except (OSError, ValueError) as error:
            report.failed.append((str(path), str(error)))
            continue
        target = measurement_path(dest, record.hardware_id, record.precision, record.key, record.batch_size)
        if target in winners:
            kept, loser = winners[target], (path, record)
            if _date(record) > _date(kept[1]):
                kept, loser = loser, kept
            winners[target] = kept
            report.skipped.append((str(loser[0]), f"duplicate of {kept[0]} for {target.relative_to(dest)}; "
                                                  "kept the newer measurement"))
        else:
            winners[target] = (path, record)
    touched = set()
    for target, (path, record) in sorted(winners.items()):
        if target.is_file():
            reason = _destination_reason(target, path, record)
            if reason:
                report.skipped.append((str(path), reason))
                continue
        report.migrated.append((str(path), str(target)))
        touched.add(record.hardware_id)
        if not dry_run:
            if samples_path(path).is_file():
                atomic.write_bytes(samples_path(target), samples_path(path).read_bytes())
            record.save(target)
    if not dry_run:
        for hardware_id in sorted(touched):
            rebuild_manifest(dest, hardware_id)
    return report


def _date(record: MeasurementRecord) -> datetime:
    return datetime.fromisoformat(record.measurement_date)


def _destination_reason(target: Path, source: Path, record: MeasurementRecord) -> str | None:
    """Why an existing destination file should stay (None: replace it with ``record``)."""
    if target.resolve() == source.resolve():
        return "already in place"
    try:
        existing = read_measurement(target)
    except (OSError, ValueError):
        return None  # an unreadable destination file is replaced
    if existing == record:
        return f"already migrated to {target}"
    if _date(existing) >= _date(record):
        return f"{target} holds a measurement as new or newer ({existing.measurement_date})"
    return None
