"""``<runs root>/sweeps/<id>/sweep.json``: a sweep's grid, its member runs and their status.

Only the sweep's client writes it (workers write their own run directories), every update is one
atomic rewrite, so a killed client leaves the last complete state; ``calib sweep --resume`` reads
it and completes the members that are not done.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.run import atomic, manifest, run_record

SWEEPS_DIR = "sweeps"
FILENAME = "sweep.json"
SCHEMA = 1


def sweep_dir(root: Path, sweep_id: str) -> Path:
    return root / SWEEPS_DIR / sweep_id


def load(directory: Path) -> dict:
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a sweep directory (no {FILENAME}); sweeps live under <runs root>/{SWEEPS_DIR}/"
        )
    return json.loads(path.read_text())


def save(directory: Path, doc: dict) -> None:
    doc["updated"] = run_record.now()
    atomic.write_json(Path(directory) / FILENAME, doc)


def set_member(directory: Path, doc: dict, run_id: str, **fields) -> None:
    next(m for m in doc["members"] if m["run_id"] == run_id).update(fields)
    save(directory, doc)


def list_sweeps(root: Path) -> list[Path]:
    base = root / SWEEPS_DIR
    return sorted(p for p in base.iterdir() if (p / FILENAME).is_file()) if base.is_dir() else []


def member_done(run_dir: Path) -> bool:
    """Complete: the run finished and every phase it lists has a verifying manifest.

    The manifests decide, as for ``calib run --resume``: a worker killed between a phase's manifest
    and its run-record update leaves the row "running", and the resumed run skips that phase.
    """
    try:
        record = run_record.load(run_dir)
    except FileNotFoundError:
        return False
    return record.get("status") == "complete" and not any(manifest.verify(run_dir, pid) for pid in record["phases"])


def counts(doc: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for member in doc["members"]:
        out[member["status"]] = out.get(member["status"], 0) + 1
    return out
