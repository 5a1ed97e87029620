"""``calib sweep``: plan, create the member runs, execute them on Dask, record, report.

calib sweep SWEEP.yaml [-f F.yaml] [-y YAML] [-p k=v] [--phases 02] [--scheduler ADDRESS | --workers N]
calib sweep --resume <runs root>/sweeps/<id>
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers.run import run_record
from helpers.run.graph import select, short_id
from helpers.run.params import ParamError
from helpers.run.project import runs_root
from helpers.run.runner import check_writable, create_run
from helpers.sweep import engine, plan, record, report


def describe(p: plan.Plan) -> str:
    grid = p.spec["grid"]
    parts = [f"grid {' x '.join(str(len(v)) for v in grid.values())} ({', '.join(grid)})"] if grid else []
    parts += [f"{len(p.spec['points'])} explicit point(s)"] if p.spec["points"] else []
    parts += [f"{len(p.spec['seeds'])} seed(s)"] if p.spec["seeds"] else []
    phases = ", ".join(s.id for s in p.specs)
    return f"sweep {p.sweep_id}: {len(p.members)} run(s) ({'; '.join(parts)}); phases {phases}"


def create(
    sweep_file: str,
    param_files: list[str],
    overrides: list[str],
    phases: str | None,
    root: Path,
    options: dict,
    log: Callable[[str], None] = print,
    yaml_layers: list[dict] = (),
) -> tuple[Path, dict]:
    """Validate every point, create every member run and the sweep record; nothing is executed yet.

    ``param_files`` (``-f``), ``yaml_layers`` (``-y``) and ``overrides`` (``-p``) are ``calib run``'s layers."""
    p = plan.plan(sweep_file, param_files, overrides, phases, yaml_layers=yaml_layers)
    check_writable(root)
    taken = [m.run_id for m in p.members if (root / m.run_id).exists()]
    if taken or record.sweep_dir(root, p.sweep_id).exists():
        raise ParamError(
            f"sweep {p.sweep_id} or its runs already exist under {root} ({', '.join(taken[:3])}); "
            "wait a second and start again, or --resume it"
        )
    log(describe(p))
    for member in p.members:
        create_run(member.resolved, p.specs, root, member.run_id, member.sources)
    directory = record.sweep_dir(root, p.sweep_id)
    directory.mkdir(parents=True)
    doc = {
        "schema": record.SCHEMA,
        "sweep_id": p.sweep_id,
        "created": run_record.now(),
        "status": "created",
        "sweep_file": str(Path(sweep_file).resolve()),
        "spec": p.spec,
        "param_files": list(param_files),
        "yaml_layers": list(yaml_layers),
        "overrides": list(overrides),
        "phases": [s.id for s in p.specs],
        "varying": p.varying,
        "options": options,
        "git": run_record.git_state(),
        "members": [{"run_id": m.run_id, "point": m.point, "status": "pending", "retries": []} for m in p.members],
        "lost_workers": [],
    }
    record.save(directory, doc)
    return directory, doc


def execute(
    directory: Path,
    doc: dict,
    scheduler: str | None,
    workers: int | None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every member that is not done; returns the updated sweep record (also written to disk)."""
    root = directory.parent.parent  # <runs root>/sweeps/<id>: the sweep moves with its runs root
    todo = []
    for member in doc["members"]:
        if record.member_done(root / member["run_id"]):
            member["status"] = "complete"
        else:
            todo.append(member["run_id"])
    if not todo:
        log(f"sweep {doc['sweep_id']}: every member is complete")
        return finish(directory, doc, log)
    client, info, pin = engine.start_client(scheduler, workers)
    try:
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"]) or 1
        log(
            f"sweep {doc['sweep_id']}: {len(todo)} of {len(doc['members'])} run(s) to do on "
            f"{info['kind']} {client.scheduler.address} ({n_workers} worker(s)); runs under {root}"
        )
        doc.update(status="running", engine={**info, "workers": n_workers})
        record.save(directory, doc)
        specs = select(doc["phases"])
        members = [plan.Member(rid, {}, run_record.load_config(root / rid)) for rid in todo]
        ordered = engine.submission_order(members, specs, n_workers)
        retries = doc["options"].get("retries", 2)
        bar = _bar(len(todo), progress)
        say = bar.write if bar else log
        incidents = engine.Incidents(client, todo, retries, lambda i: say(incident_line(doc["sweep_id"], i)))
        futures = engine.submit(client, ordered, root, doc["options"].get("cell_timeout"), pin, retries)
        done = [0]

        def on_result(run_id: str, outcome: dict) -> None:
            done[0] += 1
            record_incidents(doc, incidents.drain())
            record.set_member(
                directory,
                doc,
                run_id,
                status=outcome["status"],
                error=outcome.get("error"),
                phases=outcome.get("phases", {}),
                worker=outcome.get("worker"),
                threads=outcome.get("threads"),
                cpus=outcome.get("cpus"),
                seconds=outcome.get("seconds"),
            )
            say(member_line(f"[{done[0]}/{len(todo)}]", run_id, outcome, member_of(doc, run_id)["retries"]))
            if bar:
                bar.update()

        try:
            engine.gather(futures, on_result)
        except KeyboardInterrupt:
            doc["status"] = "interrupted"
            raise
        finally:
            incidents.close()
            record_incidents(doc, incidents.drain())
            record.save(directory, doc)
            if bar:
                bar.close()
    finally:
        cluster = client.cluster if info["kind"] == "LocalCluster" else None
        client.close()
        if cluster is not None:
            cluster.close()
    return finish(directory, doc, log)


def member_line(counter: str, run_id: str, outcome: dict, retries: list[dict] = ()) -> str:
    """``[2/4] <run>: complete in 35.1 s on tcp://... (ran 02,02a; reused 01) after 1 retry (worker lost on ...)``."""
    did = {
        k: [short_id(p) for p, o in outcome.get("phases", {}).items() if o == k] for k in ("ran", "reused", "skipped")
    }
    text = "; ".join(f"{k} {','.join(v)}" for k, v in did.items() if v)
    where = f" in {outcome['seconds']} s on {outcome['worker']}" if outcome.get("worker") else ""
    again = f" after {len(retries)} {'retry' if len(retries) == 1 else 'retries'} ({record.describe(retries)})"
    return (
        f"{counter} {run_id}: {outcome['status']}{where}{f' ({text})' if text else ''}{again if retries else ''}"
        f"{': ' + outcome['error'] if outcome.get('error') else ''}"
    )


def incident_line(sweep_id: str, incident: dict) -> str:
    """The console line of a lost worker or a member that raised (``engine.Incidents``), as it happens."""
    if incident["reason"] == "worker lost":
        running = incident["running"]
        return (
            f"sweep {sweep_id}: worker {incident['worker']} lost while running {', '.join(running)}; Dask re-runs "
            f"{'it' if len(running) == 1 else 'them'} on another worker, resuming from the manifests"
            if running
            else f"sweep {sweep_id}: worker {incident['worker']} lost (it was running no member)"
        )
    then = (
        f"Dask retries it (retry {incident['retry']} of {incident['retries']}), resuming from the manifests"
        if incident["retry"] <= incident["retries"]
        else "no retries left: the member fails"
    )
    return f"sweep {sweep_id}: {incident['run_id']} raised on {incident['worker']}: {incident['error']}; {then}"


def record_incidents(doc: dict, incidents: list[dict]) -> None:
    """Into the sweep record: each lost worker (``lost_workers``), and per member each retry Dask made of it."""
    for incident in incidents:
        entry = {"at": incident["at"], "reason": incident["reason"], "worker": incident["worker"]}
        if incident["reason"] == "worker lost":
            doc.setdefault("lost_workers", []).append({**entry, "running": incident["running"]})
            for run_id in incident["running"]:
                member_of(doc, run_id).setdefault("retries", []).append(entry)
        elif incident["retry"] <= incident["retries"]:  # raised, and Dask runs it again
            member_of(doc, incident["run_id"]).setdefault("retries", []).append({**entry, "error": incident["error"]})


def member_of(doc: dict, run_id: str) -> dict:
    member = next(m for m in doc["members"] if m["run_id"] == run_id)
    member.setdefault("retries", [])  # a record written before retries were recorded
    return member


def finish(directory: Path, doc: dict, log: Callable[[str], None]) -> dict:
    tally = record.counts(doc)
    doc["status"] = "complete" if tally.get("complete", 0) == len(doc["members"]) else "failed"
    doc["finished"] = run_record.now()
    record.save(directory, doc)
    csv_path, html_path = report.write(directory, doc)
    log(
        f"sweep {doc['sweep_id']}: {', '.join(f'{n} {s}' for s, n in sorted(tally.items()))}\n"
        f"  sweep record: {directory / record.FILENAME}\n  results: {csv_path}\n  report: {html_path}"
    )
    return doc


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="sweep")


def start(
    sweep_file: str,
    param_files: list[str] = (),
    overrides: list[str] = (),
    yaml_layers: list[dict] = (),
    phases: str | None = None,
    root: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    cell_timeout: int | None = None,
    retries: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict]:
    """``calib sweep SWEEP.yaml``: validate, create, execute; returns the sweep directory and record."""
    directory, doc = create(
        sweep_file,
        list(param_files),
        list(overrides),
        phases,
        runs_root(root),
        {"cell_timeout": cell_timeout, "retries": retries},
        log=log,
        yaml_layers=list(yaml_layers),
    )
    return directory, execute(directory, doc, scheduler, workers, progress=progress, log=log)


def resume(
    directory: str,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict]:
    """``calib sweep --resume DIR``: complete the members that are not done (others are left as they are)."""
    path = Path(directory).resolve()
    doc = record.load(path)
    record.check_names(path, doc)
    return path, execute(path, doc, scheduler, workers, progress=progress, log=log)
