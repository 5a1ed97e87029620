"""Executing a sweep's members on Dask: a LocalCluster sized to the machine, or an existing cluster.

Every member is one Dask task: the member's run directory (created, with its resolved config,
before anything is submitted) is executed by the runner ``calib run`` uses, in its resume mode
and with the cross-run phase cache on (``helpers.cache``): phases another member already
computed with the same input key are materialized from it, and a task that is retried -- Dask
re-submits the tasks of a worker that died, and ``retries`` re-runs a task that raised -- resumes
from the manifests its earlier attempt left instead of starting from zero. A phase that fails
(a notebook error) is not retried: the member is reported failed with the error.

Nothing of this is silent: :class:`Incidents` hears from the scheduler when a worker is lost (and
which members it was running) and from a member task when it raised (before Dask retries it), so
the driver can say so on the console, in ``sweep.json`` and in the sweep report.

Threads: each worker runs one task at a time (one thread); its kernels get a thread budget of
``cores // workers on that host`` through the usual ``*_NUM_THREADS`` variables, and on a
LocalCluster each worker's kernels are also pinned (CPU affinity) to their own cores, so N
workers on N cores do not oversubscribe.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from helpers.run import manifest, run_record
from helpers.run.graph import upstream_closure
from helpers.run.params import config_hash

MEMBER_TOPIC = "calib-sweep"  # the Dask event topic a member task reports on (that it raised)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def host_of(address: str) -> str:
    return urlparse(address).hostname or address


def workers_per_host(client) -> dict[str, int]:
    out: dict[str, int] = {}
    for address in client.scheduler_info(n_workers=-1)["workers"]:
        out[host_of(address)] = out.get(host_of(address), 0) + 1
    return out


def host_cores() -> int:
    """Cores this process may use (its affinity set where the OS has one)."""
    return len(os.sched_getaffinity(os.getpid())) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pin_threads(threads: int, slot: int | None) -> list[int] | None:
    """This worker's kernels: ``threads`` threads, and with a ``slot``, CPU affinity to its own cores."""
    os.environ.update({var: str(threads) for var in THREAD_VARS})
    if slot is None or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(os.getpid()))  # the process's (main thread's) set, never narrowed here
    chosen = [cpus[(slot * threads + i) % len(cpus)] for i in range(threads)]
    os.sched_setaffinity(0, chosen)  # the executing thread; the kernels it starts inherit it
    return chosen


def phase_outcomes(run_dir: Path, since: str) -> dict[str, str]:
    """Per phase, what this attempt did: 'ran', 'reused' (from another run) or 'skipped' (done before)."""
    out = {}
    for pid, row in run_record.load(run_dir)["phases"].items():
        if (row.get("started") or "") >= since:
            out[pid] = "reused" if row.get("reused_from") else "ran"
        else:
            out[pid] = "not run" if manifest.verify(run_dir, pid) else "skipped"
    return out


def run_member(run_dir: str, cell_timeout: int | None, workers_on_host: dict[str, int], pin: bool) -> dict:
    """The Dask task: execute (or resume) one member run with the phase cache; returns its outcome."""
    from distributed import get_worker

    from helpers.run.runner import PhaseFailed, run

    worker = get_worker()
    member = {"run_id": Path(run_dir).name, "worker": worker.address}  # what the client hears (Incidents)
    worker.log_event(MEMBER_TOPIC, {"action": "member-started", **member})
    threads = max(1, host_cores() // max(1, workers_on_host.get(host_of(worker.address), 1)))
    cpus = pin_threads(threads, worker.name if pin and isinstance(worker.name, int) else None)
    since, start, lines = run_record.now(), time.perf_counter(), []
    try:
        run(resume=run_dir, progress=False, cell_timeout=cell_timeout, reuse=True, log=lines.append)
        status, error = "complete", None
    except PhaseFailed as exc:  # a notebook error: deterministic, so not retried
        status, error = "failed", str(exc)
    except Exception as exc:  # Dask retries it (or fails the member): the client hears of it first
        worker.log_event(MEMBER_TOPIC, {"action": "member-raised", **member, "error": f"{type(exc).__name__}: {exc}"})
        raise
    return {
        "status": status,
        "error": error,
        "phases": phase_outcomes(Path(run_dir), since),
        "worker": worker.address,
        "threads": threads,
        "cpus": cpus,
        "seconds": round(time.perf_counter() - start, 1),
        "log": lines,
    }


def submission_order(members: list, specs: list, n_workers: int) -> list:
    """Members ordered so that those running side by side share as few upstream phases as possible.

    A member's signature per phase is the hash of the params of that phase's upstream closure;
    two members with a common signature would compute the same phase, and the second would only
    wait for the first. Greedy: next is the member sharing the fewest signatures with the last
    ``n_workers - 1`` picks (tie-break: sweep order).
    """

    def signatures(member) -> set[str]:
        return {config_hash({p: member.resolved[p] for p in sorted(upstream_closure({s.id}))}) for s in specs}

    pending = [(m, signatures(m)) for m in members]
    order: list = []
    while pending:
        window = set().union(*(sig for _, sig in order[-(n_workers - 1) :])) if n_workers > 1 and order else set()
        best = min(range(len(pending)), key=lambda i: len(pending[i][1] & window))
        order.append(pending.pop(best))
    return [m for m, _ in order]


def start_client(scheduler: str | None, workers: int | None):
    """A Dask client on ``scheduler``, or on a new LocalCluster of ``workers`` processes (default: cores)."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        return client, {"kind": "external", "scheduler": scheduler}, False
    n = workers or host_cores()
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    )
    return Client(cluster), {"kind": "LocalCluster", "workers": n}, True


def task_key(run_id: str) -> str:
    return f"calib-{run_id}"


def submit(client, members: list, root: Path, cell_timeout: int | None, pin: bool, retries: int) -> dict:
    """Submit every member (in the given order); returns future -> run id."""
    hosts = workers_per_host(client)
    return {
        client.submit(
            run_member,
            str(root / m.run_id),
            cell_timeout,
            hosts,
            pin,
            key=task_key(m.run_id),
            pure=False,
            retries=retries,
        ): m.run_id
        for m in members
    }


def gather(futures: dict, on_result: Callable[[str, dict], None]) -> None:
    """Call ``on_result(run_id, outcome)`` as members finish (a task that failed for good -> status failed)."""
    from distributed import as_completed

    for future in as_completed(list(futures)):
        run_id = futures[future]
        try:
            outcome = future.result()
        except Exception as exc:  # retries exhausted, or the workers running it kept dying (KilledWorker)
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "phases": {}, "log": []}
        on_result(run_id, outcome)


class Incidents:
    """Lost workers and retried members of one execution of a sweep, as Dask and the member tasks report them.

    A member task reports when it starts and when it raised (topic :data:`MEMBER_TOPIC`; Dask then
    retries it, up to ``retries`` times). The scheduler's ``remove-worker`` event (topic ``all``) names
    the tasks the lost worker held; those it had started Dask re-runs elsewhere (those only queued there
    are just sent elsewhere: no news). Each incident is handed to ``on_incident`` as it arrives (in
    the client's event thread: for the console) and kept for :meth:`drain` (the driver's thread: for
    the record). An incident is a dict: ``reason`` ("worker lost" or "raised"), ``at``, ``worker``,
    and ``running`` (the members the lost worker was executing) or ``run_id``, ``error``, ``retry``
    (the how-many-th time it raised) and ``retries``.
    """

    def __init__(self, client, run_ids: list[str], retries: int, on_incident: Callable[[dict], None]):
        self.client, self.retries, self.on_incident = client, retries, on_incident
        self.members = {task_key(rid): rid for rid in run_ids}
        self.started_on: dict[str, str] = {}  # run id -> the worker that last started it
        self.raised: dict[str, int] = {}
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        client.subscribe_topic("all", self._scheduler_event)
        client.subscribe_topic(MEMBER_TOPIC, self._member_event)

    def _scheduler_event(self, event: tuple) -> None:
        stamp, msg = event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        worker, held = (
            msg.get("worker"),
            [self.members[k] for k in msg.get("processing-tasks", ()) if k in self.members],
        )
        running = sorted(rid for rid in held if self.started_on.get(rid) == worker)
        if running or not msg.get("expected"):  # a worker that left when told to, running nothing, is no news
            self._add({"reason": "worker lost", "at": _iso(stamp), "worker": worker, "running": running})

    def _member_event(self, event: tuple) -> None:
        stamp, msg = event
        run_id = msg["run_id"]
        if run_id not in self.members.values():  # another sweep on the same cluster
            return
        if msg["action"] == "member-started":
            self.started_on[run_id] = msg["worker"]
            return
        self.raised[run_id] = self.raised.get(run_id, 0) + 1
        retry = {"retry": self.raised[run_id], "retries": self.retries}
        self._add(
            {"reason": "raised", "at": _iso(stamp), **{k: msg[k] for k in ("worker", "run_id", "error")}, **retry}
        )

    def _add(self, incident: dict) -> None:
        self.pending.put(incident)
        self.on_incident(incident)

    def drain(self) -> list[dict]:
        out = []
        while not self.pending.empty():
            out.append(self.pending.get())
        return out

    def close(self) -> None:
        for topic in ("all", MEMBER_TOPIC):
            self.client.unsubscribe_topic(topic)


def _iso(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds")
