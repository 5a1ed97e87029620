"""``run_record.json``: what ran, where, when, with what, and what it produced.

Holds the run id, tz-aware times, the git sha and dirty flag, the resolved config and its hash
(the run's identity, from creation on), library versions, a host summary (with the free disk at
creation), the phase table (status, times, duration, error, why it ran, the git state of that
execution, the content hash of its manifest and the sha256 of its executed notebook) and the
artifact registry (sha256 and size of every file in the run directory). A damaged record is
named in the error; :func:`rebuild` recreates it from the manifests and ``config_resolved.yaml``.
Every update rewrites the file atomically. Dates live here and in ``logs/``, never in ``results/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from helpers.run import atomic, manifest
from helpers.run.lock import LOCK_FILES
from helpers.run.params import config_hash
from helpers.run.project import project_root

FILENAME = "run_record.json"
CONFIG_FILE = "config_resolved.yaml"
VERSIONED = ("torch", "onnxruntime", "numpy", "onnx", "papermill", "scikit-learn")
MANAGED_ENV = "CALIB_MANAGED_RUN"  # set by the runner in its kernels: it, not the kernel, keeps this record


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
    """A run_record.json that cannot be read."""


def load(run_dir: Path) -> dict:
    path = Path(run_dir) / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {FILENAME})")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordDamaged(
            f"{path} is damaged ({exc}); `calib run --resume {run_dir}` rebuilds it from the "
            "manifests and config_resolved.yaml"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("phases"), dict):
        raise RecordDamaged(
            f"{path} is damaged (no phase table); `calib run --resume {run_dir}` rebuilds it from "
            "the manifests and config_resolved.yaml"
        )
    return record


def save(run_dir: Path, record: dict) -> None:
    record["updated"] = now()
    atomic.write_json(run_dir / FILENAME, record)


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


def set_phase(run_dir: Path, phase_id: str, **fields) -> dict:
    """Merge ``fields`` into a phase's row (and register artifacts) in one atomic rewrite."""
    record = load(run_dir)
    record["phases"].setdefault(phase_id, {}).update(fields)
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

    The run id names the config hash it was created with; a config that no longer matches it is
    refused. Phases whose manifest verifies are complete (their executed notebooks' sha256 taken as
    they are now); times of the lost record are gone (``rebuilt`` says when).
    """
    run_dir, chash = Path(run_dir), config_hash(config)
    match = _RUN_ID.match(run_dir.name)
    if match and match.group(2) != chash[:8]:
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


def artifact_registry(run_dir: Path) -> dict:
    """sha256 and size of every file in the run directory except the record itself."""
    out = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if rel != FILENAME and not path.name.startswith(".tmp-") and path.name not in LOCK_FILES:
            out[rel] = {"sha256": atomic.sha256_file(path), "size": path.stat().st_size}
    return out
