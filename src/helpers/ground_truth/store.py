"""Where latency ground truth lives on disk: layouts, other tools' files, manifests, aliases, loader, migration.

The store is ``<root>/<hardware_id>/measurements/<precision>/<model key>_b<batch>_r<run>.json`` (schema
v2.0; ``<run>``: the first 8 hex digits of the record's ``run_id``, so a measurement repeated by another
run is kept beside the first, never replaces it) beside ``hardware.json``, ``manifest.json`` and derived
``efficiency_curves/<precision>/``; the root holds ``hardware_aliases.json``. :class:`GroundTruthLoader`
also reads, in place, the two legacy layouts
(``<hw>/<precision>/measurements/<model>.json``, ``<hw>/<precision>/<model>_b<N>.json``) and v1.0 or
foreign v2.0 files, normalizing them explicitly (:func:`normalize`). The full rules -- batch sizes in
file names, normalization, repeats of one configuration and the one used by default, manifests written by
other tools, aliases, migration -- are in ``docs/ground_truth.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from helpers.ground_truth.hardware import HardwareProfile
from helpers.ground_truth.records import (
    PRECISIONS,
    RUNTIMES,
    SCHEMA_VERSION,
    UNKNOWN_RUNTIME,
    MeasurementRecord,
    ModelSummary,
    SchemaError,
    SubgraphMeasurement,
    read_json_document,
    read_value,
    validate_precision,
)
from helpers.run import atomic
from helpers.run.project import runs_root
from helpers.run.run_record import now as utc_now

STORE_DIR_NAME = "calibration_data"  # the default store's folder in the runs root (:func:`default_data_dir`)
MANIFEST = "manifest.json"
MANIFEST_FORMAT_VERSION = 2  # 2: entries carry file stamps, the used flag and model_summary (1: unversioned)
WRITE_LOCK = ".write.lock"  # at the store root: one writer at a time (:func:`write_lock`)
HARDWARE_PROFILE = "hardware.json"
ALIASES = "hardware_aliases.json"
MEASUREMENTS = "measurements"
EFFICIENCY_CURVES = "efficiency_curves"
CANONICAL = "<hw>/measurements/<precision>/<model>_b<N>[_r<run>].json"
LEGACY_PER_MODEL = "<hw>/<precision>/measurements/<model>.json"
LEGACY_BATCH = "<hw>/<precision>/<model>_b<N>.json"
LAYOUTS = (CANONICAL, LEGACY_PER_MODEL, LEGACY_BATCH)  # also the preference among files of one measurement
V1_FIELDS = (
    "schema_version",
    "measurement_type",
    "model",
    "hardware_id",
    "device",
    "precision",
    "thermal_profile",
    "theoretical_peak_flops",
    "measurement_date",
    "tool_version",
    "subgraphs",
)
NON_RECORD_NAMES = {
    MANIFEST: "manifest",
    HARDWARE_PROFILE: "hardware profile",
    ALIASES: "hardware alias table",
    "efficiency_curves.json": "efficiency curves",
    "calibration_metadata.json": "calibration metadata",
    WRITE_LOCK: "store lock",
}
LATENCY_ROUNDING_MS = 5e-5  # other tools' manifests round total_latency_ms to 4 decimals
USED, REPEAT, DUPLICATE = "used", "repeat", "duplicate"  # a record file: the default repeat, another, a copy
RUN_SUFFIX_DIGITS = 8  # the run id's hex digits in a record's file name (``_r<run>``): one file per repeat
DERIVED_RUN_ID = "run_id: absent, derived from hardware, precision, model, date and batch (uuid5)"
_V1_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "calib-lab/ground-truth/v1.0")
logger = logging.getLogger(__name__)


def default_data_dir(runs_root_dir: str | Path | None = None) -> Path:
    """The one default ground-truth store: ``calibration_data/`` in the runs root -- ``runs_root_dir``, else
    ``$CALIB_RUNS_ROOT``, else ``<project>/runs`` (``helpers.run.project.runs_root``); outside a checkout, in the
    cwd. Phase 05 stores there (its ``store_dir`` empty: ``runtime_latency.store_root``, in its run's runs root),
    and ``GroundTruthLoader()``, ``calib ground-truth`` and ``calib ground-truth measure`` read and write there."""
    try:
        root = runs_root(runs_root_dir)
    except RuntimeError:
        root = Path.cwd()
    return root / STORE_DIR_NAME


def measurement_path(
    root: str | Path, hardware_id: str, precision: str, key: str, batch_size: int, run_id: str | None = None
) -> Path:
    """A record's file; with ``run_id`` (every file the project writes) named by its run: one file per repeat."""
    suffix = f"_r{run_id.replace('-', '')[:RUN_SUFFIX_DIGITS]}" if run_id else ""
    precision = validate_precision(precision.lower())
    return Path(root) / hardware_id / MEASUREMENTS / precision / f"{key}_b{batch_size}{suffix}.json"


def record_path(root: str | Path, record: MeasurementRecord) -> Path:
    """Where :func:`save_measurement` puts ``record`` in the store at ``root`` (named by its run: a repeat of its
    configuration by another run lies beside it)."""
    return measurement_path(root, record.hardware_id, record.precision, record.key, record.batch_size, record.run_id)


def samples_path(record_path: str | Path) -> Path:
    """The raw-samples ``.npz`` beside a record file."""
    return Path(record_path).with_suffix(".npz")


def hardware_profile_path(root: str | Path, hardware_id: str) -> Path:
    return Path(root) / hardware_id / HARDWARE_PROFILE


def efficiency_curves_dir(root: str | Path, hardware_id: str, precision: str) -> Path:
    return Path(root) / hardware_id / EFFICIENCY_CURVES / validate_precision(precision.lower())


def stem_parts(stem: str, model_key: str) -> tuple[int | None, str | None]:
    """(batch size, run) a file stem encodes for ``model_key``: None, None for the bare key.

    The single rule for file names (docs/ground_truth.md): ``model_key``, ``model_key_b<N>`` or
    ``model_key_b<N>_r<run>`` (the run id's first 8 hex digits); anything else raises ValueError.
    """
    if stem == model_key:
        return None, None
    match = re.fullmatch(re.escape(model_key) + rf"_b([1-9][0-9]*)(?:_r([0-9a-f]{{{RUN_SUFFIX_DIGITS}}}))?", stem)
    if match is None:
        raise ValueError(
            f"file name {stem!r} does not match its model {model_key!r}: expected "
            f"{model_key}.json, {model_key}_b<batch>.json or {model_key}_b<batch>_r<run>.json; rename the "
            "file or fix its 'model' field"
        )
    return int(match.group(1)), match.group(2)


def split_batch_suffix(stem: str, model_key: str) -> int | None:
    """The batch size a file stem encodes for ``model_key``, or None when the stem is the bare key (:func:`stem_parts`)."""
    return stem_parts(stem, model_key)[0]


# ---------------------------------------------------------------------------------------------- files and kinds


def _is_precision(name: str) -> bool:
    return name.lower() in PRECISIONS


def record_layout(parts: tuple[str, ...]) -> str | None:
    """Which layout a JSON file's path relative to its hardware directory is in (None: not a record's place; hidden
    files never are: a writer's ``.tmp-*`` file (``helpers.run.atomic``) is not a record until it is renamed)."""
    if not parts or not parts[-1].endswith(".json") or parts[-1] in NON_RECORD_NAMES or parts[-1].startswith("."):
        return None
    if len(parts) == 3 and parts[0] == MEASUREMENTS and _is_precision(parts[1]):
        return CANONICAL
    if len(parts) == 3 and _is_precision(parts[0]) and parts[1] == MEASUREMENTS:
        return LEGACY_PER_MODEL
    if len(parts) == 2 and _is_precision(parts[0]):
        return LEGACY_BATCH
    return None


def _hardware_dir_of(path: Path) -> tuple[Path, str] | None:
    """(hardware directory, layout) of a file in a record's place of any layout, else None."""
    for depth in (3, 2):
        if len(path.parts) > depth:
            hw_dir = Path(*path.parts[:-depth])
            layout = record_layout(path.parts[-depth:])
            if layout is not None:
                return hw_dir, layout
    return None


def file_kind(path: Path) -> str:
    """What a file that is not a measurement record is, by name (``record`` for a record candidate)."""
    if path.name in NON_RECORD_NAMES:
        return NON_RECORD_NAMES[path.name]
    if path.name.startswith(".tmp-"):
        return "unfinished temporary file"
    if EFFICIENCY_CURVES in path.parts[:-1]:
        return "efficiency curves"
    if path.suffix == ".json":
        return "record"
    if path.suffix == ".npz":
        return "raw samples"
    if path.suffix == ".md":
        return "markdown report"
    return f"other file ({path.suffix or 'no suffix'})"


def _record_files(hw_dir: Path) -> list[tuple[Path, str]]:
    """Every record candidate of one hardware directory with its layout, canonical layout first."""
    found = []
    for pattern in ("*/*/*.json", "*/*.json"):
        for path in hw_dir.glob(pattern):
            layout = record_layout(path.relative_to(hw_dir).parts)
            if layout is not None and path.is_file():
                found.append((path, layout))
    return sorted(found, key=lambda item: (LAYOUTS.index(item[1]), item[0]))


def _is_record_document(data: dict) -> bool:
    return "subgraphs" in data or "measurement_type" in data


# ---------------------------------------------------------------------------------------------- normalization


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


GRAPHS_TOOL = "measure_efficiency.py"  # the graphs tool's measurement script: PyTorch, torch.fx, on cuda or cpu
GRAPHS_TOOL_DEVICES = ("cuda", "cpu")
_OWN_TOOL_VERSION = re.compile(r"calib-lab [^;]*; (\S+) \S+")  # helpers.ground_truth.latency's tool_version


def infer_runtime(data: dict) -> tuple[str, str]:
    """(runtime, normalization note) of a document that does not name its runtime, from what it says.

    The project's own writer names the runtime in ``tool_version`` (``calib-lab 0.1; onnxruntime 1.17``);
    the graphs tool's ``measure_efficiency.py`` (any version, migrated or not) runs every subgraph with
    PyTorch -- a torch.fx interpreter -- on its ``device``, ``cuda`` or ``cpu``. Anything else is
    ``unknown``: a file is never labelled with a runtime nothing in it names.
    """
    tool, device = data.get("tool_version"), data.get("device")
    if isinstance(tool, str):
        own = _OWN_TOOL_VERSION.fullmatch(tool)
        if own and own.group(1) in RUNTIMES:
            return own.group(1), f"runtime: absent, read as {own.group(1)!r}, which tool_version {tool!r} names"
        if tool.split(" ", 1)[0] == GRAPHS_TOOL and device in GRAPHS_TOOL_DEVICES:
            return "torch", (
                f"runtime: absent, read as 'torch': tool_version {tool!r} is the graphs tool's {GRAPHS_TOOL}, "
                f"which runs the subgraphs with PyTorch (a torch.fx interpreter) on device {device!r}"
            )
    return UNKNOWN_RUNTIME, (
        f"runtime: absent, read as {UNKNOWN_RUNTIME!r}: neither tool_version {tool!r} nor device {device!r} "
        "says which runtime measured it"
    )


def name_key(data: dict, model: str) -> str:
    """The model key a document's file name starts with: the record's key (:attr:`MeasurementRecord.key`) when
    the document names its runtime, else the bare model (a writer without runtimes names files by model)."""
    runtime = data.get("runtime", "onnxruntime")
    return model if runtime == "onnxruntime" else f"{model}-{runtime}"


def normalize(data: dict, stem: str) -> tuple[dict, str]:
    """A v1.0 or v2.0 document (any writer) as a v2.0 document, and the schema version as written.

    Every change is appended to the document's ``normalization`` list (docs/ground_truth.md):
    precision case-folded, integer subgraph ids as strings, a naive date kept with its zone
    flagged unknown, and the fields older writers lack -- batch size (from the file name),
    model summary (computed from the subgraphs), input shape and system state (null), run id
    (derived, so reading twice gives the same record), run index 0, runtime (:func:`infer_runtime`).
    Types are not coerced otherwise: a wrong type stays an error naming the field.
    """
    version = data.get("schema_version")
    if version not in ("1.0", SCHEMA_VERSION):
        raise SchemaError("schema_version", f"is {version!r}; readable versions: '1.0', {SCHEMA_VERSION!r}")
    missing = [name for name in V1_FIELDS if name not in data]
    if missing:
        raise SchemaError(", ".join(missing), "is missing" if len(missing) == 1 else "are missing")
    doc = dict(data)
    notes = list(read_value(list[str], doc.get("normalization", []), "normalization"))
    precision = doc["precision"]
    if isinstance(precision, str) and precision != precision.lower():
        doc["precision"] = precision.lower()
        _note(notes, f"precision: {precision!r} case-folded to {precision.lower()!r}")
    if isinstance(doc["subgraphs"], list):
        integer = [
            i for i, s in enumerate(doc["subgraphs"]) if isinstance(s, dict) and type(s.get("subgraph_id")) is int
        ]
        if integer:
            doc["subgraphs"] = [
                {**s, "subgraph_id": str(s["subgraph_id"])} if i in set(integer) else s
                for i, s in enumerate(doc["subgraphs"])
            ]
            _note(notes, f"subgraph_id: {len(integer)} integer ids read as strings")
    date = doc["measurement_date"]
    try:
        naive = isinstance(date, str) and datetime.fromisoformat(date).tzinfo is None
    except ValueError:
        naive = False  # the record's validation names the field
    if naive:
        _note(
            notes,
            "measurement_date: no time zone in the file (local time of the measuring machine); "
            "kept as written, zone unknown",
        )
    if "runtime" not in doc:
        doc["runtime"], note = infer_runtime(doc)
        _note(notes, note)
    if version == "1.0":
        doc["schema_version"] = SCHEMA_VERSION
        _note(notes, f"schema_version: '1.0' read as {SCHEMA_VERSION!r}")
    if "batch_size" not in doc:
        named = split_batch_suffix(stem, name_key(data, read_value(str, doc["model"], "model")))
        doc["batch_size"] = named or 1
        _note(
            notes,
            f"batch_size: {doc['batch_size']} from the file name"
            if named
            else "batch_size: 1, the file has none and its name no _b<N> (v1.0 predates batching)",
        )
    if "model_summary" not in doc:
        subgraphs = read_value(list[SubgraphMeasurement], doc["subgraphs"], "subgraphs")
        if not subgraphs:
            raise SchemaError("subgraphs", "is empty; a measurement needs at least one subgraph")
        batch = read_value(int, doc["batch_size"], "batch_size")
        doc["model_summary"] = ModelSummary.from_subgraphs(subgraphs, batch).to_dict()
        _note(
            notes,
            "model_summary: computed from the subgraphs (total_latency_ms = sum of subgraph means); "
            "no end-to-end latency",
        )
    for name in ("input_shape", "system_state"):
        if name not in doc:
            doc[name] = None
            _note(notes, f"{name}: absent, null")
    if "run_id" not in doc:
        identity = "/".join(str(doc[k]) for k in ("hardware_id", "precision", "model", "measurement_date"))
        doc["run_id"] = str(uuid.uuid5(_V1_RUN_NAMESPACE, f"{identity}/b{doc['batch_size']}"))
        _note(notes, DERIVED_RUN_ID)
    if "run_index" not in doc:
        doc["run_index"] = 0
        _note(notes, "run_index: absent, 0")
    doc["normalization"] = notes
    return doc, version


def _read(path: Path) -> tuple[MeasurementRecord, str]:
    """(record, schema version as written) of a record file; errors name the file and the field."""
    data = read_json_document(path)
    try:
        doc, version = normalize(data, path.stem)
        record = MeasurementRecord.from_dict(doc)
        named_batch, named_run = stem_parts(path.stem, name_key(data, record.model))
    except SchemaError as error:
        raise error.in_file(path) from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if named_batch not in (None, record.batch_size):
        raise ValueError(
            f"{path}: the name says batch {named_batch} but batch_size is {record.batch_size}; "
            "rename the file or fix its batch_size"
        )
    if named_run is not None and not record.run_id.replace("-", "").startswith(named_run):
        raise ValueError(
            f"{path}: the name says run {named_run} but run_id is {record.run_id}; rename the file or fix its run_id"
        )
    return record, version


def read_measurement(path: str | Path) -> MeasurementRecord:
    """A v1.0 or v2.0 record file, from any writer, as a normalized v2.0 record (:func:`normalize`)."""
    return _read(Path(path))[0]


def save_measurement(
    record: MeasurementRecord,
    root: str | Path | None = None,
    samples: Mapping[str, np.ndarray] | None = None,
    update_manifest: bool = True,
) -> Path:
    """Write ``record`` (and its raw ``samples`` as npz) at its place in the store; refresh the manifest."""
    root = Path(root) if root is not None else default_data_dir()
    path = record_path(root, record)
    if samples is not None:
        atomic.save_npz(samples_path(path), **samples)
    record.save(path)
    if update_manifest:
        rebuild_manifest(root, record.hardware_id)
    return path


def _date_key(record: MeasurementRecord) -> datetime:
    """Dates compare as UTC when tz-aware, as written when naive (their zone is unknown)."""
    date = datetime.fromisoformat(record.measurement_date)
    return date.astimezone(timezone.utc).replace(tzinfo=None) if date.tzinfo else date


# ---------------------------------------------------------------------------------------------- aliases


@dataclass(frozen=True)
class HardwareAliases:
    """``<root>/hardware_aliases.json``: ``{"aliases": {"<alias id>": "<canonical id>", ...}}``.

    Several ids of one physical machine map to one canonical id; the loader and migrate apply it.
    """

    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for alias, canonical in self.aliases.items():
            if alias == canonical or canonical in self.aliases:
                raise SchemaError(
                    f"aliases.{alias}",
                    f"maps to {canonical!r}, which is itself an alias (or the "
                    "same id); map every alias straight to the canonical id",
                )

    def canonical(self, hardware_id: str) -> str:
        return self.aliases.get(hardware_id, hardware_id)

    def ids_of(self, canonical: str) -> list[str]:
        return sorted({canonical} | {a for a, c in self.aliases.items() if c == canonical})

    @classmethod
    def load(cls, root: str | Path) -> HardwareAliases:
        path = Path(root) / ALIASES
        if not path.is_file():
            return cls()
        data = read_json_document(path)
        try:
            return cls(read_value(dict[str, str], data.get("aliases", {}), "aliases"))
        except SchemaError as error:
            raise error.in_file(path) from None

    def with_alias(self, alias: str, canonical: str) -> HardwareAliases:
        return HardwareAliases({**self.aliases, alias: self.canonical(canonical)})

    def save(self, root: str | Path) -> Path:
        return atomic.write_json(Path(root) / ALIASES, {"aliases": dict(sorted(self.aliases.items()))})


def apply_alias(record: MeasurementRecord, aliases: HardwareAliases) -> MeasurementRecord:
    """``record`` as the loader reads it: its hardware id mapped to the canonical one (noted), if aliased."""
    canonical = aliases.canonical(record.hardware_id)
    if canonical == record.hardware_id:
        return record
    note = f"hardware_id: {record.hardware_id!r} mapped to {canonical!r} by {ALIASES}"
    return dataclasses.replace(record, hardware_id=canonical, normalization=[*record.normalization, note])


# ---------------------------------------------------------------------------------------------- manifest


def _manifest_entry(hw_dir: Path, path: Path, record: MeasurementRecord) -> dict:
    return {
        "model": record.model,
        "runtime": record.runtime,
        "precision": record.precision,
        "batch_size": record.batch_size,
        "file": path.relative_to(hw_dir).as_posix(),
        "total_latency_ms": record.model_summary.total_latency_ms,
        "end_to_end_latency_ms": (
            record.model_summary.end_to_end_latency.mean if record.model_summary.end_to_end_latency else None
        ),
        "total_flops": record.model_summary.total_flops,
        "num_subgraphs": record.model_summary.num_subgraphs,
        "measurement_date": record.measurement_date,
        "run_id": record.run_id,
    }


def _checked_record(hw_dir: Path, path: Path, layout: str, aliases: HardwareAliases) -> tuple[MeasurementRecord, str]:
    record, version = _read(path)
    precision_dir = path.parent.name if layout == CANONICAL else path.parts[-3 if layout == LEGACY_PER_MODEL else -2]
    if (
        aliases.canonical(record.hardware_id) != aliases.canonical(hw_dir.name)
        or record.precision != precision_dir.lower()
    ):
        raise ValueError(
            f"{path}: field 'hardware_id' {record.hardware_id!r} / 'precision' {record.precision!r} "
            f"do not match the directory {hw_dir.name}/{precision_dir}: the file is misfiled; move it, "
            f"add an alias to {ALIASES}, or run `calib ground-truth migrate`"
        )
    return record, version


def file_stamp(path: Path) -> dict:
    """What the manifest records of a file to tell, by one ``stat``, that it is unchanged: size and mtime."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def build_manifest(root: str | Path, hardware_id: str) -> dict:
    """The project's manifest (format :data:`MANIFEST_FORMAT_VERSION`) of directory ``<root>/<hardware_id>``
    computed from its record files (not written). Beside what every manifest lists, each entry has the file's
    stamp (:func:`file_stamp`), its full ``model_summary`` and whether it is the configuration's ``used`` file within
    the directory: the loader answers :meth:`GroundTruthLoader.load_model_summary` from these while the stamps
    agree with the files."""
    hw_dir = Path(root) / hardware_id
    aliases = HardwareAliases.load(root)
    items = []
    for path, layout in _record_files(hw_dir):
        record, version = _checked_record(hw_dir, path, layout, aliases)
        items.append(StoredRecord(path, hw_dir.name, layout, version, record))
    entries = [
        _manifest_entry(hw_dir, i.path, i.record)
        | file_stamp(i.path)
        | {"used": i.used, "model_summary": i.record.model_summary.to_dict()}
        for i in _choose(items)
    ]
    devices = {i.record.device for i in items}
    entries.sort(key=lambda e: e["file"])
    coverage = {
        "models": sorted({e["model"] for e in entries}),
        "precisions": sorted({e["precision"] for e in entries}),
        "batch_sizes": sorted({e["batch_size"] for e in entries}),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "manifest_format_version": MANIFEST_FORMAT_VERSION,
        "hardware_id": hardware_id,
        "device": ", ".join(sorted(devices)),
        "generated_date": utc_now(),
        "summary": {
            "num_models": len(coverage["models"]),
            "num_precisions": len(coverage["precisions"]),
            "num_batch_sizes": len(coverage["batch_sizes"]),
            "total_measurements": len(entries),
        },
        "measurements": entries,
        "coverage": coverage,
    }


@contextlib.contextmanager
def write_lock(root: str | Path) -> Iterator[None]:
    """Held (``fcntl.flock``, exclusive) while a writer adds records to a store and rebuilds its derived files
    (manifests, efficiency curves): concurrent writers (two phase-05 runs at once) write in turn, so the last
    rebuild lists every record, and a writer that undoes its failed write undoes only its own."""
    Path(root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(root) / WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def rebuild_manifest(root: str | Path, hardware_id: str) -> dict:
    """Scan directory ``<root>/<hardware_id>``'s record files and write its manifest.json (project format)."""
    manifest = build_manifest(root, hardware_id)
    atomic.write_json(Path(root) / hardware_id / MANIFEST, manifest)
    return manifest


def _entry_disagreement(listed: dict, actual: dict) -> str | None:
    """How a manifest entry (any writer: no runtime, rounded latency) disagrees with its file, else None."""
    for name, value in actual.items():
        if name not in listed or (name == "runtime" and listed[name] is None):
            continue
        stored = listed[name]
        if name == "precision" and isinstance(stored, str):
            stored = stored.lower()
        if isinstance(value, float) and isinstance(stored, (int, float)) and not isinstance(stored, bool):
            if abs(stored - value) > LATENCY_ROUNDING_MS + 1e-9 * abs(value):
                return f"{name} {stored!r} vs {value!r}"
        elif stored != value:
            return f"{name} {stored!r} vs {value!r}"
    return None


def manifest_problems(root: str | Path, hardware_id: str, actual: dict | None = None) -> list[str]:
    """How directory ``<root>/<hardware_id>``'s manifest.json disagrees with its record files (empty: agrees).

    Manifests of other writers count as agreeing when they list exactly the record files and every
    field they hold matches the file (precision case-folded, ``total_latency_ms`` to 4 decimals).
    """
    path = Path(root) / hardware_id / MANIFEST
    if not path.is_file():
        return [f"{path} is missing"]
    try:
        stored = read_json_document(path)
    except ValueError as error:
        return [str(error)]
    actual = build_manifest(root, hardware_id) if actual is None else actual
    entries = stored.get("measurements")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e for e in entries):
        return [f"{path}: 'measurements' is not a list of entries with a 'file'"]
    listed = {e["file"]: e for e in entries}
    present = {e["file"]: e for e in actual["measurements"]}
    problems = [f"{f}: listed but no such record file" for f in sorted(set(listed) - set(present))]
    problems += [f"{f}: record file not listed" for f in sorted(set(present) - set(listed))]
    problems += [
        f"{f}: {why}" for f in sorted(set(listed) & set(present)) if (why := _entry_disagreement(listed[f], present[f]))
    ]
    stored_total = (stored.get("summary") or {}).get("total_measurements")
    if stored_total not in (None, len(present)):
        problems.append(f"summary.total_measurements is {stored_total}, the files are {len(present)}")
    return problems


# ---------------------------------------------------------------------------------------------- loader


class Configuration(NamedTuple):
    """One (model, runtime, precision, batch size): a tuple, with attributes (``c.model``) and keys (``c["model"]``,
    ``dict(c)``) of the same names."""

    model: str
    runtime: str
    precision: str
    batch_size: int

    def __getitem__(self, index):
        if isinstance(index, str):
            if index not in self._fields:
                raise KeyError(index)
            return getattr(self, index)
        return tuple.__getitem__(self, index)

    def keys(self) -> tuple[str, ...]:
        return self._fields

    @classmethod
    def of(cls, record: MeasurementRecord) -> Configuration:
        return cls(record.model, record.runtime, record.precision, record.batch_size)


@dataclass(frozen=True)
class StoredRecord:
    """One record file as the loader found it: which repeat of its configuration it holds, and whether it is the
    one used by default (``used``), another repeat (``repeat``) or a second file of one measurement (``duplicate``)."""

    path: Path
    directory: str
    layout: str
    written_version: str
    record: MeasurementRecord
    status: str = USED  # or REPEAT (another measurement of the configuration) or DUPLICATE (of ``winner``)
    winner: Path | None = None  # the default repeat's file (REPEAT), the measurement's used file (DUPLICATE)
    repeat: int = 1  # which measurement of the configuration, oldest first
    repeats: int = 1  # how many measurements of the configuration there are

    @property
    def used(self) -> bool:
        return self.status == USED

    @property
    def note(self) -> str:
        if self.status == DUPLICATE:
            return f"same measurement as {self.winner}"
        if self.status == REPEAT:
            return f"repeat {self.repeat} of {self.repeats}; the default (newest) is {self.winner}"
        return f"repeat {self.repeat} of {self.repeats}, the default (newest)" if self.repeats > 1 else ""

    @property
    def configuration(self) -> Configuration:
        return Configuration.of(self.record)


def _preference(item: StoredRecord) -> tuple:
    """Newest date first; for one date the canonical layout, then v2.0 as written, then the path."""
    return (
        -_date_key(item.record).timestamp(),
        LAYOUTS.index(item.layout),
        item.written_version != SCHEMA_VERSION,
        str(item.path),
    )


def _derived_run_id(record: MeasurementRecord) -> bool:
    return DERIVED_RUN_ID in record.normalization


def same_measurement(a: MeasurementRecord, b: MeasurementRecord) -> bool:
    """Two files of one measurement: the same date and run id, or the same date where a file had no run id of its
    own (v1.0: derived) -- e.g. a v1.0 file and the v2.0 file its tool migrated it to. Two runs of the
    project never share a run id: their records are repeats, even when measured in the same second."""
    return a.measurement_date == b.measurement_date and (
        a.run_id == b.run_id or _derived_run_id(a) or _derived_run_id(b)
    )


def _choose(items: list[StoredRecord]) -> list[StoredRecord]:
    """Per configuration: its measurements (repeats, numbered oldest first), the newest one used by default, and
    for each measurement held by several files, which file is used (:func:`_preference`) and which duplicate it."""
    by_config: dict[Configuration, list[StoredRecord]] = {}
    for item in items:
        by_config.setdefault(item.configuration, []).append(item)
    chosen = []
    for config in sorted(by_config):
        measurements: list[list[StoredRecord]] = []  # the files of each measurement, preferred first
        for item in sorted(by_config[config], key=_preference):
            same = next((m for m in measurements if same_measurement(m[0].record, item.record)), None)
            if same is None:
                measurements.append([item])
            else:
                same.append(item)
        default = measurements[0][0]  # newest (then layout, version, path)
        ordered = sorted(measurements, key=lambda m: (_date_key(m[0].record), str(m[0].path)))
        for number, (first, *others) in enumerate(ordered, 1):
            where = {"repeat": number, "repeats": len(ordered)}
            if first is default:
                chosen.append(dataclasses.replace(first, status=USED, **where))
            else:
                chosen.append(dataclasses.replace(first, status=REPEAT, winner=default.path, **where))
            chosen += [dataclasses.replace(o, status=DUPLICATE, winner=first.path, **where) for o in others]
    return chosen


class GroundTruthLoader:
    """Read access to a ground-truth store (default: :func:`default_data_dir`, where phase 05 stores), in place.

    Reads every layout and writer (:func:`normalize`); never writes unless asked (:meth:`rebuild_manifest`).
    Hardware ids are canonical (``hardware_aliases.json``); one id may gather several directories.
    """

    def __init__(self, data_dir: str | Path | None = None):
        self.root = Path(data_dir) if data_dir is not None else default_data_dir()
        logger.info("ground-truth store: %s%s", self.root, "" if data_dir is not None else " (the default)")
        self.aliases = HardwareAliases.load(self.root) if self.root.is_dir() else HardwareAliases()
        self._cache: dict[Path, tuple[tuple[int, int], tuple[MeasurementRecord, str]]] = {}
        self.manifest_status: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"GroundTruthLoader({str(self.root)!r})"

    def _directories(self) -> dict[str, list[Path]]:
        if not self.root.is_dir():
            return {}
        found: dict[str, list[Path]] = {}
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and _record_files(child):
                found.setdefault(self.aliases.canonical(child.name), []).append(child)
        return found

    def list_hardware(self) -> list[str]:
        return sorted(self._directories())

    def directories(self, hardware_id: str) -> list[Path]:
        found = self._directories()
        if hardware_id not in found:
            known = ", ".join(found) or "none"
            alias = self.aliases.canonical(hardware_id)
            hint = f" ({hardware_id!r} is an alias of {alias!r})" if alias != hardware_id else ""
            raise FileNotFoundError(
                f"no ground truth for hardware {hardware_id!r} under {self.root}{hint} "
                f"(hardware measured: {known}); measure with `calib ground-truth measure`"
            )
        return found[hardware_id]

    def _read_cached(self, hw_dir: Path, path: Path, layout: str) -> tuple[MeasurementRecord, str]:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, _checked_record(hw_dir, path, layout, self.aliases))
            self._cache[path] = cached
        return cached[1]

    def records(self, hardware_id: str) -> list[StoredRecord]:
        """Every record file of a hardware id (all its directories and layouts), used or not.

        Each directory's manifest.json is checked against the files; one that disagrees (or is
        missing) is not used: the listing is rebuilt in memory, with a warning, and
        :attr:`manifest_status` holds the problems.
        """
        items = []
        for hw_dir in self.directories(hardware_id):
            found = []
            for path, layout in _record_files(hw_dir):
                record, version = self._read_cached(hw_dir, path, layout)
                found.append(StoredRecord(path, hw_dir.name, layout, version, apply_alias(record, self.aliases)))
            actual = {"measurements": [_manifest_entry(hw_dir, i.path, i.record) for i in found]}
            problems = manifest_problems(self.root, hw_dir.name, actual)
            if problems and self.manifest_status.get(hw_dir.name) != problems:
                warnings.warn(
                    f"{hw_dir / MANIFEST} does not agree with the record files ({len(problems)} "
                    f"problem(s), first: {problems[0]}); listing rebuilt in memory. Write the project's "
                    f"manifest with GroundTruthLoader({str(self.root)!r}).rebuild_manifest("
                    f"{hardware_id!r})",
                    stacklevel=2,
                )
            self.manifest_status[hw_dir.name] = problems
            items += found
        return _choose(items)

    def _used(self, hardware_id: str) -> dict[Configuration, StoredRecord]:
        return {i.configuration: i for i in self.records(hardware_id) if i.used}

    def list_configurations(self, hardware_id: str) -> list[Configuration]:
        """Every configuration measured on ``hardware_id``, sorted; each one indexable as ``c.model`` or ``c["model"]``."""
        return sorted(self._used(hardware_id))

    def list_models(self, hardware_id: str, precision: str | None = None) -> list[str]:
        if precision is not None:
            precision = validate_precision(precision.lower())
        return sorted(
            {c.model for c in self.list_configurations(hardware_id) if precision is None or c.precision == precision}
        )

    def _find(
        self, hardware_id: str, model: str, precision: str, batch_size: int, runtime: str, repeat: str | None = None
    ) -> StoredRecord:
        used = self._used(hardware_id)
        config = Configuration(model, runtime, validate_precision(precision.lower()), batch_size)
        if config in used and repeat is not None:
            return self._repeat(hardware_id, config, repeat)
        if config not in used:
            measured = [c for c in used if c.model == model]
            have = ", ".join(f"{c.runtime} {c.precision} b{c.batch_size}" for c in sorted(measured))
            raise FileNotFoundError(
                f"no measurement of {model!r} ({runtime}, {config.precision}, batch {batch_size}) on {hardware_id} "
                f"under {self.root}. "
                + (
                    f"Measured for {model!r}: {have}."
                    if have
                    else f"Models measured: {', '.join(self.list_models(hardware_id)) or 'none'}."
                )
            )
        return used[config]

    def _measurements(self, hardware_id: str, config: Configuration) -> list[StoredRecord]:
        """The repeats of one configuration (one file each), oldest first."""
        items = [i for i in self.records(hardware_id) if i.configuration == config and i.status != DUPLICATE]
        return sorted(items, key=lambda i: i.repeat)

    def _repeat(self, hardware_id: str, config: Configuration, repeat: str) -> StoredRecord:
        found = [i for i in self._measurements(hardware_id, config) if i.record.run_id.startswith(repeat)]
        if len(found) != 1:
            have = ", ".join(
                f"{i.record.run_id} ({i.record.measurement_date})" for i in self._measurements(hardware_id, config)
            )
            problem = "no repeat" if not found else f"{len(found)} repeats"
            raise FileNotFoundError(
                f"{problem} of {config.model!r} ({config.runtime}, {config.precision}, batch {config.batch_size}) on "
                f"{hardware_id} has a run id starting with {repeat!r}; its repeats (run id, date): {have}"
            )
        return found[0]

    def path(
        self,
        hardware_id: str,
        model: str,
        precision: str,
        batch_size: int,
        runtime: str = "onnxruntime",
        repeat: str | None = None,
    ) -> Path:
        """The file of one configuration: its default repeat (the newest), or the repeat whose run id starts with
        ``repeat``."""
        return self._find(hardware_id, model, precision, batch_size, runtime, repeat).path

    def load(
        self,
        hardware_id: str,
        model: str,
        precision: str,
        batch_size: int,
        runtime: str = "onnxruntime",
        repeat: str | None = None,
    ) -> MeasurementRecord:
        """One record: the configuration's newest measurement (the default repeat), or with ``repeat`` the one whose
        ``run_id`` starts with it; the record's ``run_id`` and ``run_index`` say which it is. FileNotFoundError
        says what was looked for and what exists."""
        return self._find(hardware_id, model, precision, batch_size, runtime, repeat).record

    def repeats(
        self, hardware_id: str, model: str, precision: str, batch_size: int, runtime: str = "onnxruntime"
    ) -> list[MeasurementRecord]:
        """Every measurement of one configuration, oldest first (``load`` without ``repeat``: the newest)."""
        config = self._find(hardware_id, model, precision, batch_size, runtime).configuration
        return [i.record for i in self._measurements(hardware_id, config)]

    def load_repeats(
        self, hardware_id: str, precision: str | None = None
    ) -> dict[Configuration, list[MeasurementRecord]]:
        """Every measurement of every configuration (oldest first), for the spread across repeats."""
        out: dict[Configuration, list[MeasurementRecord]] = {}
        for item in sorted(self.records(hardware_id), key=lambda i: (i.configuration, i.repeat)):
            if item.status != DUPLICATE and (precision is None or item.record.precision == precision.lower()):
                out.setdefault(item.configuration, []).append(item.record)
        return out

    def load_model_summary(
        self, hardware_id: str, model: str, precision: str, batch_size: int, runtime: str = "onnxruntime"
    ) -> ModelSummary:
        """The default repeat's model summary: from the manifest when it vouches for the files
        (:meth:`manifest_summaries`), else from the record file (:meth:`load`)."""
        config = Configuration(model, runtime, validate_precision(precision.lower()), batch_size)
        listed = self.manifest_summaries(hardware_id)
        if listed is not None and config in listed:
            return listed[config]
        return self.load(hardware_id, model, precision, batch_size, runtime).model_summary

    def manifest_summaries(self, hardware_id: str) -> dict[Configuration, ModelSummary] | None:
        """The used model summary per configuration as the manifest lists it, without reading a record, when the
        manifest may be trusted: the project's format (:data:`MANIFEST_FORMAT_VERSION`), one directory for the
        hardware id, and its entries naming exactly the record files, each with the file's size and mtime
        (:func:`file_stamp`); else None."""
        directories = self.directories(hardware_id)
        if len(directories) != 1:
            return None
        hw_dir = directories[0]
        try:
            manifest = read_json_document(hw_dir / MANIFEST)
        except (OSError, ValueError):
            return None
        if manifest.get("manifest_format_version") != MANIFEST_FORMAT_VERSION:
            return None
        entries = {e.get("file"): e for e in manifest.get("measurements", []) if isinstance(e, dict)}
        files = {path.relative_to(hw_dir).as_posix(): path for path, _ in _record_files(hw_dir)}
        if set(entries) != set(files):
            return None
        for name, path in files.items():
            entry, stamp = entries[name], file_stamp(path)
            if any(entry.get(k) != v for k, v in stamp.items()):
                return None
        try:
            return {
                Configuration(e["model"], e["runtime"], e["precision"], e["batch_size"]): ModelSummary.from_dict(
                    e["model_summary"]
                )
                for e in entries.values()
                if e["used"]
            }
        except (KeyError, SchemaError):
            return None

    def load_samples(
        self,
        hardware_id: str,
        model: str,
        precision: str,
        batch_size: int,
        runtime: str = "onnxruntime",
        repeat: str | None = None,
    ) -> dict[str, np.ndarray]:
        """The raw samples stored beside a record (the default repeat, or ``repeat``): ``end_to_end_ms`` (wall
        clock), ``end_to_end_cpu_ms`` (on-CPU time, single-threaded runs), ``subgraph_ms`` (subgraphs x calls),
        ``subgraph_ids``."""
        path = samples_path(self.path(hardware_id, model, precision, batch_size, runtime, repeat))
        if not path.is_file():
            raise FileNotFoundError(f"no raw samples at {path} (v1.0, foreign and migrated records have none)")
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}

    def load_all(self, hardware_id: str, precision: str | None = None) -> list[MeasurementRecord]:
        """One record per configuration (its default repeat: the newest), sorted by configuration."""
        if precision is not None:
            precision = validate_precision(precision.lower())
        return [
            item.record
            for config, item in sorted(self._used(hardware_id).items())
            if precision is None or config.precision == precision
        ]

    def summary(self, hardware_id: str) -> pd.DataFrame:
        """One row per record file: where and how it was written, what it holds, whether it is used."""
        rows = [
            {
                "hardware_id": hardware_id,
                "directory": i.directory,
                "file": i.path.relative_to(self.root).as_posix(),
                "layout": i.layout,
                "schema_as_written": i.written_version,
                "model": i.record.model,
                "runtime": i.record.runtime,
                "precision": i.record.precision,
                "batch_size": i.record.batch_size,
                "num_subgraphs": i.record.model_summary.num_subgraphs,
                "total_latency_ms": i.record.model_summary.total_latency_ms,
                "total_flops": i.record.model_summary.total_flops,
                "measurement_date": i.record.measurement_date,
                "run_id": i.record.run_id,
                "repeat": f"{i.repeat}/{i.repeats}",
                "date_zone_known": i.record.date_zone_known,
                "normalized": len(i.record.normalization),
                "used": i.used,
                "note": i.note,
            }
            for i in self.records(hardware_id)
        ]
        return pd.DataFrame(rows).sort_values(
            ["model", "runtime", "precision", "batch_size", "used", "file"],
            ascending=[True, True, True, True, False, True],
            ignore_index=True,
        )

    def load_hardware_profile(self, hardware_id: str) -> HardwareProfile:
        path = hardware_profile_path(self.root, hardware_id)
        if not path.is_file():
            raise FileNotFoundError(f"no hardware profile at {path}; `calib ground-truth measure` writes it")
        return HardwareProfile.load(path)

    def rebuild_manifest(self, hardware_id: str) -> list[dict]:
        """Write the project's manifest.json in every directory of ``hardware_id`` (the only write)."""
        manifests = [rebuild_manifest(self.root, d.name) for d in self.directories(hardware_id)]
        self.manifest_status.clear()
        return manifests

    def check_manifest(self, hardware_id: str) -> list[str]:
        return [f"{d.name}: {p}" for d in self.directories(hardware_id) for p in manifest_problems(self.root, d.name)]


# ---------------------------------------------------------------------------------------------- hardware listing


def hardware_table(loader: GroundTruthLoader) -> pd.DataFrame:
    """One row per canonical hardware id: its directories, device, peak per precision, what it holds."""
    rows = []
    for hardware_id in loader.list_hardware():
        records = loader.load_all(hardware_id)
        peaks = {r.precision: r.theoretical_peak_flops for r in records}
        rows.append(
            {
                "hardware_id": hardware_id,
                "directories": ", ".join(d.name for d in loader.directories(hardware_id)),
                "device": ", ".join(sorted({r.device for r in records})),
                "peak_tflops": ", ".join(f"{p} {v / 1e12:.3g}" for p, v in sorted(peaks.items())),
                "records": len(records),
                "models": len({r.model for r in records}),
                "precisions": ", ".join(sorted(peaks)),
                "batch_sizes": ", ".join(str(b) for b in sorted({r.batch_size for r in records})),
            }
        )
    return pd.DataFrame(rows)


def likely_duplicates(loader: GroundTruthLoader, tolerance: float = 0.01) -> pd.DataFrame:
    """Pairs of hardware ids that look like one machine: same device, same peak per shared precision,
    and median relative difference of ``total_latency_ms`` over their shared configurations <= ``tolerance``."""
    data = {
        h: {Configuration(r.model, r.runtime, r.precision, r.batch_size): r for r in loader.load_all(h)}
        for h in loader.list_hardware()
    }
    rows = []
    ids = sorted(data)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            shared = sorted(set(data[a]) & set(data[b]))
            if not shared:
                continue
            ra, rb = [data[a][c] for c in shared], [data[b][c] for c in shared]
            if any(
                x.device != y.device or not np.isclose(x.theoretical_peak_flops, y.theoretical_peak_flops, rtol=1e-6)
                for x, y in zip(ra, rb)
            ):
                continue
            diff = np.array(
                [
                    abs(x.model_summary.total_latency_ms - y.model_summary.total_latency_ms)
                    / y.model_summary.total_latency_ms
                    for x, y in zip(ra, rb)
                ]
            )
            if np.median(diff) <= tolerance:
                rows.append(
                    {
                        "hardware_id": a,
                        "same_as": b,
                        "device": ra[0].device,
                        "shared": len(shared),
                        "median_latency_diff_pct": float(np.median(diff) * 100),
                        "max_latency_diff_pct": float(diff.max() * 100),
                    }
                )
    return pd.DataFrame(
        rows, columns=["hardware_id", "same_as", "device", "shared", "median_latency_diff_pct", "max_latency_diff_pct"]
    )


# ---------------------------------------------------------------------------------------------- migration

MIGRATED, IN_STORE, CONFLICT, FAILED, HELD_BACK = (
    "migrated",
    "already in store",
    "name taken",
    "failed",
    "held back",
)
OUTCOMES = (MIGRATED, DUPLICATE, IN_STORE, CONFLICT, FAILED, HELD_BACK)


@dataclass(frozen=True)
class MigrationEntry:
    source: str
    hardware_id: str
    outcome: str
    detail: str


@dataclass
class MigrationReport:
    """What :func:`migrate` did (or would do, on a dry run), file by file, and the files that are not records."""

    dry_run: bool
    dest: str
    entries: list[MigrationEntry] = field(default_factory=list)
    non_records: list[tuple[str, str]] = field(default_factory=list)

    def of(self, outcome: str) -> list[MigrationEntry]:
        return [e for e in self.entries if e.outcome == outcome]

    @property
    def failed(self) -> list[MigrationEntry]:
        return self.of(FAILED)

    def counts(self) -> pd.DataFrame:
        """Files per hardware id (rows) and outcome (columns), with totals."""
        table = pd.DataFrame([(e.hardware_id, e.outcome) for e in self.entries], columns=["hardware_id", "outcome"])
        counts = pd.crosstab(table["hardware_id"], table["outcome"], margins=True, margins_name="total")
        return counts.reindex(columns=[o for o in (*OUTCOMES, "total") if o in counts.columns])

    def summary(self) -> str:
        verb = "would write" if self.dry_run else "wrote"
        written = sorted({e.hardware_id for e in self.of(MIGRATED)})
        lines = [
            f"{verb} {len(self.of(MIGRATED))} records into {self.dest} "
            f"(hardware: {', '.join(written) or 'none'}); {len(self.failed)} failed; "
            f"{len(self.non_records)} files are not records"
        ]
        if self.entries:
            lines += ["", self.counts().to_string()]
        kinds: dict[str, list[str]] = {}
        for source, kind in self.non_records:
            kinds.setdefault(kind, []).append(source)
        if kinds:
            lines += ["", "not records (skipped):"]
            lines += [f"  {kind} ({len(files)}): {', '.join(files)}" for kind, files in sorted(kinds.items())]
        problems = [e for e in self.entries if e.outcome in (FAILED, HELD_BACK)]
        if problems:
            lines += [""] + [f"{e.outcome.upper()}: {e.source}: {e.detail}" for e in problems]
        return "\n".join(lines)


def _source_files(sources: list[Path]) -> list[Path]:
    found = set()
    for source in sources:
        found |= {source} if source.is_file() else {p for p in source.rglob("*") if p.is_file()}
    return sorted(found)


def _hardware_of_unreadable(path: Path) -> str:
    located = _hardware_dir_of(path)
    return located[0].name if located else "(unknown)"


def migrate(sources: Iterable[str | Path], dest: str | Path, dry_run: bool = False) -> MigrationReport:
    """Copy the records found under ``sources`` into ``dest``'s canonical layout as v2.0, then rebuild manifests.

    Records are normalized (:func:`normalize`) and their hardware id mapped through ``dest``'s
    alias table. One file per measurement is written, named by its run (:func:`record_path`): every
    repeat of a configuration is kept; among files of one measurement (:func:`same_measurement`)
    the rest are ``duplicate``s; a measurement the store holds already is ``already in store``, and
    a store file under the name that holds another one stays (``name taken``). A file that cannot be read ``failed``; every record of its hardware id is then ``held back``
    (all or nothing per hardware id) while other hardware ids are written. Files that are not
    records are listed by kind. Raw-sample ``.npz`` files travel with their record. ``dry_run``
    reads everything and writes nothing.
    """
    sources = [Path(s) for s in sources]
    absent = [str(s) for s in sources if not s.exists()]
    if absent or not sources:
        raise FileNotFoundError(f"migration source does not exist: {', '.join(absent) or '(none given)'}")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"migration destination {dest} is a file; give a store directory")
    aliases = HardwareAliases.load(dest) if dest.is_dir() else HardwareAliases()
    report = MigrationReport(dry_run=dry_run, dest=str(dest))
    found: list[StoredRecord] = []
    for path in _source_files(sources):
        kind = file_kind(path)
        if kind == "raw samples" and path.with_suffix(".json").is_file():
            continue  # travels with its record
        if kind != "record":
            report.non_records.append((str(path), kind))
            continue
        try:
            data = read_json_document(path)
            if not _is_record_document(data):
                report.non_records.append((str(path), "JSON without measurements"))
                continue
            record, version = _read(path)
        except (OSError, ValueError) as error:
            hardware_id = aliases.canonical(_hardware_of_unreadable(path))
            report.entries.append(MigrationEntry(str(path), hardware_id, FAILED, str(error)))
            continue
        located = _hardware_dir_of(path)
        found.append(
            StoredRecord(
                path,
                located[0].name if located else "",
                located[1] if located else CANONICAL,
                version,
                apply_alias(record, aliases),
            )
        )
    blocked = {e.hardware_id for e in report.failed}
    writes = []
    in_dest = GroundTruthLoader(dest)
    for hardware_id in sorted({item.record.hardware_id for item in found}):
        with warnings.catch_warnings():  # a destination manifest that disagrees is rebuilt below
            warnings.simplefilter("ignore", UserWarning)
            stored = in_dest.records(hardware_id) if hardware_id in in_dest.list_hardware() else []
        for item in _choose([i for i in found if i.record.hardware_id == hardware_id]):
            record = item.record
            target = record_path(dest, record)
            outcome, detail = (
                (DUPLICATE, item.note) if item.status == DUPLICATE else _destination_outcome(target, record, stored)
            )
            if outcome is None and hardware_id in blocked:
                outcome, detail = (
                    HELD_BACK,
                    (
                        f"not written: a file of hardware {hardware_id} failed (all or "
                        "nothing per hardware id); fix it and migrate again"
                    ),
                )
            if outcome is None:
                outcome, detail = MIGRATED, str(target)
                writes.append((item.path, target, record))
            report.entries.append(MigrationEntry(str(item.path), hardware_id, outcome, detail))
    if not dry_run and writes:
        with write_lock(dest):
            for source, target, record in writes:
                if samples_path(source).is_file():
                    atomic.write_bytes(samples_path(target), samples_path(source).read_bytes())
                record.save(target)
            for hardware_id in sorted({r.hardware_id for _, _, r in writes}):
                rebuild_manifest(dest, hardware_id)
    report.entries.sort(key=lambda e: (e.hardware_id, e.source))
    return report


def _destination_outcome(target: Path, record: MeasurementRecord, stored: list[StoredRecord]) -> tuple[str | None, str]:
    """Why ``record`` is not written to ``target`` (None: write it). The store never replaces a measurement:
    one it holds already (in any file) is ``already in store``; another record under the name is kept."""
    held = next(
        (i for i in stored if i.configuration == Configuration.of(record) and same_measurement(i.record, record)), None
    )
    if held is not None:
        return IN_STORE, str(held.path)
    if not target.is_file():
        return None, ""
    try:
        existing = read_measurement(target)
    except (OSError, ValueError):
        return None, ""  # an unreadable destination file is replaced (a repair: it held no measurement)
    return CONFLICT, f"{target} holds another measurement ({existing.run_id}, {existing.measurement_date}); kept"
