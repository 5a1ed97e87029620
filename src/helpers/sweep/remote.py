"""Latency ground truth measured on remote hardware: on the Dask worker that carries it.

A board (or any machine) joins a cluster as a worker that advertises its hardware as a Dask
resource::

    dask worker tcp://scheduler:8786 --nthreads 1 --resources "hw-NAME=1"

``calib ground-truth measure --scheduler tcp://scheduler:8786 --hardware NAME`` sends the
measurement sweep there as one task that needs the resource ``hw-NAME``: the worker measures
into a private temporary store and returns that store's files (relative path -> bytes, nothing
else crosses back); the client writes them into the central store atomically and rebuilds that
hardware's store manifest and efficiency curves. A local worker with the resource takes the same
path (that is how it is tested).
"""

from __future__ import annotations

import re
import socket
import tempfile
from pathlib import Path

from helpers.ground_truth.estimator import write_efficiency_curves
from helpers.ground_truth.latency import SweepConfig, SweepResult
from helpers.ground_truth.store import default_data_dir, read_measurement, rebuild_manifest
from helpers.run import atomic
from helpers.run.params import ParamError

RESOURCE_PREFIX = "hw-"


def resource_name(hardware: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", hardware or ""):
        raise ParamError(
            f"--hardware {hardware!r}: use letters, digits, '.', '_' or '-' (the worker advertises "
            f'--resources "{RESOURCE_PREFIX}<name>=1")'
        )
    return f"{RESOURCE_PREFIX}{hardware}"


def measure_task(config: SweepConfig) -> dict:
    """On the worker: run the sweep into a temporary store; return its files and what the sweep noted."""
    from helpers.ground_truth.latency import run_sweep

    with tempfile.TemporaryDirectory(prefix="calib-remote-gt-") as tmp:
        result = run_sweep(config, store=tmp, progress=False)
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
        measured = [p.relative_to(tmp).as_posix() for p in result.paths]
    return {
        "files": files,
        "measurements": measured,
        "run_id": result.run_id,
        "skipped": result.skipped,
        "warnings": result.warnings,
        "unknown_state": result.unknown_state,
        "host": socket.gethostname(),
    }


def measure_on(scheduler: str, hardware: str, config: SweepConfig, store: str | Path | None = None) -> SweepResult:
    """Measure ``config`` on the worker of ``scheduler`` that carries ``hw-<hardware>``; store centrally."""
    from distributed import Client

    resource = resource_name(hardware)
    root = Path(store or config.store or default_data_dir())
    with Client(scheduler, timeout="30s") as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if not any(w.get("resources", {}).get(resource) for w in workers.values()):
            raise ParamError(
                f"no worker of {scheduler} carries hardware {hardware!r}; start one on that machine "
                f'with: dask worker {scheduler} --nthreads 1 --resources "{resource}=1"'
            )
        out = client.submit(measure_task, config, resources={resource: 1}, pure=False).result()
    for rel, data in out["files"].items():
        atomic.write_bytes(root / rel, data)
    result = SweepResult(
        store=root,
        run_id=out["run_id"],
        unknown_state=out["unknown_state"],
        skipped=out["skipped"],
        warnings=out["warnings"],
    )
    result.paths = [root / rel for rel in out["measurements"]]
    result.records = [read_measurement(p) for p in result.paths]
    for hardware_id in sorted({r.hardware_id for r in result.records}):
        rebuild_manifest(root, hardware_id)
        write_efficiency_curves(root, hardware_id)
    return result
