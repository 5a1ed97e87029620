"""Phase manifests and input keys.

A manifest (``manifests/<phase>.json``) is written last, after every output of the phase is
fully written. It lists each file under ``results/<phase>/`` with size and sha256, the phase's
*input key*, and the phase's key results (a small dict for ``calib show``). It holds no dates,
so equal results give equal manifests.

The input key hashes everything a phase's results depend on: its resolved params, its upstream
manifests, its notebook's code and the helper sources. ``calib run --resume`` skips a phase only
when its manifest verifies and its input key matches.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helpers.run import atomic
from helpers.run.notebook_file import code_cells
from helpers.run.params import canonical_json
from helpers.run.project import helpers_source_hash

SCHEMA = 1


def manifest_path(run_dir: Path, phase_id: str) -> Path:
    return run_dir / "manifests" / f"{phase_id}.json"


def results_dir(run_dir: Path, phase_id: str) -> Path:
    return run_dir / "results" / phase_id


def notebook_code_hash(notebook: Path) -> str:
    """sha256 of the notebook's code cells (outputs and metadata do not count)."""
    code = "\0".join(cell.source for cell in code_cells(notebook))
    return hashlib.sha256(code.encode()).hexdigest()


def input_key(phase_id: str, params: dict, notebook: Path, upstream: list[str], run_dir: Path,
              soft: bool = False) -> str:
    """Hash of params, upstream manifests, notebook code and helper sources.

    Raises FileNotFoundError when an upstream manifest is missing: the phase cannot run yet --
    unless ``soft`` (a phase that reports on whatever exists): then a missing upstream counts as
    absent in the key.
    """
    parts = {"phase": phase_id, "params": params, "notebook": notebook_code_hash(notebook),
             "helpers": helpers_source_hash(), "upstream": {}}
    for up in upstream:
        path = manifest_path(run_dir, up)
        if not path.exists() and soft:
            parts["upstream"][up] = None
            continue
        if not path.exists():
            raise FileNotFoundError(f"phase {phase_id} needs phase {up}, which has no manifest in {run_dir}; "
                                    f"run it first (calib run --resume {run_dir})")
        parts["upstream"][up] = atomic.sha256_file(path)
    return hashlib.sha256(canonical_json(parts)).hexdigest()


def write_manifest(run_dir: Path, phase_id: str, key: str, summary: dict[str, Any] | None = None) -> Path:
    """List every file under results/<phase>/ (size, sha256) and write the manifest atomically."""
    root = results_dir(run_dir, phase_id)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[-1].startswith(".tmp-"):
            raise RuntimeError(f"{path} is an unfinished temporary file; a writer did not complete")
        files[rel] = {"size": path.stat().st_size, "sha256": atomic.sha256_file(path)}
    doc = {"schema": SCHEMA, "phase": phase_id, "input_key": key, "files": files, "summary": summary or {}}
    return atomic.write_json(manifest_path(run_dir, phase_id), doc)


def read_manifest(run_dir: Path, phase_id: str) -> dict | None:
    path = manifest_path(run_dir, phase_id)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"files": {}, "input_key": None, "corrupt": True}


def verify(run_dir: Path, phase_id: str) -> list[str]:
    """Problems with a phase's manifest and its files; an empty list means it verifies."""
    manifest = read_manifest(run_dir, phase_id)
    if manifest is None:
        return [f"{phase_id}: no manifest"]
    if manifest.get("corrupt"):
        return [f"{phase_id}: manifest {manifest_path(run_dir, phase_id)} is not valid JSON"]
    root = results_dir(run_dir, phase_id)
    problems = []
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{phase_id}: missing {path.relative_to(run_dir)}")
        elif path.stat().st_size != entry["size"] or atomic.sha256_file(path) != entry["sha256"]:
            problems.append(f"{phase_id}: altered {path.relative_to(run_dir)} (sha256 differs from the manifest)")
    return problems


def withdraw(run_dir: Path, phase_id: str) -> None:
    """Remove a phase's manifest and results before it is executed again."""
    import shutil

    manifest_path(run_dir, phase_id).unlink(missing_ok=True)
    shutil.rmtree(results_dir(run_dir, phase_id), ignore_errors=True)
