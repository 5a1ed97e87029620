"""One process per run directory (the lock), and parallel launches on one runs root."""

from __future__ import annotations

import multiprocessing as mp
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.run import lock
from helpers.run.lock import RunLocked, run_lock

HOLD = "import sys, time\nfrom helpers.run.lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_is_told_the_pid_then_gets_the_lock_once_the_holder_is_killed(tmp_path):
    holder = hold_in_another_process(tmp_path)
    try:
        assert lock.is_locked(tmp_path)
        with pytest.raises(RunLocked, match=f"is being executed by PID {holder.pid} "):
            with run_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not lock.is_locked(tmp_path), "the OS releases the lock of a killed holder"
    with run_lock(tmp_path):
        assert lock.is_locked(tmp_path)
    assert not lock.is_locked(tmp_path)


def _create_behind_barrier(barrier, root: str, queue) -> None:
    from helpers.run.graph import select
    from helpers.run.runner import create_run

    specs = select("00")
    resolved = {"00_environment": {"seed": 0}}
    barrier.wait()
    try:
        queue.put(("ok", create_run(resolved, specs, Path(root)).name))
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which fails the test with it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def test_parallel_launches_on_one_runs_root_all_get_their_own_run(tmp_path):
    """The review's API-level race: create_run from 8 processes released together, 3 rounds."""
    ctx = mp.get_context("fork")
    root = tmp_path / "runs"
    names = []
    for _ in range(3):
        barrier, queue = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_create_behind_barrier, args=(barrier, str(root), queue)) for _ in range(8)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join()
        assert [r for r in results if r[0] == "error"] == []
        names += [name for _, name in results]
    assert len(set(names)) == 24 and all((root / n / "run_record.json").is_file() for n in names)
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no probe file is left behind"


KERNEL = (
    "import sys, time\nfrom helpers.run.lock import hold_for_kernel\nhold_for_kernel(sys.argv[1])\n"
    "print('held', flush=True)\ntime.sleep(600)\n"
)


def test_a_new_executor_waits_for_a_kernel_of_a_killed_execution(tmp_path):
    """A phase kernel outlives a `kill -9` of calib by a second or two; nobody may share the run with it."""
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert kernel.stdout.readline().strip() == "held"
    try:
        with pytest.raises(RunLocked, match="a phase kernel of an earlier execution"):
            with run_lock(tmp_path, kernel_wait_s=0.5):
                pass
        assert not lock.is_locked(tmp_path), "the refused executor released the run lock"
    finally:
        kernel.send_signal(signal.SIGKILL)
        kernel.wait()
    with run_lock(tmp_path, kernel_wait_s=5):
        pass


def test_a_reader_between_the_holders_truncate_and_write_still_gets_the_pid(tmp_path):
    """CI once caught a second `--resume` reading the lock file after the holder emptied it and
    before it wrote its PID ("is being executed by another process"): the reader waits for it."""
    import threading
    import time

    (tmp_path / lock.LOCK_FILE).write_text("")
    writer = threading.Timer(0.3, (tmp_path / lock.LOCK_FILE).write_text, args=("PID 4242 on host\n",))
    writer.start()
    started = time.monotonic()
    assert lock.holder(tmp_path) == "PID 4242 on host"
    assert 0.2 < time.monotonic() - started < 1.5
    writer.join()
    (tmp_path / lock.LOCK_FILE).write_text("")
    assert lock.holder(tmp_path, wait_s=0.1) == "another process"
