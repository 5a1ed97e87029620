"""Cross-run phase cache: within one runs root, a phase is computed once per input key.

A phase's input key hashes its resolved params, its upstream manifests, its notebook code and the
helper sources. When another run of the same runs root holds that phase with the same key, the
phase is not executed again: its outputs are *materialized* from that run (hardlinked where the
filesystem allows, else copied), each file's sha256 is checked against the source manifest, the
source's manifest bytes are written last (so downstream keys match the source's), and the run
record names the source as ``reused_from``. A source whose files fail the check is skipped.

Concurrency: the lookup-compute sequence for one key holds an exclusive ``fcntl.flock`` on
``<runs root>/.cache/claims/<key>.lock``. Two workers that need the same upstream phase compute
it once: the second waits on the claim, then reuses the first one's result. The OS releases the
lock when its holder dies, so a killed worker never leaves a stale claim. (On a shared
filesystem this needs working ``flock``: NFSv4, Lustre with ``-o flock``, CephFS, BeeGFS.)

Phases that describe the machine they run on, or name their own run, are never reused
(``NOT_REUSED``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from helpers.run import atomic, manifest, run_record

CACHE_DIR = ".cache"
NOT_REUSED = {
    "00_environment": "describes the machine it runs on",
    "05_latency": "measures the machine it runs on",
    "08_bundle": "records its own run id as the bundle's source",
    "09_report": "shows its own run id",
}


def claim_path(root: Path, key: str) -> Path:
    return root / CACHE_DIR / "claims" / f"{key}.lock"


@contextlib.contextmanager
def claim(root: Path, key: str, holder: dict, log: Callable[[str], None] = print, poll_s: float = 0.5):
    """Hold the exclusive claim on ``key`` in runs root ``root`` (waits while another process holds it)."""
    path = claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = path.with_suffix(".owner.json")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    with contextlib.suppress(OSError, ValueError):
                        other = atomic.read_json(owner, "nothing to do: it only names the holder")
                        log(
                            f"[{holder.get('phase')}] waiting: run {other.get('run')} on {other.get('host')} "
                            f"(pid {other.get('pid')}) is computing this phase with the same input key"
                        )
                    waited = True
                time.sleep(poll_s)
        atomic.write_json(owner, {**holder, "host": socket.gethostname(), "pid": os.getpid()})
        yield
    finally:
        os.close(fd)  # releases the lock


def candidates(root: Path, phase_id: str, key: str, exclude: Path) -> list[Path]:
    """Runs of ``root`` whose manifest of ``phase_id`` carries ``key``, in name order (the first that verifies wins)."""
    found = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() != exclude.resolve()):
        doc = manifest.read_manifest(run_dir, phase_id)
        if doc and doc.get("input_key") == key:
            found.append(run_dir)
    return found


def place(src: Path, dst: Path) -> str:
    """``dst`` becomes ``src``'s bytes: a hardlink where possible, else an atomic copy. Returns how."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{dst.name}.{secrets.token_hex(6)}")
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or one without hardlinks
        with atomic.atomic_path(dst) as target:
            shutil.copyfile(src, target)
        return "copied"
    os.replace(tmp, dst)
    return "linked"


def materialize(source: Path, run_dir: Path, phase_id: str, key: str) -> dict | None:
    """Bring ``source``'s verified ``phase_id`` into ``run_dir``; None (and nothing left) if it does not verify."""
    try:  # read once: these bytes are checked and then written, even if the source changes meanwhile
        manifest_bytes = manifest.manifest_path(source, phase_id).read_bytes()
        doc = json.loads(manifest_bytes)
    except (OSError, ValueError):  # withdrawn or rewritten since it was listed
        return None
    if doc.get("input_key") != key or doc.get("sha256") != manifest.content_hash(doc):  # altered: not verified
        return None
    manifest.withdraw(run_dir, phase_id)
    src_root, dst_root = manifest.results_dir(source, phase_id), manifest.results_dir(run_dir, phase_id)
    how = {"linked": 0, "copied": 0}
    for rel, entry in doc["files"].items():
        src, dst = src_root / rel, dst_root / rel
        if not src.is_file():
            manifest.withdraw(run_dir, phase_id)
            return None
        how[place(src, dst)] += 1
        if dst.stat().st_size != entry["size"] or atomic.sha256_file(dst) != entry["sha256"]:
            manifest.withdraw(run_dir, phase_id)
            return None
    notebook = source / "notebooks" / f"{phase_id}.ipynb"
    if notebook.is_file():  # the executed notebook that produced these results
        place(notebook, run_dir / "notebooks" / notebook.name)
    atomic.write_bytes(manifest.manifest_path(run_dir, phase_id), manifest_bytes)  # last
    return {"run": source.name, "files": len(doc["files"]), **how, "manifest": doc}


def run_once(
    run_dir: Path, phase_id: str, key: str, compute: Callable[[], object], log: Callable[[str], None] = print
) -> str:
    """Reuse ``phase_id`` from another run of the same runs root with input key ``key``, else ``compute()``.

    Returns ``"reused"`` or ``"ran"``. Concurrent callers with the same key compute it once.
    """
    if phase_id in NOT_REUSED:
        compute()
        return "ran"
    with claim(run_dir.parent, key, {"run": run_dir.name, "phase": phase_id}, log=log):
        if reuse(run_dir, phase_id, key, log=log) is not None:
            return "reused"
        if run_record.load(run_dir)["phases"].get(phase_id, {}).get("reused_from"):
            run_record.set_phase(run_dir, phase_id, reused_from=None)  # computed here this time
        compute()
        return "ran"


def reuse(run_dir: Path, phase_id: str, key: str, log: Callable[[str], None] = print) -> str | None:
    """Materialize ``phase_id`` from the first run of the runs root whose phase with input key ``key`` verifies,
    and record it complete with ``reused_from``; returns that run's name, or None (nothing found, nothing changed).
    A phase of :data:`NOT_REUSED` never is."""
    if phase_id in NOT_REUSED:
        return None
    for source in candidates(run_dir.parent, phase_id, key, exclude=run_dir):
        started, start = run_record.now(), time.perf_counter()
        reused = materialize(source, run_dir, phase_id, key)
        if reused is None:
            log(f"[{phase_id}] {source.name} holds this input key but its files do not verify: not reused")
            continue
        doc = reused.pop("manifest")
        run_record.record_complete(
            run_dir,
            phase_id,
            doc,
            started=started,
            finished=run_record.now(),
            duration_s=round(time.perf_counter() - start, 3),
            reused_from=reused,
        )
        log(
            f"[{phase_id}] reused from run {source.name} (same input key; {reused['linked']} hardlinked, "
            f"{reused['copied']} copied, sha256 verified)"
        )
        return source.name
    return None
