"""``run_record.json``: what ran, where, when, with what, and what it produced.

Holds the run id, tz-aware times, the git sha and dirty flag, the resolved config and its hash
(the run's identity, from creation on), library versions, a host summary (with the free disk at
creation), the phase table (status, times, duration, error, why it ran, the git state of that
execution, the content hash of its manifest and the sha256 of its executed notebook) and the
artifact registry (sha256 and size of every file in the run directory), and -- like a manifest -- a
sha256 over its own content (``sha256``, with ``schema``: :data:`SCHEMA`). A record written before
the self-hash (a *legacy* record: neither field) is read, its fields checked, its content not.

:func:`load` refuses a record that does not hold together on its own (:func:`problems`: the
self-hash, the fields every record has, statuses, the config against ``config_hash``); ``calib
verify`` (``helpers.run.integrity``) checks the rest against the files. A damaged record is named in
the error; :func:`rebuild` recreates it from the manifests and ``config_resolved.yaml``. Every update
rewrites the file atomically. Dates live here and in ``logs/``, never in ``results/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import yaml

from helpers.run import atomic, manifest
from helpers.run.graph import upstream_closure
from helpers.run.lock import LOCK_FILES
from helpers.run.params import config_hash
from helpers.run.project import project_root

FILENAME = "run_record.json"
CONFIG_FILE = "config_resolved.yaml"
RESERVE = ".reserve"  # room to record a failure on a full disk (:func:`reserve`): bookkeeping, never an artifact
VERSIONED = ("torch", "onnxruntime", "numpy", "onnx", "papermill", "scikit-learn")
MANAGED_ENV = "CALIB_MANAGED_RUN"  # set by the runner in its kernels: it, not the kernel, keeps this record
SCHEMA = 2  # 2: the record carries a sha256 over its own content (a legacy record has neither field)
RUN_STATUSES = ("running", "complete", "failed")
PHASE_STATUSES = ("pending", "running", "complete", "failed")
REQUIRED = ("run_id", "status", "config_hash", "config", "phases", "artifacts")
# Kept for information only, never checked against anything (the self-hash covers them): top-level fields
# and the fields of a phase row. Everything else is checked by :func:`problems` or ``calib verify``.
INFORMATIONAL = ("run_id", "created", "updated", "finished", "rebuilt", "extended", "git", "versions", "host")
INFORMATIONAL_ROW = ("started", "finished", "duration_s", "reason", "git", "disk_free_gib", "error", "reused_from")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path | None = None) -> dict:
    """The project's git sha and whether tracked files differ from HEAD (compared through git's clean
    filters: a source notebook whose only change is outputs, stripped by the nbclean filter, is clean).

    In a fresh clone every file is "racily clean" (as new as the index), so each ``git diff`` reads them
    all through the filters; refreshing the index first saves their stat info once, not per phase.
    (``git status`` would refresh too, but reports an outputs-only notebook as modified by its size.)
    """

    def git(*args: str, check: bool = True) -> str:
        return subprocess.run(
            ["git", *args], cwd=root or project_root(), capture_output=True, text=True, check=check
        ).stdout.strip()

    try:
        git("update-index", "-q", "--refresh", check=False)  # exits 1 where files changed; the diff says which
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("diff", "HEAD", "--name-only"))}
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def versions() -> dict:
    return {"python": platform.python_version(), **package_versions(VERSIONED)}


def host() -> dict:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python_executable": sys.executable,
    }


class RecordDamaged(ValueError):
    """A run_record.json that cannot be read, or does not hold together (:func:`problems`)."""


def rebuilt_by(run_dir: Path) -> str:
    return f"`calib run --resume {run_dir}` rebuilds it from the manifests and config_resolved.yaml"


def damaged(run_dir: Path, why: str) -> str:
    return f"{Path(run_dir) / FILENAME} is damaged ({why}); {rebuilt_by(run_dir)}"


def parse(run_dir: Path) -> dict:
    """The record as written: valid JSON with a phase table, nothing else checked (see :func:`load`)."""
    path = Path(run_dir) / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {FILENAME})")
    try:
        record = atomic.read_json(path, rebuilt_by(run_dir))
    except atomic.InvalidJSON as exc:
        raise RecordDamaged(damaged(run_dir, exc.reason)) from None
    if not isinstance(record, dict) or not isinstance(record.get("phases"), dict):
        raise RecordDamaged(damaged(run_dir, "no phase table"))
    return record


def load(run_dir: Path) -> dict:
    """The record, refused (:class:`RecordDamaged`, naming the first problem) unless it holds together."""
    record = parse(run_dir)
    if found := problems(record):
        raise RecordDamaged(damaged(run_dir, "; ".join(found[:3]) + ("; ..." if len(found) > 3 else "")))
    return record


def is_legacy(record: dict) -> bool:
    """Written before records carried their own sha256 (neither ``schema`` nor ``sha256``): not self-checked."""
    return "schema" not in record and "sha256" not in record


def seal(record: dict) -> dict:
    """Stamp the schema and the sha256 over the record's own content (everything but ``sha256``)."""
    record["schema"] = SCHEMA
    record["sha256"] = manifest.content_hash(atomic.to_jsonable(record))
    return record


def problems(record: dict) -> list[str]:
    """How a record fails to hold together on its own (empty: it does): its self-hash (unless legacy), the
    fields every record has, the run's and the phases' statuses, its phase table against its config, and
    its config against ``config_hash`` (the run's identity). The files are ``calib verify``'s part."""
    out = []
    if not is_legacy(record):
        if record.get("schema") != SCHEMA:
            out.append(f"schema {record.get('schema')!r}, this calib-lab writes {SCHEMA}")
        elif "sha256" not in record:
            out.append("no sha256 over its content, which its schema requires")
        elif record["sha256"] != manifest.content_hash(record):
            out.append("its content hash does not match: it was altered")
    out += [f"no {name!r}" for name in REQUIRED if name not in record]
    if record.get("status", "running") not in RUN_STATUSES:
        out.append(f"unknown run status {record['status']!r}")
    for phase_id, row in record.get("phases", {}).items():
        if not isinstance(row, dict) or row.get("status") not in PHASE_STATUSES:
            out.append(f"{phase_id}: unknown status {row.get('status') if isinstance(row, dict) else row!r}")
    config = record.get("config")
    if config is not None:  # None: a record created without its config (older API); config_hash alone
        if not isinstance(config, dict) or config_hash(config) != record.get("config_hash"):
            out.append("its config does not hash to its config_hash")
        elif missing := [pid for pid in config if pid not in record.get("phases", {})]:
            out.append(f"no row for phase {', '.join(missing)} of its config")
        elif extra := [pid for pid in record.get("phases", {}) if pid not in config]:
            out.append(f"a row for {', '.join(extra)}, which its config does not hold")
    artifacts = record.get("artifacts", {})
    if not isinstance(artifacts, dict):
        out.append("its artifact registry is not a table")
    else:
        for rel, entry in sorted(artifacts.items()):
            for name, kind in (("sha256", str), ("size", int)):
                if not isinstance(entry, dict) or not isinstance(entry.get(name), kind):
                    out.append(f"{rel}: run_record.json's artifact registry entry has no {name}")
    return out


def save(run_dir: Path, record: dict) -> None:
    """Seal and write the record atomically; on a full disk the run's reserve (:func:`reserve`) makes room."""
    record["updated"] = now()
    path = Path(run_dir) / FILENAME
    try:
        atomic.write_json(path, seal(record))
    except OSError as exc:
        reserve = Path(run_dir) / RESERVE
        if exc.errno not in atomic.DISK_FULL or not reserve.exists():
            raise
        reserve.unlink()  # spent: this is what it was kept for
        atomic.write_json(path, record)


def reserve(run_dir: Path) -> None:
    """Keep room beside the record (``<run>/.reserve``: twice the record's size plus 64 KiB; the runner grows it
    before each phase, as the record grows), so that a phase that fails on a full disk can still be recorded
    as failed, and the run too: :func:`save` releases it when a write finds the disk full. A disk too full
    for the reserve raises that OSError, as the phase would."""
    fd = os.open(Path(run_dir) / RESERVE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 2 * (Path(run_dir) / FILENAME).stat().st_size + 64 * 1024)
    except OSError as exc:
        if exc.errno in atomic.DISK_FULL:
            raise  # other errors (a filesystem without fallocate): no reserve, nothing else changes
    finally:
        os.close(fd)


@contextlib.contextmanager
def reserved(run_dir: Path) -> Iterator[None]:
    """While a run executes: its reserve (:func:`reserve`) is removed when the block ends."""
    try:
        yield
    finally:
        (Path(run_dir) / RESERVE).unlink(missing_ok=True)


def load_config(run_dir: Path) -> dict:
    """A run's ``config_resolved.yaml`` (phase id -> params), or a clear error naming the file."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not valid YAML ({exc}); restore it (run_record.json holds the config the run "
            "was created with, under 'config') or start a new run"
        ) from None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise ValueError(f"{path} must map each phase id to its parameters; restore it or start a new run")
    return config


def config_changes(record: dict, config: dict) -> list[str]:
    """What differs between the config a run was created with (its record) and ``config`` (empty: nothing)."""
    if config_hash(config) == record.get("config_hash"):
        return []
    created = record.get("config")
    if created is None:
        return [f"its hash {config_hash(config)[:12]} is not the run's {str(record.get('config_hash'))[:12]}"]
    old, new = ({f"{pid}.{k}": v for pid, params in c.items() for k, v in params.items()} for c in (created, config))
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"{key} removed (was {old[key]!r})")
        elif key not in old:
            out.append(f"{key} added ({new[key]!r})")
        elif old[key] != new[key] or type(old[key]) is not type(new[key]):
            out.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return out or ["its content hash differs"]


def disk_free_gib(path: Path) -> float:
    """Free disk at ``path`` in GiB (a measurement of the moment: it lives here, never in results/)."""
    return round(shutil.disk_usage(path).free / 2**30, 2)


def create(run_dir: Path, run_id: str, config_hash: str, phase_ids: list[str], config: dict | None = None) -> dict:
    """The record of a new run; ``config`` (the resolved config, hashed to ``config_hash``) is its identity."""
    record = {
        "run_id": run_id,
        "created": now(),
        "status": "running",
        "config_hash": config_hash,
        "config": config,
        "git": git_state(),
        "versions": versions(),
        "host": {**host(), "disk_free_gib": disk_free_gib(run_dir)},
        "phases": {pid: {"status": "pending"} for pid in phase_ids},
        "artifacts": {},
    }
    save(run_dir, record)
    return record


def extend(run_dir: Path, config: dict, added: list[str], by: str | None = None) -> dict:
    """The record of a run whose config gained the phases ``added`` (pending rows, in the config's order): its
    config and ``config_hash`` become ``config``, its identity from now on, and the run is running until they
    complete. ``by``, the command that added them, is kept under ``extended`` with the config hash before (a
    scratch run, whose config follows its notebooks, passes None)."""
    record = load(run_dir)
    if by is not None:
        entry = {"phases": list(added), "by": by, "at": now(), "config_hash": record["config_hash"]}
        record.setdefault("extended", []).append(entry)
    record["config"], record["config_hash"] = config, config_hash(config)
    record["phases"] = {pid: record["phases"].get(pid, {"status": "pending"}) for pid in config}
    record["status"] = "running"
    record["artifacts"] = artifact_registry(run_dir)
    save(run_dir, record)
    return record


def set_phase(run_dir: Path, phase_id: str, **fields) -> dict:
    """Merge ``fields`` into a phase's row (and register artifacts) in one atomic rewrite. A phase that starts
    running makes the run running (a complete run executed again no longer says complete)."""
    record = load(run_dir)
    record["phases"].setdefault(phase_id, {}).update(fields)
    if fields.get("status") == "running":
        record["status"] = "running"
    record["artifacts"] = artifact_registry(run_dir)
    save(run_dir, record)
    return record


def record_complete(run_dir: Path, phase_id: str, doc: dict, **fields) -> dict:
    """Mark a phase complete with the content hash of its manifest and the sha256 of its executed notebook."""
    notebook = doc.get("notebook")
    return set_phase(
        run_dir,
        phase_id,
        status="complete",
        error=None,
        input_key=doc.get("input_key"),
        summary=doc.get("summary", {}),
        manifest_sha256=doc.get("sha256"),
        notebook_sha256=atomic.sha256_file(run_dir / notebook) if notebook and (run_dir / notebook).is_file() else None,
        **fields,
    )


_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})(-\d+)?$")


def rebuild(run_dir: Path, config: dict) -> dict:
    """A new run_record.json for a run whose record is damaged or missing, from its manifests and config.

    The run id names the config hash it was created with; a config that no longer matches it (or the config
    it was extended to, :func:`created_with`) is refused. Phases whose manifest verifies are complete (their executed notebooks' sha256 taken as
    they are now); times of the lost record are gone (``rebuilt`` says when).
    """
    run_dir, chash = Path(run_dir), config_hash(config)
    match = _RUN_ID.match(run_dir.name)
    if match and not created_with(config, match.group(2)):
        raise ValueError(
            f"{run_dir / FILENAME} is damaged and config_resolved.yaml does not match the config hash in "
            f"the run id ({chash[:8]} vs {match.group(2)}): restore config_resolved.yaml or start a "
            "new run"
        )
    created = (
        dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
        .replace(tzinfo=dt.timezone.utc)
        .isoformat(timespec="seconds")
        if match
        else now()
    )
    record = {
        "run_id": run_dir.name,
        "created": created,
        "status": "running",
        "config_hash": chash,
        "config": config,
        "git": git_state(),
        "versions": versions(),
        "host": host(),
        "rebuilt": now(),
        "phases": {pid: {"status": "pending"} for pid in config},
        "artifacts": {},
    }
    save(run_dir, record)
    for phase_id in config:
        doc = manifest.read_manifest(run_dir, phase_id)
        if doc is not None and not manifest.verify(run_dir, phase_id):
            record = record_complete(run_dir, phase_id, doc)
    return record


def created_with(config: dict, id_hash: str) -> bool:
    """Whether a run whose id names the config hash ``id_hash`` holds ``config``: the config it was created with,
    or one ``calib run --resume --phases`` extended it to -- so ``config`` restricted to a set of its phases closed
    under their upstream phases (what ``--phases`` creates) hashes to it."""
    if config_hash(config).startswith(id_hash):
        return True
    ids = list(config)
    closed = {
        frozenset(closure)
        for n in range(1, len(ids))
        for chosen in itertools.combinations(ids, n)
        if (closure := upstream_closure(set(chosen))) <= set(ids)
    }
    return any(config_hash({pid: config[pid] for pid in ids if pid in kept}).startswith(id_hash) for kept in closed)


def artifact_registry(run_dir: Path) -> dict:
    """sha256 and size of every file in the run directory except the record itself."""
    out = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if rel != FILENAME and not path.name.startswith(".tmp-") and path.name not in (*LOCK_FILES, RESERVE):
            out[rel] = {"sha256": atomic.sha256_file(path), "size": path.stat().st_size}
    return out
