"""One process at a time per run directory: an exclusive lock the OS releases when its holder dies.

``calib run`` (new run or ``--resume``) holds ``<run>/.lock`` (``fcntl.flock``, exclusive,
non-blocking) for as long as it executes phases; the file holds the holder's PID and host. A
second process gets :class:`RunLocked` -- "run ... is being executed by PID N" -- and exits
without touching the run. ``kill -9`` of the holder releases the lock (the kernel drops it with
the process's file descriptors), so a crashed run is never stuck.

A phase kernel is started by jupyter_client in a session of its own, so it can outlive a killed
``calib`` by a second or two. Each managed kernel therefore holds a *shared* lock on
``<run>/.kernel.lock`` for its lifetime (:func:`hold_for_kernel`), and a new executor waits for
those to drop (:func:`wait_for_kernels`) before it touches the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"
KERNEL_LOCK_FILE = ".kernel.lock"
LOCK_FILES = (LOCK_FILE, KERNEL_LOCK_FILE)  # bookkeeping, never artifacts
_KERNEL_FDS: list[int] = []  # held by this (kernel) process until it exits


class RunLocked(RuntimeError):
    """Another live process executes this run."""


def holder(run_dir: Path, wait_s: float = 2.0) -> str:
    """Who holds (or last held) a run's lock, as written in the lock file ("PID 123 on host").

    A new holder empties the file and then writes its PID, so a reader that comes in between
    sees an empty file: it polls for up to ``wait_s`` before settling for "another process".
    """
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(OSError):
            text = (Path(run_dir) / LOCK_FILE).read_text().strip()
            if text:
                return text
        if time.monotonic() > deadline:
            return "another process"
        time.sleep(0.02)


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock right now (probed, not taken)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def run_lock(run_dir: Path, kernel_wait_s: float = 30.0) -> Iterator[None]:
    """Hold the run's exclusive lock for the block; raise RunLocked naming the holder if taken."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"run {run_dir} is being executed by {holder(run_dir)}; wait for it to finish "
                f"(calib show {run_dir} shows its progress): one process executes a run at a time"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {platform.node()}\n".encode())
        wait_for_kernels(run_dir, kernel_wait_s)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def hold_for_kernel(run_dir: Path) -> None:
    """In a phase kernel: hold a shared lock on the run's kernel lock until this process exits."""
    fd = os.open(Path(run_dir) / KERNEL_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _KERNEL_FDS.append(fd)


def wait_for_kernels(run_dir: Path, timeout_s: float) -> None:
    """Wait until no kernel of an earlier (killed) execution still works in the run."""
    path = Path(run_dir) / KERNEL_LOCK_FILE
    if not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunLocked(
                        f"a phase kernel of an earlier execution of {run_dir} is still running after "
                        f"{timeout_s:.0f} s; wait for it to exit (or end it), then retry"
                    ) from None
                time.sleep(0.1)
    finally:
        os.close(fd)
