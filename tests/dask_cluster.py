"""A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 for tests, stopped afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to a process started with its own session, and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_for_address(scheduler_file: Path, timeout: float) -> str:
    """The scheduler's address from its scheduler file (written non-atomically: retry until it parses)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.2)
    raise AssertionError(f"the dask scheduler wrote no address to {scheduler_file} within {timeout} s")


@contextlib.contextmanager
def dask_cluster(workdir: Path, n_workers: int, resources: str | None = None):
    """Yield (scheduler address, worker processes named w0.., a connected Client)."""
    if DASK is None:
        pytest.skip("the dask command is not installed")
    from distributed import Client

    scheduler_file = workdir / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    quiet = {"env": env, "start_new_session": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            **quiet,
        )
    ]
    try:
        address = wait_for_address(scheduler_file, timeout=120)
        extra = ["--resources", resources] if resources else []
        workers = [
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                    "--host",
                    "127.0.0.1",
                    *extra,
                ],
                **quiet,
            )
            for i in range(n_workers)
        ]
        procs += workers
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=180)
            yield address, workers, client
    finally:
        for proc in reversed(procs):
            signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait()
