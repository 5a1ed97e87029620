"""Batch execution: resolve the configuration, create the run directory, run phases with papermill.

``calib run`` and a notebook's scratch run both come through here. Phases run in dependency
order in the current environment's kernel, with the kernel's working directory set to
``<run>/notebooks`` and ``run_dir=".."`` injected, so run directories are relocatable. A phase
is skipped on ``--resume`` only when its manifest verifies and its input key matches; a phase
that re-runs forces everything downstream of it to re-run. A failed phase leaves no manifest,
is marked failed with its error in ``run_record.json``, and stops the run.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from pathlib import Path

import yaml

from helpers.run import manifest, run_record
from helpers.run.atomic import atomic_path, write_text
from helpers.run.graph import PHASES, PhaseSpec, select, upstream_closure
from helpers.run.params import ParamError, config_hash, load_yaml, notebook_parameters, parse_overrides, resolve
from helpers.run.project import project_root, runs_root
from helpers.run.run_record import MANAGED_ENV

CONFIG_FILE = "config_resolved.yaml"
KERNEL_ENV = {MANAGED_ENV: "1", "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}


class PhaseFailed(RuntimeError):
    def __init__(self, phase_id: str, error: str, notebook: Path):
        super().__init__(f"phase {phase_id} failed: {error}\n  executed notebook: {notebook}")
        self.phase_id, self.error, self.notebook = phase_id, error, notebook


def all_defaults() -> dict[str, dict]:
    """Every phase's notebook defaults (a notebook without a parameters cell is an error here)."""
    return {spec.id: notebook_parameters(spec.notebook) for spec in PHASES if spec.notebook.exists()}


def resolve_config(param_files: list[str] = (), overrides: list[str] = (), extra: dict | None = None) -> dict:
    """Resolved, validated params of every phase: defaults < params/default.yaml < files < -p < extra."""
    layers = []
    default_yaml = project_root() / "params" / "default.yaml"
    if default_yaml.exists():
        layers.append((str(default_yaml), load_yaml(default_yaml)))
    layers += [(f, load_yaml(f)) for f in param_files]
    layers.append(("-p", parse_overrides(overrides)))
    if extra:
        layers.append(("notebook", extra))
    resolved = absolute_paths(resolve(all_defaults(), layers))
    precheck(resolved)
    return resolved


def absolute_paths(resolved: dict) -> dict:
    """``*_dir`` / ``*_path`` params relative to the caller's cwd -> absolute (kernels run elsewhere)."""
    return {pid: {k: str(Path(v).resolve()) if k.endswith(("_dir", "_path")) and isinstance(v, str) and v else v
                  for k, v in params.items()} for pid, params in resolved.items()}


def precheck(resolved: dict) -> None:
    """Phase-specific validation that needs no kernel (paths, choices, ranges): each phase's ``precheck``,
    named in the graph as ``module:function`` so the run layer imports no domain module by name."""
    for spec in PHASES:
        if spec.id in resolved:
            spec.check(resolved[spec.id], resolved)


def check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_path(root / ".write-check"):
            pass
        (root / ".write-check").unlink()
    except OSError as exc:
        raise ParamError(f"run root {root} is not writable ({exc.strerror}); pass --runs-root DIR or set "
                         "CALIB_RUNS_ROOT to a writable folder") from None


def create_run(resolved: dict, specs: list[PhaseSpec], root: Path, run_id: str | None = None) -> Path:
    check_writable(root)
    chash = config_hash({s.id: resolved[s.id] for s in specs})
    if run_id is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{chash[:8]}"
        n = 1
        while (root / run_id).exists():
            n += 1
            run_id = f"{stamp}-{chash[:8]}-{n}"
    run_dir = root / run_id
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=False)
    write_text(run_dir / CONFIG_FILE, yaml.safe_dump({s.id: resolved[s.id] for s in specs}, sort_keys=True))
    run_record.create(run_dir, run_id, chash, [s.id for s in specs])
    return run_dir


def load_run_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return yaml.safe_load(path.read_text())


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


def execute(run_dir: Path, specs: list[PhaseSpec], resolved: dict, *, resume: bool = False,
            progress: bool = True, cell_timeout: int | None = None, log=print) -> dict[str, str]:
    """Run ``specs`` in order in ``run_dir``; returns phase id -> 'ran' | 'skipped'."""
    outcome: dict[str, str] = {}
    for spec in specs:
        params = resolved[spec.id]
        key = manifest.input_key(spec.id, params, spec.notebook, list(spec.upstream), run_dir, spec.soft_upstream)
        upstream_reran = any(outcome.get(u) == "ran" for u in upstream_closure({spec.id}) - {spec.id})
        existing = manifest.read_manifest(run_dir, spec.id)
        if (resume and not upstream_reran and existing and existing.get("input_key") == key
                and not manifest.verify(run_dir, spec.id)):
            outcome[spec.id] = "skipped"
            log(f"[{spec.id}] up to date (manifest verifies, input key matches): skipped")
            continue
        log(f"[{spec.id}] {spec.title}")
        run_phase(run_dir, spec, params, key, progress=progress, cell_timeout=cell_timeout)
        outcome[spec.id] = "ran"
    return outcome


def run_phase(run_dir: Path, spec: PhaseSpec, params: dict, key: str, *, progress: bool,
              cell_timeout: int | None) -> None:
    import papermill as pm

    manifest.withdraw(run_dir, spec.id)
    run_record.set_phase(run_dir, spec.id, status="running", started=run_record.now(), error=None)
    out = run_dir / "notebooks" / f"{spec.id}.ipynb"
    start = time.perf_counter()
    error = None
    with kernel_environment(), atomic_path(out) as tmp:
        try:
            pm.execute_notebook(str(spec.notebook), str(tmp), parameters={**params, "run_dir": ".."},
                                cwd=str(run_dir / "notebooks"), kernel_name="python3", progress_bar=progress,
                                execution_timeout=cell_timeout, request_save_on_cell_execute=False)
        except pm.PapermillExecutionError as exc:  # the executed notebook (with the error) is still kept
            error = f"{exc.ename}: {exc.evalue}"
    seconds = round(time.perf_counter() - start, 3)
    written = manifest.read_manifest(run_dir, spec.id)
    if error is None and (written is None or written.get("input_key") != key):
        error = ("the notebook finished without writing its manifest (its last cell must call phase.finish())"
                 if written is None else "its input key differs from the one computed when it started (were helper sources, the notebook or params edited during the run?)")
    if error is not None:
        manifest.manifest_path(run_dir, spec.id).unlink(missing_ok=True)  # results stay for debugging
        run_record.set_phase(run_dir, spec.id, status="failed", error=error, duration_s=seconds,
                             finished=run_record.now())
        raise PhaseFailed(spec.id, error, out)
    run_record.set_phase(run_dir, spec.id, status="complete", duration_s=seconds, finished=run_record.now(),
                         input_key=key, summary=written.get("summary", {}))


def finish_run(run_dir: Path, status: str) -> None:
    record = run_record.load(run_dir)
    record["status"] = status
    record["finished"] = run_record.now()
    record["artifacts"] = run_record.artifact_registry(run_dir)
    run_record.save(run_dir, record)


def run(param_files: list[str] = (), overrides: list[str] = (), phases: str | None = None,
        root: str | None = None, resume: str | None = None, run_id: str | None = None,
        progress: bool = True, cell_timeout: int | None = None, log=print) -> Path:
    """``calib run``: a new run (or ``resume`` an existing one) executed phase by phase."""
    if resume:
        run_dir = Path(resume).resolve()
        if param_files or overrides:
            raise ParamError("--resume re-uses the run's own config_resolved.yaml; drop --params/-p "
                             "(start a new run to change parameters)")
        resolved = load_run_config(run_dir)
        for stale in run_dir.rglob(".tmp-*"):  # left by a killed writer; never read by anything
            stale.unlink()
            log(f"removed unfinished temporary file {stale.relative_to(run_dir)}")
        specs = [spec for spec in PHASES if spec.id in resolved]
        if phases:
            specs = [s for s in select(phases) if s.id in resolved]
    else:
        resolved = resolve_config(list(param_files), list(overrides))
        specs = select(phases)
        missing = [str(s.notebook) for s in specs if s.id not in resolved]
        if missing:
            raise ParamError(f"no notebook for phase(s): {', '.join(missing)}")
        run_dir = create_run(resolved, specs, runs_root(root), run_id)
    log(f"run directory: {run_dir}")
    try:
        execute(run_dir, specs, resolved, resume=bool(resume), progress=progress, cell_timeout=cell_timeout, log=log)
    except BaseException:
        finish_run(run_dir, "failed")
        raise
    finish_run(run_dir, "complete")
    return run_dir


def prepare_scratch_run(phase_id: str, notebook_params: dict) -> Path:
    """For a notebook run by hand: a scratch run holding verified upstream phases for these params."""
    resolved = resolve_config(extra=notebook_params)
    specs = [s for s in PHASES if s.id in upstream_closure({phase_id})]
    root = runs_root()
    chash = config_hash({s.id: resolved[s.id] for s in specs})
    run_dir = root / f"scratch-{chash[:12]}"
    if not (run_dir / run_record.FILENAME).exists():
        create_run(resolved, specs, root, run_id=run_dir.name)
    execute(run_dir, [s for s in specs if s.id != phase_id], resolved, resume=True, progress=False)
    return run_dir
