"""The ground-truth store: writing records, manifests, hardware aliases, and the loader that reads a store in place.

Owns what a store *holds* and how it is read back: :func:`save_measurement` (a record and its raw
samples at their place, ``layout.record_path``), each hardware directory's ``manifest.json``
(:func:`build_manifest`, :func:`rebuild_manifest`, :func:`manifest_problems`), the alias table of
several ids of one machine (:class:`HardwareAliases`), the one-writer-at-a-time lock
(:func:`write_lock`), and :class:`GroundTruthLoader`: every record file of every layout and writer
(read through ``foreign.read_record``), the repeats of one configuration and the one used by default
(:func:`choose_files`), model summaries answered from a manifest that agrees with the files.
Where files lie is ``layout``'s; reading other writers' files is ``foreign``'s; copying files into
a store is ``migration``'s. The full rules are in ``docs/ground_truth.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from helpers.ground_truth.foreign import DERIVED_RUN_ID, read_record
from helpers.ground_truth.foreign import read_measurement as read_measurement
from helpers.ground_truth.hardware import HardwareProfile
from helpers.ground_truth.layout import (
    ALIASES,
    CANONICAL,
    LAYOUTS,
    LEGACY_PER_MODEL,
    MANIFEST,
    WRITE_LOCK,
    default_data_dir,
    hardware_profile_path,
    record_files,
    record_path,
    samples_path,
)
from helpers.ground_truth.records import (
    SCHEMA_VERSION,
    MeasurementRecord,
    ModelSummary,
    SchemaError,
    read_json_document,
    read_value,
    validate_precision,
)
from helpers.run import atomic
from helpers.run.run_record import now as utc_now

MANIFEST_FORMAT_VERSION = 2  # 2: entries carry file stamps, the used flag and model_summary (1: unversioned)
LATENCY_ROUNDING_MS = 5e-5  # other tools' manifests round total_latency_ms to 4 decimals
USED, REPEAT, DUPLICATE = "used", "repeat", "duplicate"  # a record file: the default repeat, another, a copy
logger = logging.getLogger(__name__)


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
    record, version = read_record(path)
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
    for path, layout in record_files(hw_dir):
        record, version = _checked_record(hw_dir, path, layout, aliases)
        items.append(StoredRecord(path, hw_dir.name, layout, version, record))
    entries = [
        _manifest_entry(hw_dir, i.path, i.record)
        | file_stamp(i.path)
        | {"used": i.used, "model_summary": i.record.model_summary.to_dict()}
        for i in choose_files(items)
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


def choose_files(items: list[StoredRecord]) -> list[StoredRecord]:
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
            if child.is_dir() and record_files(child):
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
            for path, layout in record_files(hw_dir):
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
        return choose_files(items)

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
        files = {path.relative_to(hw_dir).as_posix(): path for path, _ in record_files(hw_dir)}
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
