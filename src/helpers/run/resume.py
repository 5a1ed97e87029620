"""``calib run --resume``: the run's identity, checked before anything is withdrawn, and why a phase re-runs.

A run's resolved configuration is part of its identity: ``run_record.json`` holds it and its hash
from creation on. ``--resume`` refuses a ``config_resolved.yaml`` that no longer matches (naming
every changed value and how to start a new run with it instead); the runner then validates the
config against the current notebooks and prechecks it, and only after that are the leftovers of a
killed writer removed and phases withdrawn. A damaged or missing record is rebuilt from the
manifests and the config. Every phase that re-runs says why: no manifest yet, a file that no
longer verifies, its executed notebook missing or altered, an upstream phase that re-ran, or which
part of its input key changed (params, upstream manifests, its notebook, the helper sources).
"""

from __future__ import annotations

from pathlib import Path

from helpers.run import manifest, run_record
from helpers.run.integrity import notebook_problem, row_problems
from helpers.run.params import ParamError


def check_identity(run_dir: Path, record: dict, config: dict) -> None:
    """Refuse to resume when config_resolved.yaml is not the config the run was created with."""
    changes = run_record.config_changes(record, config)
    if not changes:
        return
    overrides = " ".join(f"-p {c.split(':')[0]}={c.split(' -> ')[1]}" for c in changes if " -> " in c)
    raise ParamError(
        f"{Path(run_dir) / run_record.CONFIG_FILE} was changed after the run was created "
        f"({'; '.join(changes)}). A run's parameters are part of its identity: it is not resumed with "
        "other ones. Restore the file (run_record.json holds the original under 'config'), or start a "
        f"new run with the new values: calib run [--params FILE.yaml] {overrides}".rstrip()
    )


def load_record(run_dir: Path, config: dict, log=print) -> dict:
    """The run's record, checked against its config; a damaged or missing record is rebuilt first."""
    try:
        record = run_record.load(run_dir)
    except (run_record.RecordDamaged, FileNotFoundError) as exc:
        log(f"{exc}\nrebuilding {run_record.FILENAME} from the manifests and {run_record.CONFIG_FILE}")
        record = run_record.rebuild(run_dir, config)
        log(
            f"rebuilt {run_record.FILENAME}: "
            f"{sum(r['status'] == 'complete' for r in record['phases'].values())} phase(s) complete"
        )
    check_identity(run_dir, record, config)
    return record


def remove_leftovers(run_dir: Path, log=print) -> None:
    """Delete what a killed writer left: temporary files and pending manifests (never read by anything)."""
    for stale in sorted(
        p for p in Path(run_dir).rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(manifest.PENDING_SUFFIX)
    ):
        stale.unlink()
        log(f"removed unfinished file {stale.relative_to(run_dir)}")


def why_rerun(run_dir: Path, phase_id: str, parts: dict, reran_upstream: list[str]) -> str | None:
    """Why a phase cannot be skipped on resume, or None when it is up to date."""
    if reran_upstream:
        return f"upstream phase(s) {', '.join(reran_upstream)} re-ran"
    row = run_record.load(run_dir)["phases"].get(phase_id, {})
    doc = manifest.read_manifest(run_dir, phase_id)
    if doc is None:
        return f"no manifest yet (status {row.get('status', 'pending')})"
    problems = manifest.verify(run_dir, phase_id)
    if problems:
        return "its manifest does not verify: " + "; ".join(problems)
    changed = manifest.changed_key_parts(doc, parts)
    if changed:
        return f"{', '.join(changed)} changed since it ran"
    return notebook_problem(run_dir, phase_id, doc, row)


def record_skipped(run_dir: Path, phase_id: str) -> None:
    """A skipped phase whose row lags behind or disagrees with its manifest (stopped between the two writes, or
    edited): record it from the manifest now."""
    row = run_record.load(run_dir)["phases"].get(phase_id, {})
    doc = manifest.read_manifest(run_dir, phase_id)
    if row.get("status") != "complete" or row_problems(run_dir, phase_id, row, doc):
        run_record.record_complete(run_dir, phase_id, doc)
