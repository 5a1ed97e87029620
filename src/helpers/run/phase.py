"""The notebook side of a phase: parameters in, declared inputs, declared outputs, manifest out.

Every notebook opens with::

    phase = Phase.open("02_train", globals())

which validates the notebook's parameters, seeds the RNGs, resolves the run directory and clears
the phase's previous results. ``run_dir`` comes from the parameters cell: papermill injects the
run directory (``..``, relative to the kernel's cwd ``<run>/notebooks``); left empty, as in a
notebook opened in JupyterLab, the phase works in a *scratch run* (``runs/scratch-<hash>``) and
first finds or creates its upstream phases there.

``phase.input(...)`` hands out only declared outputs of declared upstream phases, checked against
their manifests; ``phase.out(...)`` only this phase's declared outputs; ``phase.finish()`` checks
that every declared output exists and writes the manifest, last.

``Phase.open`` validates the parameters once, through the phase's precheck (the function ``calib run`` calls
before any kernel starts), and keeps what it returns as ``phase.config``: the phase's one typed config, which
the notebook passes on to helpers (a phase without one has None).

Helpers never take the phase: they take plain values -- paths, a reader function (``name -> path``, from
``phase.input``), ``phase.config`` or its fields, arrays. A reader of another phase's files may take a *reader*:
anything with ``input(phase_id, name) -> path`` and ``upstream_summary(phase_id) -> dict``, as ``Phase`` is and
``helpers.data.deployment``'s finished-run reader is (``open_deployment``). An event a helper wants in the
phase's log (a fit's wall time, say) goes to ``logging.getLogger("helpers....").info(event, extra={"fields":
{...}})``, and the open phase appends it to ``logs/<phase>.jsonl`` like its own ``phase.log`` events
(:class:`PhaseLogHandler`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import random
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from helpers.run import hand_run, lock, manifest, run_record
from helpers.run.atomic import read_json, sha256_file, to_jsonable
from helpers.run.graph import MODEL_PHASE, PhaseSpec, get_phase
from helpers.run.params import RUN_DIR_PARAM, check_value, notebook_parameters


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    with contextlib.suppress(ImportError):
        import torch

        torch.manual_seed(seed)


class PhaseLogHandler(logging.Handler):
    """Appends the ``helpers`` loggers' INFO events to the open phase's log (one handler: the last phase opened)."""

    def __init__(self, phase: Phase):
        super().__init__(logging.INFO)
        self.phase = phase

    def emit(self, record: logging.LogRecord) -> None:
        self.phase.log(record.getMessage(), source=record.name, **getattr(record, "fields", {}))

    @classmethod
    def attach(cls, phase: Phase) -> None:
        logger = logging.getLogger("helpers")
        for handler in [h for h in logger.handlers if isinstance(h, cls)]:
            logger.removeHandler(handler)
        logger.addHandler(cls(phase))
        logger.setLevel(logging.INFO)


class MissingUpstream(FileNotFoundError):
    """A phase executed in a run that lacks it or an upstream phase it reads. The message ends with the one command
    that adds them, ``calib run --resume RUN --phases NN``; the traceback is that one line, in a papermill-executed
    notebook and in a JupyterLab cell alike (IPython shows ``_render_traceback_``'s lines instead of the stack)."""

    def __init__(self, spec: PhaseSpec, run_dir: Path, missing: list[str]):
        if not missing:
            lacks = f"run {run_dir} does not hold phase {spec.id}"
        elif len(missing) == 1:
            lacks = f"upstream phase {missing[0]} has no manifest in run {run_dir}"
        else:
            lacks = f"upstream phases {', '.join(missing)} have no manifest in run {run_dir}"
        super().__init__(
            f"{lacks}; to add {spec.id} and what it reads to that run: calib run --resume "
            f"{shlex.quote(str(run_dir))} --phases {spec.short_id}"
        )

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def check_in_run(spec: PhaseSpec, run_dir: Path) -> None:
    """A notebook given a run executes there only if the run's config holds its phase and every upstream phase it
    reads has a manifest (a report runs on whatever exists); else :class:`MissingUpstream`, before anything is
    withdrawn."""
    missing = [] if spec.soft_upstream else [u for u in spec.upstream if manifest.read_manifest(run_dir, u) is None]
    if missing or spec.id not in run_record.load_config(run_dir):
        raise MissingUpstream(spec, run_dir, missing)


class Phase:
    def __init__(
        self, spec: PhaseSpec, run_dir: Path, params: dict[str, Any], config: Any = None, executed_copy: bool = True
    ):
        self.spec, self.run_dir, self.params = spec, run_dir, params
        self.config = config  # the phase's typed config, as its precheck returned it (None: the phase has none)
        self.results = manifest.results_dir(run_dir, spec.id)
        self.log_path = run_dir / "logs" / f"{spec.id}.jsonl"
        self.key_parts = manifest.key_parts(
            spec.id, params, spec.notebook, list(spec.upstream), run_dir, spec.soft_upstream
        )
        self.key = manifest.key_of(self.key_parts)
        # the run holds this notebook's executed copy (papermill, nbval) -- not so for a notebook run by hand
        self.notebook = f"notebooks/{spec.id}.ipynb" if executed_copy else None
        self._started = time.perf_counter()
        self._sealed: dict[str, str] | None = None  # own output -> sha256, once seal() has run
        spec.readable(config, sealed=False)  # a config that does not say what it reads fails here, before any work

    @classmethod
    def open(cls, phase_id: str, namespace: dict[str, Any]) -> Phase:
        spec = get_phase(phase_id)
        defaults = notebook_parameters(spec.notebook)
        params = {}
        for name, default in defaults.items():
            if name != RUN_DIR_PARAM:
                check_value(name, default, namespace[name], phase_id)
                params[name] = namespace[name]
        config = spec.check(params)  # validated once, by the function calib run called before any kernel
        if namespace.get(RUN_DIR_PARAM):
            run_dir = Path(namespace[RUN_DIR_PARAM]).resolve()
            if not (run_dir / run_record.FILENAME).exists():
                raise FileNotFoundError(
                    f"run_dir {run_dir} is not a run directory; leave run_dir empty for a "
                    "scratch run, or create one with `calib run`"
                )
            check_in_run(spec, run_dir)
        else:
            from helpers.run.runner import prepare_scratch_run

            run_dir = prepare_scratch_run(phase_id, params)  # its first output line: the scratch run, what it reused
            hand_run.remember(phase_id, run_dir)  # JupyterLab's saves of this notebook are copied there
        if os.environ.get(run_record.MANAGED_ENV):
            lock.hold_for_kernel(run_dir)  # until this kernel exits: a new executor waits for it
        manifest.withdraw(run_dir, phase_id)
        seed_everything(int(params.get("seed", 0)))
        phase = cls(spec, run_dir, params, config, executed_copy=bool(namespace.get(RUN_DIR_PARAM)))
        phase.results.mkdir(parents=True, exist_ok=True)
        phase.log("phase_started", params=params)
        PhaseLogHandler.attach(phase)
        return phase

    # -- reading ---------------------------------------------------------------------------
    def input(self, phase_id: str, name: str) -> Path:
        """Path of a declared output of a declared upstream phase, verified against its manifest."""
        if phase_id not in self.spec.upstream:
            raise PermissionError(
                f"{self.spec.id} does not declare {phase_id} upstream (it reads from "
                f"{', '.join(self.spec.upstream) or 'nothing'}); declare it in helpers/run/graph.py"
            )
        if not get_phase(phase_id).declares(name):
            raise PermissionError(
                f"{name!r} is not a declared output of {phase_id} (declared: {', '.join(get_phase(phase_id).outputs)})"
            )
        readable = self.spec.readable(self.config, sealed=self._sealed is not None)
        if readable is not None and not any(fnmatch.fnmatchcase(f"{phase_id}/{name}", g) for g in readable):
            mode = getattr(self.config, "name", type(self.config).__name__)
            later = any(fnmatch.fnmatchcase(f"{phase_id}/{name}", g) for g in self.spec.sealed_inputs)
            raise PermissionError(
                f"{self.spec.id} with {mode} does not read {phase_id}/{name}"
                + (" before phase.seal() has fixed its fitted outputs" if later else "")
                + f"; it may read {', '.join(readable) or 'nothing'} "
                "(declared in helpers/run/graph.py)"
            )
        doc = manifest.read_manifest(self.run_dir, phase_id)
        if doc is None:
            raise MissingUpstream(self.spec, self.run_dir, [phase_id])
        entry = doc["files"].get(name)
        path = manifest.results_dir(self.run_dir, phase_id) / name
        if entry is None or not path.is_file():
            raise FileNotFoundError(f"{phase_id} did not produce {name} (its manifest lists {', '.join(doc['files'])})")
        if sha256_file(path) != entry["sha256"]:
            raise RuntimeError(
                f"{path} was altered after {phase_id} wrote it (sha256 differs from its manifest); "
                f"re-run with `calib run --resume {self.run_dir}`"
            )
        return path

    def model_input(self, name: str) -> Path:
        """A file of "the model" (``model.json``, ``model.pt``, ``model.onnx``, ``logits.npz``) from the phase
        the graph says provides it (:data:`helpers.run.graph.MODEL_PHASE`: the adapted model)."""
        return self.input(MODEL_PHASE, name)

    def read_json(self, phase_id: str, name: str) -> Any:
        """A declared JSON output of a declared upstream phase, verified (see ``input``) and parsed."""
        return read_json(self.input(phase_id, name), f"re-run {phase_id}")

    def load_npz(self, phase_id: str, name: str) -> dict[str, np.ndarray]:
        """The arrays of a declared npz output of a declared upstream phase, verified; the file is closed."""
        with np.load(self.input(phase_id, name)) as npz:
            return {key: npz[key] for key in npz.files}

    def has(self, phase_id: str) -> bool:
        """Whether a declared upstream phase is present (manifest written and verifying)."""
        if phase_id not in self.spec.upstream:
            raise PermissionError(f"{self.spec.id} does not declare {phase_id} upstream")
        return not manifest.verify(self.run_dir, phase_id)

    def present_inputs(self) -> dict[str, dict[str, Path]]:
        """``{phase id: {file name: verified path}}`` for every declared upstream phase that is present (manifest
        written and verifying), each with every file its manifest lists: what a phase that runs on whatever
        exists (``soft_upstream``: the report) reads."""
        return {
            pid: {name: self.input(pid, name) for name in sorted(manifest.read_manifest(self.run_dir, pid)["files"])}
            for pid in self.spec.upstream
            if self.has(pid)
        }

    def upstream_summary(self, phase_id: str) -> dict:
        """The key results an upstream phase recorded in its manifest."""
        if phase_id not in self.spec.upstream:
            raise PermissionError(f"{self.spec.id} does not declare {phase_id} upstream")
        return (manifest.read_manifest(self.run_dir, phase_id) or {}).get("summary", {})

    # -- writing ---------------------------------------------------------------------------
    def out(self, name: str) -> Path:
        """Path for one of this phase's declared outputs (parent folders created)."""
        if self._sealed is not None and name in self._sealed:
            raise PermissionError(
                f"{self.spec.id}: {name} is sealed (phase.seal() fixed its bytes); it cannot be "
                "written again, only read through phase.out_sealed()"
            )
        if not self.spec.declares(name):
            raise PermissionError(
                f"{name!r} is not a declared output of {self.spec.id} "
                f"(declared: {', '.join(self.spec.outputs)}); declare it in helpers/run/graph.py"
            )
        path = self.results / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def seal(self, *names: str) -> dict[str, str]:
        """Fix the bytes of fitted outputs (their sha256 is kept); only then are ``sealed_inputs`` readable.

        ``finish()`` fails if a sealed file changed, so what was fitted before the phase could read its
        evaluation data (labels included) is exactly what the manifest records.
        """
        if self._sealed is not None:
            raise RuntimeError(f"{self.spec.id} is already sealed ({', '.join(self._sealed)})")
        missing = [n for n in names if not (self.results / n).is_file()]
        if not names or missing:
            raise FileNotFoundError(
                f"{self.spec.id}: seal() needs written outputs; missing: {', '.join(missing) or '-'}"
            )
        self._sealed = {n: sha256_file(self.results / n) for n in names}
        self.log("sealed", files=self._sealed)
        return self._sealed

    def out_sealed(self, name: str) -> Path:
        """Path of a sealed output, for reading it back."""
        if self._sealed is None or name not in self._sealed:
            raise PermissionError(f"{self.spec.id}: {name} is not sealed")
        return self.results / name

    def log(self, event: str, **fields: Any) -> None:
        """Append one structured event to logs/<phase>.jsonl (flushed and fsynced)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"time": run_record.now(), "phase": self.spec.id, "event": event, **to_jsonable(fields)}, sort_keys=True
        )
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    @contextlib.contextmanager
    def timer(self, name: str):
        """Log the wall time of a block (timings go to logs, never to results)."""
        start = time.perf_counter()
        yield
        self.log("timing", name=name, seconds=round(time.perf_counter() - start, 4))

    def finish(self, summary: dict[str, Any] | None = None) -> dict:
        """Check every declared output exists, then write the manifest (last).

        Under ``calib run`` the manifest is written as pending: the runner makes it the manifest once
        papermill has saved the executed notebook, so a phase with a manifest always has its notebook."""
        changed = [n for n, sha in (self._sealed or {}).items() if sha256_file(self.results / n) != sha]
        if changed:
            raise RuntimeError(f"{self.spec.id}: sealed output(s) {', '.join(changed)} changed after phase.seal()")
        produced = [p.relative_to(self.results).as_posix() for p in self.results.rglob("*") if p.is_file()]
        missing = [pat for pat in self.spec.outputs if not any(fnmatch.fnmatchcase(f, pat) for f in produced)]
        if missing:
            raise RuntimeError(f"{self.spec.id} did not write its declared output(s): {', '.join(missing)}")
        undeclared = [f for f in produced if not self.spec.declares(f)]
        if undeclared:
            raise RuntimeError(
                f"{self.spec.id} wrote undeclared file(s) {', '.join(undeclared)}; "
                "write through phase.out() and declare outputs in helpers/run/graph.py"
            )
        summary = to_jsonable(summary or {})
        managed = bool(os.environ.get(run_record.MANAGED_ENV))  # the runner promotes it after the notebook is saved
        manifest.write_manifest(self.run_dir, self.spec.id, self.key_parts, summary, self.notebook, pending=managed)
        seconds = round(time.perf_counter() - self._started, 3)
        self.log("phase_finished", seconds=seconds, files=len(produced))
        if not managed:  # run by hand: the runner's steps after the manifest are this kernel's
            try:
                self.spec.store(self.run_dir, self.params)  # what it keeps outside the run (05: the store), last
            except BaseException:
                manifest.manifest_path(self.run_dir, self.spec.id).unlink(missing_ok=True)
                raise
            record = run_record.record_complete(
                self.run_dir,
                self.spec.id,
                manifest.read_manifest(self.run_dir, self.spec.id),
                finished=run_record.now(),
                duration_s=seconds,
            )
            if all(row.get("status") == "complete" for row in record["phases"].values()):  # a scratch run
                record["status"] = "complete"
                run_record.save(self.run_dir, record)
        print(
            f"{self.spec.id}: {len(produced)} files, manifest written to "
            f"{manifest.manifest_path(self.run_dir, self.spec.id).relative_to(self.run_dir)}"
        )
        return summary
