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

``run_record.json`` is the run's provenance, so every field of it that can be checked is: its own
sha256 (a legacy record, written before it had one, is noted as not self-checked), its config
against ``config_hash`` and against ``config_resolved.yaml``, its phase table against the config,
each complete phase's row against its manifest (content hash, input key, summary) and executed
notebook (sha256), and -- once the run is complete -- every entry of its artifact registry against
its file. The fields it keeps for information only are ``run_record.INFORMATIONAL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from helpers.run import lock, manifest, run_record
from helpers.run.atomic import sha256_file

COMPLETE, DAMAGED, INCOMPLETE = 0, 1, 3


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
    """Whether a phase's executed notebook is where its manifest says, with the sha256 its (complete) record
    row holds. A row not yet complete (stopped between the manifest and the record) holds no hash to compare."""
    rel = doc.get("notebook")
    if rel is None:  # executed by hand (a scratch run): there is no executed copy
        return None
    path = Path(run_dir) / rel
    if not path.is_file():
        return f"{phase_id}: executed notebook {rel} is missing"
    if row.get("status") == "complete" and sha256_file(path) != row.get("notebook_sha256"):
        return f"{phase_id}: executed notebook {rel} was altered (sha256 differs from run_record.json)"
    return None


def row_problems(run_dir: Path, phase_id: str, row: dict, doc: dict) -> list[str]:
    """How a complete phase's record row disagrees with its manifest (which verifies) and executed notebook."""
    fields = (
        ("its content hash", row.get("manifest_sha256"), doc.get("sha256")),
        ("the input key", row.get("input_key"), doc.get("input_key")),
        ("the summary", row.get("summary"), doc.get("summary", {})),
    )
    out = [
        f"{phase_id}: run_record.json and manifests/{phase_id}.json disagree on {name}"
        for name, recorded, listed in fields
        if recorded != listed
    ]
    if nb := notebook_problem(run_dir, phase_id, doc, row):
        out.append(nb)
    return out


def check_run(run_dir: Path) -> RunCheck:
    """Every check ``calib verify`` makes, sorted into damaged / incomplete."""
    run_dir = Path(run_dir)
    if not (run_dir / run_record.FILENAME).exists() and not (run_dir / run_record.CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {run_record.FILENAME})")
    check = RunCheck(run_dir)
    record = config = None
    try:
        record = run_record.parse(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        check.damaged.append(str(exc))
    else:
        if found := run_record.problems(record):
            check.damaged += [run_record.damaged(run_dir, why) for why in found]
        if run_record.is_legacy(record):
            check.notes.append(
                f"{run_record.FILENAME} is a legacy record (written before records carried their own sha256): "
                "its fields are checked, its content is not self-checked"
            )
    try:
        config = run_record.load_config(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        check.damaged.append(str(exc))
    if record is not None and config is not None and (changes := run_record.config_changes(record, config)):
        check.damaged.append(f"config_resolved.yaml is not the config the run was created with: {'; '.join(changes)}")
    rows = record["phases"] if record is not None else {pid: {} for pid in config or {}}
    verified = {}
    for phase_id, row in rows.items():
        doc = check_phase(check, phase_id, row if isinstance(row, dict) else {}, known=record is not None)
        if doc is not None:
            verified[phase_id] = doc
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
        if record.get("status") == "complete" and isinstance(record.get("artifacts"), dict):
            check.damaged += registry_problems(run_dir, record, verified)
    if lock.is_locked(run_dir):
        check.notes.append(f"the run is being executed by {lock.holder(run_dir)} right now")
    return check


def check_phase(check: RunCheck, phase_id: str, row: dict, known: bool) -> dict | None:
    """One phase's manifest, files, executed notebook and record row; returns the manifest if it verifies."""
    run_dir = check.run_dir
    doc = manifest.read_manifest(run_dir, phase_id)
    status = row.get("status", "unknown")
    if doc is None:
        if status == "complete":
            check.damaged.append(f"{phase_id}: run_record.json says complete but it has no manifest")
        else:
            check.incomplete.append(f"{phase_id}: {status}, no manifest")
        return None
    problems = manifest.verify(run_dir, phase_id)
    if problems:
        check.damaged += problems
        return None
    if known and status != "complete":
        check.incomplete.append(
            f"{phase_id}: manifest verifies but run_record.json says {status} (stopped before "
            "it was recorded; --resume records it)"
        )
    elif known:
        check.damaged += row_problems(run_dir, phase_id, row, doc)
    return doc


def registry_problems(run_dir: Path, record: dict, verified: dict[str, dict]) -> list[str]:
    """Every entry of a complete run's artifact registry against its file.

    A file under ``results/<phase>/`` whose manifest verified is compared through that manifest's entry
    (the same sha256 and size, already checked against the file); every other file is hashed. The copy of a
    notebook run by hand (its manifest names no executed notebook) is left out: JupyterLab's save hook
    rewrites it on every save (``helpers.run.hand_run``).
    """
    out = []
    for rel, entry in sorted(record["artifacts"].items()):
        top, phase_id, name = (rel.split("/", 2) + ["", ""])[:3]
        if top == "notebooks" and verified.get(Path(rel).stem, {}).get("notebook", rel) is None:
            continue  # the copy of a notebook run by hand
        doc = verified.get(phase_id) if top == "results" else None
        listed = doc["files"].get(name) if doc is not None else None
        path = run_dir / rel
        if not isinstance(entry, dict):
            out.append(f"{rel}: run_record.json's artifact registry entry is not a table")
        elif not path.is_file():
            out.append(f"{rel}: listed in run_record.json's artifact registry but missing")
        elif listed is not None:
            if (listed["sha256"], listed["size"]) != (entry.get("sha256"), entry.get("size")):
                out.append(f"{rel}: differs from run_record.json's artifact registry")
        elif path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            out.append(f"{rel}: differs from run_record.json's artifact registry")
    return out
