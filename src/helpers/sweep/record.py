"""``<runs root>/sweeps/<id>/sweep.json``: a sweep's grid, its member runs and their status.

Besides each member's status, worker and phases it keeps the member's ``retries`` (each re-run Dask
made of it: a lost worker, or the task raised) and the sweep's ``lost_workers`` (``engine.Incidents``).

Only the sweep's client writes it (workers write their own run directories), every update is one
atomic rewrite, so a killed client leaves the last complete state; ``calib sweep --resume`` reads
it and completes the members that are not done.
"""

from __future__ import annotations

from pathlib import Path

from helpers.run import atomic, integrity, run_record
from helpers.run.params import check_name

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
    return atomic.read_json(path, "the sweep cannot be resumed from it: start the sweep again")


def check_names(directory: Path, doc: dict) -> None:
    """Before a sweep record is acted on: its sweep id and member run ids are names (one folder under the runs
    root each), so an edited ``sweep.json`` cannot send a worker outside it."""
    where = Path(directory) / FILENAME
    check_name(doc.get("sweep_id"), f"{where}: sweep id")
    for member in doc.get("members", []):
        check_name(member.get("run_id"), f"{where}: member run id")


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
    """Complete: what ``calib verify`` calls complete and intact (``helpers.run.integrity``), by the same check.

    A member the sweep left in any other state -- killed inside a phase, or between a phase's manifest and
    its run-record row (the row says "running" while the manifest exists), or damaged -- is to do: the
    resumed member run (``calib run --resume``) skips what verifies, records a row that lags its manifest,
    and re-runs the rest.
    """
    try:
        return integrity.check_run(run_dir).exit_code == integrity.COMPLETE
    except FileNotFoundError:
        return False


def describe(retries: list[dict]) -> str:
    """A member's retries (``retries`` in its entry): ``worker lost on tcp://...; raised on tcp://...``."""
    return "; ".join(f"{r['reason']} on {r['worker']}" for r in retries)


def counts(doc: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for member in doc["members"]:
        out[member["status"]] = out.get(member["status"], 0) + 1
    return out
