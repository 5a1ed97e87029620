"""``calib verify``: is a run complete, and is everything it holds intact?

Three answers, three exit codes (2 stays "not a run directory"):

* ``COMPLETE`` (0) -- every phase of the run has a manifest that verifies (its own content hash,
  every listed file, its executed notebook), and ``run_record.json`` and ``config_resolved.yaml``
  agree with them;
* ``INCOMPLETE`` (3) -- nothing is damaged, but phases are missing or unrecorded (a killed or
  failed run, or one still executing): ``calib run --resume`` finishes it;
* ``DAMAGED`` (1) -- a file differs from what its manifest or the run record says, a manifest or
  the record is altered or unreadable, a phase the record calls complete has no manifest, or
  ``config_resolved.yaml`` is no longer the config the run was created with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from helpers.run import lock, manifest, run_record
from helpers.run.atomic import sha256_file

COMPLETE, DAMAGED, INCOMPLETE = 0, 1, 3
_COVERED = ("results/", "manifests/", "notebooks/")  # checked through the manifests and the phase rows


@dataclass
class RunCheck:
    run_dir: Path
    damaged: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return DAMAGED if self.damaged else INCOMPLETE if self.incomplete else COMPLETE

    def verdict(self) -> str:
        if self.damaged:
            return (
                f"DAMAGED, {len(self.damaged)} problem(s); `calib run --resume {self.run_dir}` re-runs the "
                "damaged phases (restore a changed config_resolved.yaml first)"
            )
        if self.incomplete:
            return f"incomplete but intact; `calib run --resume {self.run_dir}` finishes it"
        return "complete and intact: all manifests verify"


def notebook_problem(run_dir: Path, phase_id: str, doc: dict, row: dict) -> str | None:
    """Whether a phase's executed notebook is where its manifest says, with the sha256 its record row holds."""
    rel = doc.get("notebook")
    if rel is None:  # executed by hand (a scratch run): there is no executed copy
        return None
    path = Path(run_dir) / rel
    if not path.is_file():
        return f"{phase_id}: executed notebook {rel} is missing"
    expected = row.get("notebook_sha256")
    if expected and sha256_file(path) != expected:
        return f"{phase_id}: executed notebook {rel} was altered (sha256 differs from run_record.json)"
    return None


def check_run(run_dir: Path) -> RunCheck:
    """Every check ``calib verify`` makes, sorted into damaged / incomplete."""
    run_dir = Path(run_dir)
    if not (run_dir / run_record.FILENAME).exists() and not (run_dir / run_record.CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {run_record.FILENAME})")
    check = RunCheck(run_dir)
    record = config = None
    try:
        record = run_record.load(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        check.damaged.append(str(exc))
    try:
        config = run_record.load_config(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        check.damaged.append(str(exc))
    if record is not None and config is not None and (changes := run_record.config_changes(record, config)):
        check.damaged.append(f"config_resolved.yaml is not the config the run was created with: {'; '.join(changes)}")
    rows = record["phases"] if record is not None else {pid: {} for pid in config or {}}
    for phase_id, row in rows.items():
        check_phase(check, phase_id, row, known=record is not None)
    leftovers = sorted(
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob("*")
        if p.name.startswith(".tmp-") or p.name.endswith(manifest.PENDING_SUFFIX)
    )
    if leftovers:
        check.incomplete.append(f"unfinished file(s) of a stopped writer: {', '.join(leftovers)}")
    if record is not None:
        if record.get("status") != "complete" and not check.incomplete and not check.damaged:
            check.incomplete.append(f"run status is {record.get('status')}")
        if record.get("status") == "complete":
            check.damaged += registry_problems(run_dir, record)
    if lock.is_locked(run_dir):
        check.notes.append(f"the run is being executed by {lock.holder(run_dir)} right now")
    return check


def check_phase(check: RunCheck, phase_id: str, row: dict, known: bool) -> None:
    run_dir = check.run_dir
    doc = manifest.read_manifest(run_dir, phase_id)
    status = row.get("status", "unknown")
    if doc is None:
        if status == "complete":
            check.damaged.append(f"{phase_id}: run_record.json says complete but it has no manifest")
        else:
            check.incomplete.append(f"{phase_id}: {status}, no manifest")
        return
    problems = manifest.verify(run_dir, phase_id)
    if not problems and (nb := notebook_problem(run_dir, phase_id, doc, row)):
        problems.append(nb)
    if problems:
        check.damaged += problems
    elif known and status != "complete":
        check.incomplete.append(
            f"{phase_id}: manifest verifies but run_record.json says {status} (stopped before "
            "it was recorded; --resume records it)"
        )
    elif row.get("manifest_sha256") and row["manifest_sha256"] != doc.get("sha256"):
        check.damaged.append(
            f"{phase_id}: run_record.json and manifests/{phase_id}.json disagree (the record holds "
            "another manifest's hash)"
        )


def registry_problems(run_dir: Path, record: dict) -> list[str]:
    """Files of a complete run (beyond those the manifests cover) that differ from the artifact registry."""
    out = []
    for rel, entry in sorted((record.get("artifacts") or {}).items()):
        path = run_dir / rel
        if rel.startswith(_COVERED):
            continue
        if not path.is_file():
            out.append(f"{rel}: listed in run_record.json's artifact registry but missing")
        elif path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            out.append(f"{rel}: differs from run_record.json's artifact registry")
    return out
