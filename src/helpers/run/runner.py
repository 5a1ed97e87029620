"""Batch execution: resolve the configuration, create the run directory, run phases with papermill.

``calib run`` and a notebook's scratch run both come through here. Phases run in dependency
order in the current environment's kernel, with the kernel's working directory set to
``<run>/notebooks`` and ``run_dir=".."`` injected, so run directories are relocatable. A phase
is skipped on ``--resume`` only when its manifest verifies and its input key matches; a phase
that re-runs forces everything downstream of it to re-run. A failed phase leaves no manifest,
is marked failed with its error in ``run_record.json``, and stops the run; the report (a phase
with ``soft_upstream``) still runs on whatever exists. ``--resume RUN --phases NN`` on a run that lacks NN
(or what it reads) first adds those phases with the run's own config (``extend_run``). A notebook run by
hand prepares its scratch run here too (``prepare_scratch_run``). What the console shows is ``run/console.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import yaml

from helpers.run import cache, console, hand_run, manifest, run_record
from helpers.run.atomic import DISK_FULL, atomic_path, disk_full, disk_full_message, write_text
from helpers.run.graph import PHASES, PhaseSpec, select, upstream_closure
from helpers.run.lock import run_lock
from helpers.run.params import (
    ParamError,
    check_name,
    check_upper_bounds,
    config_hash,
    load_yaml,
    notebook_parameters,
    parse_overrides,
    resolve,
)
from helpers.run.project import project_root, runs_root
from helpers.run.resume import (
    SOURCES_FILE,
    added_phase_params,
    load_record,
    record_skipped,
    remove_leftovers,
    why_rerun,
)
from helpers.run.run_record import CONFIG_FILE, MANAGED_ENV

KERNEL_ENV = {MANAGED_ENV: "1", "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}


class PhaseFailed(RuntimeError):
    def __init__(self, phase_id: str, error: str, notebook: Path, disk_full: bool = False):
        super().__init__(f"phase {phase_id} failed: {error}\n  executed notebook: {notebook}")
        self.phase_id, self.error, self.notebook, self.disk_full = phase_id, error, notebook, disk_full


class DiskFull(RuntimeError):
    """A full disk stopped ``calib run`` outside a phase (its record, between phases); the message names the run."""


def all_defaults() -> dict[str, dict]:
    """Every phase's notebook defaults (a notebook without a parameters cell is an error here)."""
    return {spec.id: notebook_parameters(spec.notebook) for spec in PHASES if spec.notebook.exists()}


def resolve_config(
    param_files: list[str] = (),
    overrides: list[str] = (),
    extra: dict | None = None,
    sources: dict | None = None,
    yaml_layers: list[dict] = (),
    extra_layer: str = "notebook",
) -> dict:
    """Resolved, validated params of every phase: defaults < params/default.yaml < files < -y < -p < extra.

    Validated: known keys, types, plain data (``params.resolve``), the upper bounds of the graph
    (``check_bounds``), each phase's precheck. ``sources`` (when given) receives which layer set each
    non-default value; ``extra`` is named ``extra_layer`` there (a sweep's point: "sweep point")."""
    layers = []
    default_yaml = project_root() / "params" / "default.yaml"
    if default_yaml.exists():
        layers.append((str(default_yaml), load_yaml(default_yaml)))
    layers += [(f, load_yaml(f)) for f in param_files]
    layers += [("-y", layer) for layer in yaml_layers]
    layers.append(("-p", parse_overrides(overrides)))
    if extra:
        layers.append((extra_layer, extra))
    sources = {} if sources is None else sources
    resolved = absolute_paths(resolve(all_defaults(), layers, sources))
    check_bounds(resolved, sources)
    precheck(resolved)
    return resolved


def check_bounds(resolved: dict, sources: dict) -> None:
    """The upper bounds each phase declares in the graph (``PhaseSpec.bounds``), checked when a run is
    created -- not on resume: a run keeps the values it was created with, lifted bounds included."""
    for spec in PHASES:
        if spec.id in resolved:
            check_upper_bounds(spec.id, resolved[spec.id], spec.bounds, sources.get(spec.id, {}))


def absolute_paths(resolved: dict) -> dict:
    """``*_dir`` / ``*_path`` params relative to the caller's cwd -> absolute (kernels run elsewhere)."""
    return {
        pid: {
            k: str(Path(v).resolve()) if k.endswith(("_dir", "_path")) and isinstance(v, str) and v else v
            for k, v in params.items()
        }
        for pid, params in resolved.items()
    }


def precheck(resolved: dict) -> None:
    """Phase-specific validation that needs no kernel (paths, choices, ranges): each phase's ``precheck``,
    named in the graph as ``module:function`` so the run layer imports no domain module by name."""
    for spec in PHASES:
        if spec.id in resolved:
            spec.check(resolved[spec.id], resolved)


def check_writable(root: Path) -> None:
    """The runs root is (or can be made) a writable folder: a probe file unique to this process."""
    blocker = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "is a file, not a folder" if blocker == root else f"cannot be created: {blocker} is a file"
        raise ParamError(f"runs root {root} {where}; pass --runs-root DIR or set CALIB_RUNS_ROOT to a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ParamError(
            f"run root {root} is not writable ({exc.strerror}); pass --runs-root DIR or set "
            "CALIB_RUNS_ROOT to a writable folder"
        ) from None


def create_run(
    resolved: dict, specs: list[PhaseSpec], root: Path, run_id: str | None = None, sources: dict | None = None
) -> Path:
    """A new run directory, all at once: its config (hashed into the record: the run's identity) and its record.

    The run is written in a hidden staging folder of the runs root and renamed onto its name, so a
    failure while creating it leaves nothing and ``calib ls`` never sees half a run. ``run_id`` is one
    folder name (``params.check_name``); by default ``<UTC timestamp>-<config hash>``.
    """
    if run_id is not None:
        check_name(run_id, "--run-id")
        if (root / run_id).exists():
            raise run_exists(run_id, root)
    check_writable(root)
    text = yaml.safe_dump({s.id: resolved[s.id] for s in specs}, sort_keys=True)
    config = yaml.safe_load(text)  # the identity is what the file says
    chash = config_hash(config)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    names = [run_id] if run_id else [f"{stamp}-{chash[:8]}", *(f"{stamp}-{chash[:8]}-{n}" for n in range(2, 1000))]
    staging = root / f".creating-{secrets.token_hex(8)}"  # hidden: never listed as a run
    staging.mkdir()
    try:
        (staging / "notebooks").mkdir()
        write_text(staging / CONFIG_FILE, text)
        write_text(staging / SOURCES_FILE, sources_yaml(sources or {}))
        record = run_record.create(staging, names[0], chash, [s.id for s in specs], config)
        for name in names:
            try:
                (root / name).mkdir()  # atomic: of parallel launches exactly one gets a name ...
            except FileExistsError:
                continue
            try:
                if name != record["run_id"]:
                    record["run_id"] = name
                    run_record.save(staging, record)
                os.rename(staging, root / name)  # ... and the whole run replaces that empty folder at once
            except BaseException:
                (root / name).rmdir()
                raise
            return root / name
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a failed creation leaves nothing
    if run_id:
        raise run_exists(run_id, root)
    raise ParamError(f"runs {names[0]} to {names[-1]} already exist under {root}; wait a second and start again")


def run_exists(run_id: str, root: Path) -> ParamError:
    return ParamError(
        f"run {run_id} already exists under {root}; choose another --run-id, or continue "
        f"that run with `calib run --resume {root / run_id}`"
    )


def sources_yaml(sources: dict) -> str:
    """config_sources.yaml: which layer set each value of config_resolved.yaml that is not its notebook default."""
    return (
        "# which layer (and key) set each parameter that differs from its notebook default; later layers win,\n"
        "# within one layer a phase-scoped key beats a shared one (README: parameter layers)\n"
        + (yaml.safe_dump(sources, sort_keys=True) if sources else "{}\n")
    )


@contextlib.contextmanager
def kernel_environment():
    """Environment the phase kernels inherit: managed-run marker, no tqdm noise, fixed hash seed."""
    saved = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(
    run_dir: Path,
    specs: list[PhaseSpec],
    resolved: dict,
    *,
    resume: bool = False,
    progress: bool = True,
    cell_timeout: int | None = None,
    reuse: bool = False,
    log=print,
) -> dict[str, str]:
    """Run ``specs`` in order in ``run_dir``; returns phase id -> 'ran' | 'skipped' | 'reused'.

    ``reuse``: a phase with the input key of a verified phase in another run of the same runs root
    is materialized from that run instead of executed (``helpers.run.cache``).
    """
    outcome: dict[str, str] = {}
    ids, history = [s.id for s in specs], console.phase_history(run_dir, resolved)
    for k, spec in enumerate(specs, start=1):
        where = f"({console.position(ids, k, history)})"
        try:  # a full disk anywhere in a phase (its record, its files, a reused copy) fails that phase
            run_record.reserve(run_dir)
            params = resolved[spec.id]
            parts = manifest.key_parts(spec.id, params, spec.notebook, list(spec.upstream), run_dir, spec.soft_upstream)
            reran = sorted(u for u in upstream_closure({spec.id}) - {spec.id} if outcome.get(u) == "ran")
            reason = why_rerun(run_dir, spec.id, parts, reran) if resume else "new run"
            if reason is None:
                if run_record.load(run_dir)["phases"].get(spec.id, {}).get("status") != "complete":
                    publish(run_dir, spec, params)  # stopped between its manifest and its record: its last step
                record_skipped(run_dir, spec.id)
                outcome[spec.id] = "skipped"
                log(f"[{spec.id}] up to date (manifest verifies, input key matches): skipped {where}")
                continue
            if resume:
                log(f"[{spec.id}] re-runs: {reason}")
            log(f"[{spec.id}] {spec.title} {where}")
            key = manifest.key_of(parts)
            compute = functools.partial(
                run_phase,
                run_dir,
                spec,
                params,
                key,
                progress=progress,
                cell_timeout=cell_timeout,
                log=log,
                reason=reason,
            )
            if reuse:
                outcome[spec.id] = cache.run_once(run_dir, spec.id, key, compute, log=log)
            else:
                compute()
                outcome[spec.id] = "ran"
        except OSError as exc:
            fail(run_dir, spec, disk_full(exc, run_dir), disk_full=True, withdraw=False)  # others propagate
    return outcome


def executed_notebook(run_dir: Path, spec: PhaseSpec) -> Path:
    return run_dir / "notebooks" / f"{spec.id}.ipynb"


def fail(
    run_dir: Path, spec: PhaseSpec, error: str, disk_full: bool = False, withdraw: bool = True, **fields
) -> NoReturn:
    """Record ``spec`` failed with ``error`` and raise PhaseFailed. ``withdraw``: its manifest is removed (the
    phase did not complete; its results stay for debugging) -- not for a failure around the phase's own work
    (its record, its reserve), where a manifest that verifies still tells ``--resume`` it is done. On a full
    disk the run's reserve (``run_record.reserve``) leaves room for the record."""
    manifest.pending_path(run_dir, spec.id).unlink(missing_ok=True)
    if withdraw:
        manifest.manifest_path(run_dir, spec.id).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # a disk even fuller than the reserve: the row keeps "running"
        run_record.set_phase(run_dir, spec.id, status="failed", error=error, finished=run_record.now(), **fields)
    raise PhaseFailed(spec.id, error, executed_notebook(run_dir, spec), disk_full=disk_full)


def publish(run_dir: Path, spec: PhaseSpec, params: dict, **fields) -> None:
    """The phase's last step once its manifest is in place: what it stores outside the run (``PhaseSpec.store``:
    phase 05's ground-truth store). If that fails, the phase fails (its manifest withdrawn)."""
    try:
        spec.store(run_dir, params)
    except Exception as exc:
        full = isinstance(exc, OSError) and exc.errno in DISK_FULL
        error = disk_full(exc, run_dir) if full else f"storing its results failed: {type(exc).__name__}: {exc}"
        fail(run_dir, spec, error, disk_full=full, **fields)


def run_phase(
    run_dir: Path,
    spec: PhaseSpec,
    params: dict,
    key: str,
    *,
    progress: bool,
    cell_timeout: int | None,
    log=print,
    reason: str = "new run",
) -> None:
    """Execute one phase; its kernel's pending manifest becomes the manifest once the executed notebook is written."""
    import papermill as pm

    manifest.withdraw(run_dir, spec.id)
    run_record.set_phase(
        run_dir,
        spec.id,
        status="running",
        started=run_record.now(),
        error=None,
        reason=reason,
        git=run_record.git_state(),
        disk_free_gib=run_record.disk_free_gib(run_dir),
    )
    out = executed_notebook(run_dir, spec)
    start = time.perf_counter()
    error, full = None, False
    try:
        with atomic_path(out) as tmp, console.EventTail(run_dir / "logs" / f"{spec.id}.jsonl", log):
            try:  # KERNEL_ENV goes to the kernel process only: set here, it would also silence papermill's bar
                pm.execute_notebook(
                    str(spec.notebook),
                    str(tmp),
                    parameters={**params, "run_dir": ".."},
                    cwd=str(run_dir / "notebooks"),
                    kernel_name="python3",
                    progress_bar=progress,
                    execution_timeout=cell_timeout,
                    request_save_on_cell_execute=False,
                    kernel_manager_class=console.QuietKernelManager.with_env(KERNEL_ENV),
                )
            except pm.PapermillExecutionError as exc:  # the executed notebook (with the error) is still kept
                error = f"{exc.ename}: {exc.evalue}"
                if full := any(f"[Errno {code}]" in exc.evalue for code in DISK_FULL):  # the kernel's disk is full
                    error = disk_full_message(error, run_dir)
    except OSError as exc:
        error, full = disk_full(exc, run_dir), True  # anything but a full disk propagates
    seconds = round(time.perf_counter() - start, 3)
    written = manifest.read_manifest(run_dir, spec.id, pending=True)
    if error is None and (written is None or written.get("input_key") != key):
        error = (
            "the notebook finished without writing its manifest (its last cell must call phase.finish())"
            if written is None
            else "its input key differs from the one computed when it started (were helper sources, the notebook or params edited during the run?)"
        )
    if error is not None:
        fail(run_dir, spec, error, disk_full=full, duration_s=seconds)
    manifest.promote(run_dir, spec.id)
    publish(run_dir, spec, params, duration_s=seconds)
    run_record.record_complete(run_dir, spec.id, written, duration_s=seconds, finished=run_record.now())


def finish_run(run_dir: Path, status: str) -> None:
    record = run_record.load(run_dir)
    record["status"] = status
    record["finished"] = run_record.now()
    record["artifacts"] = run_record.artifact_registry(run_dir)
    run_record.save(run_dir, record)


def run(
    param_files: list[str] = (),
    overrides: list[str] = (),
    yaml_layers: list[dict] = (),
    phases: str | None = None,
    root: str | None = None,
    resume: str | None = None,
    run_id: str | None = None,
    progress: bool = True,
    cell_timeout: int | None = None,
    reuse: bool = False,
    log=print,
) -> Path:
    """``calib run``: a new run (or ``resume`` an existing one) executed phase by phase."""
    if run_id is not None:
        check_name(run_id, "--run-id")  # before the (slower) parameter checks
    if resume:
        run_dir = Path(resume).resolve()
        if param_files or overrides or yaml_layers:
            raise ParamError(
                "--resume re-uses the run's own config_resolved.yaml; drop -f/--params/-y/-p "
                "(start a new run to change parameters)"
            )
        resolved = run_record.load_config(run_dir)
    else:
        resolved = resolve_config(
            list(param_files), list(overrides), sources=(sources := {}), yaml_layers=list(yaml_layers)
        )
        specs = select(phases)
        missing = [str(s.notebook) for s in specs if s.id not in resolved]
        if missing:
            raise ParamError(f"no notebook for phase(s): {', '.join(missing)}")
        run_dir = create_run(resolved, specs, runs_root(root), run_id, sources)
    with run_lock(run_dir), run_record.reserved(run_dir):
        if resume:  # everything is checked before anything is removed or withdrawn
            load_record(run_dir, resolved, log)
            validate_config(resolved)
            specs = select(phases) if phases else [s for s in PHASES if s.id in resolved]
            resolved = extend_run(run_dir, resolved, [s.id for s in specs if s.id not in resolved], phases, log)
            remove_leftovers(run_dir, log)
        log(f"run directory: {run_dir}")
        try:
            execute(
                run_dir,
                specs,
                resolved,
                resume=bool(resume),
                progress=progress,
                cell_timeout=cell_timeout,
                reuse=reuse,
                log=log,
            )
        except PhaseFailed as failed:
            if failed.disk_full:  # the report would only fail on it too
                log(f"{failed.phase_id} failed on a full disk; nothing more runs")
            else:
                report_anyway(run_dir, specs, resolved, failed, progress=progress, cell_timeout=cell_timeout, log=log)
            with contextlib.suppress(OSError):  # a full disk: the phase row already says so, if it could
                finish_run(run_dir, "failed")
            raise
        except BaseException as exc:
            with contextlib.suppress(OSError):
                finish_run(run_dir, "failed")
            if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                raise DiskFull(disk_full(exc, run_dir)) from None
            raise
        try:
            finish_run(run_dir, "complete")
        except OSError as exc:
            raise DiskFull(disk_full(exc, run_dir)) from None
    return run_dir


def validate_config(config: dict) -> None:
    """A run's config checked as a new one would be: known keys, their types, the phase prechecks."""
    resolve(all_defaults(), [(CONFIG_FILE, config)])
    precheck(config)


def extend_run(run_dir: Path, config: dict, added: list[str], selection: str | None, log=print) -> dict:
    """``--resume RUN --phases NN`` where the run lacks NN or what it reads: those phases join the run with the
    params its own command gave them (``resume.added_phase_params``), checked as a new run's are (types, upper
    bounds, every phase's precheck on the whole config) before anything is written; then the run's config and
    record hold them (``run_record.extend``). Returns the run's config, extended."""
    if not added:
        return config
    defaults = all_defaults()
    params = added_phase_params(run_dir, config, added, defaults)
    merged = {**config, **params}
    extended = {spec.id: merged[spec.id] for spec in PHASES if spec.id in merged}
    try:
        check_bounds(params, {})
        validate_config(extended)
    except ValueError as exc:
        raise ParamError(f"run {run_dir} cannot take {', '.join(added)} with its config: {exc}") from None
    text = yaml.safe_dump(extended, sort_keys=True)
    write_text(run_dir / CONFIG_FILE, text)
    run_record.extend(run_dir, yaml.safe_load(text), added, by=f"calib run --resume --phases {selection}")
    taken = [f"{pid}.{k}={v!r}" for pid in added for k, v in params[pid].items() if v != defaults[pid][k]]
    log(f"adding {', '.join(added)} to the run with its config" + (f" ({', '.join(taken)})" if taken else ""))
    return extended


def report_anyway(run_dir: Path, specs: list[PhaseSpec], resolved: dict, failed: PhaseFailed, **kw) -> None:
    """After ``failed``: the selected phases that run on whatever exists (the report) still run."""
    rest = [s for s in specs if s.soft_upstream and s.id != failed.phase_id]
    if rest:
        kw["log"](f"{failed.phase_id} failed; {', '.join(s.id for s in rest)} still run(s) on what exists")
        try:
            execute(run_dir, rest, resolved, **kw)
        except PhaseFailed as also:
            kw["log"](f"[{also.phase_id}] failed too: {also.error}")


def prepare_scratch_run(phase_id: str, notebook_params: dict, log=print) -> Path:
    """For a notebook run by hand: a scratch run holding verified upstream phases for these params.

    The scratch run is found by its upstream phases' params only (not the opened phase's own), so
    notebooks opened one after another (06, then 07) share the upstream phases already built. An upstream
    phase it lacks that a verified run of the runs root holds with the same input key is reused from there
    (``hand_run.reuse_upstream``, then ``execute``'s cross-run cache); the first line logged says which.
    """
    resolved = resolve_config(extra=notebook_params)
    specs = [s for s in PHASES if s.id in upstream_closure({phase_id})]
    upstream = {s.id: resolved[s.id] for s in specs if s.id != phase_id}
    root = runs_root()
    run_dir = find_scratch_run(root, upstream)
    if run_dir is None:
        run_dir = root / f"scratch-{config_hash(upstream or {phase_id: resolved[phase_id]})[:12]}"
        if not (run_dir / run_record.FILENAME).exists():
            create_run(resolved, specs, root, run_id=run_dir.name)
    with run_lock(run_dir), run_record.reserved(run_dir):
        extend_scratch_run(run_dir, resolved, specs)
        before = [s for s in specs if s.id != phase_id]
        log(hand_run.scratch_summary(phase_id, run_dir, before, hand_run.reuse_upstream(run_dir, before, resolved)))
        execute(run_dir, before, resolved, resume=True, progress=False, reuse=True, log=log)
    return run_dir


def find_scratch_run(root: Path, upstream: dict[str, dict]) -> Path | None:
    """The scratch run agreeing with ``upstream`` on every phase both hold, holding most of them (then by name)."""
    if not upstream or not root.is_dir():
        return None
    best, best_overlap = None, 0
    for candidate in sorted(root.glob("scratch-*")):
        if not (candidate / CONFIG_FILE).exists():
            continue
        config = run_record.load_config(candidate) or {}
        common = set(config) & set(upstream)
        if common and all(config[pid] == upstream[pid] for pid in common) and len(common) > best_overlap:
            best, best_overlap = candidate, len(common)
    return best


def extend_scratch_run(run_dir: Path, resolved: dict, specs: list[PhaseSpec]) -> None:
    """Add phases a scratch run lacks, and the opened phase's current params, to its config and record."""
    config = run_record.load_config(run_dir) or {}
    wanted = {**config, **{s.id: resolved[s.id] for s in specs}}
    if wanted != config:
        text = yaml.safe_dump({p.id: wanted[p.id] for p in PHASES if p.id in wanted}, sort_keys=True)
        write_text(run_dir / CONFIG_FILE, text)
        run_record.extend(run_dir, yaml.safe_load(text), [s.id for s in specs if s.id not in config])
