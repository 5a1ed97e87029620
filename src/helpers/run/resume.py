"""``calib run --resume``: the run's identity, checked before anything is withdrawn, and why a phase re-runs.

A run's resolved configuration is part of its identity: ``run_record.json`` holds it and its hash
from creation on. ``--resume`` refuses a ``config_resolved.yaml`` that no longer matches (naming
every changed value and how to start a new run with it instead); the runner then validates the
config against the current notebooks and prechecks it, and only after that are the leftovers of a
killed writer removed and phases withdrawn. A damaged or missing record is rebuilt from the
manifests and the config. Every phase that re-runs says why: no manifest yet, a file that no
longer verifies, its executed notebook missing or altered, an upstream phase that re-ran, or which
part of its input key changed (params, upstream manifests, its notebook, the helper sources).
Phases ``--phases`` adds to a run that lacks them take the params the run's own command gave them
(:func:`added_phase_params`, from ``config_sources.yaml``), or are refused where that cannot be known.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from helpers.run import manifest, run_record
from helpers.run.integrity import notebook_problem, row_problems
from helpers.run.params import RUN_DIR_PARAM, ParamError

SOURCES_FILE = "config_sources.yaml"  # which layer (and key) set each non-default value, written at creation


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


def added_phase_params(run_dir: Path, config: dict, added: list[str], defaults: dict[str, dict]) -> dict[str, dict]:
    """The params of phases ``added`` to a run: those the command that created it gave them.

    ``config_sources.yaml``, written at creation for every phase (in the run or not), names the layer and key that
    set each value differing from its notebook default (``defaults``). A value it does not name is the notebook
    default; one set through a shared key is the value that same layer and key gave a phase the run holds. Refused
    (ParamError, naming each value) where the run's config cannot produce them: a value set through a phase-scoped
    key or a shared key that no phase of the run declares (not kept), or a run whose sources do not name every
    non-default value of its own phases (a sweep member, an older run).
    """
    sources = load_sources(run_dir)
    unnamed = [
        f"{pid}.{name}={value!r}"
        for pid, params in config.items()
        for name, value in params.items()
        if value != defaults[pid].get(name) and name not in sources.get(pid, {})
    ]
    if unnamed:
        raise ParamError(
            f"run {run_dir} cannot take {', '.join(added)}: its {SOURCES_FILE} does not say which layer set "
            f"{', '.join(unnamed)}, so which values the new phases take is unknown; start a new run with them"
        )
    params, lost = {}, []
    for pid in added:
        params[pid] = {name: value for name, value in defaults[pid].items() if name != RUN_DIR_PARAM}
        for name, origin in sources.get(pid, {}).items():
            kept = [config[other][name] for other in config if sources.get(other, {}).get(name) == origin]
            if kept:
                params[pid][name] = kept[0]
            else:
                lost.append(f"{pid}.{name} (set by {origin})")
    if lost:
        raise ParamError(
            f"run {run_dir} cannot take {', '.join(added)} with the config it was created with: {', '.join(lost)} "
            "differed from the notebook default, and no phase of the run keeps that value; start a new run with "
            "the phases you need (calib run --phases ... and the options that created this run)"
        )
    return params


def load_sources(run_dir: Path) -> dict:
    """A run's ``config_sources.yaml`` (phase id -> {parameter: "<layer> (<key>)"}); empty when it has none."""
    path = Path(run_dir) / SOURCES_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


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
