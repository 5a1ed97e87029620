"""Phase manifests and input keys.

A manifest (``manifests/<phase>.json``) is written last, after every output of the phase is
fully written *and* after its executed notebook: it lists each file under ``results/<phase>/``
with size and sha256, the executed notebook (``notebooks/<phase>.ipynb``; its sha256 is in the
run record, as the notebook's bytes hold times), the phase's *input key* and the parts it was
hashed from, the phase's key results (a small dict for ``calib show``), and a sha256 over its own
content (``sha256``), so a manifest verifies itself. It holds no dates, so equal results give
equal manifests.

The input key hashes everything a phase's results depend on: its resolved params, its upstream
manifests, its notebook's code and the helper sources. ``calib run --resume`` skips a phase only
when its manifest verifies and its input key matches.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from helpers.run import atomic
from helpers.run.notebook_file import code_cells
from helpers.run.params import canonical_json
from helpers.run.project import helpers_source_hash

SCHEMA = 2  # 2: key_parts, the executed notebook, the content hash
PENDING_SUFFIX = ".pending.json"


def manifest_path(run_dir: Path, phase_id: str) -> Path:
    return run_dir / "manifests" / f"{phase_id}.json"


def pending_path(run_dir: Path, phase_id: str) -> Path:
    return run_dir / "manifests" / f"{phase_id}{PENDING_SUFFIX}"


def results_dir(run_dir: Path, phase_id: str) -> Path:
    return run_dir / "results" / phase_id


def notebook_code_hash(notebook: Path) -> str:
    """sha256 of the notebook's code cells (outputs and metadata do not count)."""
    code = "\0".join(cell.source for cell in code_cells(notebook))
    return hashlib.sha256(code.encode()).hexdigest()


def key_parts(
    phase_id: str, params: dict, notebook: Path, upstream: list[str], run_dir: Path, soft: bool = False
) -> dict:
    """What a phase's input key hashes: its params, its notebook code, the helper sources, its upstream manifests.

    Raises FileNotFoundError when an upstream manifest is missing: the phase cannot run yet --
    unless ``soft`` (a phase that reports on whatever exists): then a missing upstream counts as
    absent in the key.
    """
    parts = {
        "phase": phase_id,
        "params": hashlib.sha256(canonical_json(params)).hexdigest(),
        "notebook": notebook_code_hash(notebook),
        "helpers": helpers_source_hash(),
        "upstream": {},
    }
    for up in upstream:
        path = manifest_path(run_dir, up)
        if not path.exists() and soft:
            parts["upstream"][up] = None
            continue
        if not path.exists():
            raise FileNotFoundError(
                f"phase {phase_id} needs phase {up}, which has no manifest in {run_dir}; "
                f"run it first (calib run --resume {run_dir})"
            )
        parts["upstream"][up] = atomic.sha256_file(path)
    return parts


def key_of(parts: dict) -> str:
    return hashlib.sha256(canonical_json(parts)).hexdigest()


def input_key(
    phase_id: str, params: dict, notebook: Path, upstream: list[str], run_dir: Path, soft: bool = False
) -> str:
    """Hash of params, upstream manifests, notebook code and helper sources (see :func:`key_parts`)."""
    return key_of(key_parts(phase_id, params, notebook, upstream, run_dir, soft))


_PART_LABELS = {"params": "its params", "notebook": "its notebook's code", "helpers": "the helper sources"}


def changed_key_parts(doc: dict, parts: dict) -> list[str]:
    """What changed between the key a manifest was written under and ``parts`` (empty: nothing)."""
    if doc.get("input_key") == key_of(parts):
        return []
    old = doc.get("key_parts") or {}
    changed = [label for name, label in _PART_LABELS.items() if old.get(name) != parts[name]]
    moved = [up for up, sha in parts["upstream"].items() if (old.get("upstream") or {}).get(up) != sha]
    if moved:
        changed.append(f"upstream phase(s) {', '.join(moved)}")
    return changed or ["its input key"]


def content_hash(doc: dict) -> str:
    """sha256 of a manifest's own content (everything but its ``sha256`` field): the manifest verifies itself."""
    return hashlib.sha256(canonical_json({k: v for k, v in doc.items() if k != "sha256"})).hexdigest()


def write_manifest(
    run_dir: Path,
    phase_id: str,
    parts: dict,
    summary: dict[str, Any] | None = None,
    notebook: str | None = None,
    pending: bool = False,
) -> Path:
    """List every file under results/<phase>/ (size, sha256) and write the manifest atomically.

    ``notebook`` names the phase's executed notebook (relative to the run; None for a notebook run
    by hand). ``pending``: a managed kernel writes ``<phase>.pending.json``; the runner promotes it
    (:func:`promote`) once papermill has written that executed notebook, so the notebook always
    exists before the manifest does.
    """
    root = results_dir(run_dir, phase_id)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[-1].startswith(".tmp-"):
            raise RuntimeError(f"{path} is an unfinished temporary file; a writer did not complete")
        files[rel] = {"size": path.stat().st_size, "sha256": atomic.sha256_file(path)}
    doc = atomic.to_jsonable(
        {
            "schema": SCHEMA,
            "phase": phase_id,
            "input_key": key_of(parts),
            "key_parts": parts,
            "files": files,
            "summary": summary or {},
            "notebook": notebook,
        }
    )
    doc["sha256"] = content_hash(doc)
    return atomic.write_json(pending_path(run_dir, phase_id) if pending else manifest_path(run_dir, phase_id), doc)


def promote(run_dir: Path, phase_id: str) -> dict | None:
    """Make a phase's pending manifest its manifest (one atomic rename); None when there is none."""
    doc = read_manifest(run_dir, phase_id, pending=True)
    if doc is None or doc.get("corrupt"):
        return None
    os.replace(pending_path(run_dir, phase_id), manifest_path(run_dir, phase_id))
    atomic.fsync_dir(manifest_path(run_dir, phase_id).parent)
    return doc


def read_manifest(run_dir: Path, phase_id: str, pending: bool = False) -> dict | None:
    path = pending_path(run_dir, phase_id) if pending else manifest_path(run_dir, phase_id)
    if not path.exists():
        return None
    try:
        return atomic.read_json(path, f"`calib run --resume {run_dir}` recomputes {phase_id}")
    except atomic.InvalidJSON:
        return {"files": {}, "input_key": None, "corrupt": True}


def verify(run_dir: Path, phase_id: str) -> list[str]:
    """Problems with a phase's manifest and its files; an empty list means it verifies."""
    manifest = read_manifest(run_dir, phase_id)
    if manifest is None:
        return [f"{phase_id}: no manifest"]
    if manifest.get("corrupt"):
        return [f"{phase_id}: manifest {manifest_path(run_dir, phase_id)} is not valid JSON"]
    if manifest.get("schema") != SCHEMA:
        return [
            f"{phase_id}: manifest has schema {manifest.get('schema')!r}, not {SCHEMA} (an older calib-lab wrote "
            "it, or it was edited); --resume re-runs the phase"
        ]
    if manifest.get("sha256") != content_hash(manifest):
        return [
            f"{phase_id}: manifest {manifest_path(run_dir, phase_id).relative_to(run_dir)} was altered (its "
            "content hash does not match); --resume re-runs the phase"
        ]
    root = results_dir(run_dir, phase_id)
    problems = []
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{phase_id}: missing {path.relative_to(run_dir)}")
        elif path.stat().st_size != entry["size"] or atomic.sha256_file(path) != entry["sha256"]:
            problems.append(f"{phase_id}: altered {path.relative_to(run_dir)} (sha256 differs from the manifest)")
    if manifest.get("notebook") is not None and not (run_dir / manifest["notebook"]).is_file():
        problems.append(f"{phase_id}: executed notebook {manifest['notebook']} is missing")
    return problems


def withdraw(run_dir: Path, phase_id: str) -> None:
    """Remove a phase's manifest and results before it is executed again."""
    import shutil

    manifest_path(run_dir, phase_id).unlink(missing_ok=True)
    pending_path(run_dir, phase_id).unlink(missing_ok=True)
    shutil.rmtree(results_dir(run_dir, phase_id), ignore_errors=True)
