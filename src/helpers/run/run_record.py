"""``run_record.json``: what ran, where, when, with what, and what it produced.

Holds the run id, tz-aware times, the git sha and dirty flag, the config hash, library versions,
a host summary, the phase table (status, times, duration, error) and the artifact registry
(sha256 and size of every file in the run directory). Every update rewrites the file atomically.
Dates live here and in ``logs/``, never in ``results/``.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from helpers.run import atomic
from helpers.run.project import project_root

FILENAME = "run_record.json"
VERSIONED = ("torch", "onnxruntime", "numpy", "onnx", "papermill", "scikit-learn")
MANAGED_ENV = "CALIB_MANAGED_RUN"  # set by the runner in its kernels: it, not the kernel, keeps this record


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict:
    """The project's git sha and whether the work tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
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
    return {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "python_executable": sys.executable}


def load(run_dir: Path) -> dict:
    path = run_dir / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {FILENAME})")
    return json.loads(path.read_text())


def save(run_dir: Path, record: dict) -> None:
    record["updated"] = now()
    atomic.write_json(run_dir / FILENAME, record)


def create(run_dir: Path, run_id: str, config_hash: str, phase_ids: list[str]) -> dict:
    record = {"run_id": run_id, "created": now(), "status": "running", "config_hash": config_hash,
              "git": git_state(), "versions": versions(), "host": host(),
              "phases": {pid: {"status": "pending"} for pid in phase_ids}, "artifacts": {}}
    save(run_dir, record)
    return record


def set_phase(run_dir: Path, phase_id: str, **fields) -> dict:
    """Merge ``fields`` into a phase's row (and register artifacts) in one atomic rewrite."""
    record = load(run_dir)
    record["phases"].setdefault(phase_id, {}).update(fields)
    record["artifacts"] = artifact_registry(run_dir)
    save(run_dir, record)
    return record


def artifact_registry(run_dir: Path) -> dict:
    """sha256 and size of every file in the run directory except the record itself."""
    out = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if rel != FILENAME and not path.name.startswith(".tmp-"):
            out[rel] = {"sha256": atomic.sha256_file(path), "size": path.stat().st_size}
    return out
