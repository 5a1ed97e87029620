"""Copying records into a store: files of any layout and writer -> the store's canonical layout, as v2.0.

Owns :func:`migrate` (behind ``calib ground-truth migrate``) and its :class:`MigrationReport`: what
happened to each file found under the sources (migrated, a duplicate of another file of the same
measurement, already in the store, a name taken by another measurement, failed, or held back because
another file of its hardware id failed: all or nothing per hardware id), and which files are not
records. Files are read by ``foreign`` (normalized), placed by ``layout``, written and indexed by
``store``.

Also the store's portable copy of one machine (:func:`pack`, behind ``calib ground-truth pack``, and
its reader :func:`unpack`): a ``.tar.xz`` of the machine's profile, manifest and record files in the
canonical layout (no raw samples, no figures), small enough to commit -- ``data/ground_truth/`` holds
them -- so that the across-machines protocol can predict a machine no session has.
"""

from __future__ import annotations

import io
import tarfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from helpers.ground_truth.foreign import is_record_document, read_measurement, read_record
from helpers.ground_truth.layout import (
    CANONICAL,
    file_kind,
    hardware_dir_of,
    hardware_profile_path,
    record_files,
    record_path,
    samples_path,
)
from helpers.ground_truth.records import MeasurementRecord, read_json_document
from helpers.ground_truth.store import (
    DUPLICATE,
    Configuration,
    GroundTruthLoader,
    HardwareAliases,
    StoredRecord,
    apply_alias,
    choose_files,
    rebuild_manifest,
    same_measurement,
    write_lock,
)
from helpers.run import atomic

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
    located = hardware_dir_of(path)
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
            if not is_record_document(data):
                report.non_records.append((str(path), "JSON without measurements"))
                continue
            record, version = read_record(path)
        except (OSError, ValueError) as error:
            hardware_id = aliases.canonical(_hardware_of_unreadable(path))
            report.entries.append(MigrationEntry(str(path), hardware_id, FAILED, str(error)))
            continue
        located = hardware_dir_of(path)
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
        for item in choose_files([i for i in found if i.record.hardware_id == hardware_id]):
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


def pack(root: str | Path, hardware_id: str, archive: str | Path) -> Path:
    """Write ``archive`` (``.tar.xz``): ``hardware_id``'s profile (when measured), manifest (rebuilt first) and record
    files of the store ``root``, paths relative to the store root, without owners or times."""
    loader = GroundTruthLoader(root)
    hw_dir = loader.directories(hardware_id)[0]  # an unknown id is an error naming the known ones
    with write_lock(root):
        rebuild_manifest(root, hardware_id)
    files = [hardware_profile_path(root, hardware_id), hw_dir / "manifest.json"]
    files = [f for f in files if f.is_file()] + sorted(path for path, _ in record_files(hw_dir))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(str(path.relative_to(root)))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return atomic.write_bytes(archive, buffer.getvalue())


def unpack(archive: str | Path, dest: str | Path) -> GroundTruthLoader:
    """The store ``dest`` with the machine of ``archive`` (written by :func:`pack`) unpacked into it."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} does not exist; pack one with `calib ground-truth pack HARDWARE_ID`")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return GroundTruthLoader(dest)
