"""The console of ``calib run``: quiet kernels, progress only in a terminal, one line per event.

* Kernels are started by :class:`QuietKernelManager`: IPC transport (no "Kernel is running over
  TCP without encryption" warning) and no SIGINT at shutdown (jupyter_client interrupts a kernel
  before every shutdown request, which ipykernel reports as "KeyboardInterrupt caught in kernel"
  when the signal lands inside a message handler). Real interrupts (a cell timeout) still go
  through, and the kernel's stderr is not filtered, so real kernel errors stay visible.
* The phase kernels' own environment (``TQDM_DISABLE`` ...) is handed to the kernel process
  only, never set in the runner's process, so papermill's cell bar shows in a terminal.
* :class:`EventTail` follows ``logs/<phase>.jsonl`` while a phase runs and prints one plain line
  per meaningful event (``02_train epoch 3/15 loss 0.61 val_acc 0.79``). A step that runs for minutes in
  one cell (training, adaptation) logs ``progress`` events as it goes; in a terminal with papermill's
  cell bar open (:class:`TerminalLines`), they move a bar of their own under it
  (``02_train training  45%|... 87/195 [epoch 7/15, loss 0.031]``); elsewhere they print nothing.
* :func:`position` is the ``(phase 3/12, ETA 2 min 5 s)`` the runner adds to each phase it announces;
  the ETA comes from this runs root's history (:func:`phase_history`).
* :func:`summary_lines` is the end-of-run table, headline and report path; :func:`failure_banner`
  the lines naming a failed phase.

This module belongs to ``run/``: it reads run directories only (records, logs, JSON results),
never imports domain modules.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager


def is_tty(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def show_cell_bar(progress: bool, stream=None) -> bool:
    """papermill's cell bar: only when asked for and stderr is a terminal (``\\r`` bars litter logs)."""
    return progress and is_tty(stream)


class QuietKernelManager(AsyncKernelManager):
    """The phase kernels' manager: IPC sockets, ``kernel_env`` for the kernel only, no shutdown SIGINT."""

    kernel_env: dict[str, str] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if os.name == "posix":
            self._ipc_dir = tempfile.mkdtemp(prefix="calib-kernel-")
            self.transport = "ipc"
            self.ip = os.path.join(self._ipc_dir, "k")  # absolute: the kernel runs in another cwd
        else:
            self._ipc_dir = None

    @classmethod
    def with_env(cls, env: dict[str, str]) -> type[QuietKernelManager]:
        return type(cls.__name__, (cls,), {"kernel_env": dict(env)})

    async def _async_pre_start_kernel(self, **kw):
        kw["env"] = {**(kw.get("env") or os.environ), **self.kernel_env}
        return await super()._async_pre_start_kernel(**kw)

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:  # the interrupt sent before every shutdown request: an idle kernel needs none
            return
        await super()._async_interrupt_kernel()

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if self._ipc_dir and not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


# -- events ---------------------------------------------------------------------------------


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _scalars(fields: dict) -> str:
    skip = ("time", "phase", "event", "source")  # source: the helper module that logged it
    return " ".join(
        f"{k} {_num(v)}"
        for k, v in fields.items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool) and k not in skip
    )


SLOW_FIT_S = 1.0  # a calibration fit that takes longer gets a console line


def format_event(event: dict) -> str | None:
    """One console line for a ``logs/<phase>.jsonl`` event, or None for events the console skips."""
    phase, kind = event.get("phase", "?"), event.get("event")
    if kind in ("phase_started", "phase_finished"):
        return None  # the runner's own lines say when a phase starts and ends
    if kind == "progress":
        return None  # a bar in a terminal (TerminalLines.progress), no line: the epoch lines say as much
    if kind == "epoch":
        line = f"{phase} epoch {event['epoch']}/{event['epochs']}"
        for key in ("loss", "train_acc", "val_acc"):
            if isinstance(event.get(key), (int, float)):
                line += f" {key} {event[key]:.3g}"
        return line
    if kind == "timing":
        return f"{phase} {event.get('name', 'step')} {event.get('seconds', float('nan')):.1f} s"
    if kind == "calibration_fit":  # one per model and map (the log keeps them all): the console names the slow ones
        slow = event.get("seconds", 0) >= SLOW_FIT_S
        return (
            f"{phase} {event.get('model')} {event.get('method')} fitted in {event['seconds']:.1f} s" if slow else None
        )
    if kind == "calibration_seconds":
        return f"{phase} {event.get('method')} calibrated {event.get('seconds', float('nan')):.1f} s"
    if kind == "measured":  # the measurement warnings (a noisy machine) each on a line of their own
        notes = len(event.get("skipped") or []) + len(event.get("warnings") or [])
        return "\n".join(
            [
                f"{phase} measured {event.get('records')} latency records"
                + (f" ({notes} notes)" if notes else "")
                + (f" for {event['store']} (stored when the phase completes)" if event.get("store") else ""),
                *(f"{phase} warning: {warning}" for warning in event.get("warnings") or []),
            ]
        )
    if kind in ("activation_stats", "transformer_stats"):
        return f"{phase} statistics of the {event.get('role')} model done"
    rest = _scalars(event)
    return f"{phase} {kind}" + (f" {rest}" if rest else "")


class EventTail:
    """Follow one phase's ``logs/<phase>.jsonl`` from its current end; ``emit`` each formatted event."""

    def __init__(self, log_path: Path, emit: Callable[[str], None], interval: float = 0.5):
        self.path, self.emit, self.interval = Path(log_path), emit, interval
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"events-{self.path.stem}", daemon=True)
        self._partial = b""

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            try:
                event = json.loads(raw)
                if event.get("event") == "progress" and isinstance(self.emit, TerminalLines):
                    self.emit.progress(event)
                line = format_event(event)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line the console cannot read is no reason to disturb the run
            if line:
                self.emit(line)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def __enter__(self) -> EventTail:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        if isinstance(self.emit, TerminalLines):
            self.emit.close()


class TerminalLines:
    """The console in a terminal: each line through ``tqdm.write`` (open bars are redrawn below it), and a bar
    for the step a phase is in (``progress`` events: training's batches) under papermill's cell bar, which sits
    on one cell for the whole of such a step. The step bar is drawn only while a cell bar is open (``calib run``
    with progress on), so ``--no-progress`` turns both off."""

    def __init__(self):
        self.bar, self.step = None, None

    def __call__(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)

    def progress(self, event: dict) -> None:
        """Move the step bar to ``event``'s batch (``batch`` of ``steps`` in ``epoch`` of ``epochs``): the bar
        counts the step's batches over all its epochs, so its rate and ETA are the whole step's."""
        from tqdm import tqdm

        step, done = (event["phase"], event["step"]), (event["epoch"] - 1) * event["steps"] + event["batch"]
        if step != self.step:
            self.close()
            if not any(not bar.disable for bar in list(tqdm._instances)):  # no cell bar: no terminal bar either
                return
            self.step = step
            total = event["epochs"] * event["steps"]
            self.bar = tqdm(total=total, initial=done, desc=" ".join(step), unit="batch", leave=False, file=sys.stderr)
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"epoch {event['epoch']}/{event['epochs']}, loss {event['loss']:.3g}", refresh=False)
        self.bar.update(done - self.bar.n)
        self.bar.refresh()
        if done >= self.bar.total:
            self.close()

    def close(self) -> None:
        """Take the step bar off the screen (its step is done, or its phase ended)."""
        if self.bar is not None:
            self.bar.close()
        self.bar, self.step = None, None


def console_writer(tty: bool) -> Callable[[str], None]:
    """Print a line; in a terminal through tqdm (:class:`TerminalLines`) so live progress bars are redrawn below it."""
    return TerminalLines() if tty else lambda line: print(line, flush=True)


# -- progress -------------------------------------------------------------------------------


def phase_history(run_dir: Path, config: dict) -> dict[str, float]:
    """Seconds each phase of ``run_dir`` (resolved ``config``) is expected to take: the median of what it took in
    the other runs of the same runs root, counting only executions (not reused) with the same parameters of that
    phase. A phase no earlier run executed with its parameters is left out; an unreadable record is no history."""
    from helpers.run import run_record

    seconds: dict[str, list[float]] = defaultdict(list)
    for other in run_dir.parent.iterdir():
        if other == run_dir or not (other / run_record.FILENAME).is_file():
            continue
        try:
            record = run_record.load(other)
        except (OSError, ValueError, run_record.RecordDamaged):
            continue  # a run being written, or a damaged one
        for pid, row in (record.get("phases") or {}).items():
            executed = row.get("status") == "complete" and not row.get("reused_from")
            same = pid in config and (record.get("config") or {}).get(pid) == config[pid]
            if executed and same and isinstance(row.get("duration_s"), (int, float)):
                seconds[pid].append(row["duration_s"])
    return {pid: statistics.median(values) for pid, values in seconds.items()}


def duration_text(seconds: float) -> str:
    """``45 s``, ``3 min 10 s``, ``1 h 5 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def position(phase_ids: list[str], k: int, history: dict[str, float]) -> str:
    """``phase 3/12, ETA 2 min 5 s`` for the k-th (from 1) of ``phase_ids``: the ETA sums the history of it and
    every phase after it (none when one of them has no history)."""
    rest, where = phase_ids[k - 1 :], f"phase {k}/{len(phase_ids)}"
    if all(pid in history for pid in rest):
        return f"{where}, ETA {duration_text(sum(history[pid] for pid in rest))}"
    return where


# -- end of run -----------------------------------------------------------------------------


STATUS_WORDS = {"pending": "not run", "running": "interrupted"}


def phase_rows(record: dict, outcome: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(phase, status, seconds) per phase of the run; ``outcome`` marks phases ``--resume`` skipped; a phase
    taken from another run (``--reuse``, sweeps) is ``reused``, with no seconds of its own."""
    rows = []
    for pid, row in record["phases"].items():
        status = row.get("status", "pending")
        if (outcome or {}).get(pid) == "skipped":
            rows.append((pid, "up to date", "-"))
            continue
        if status == "complete" and row.get("reused_from"):
            rows.append((pid, "reused", "-"))
            continue
        seconds = row.get("duration_s")
        rows.append((pid, STATUS_WORDS.get(status, status), f"{seconds:.1f}" if seconds is not None else "-"))
    return rows


def latency_store(run_dir: Path) -> str | None:
    """Where phase 05 wrote its measurements, as it logged it (None if it did not)."""
    path = run_dir / "logs" / "05_latency.jsonl"
    if not path.exists():
        return None
    stores = [e.get("store") for e in map(json.loads, path.read_text().splitlines()) if e.get("event") == "measured"]
    return stores[-1] if stores and stores[-1] else None


def summary_lines(run_dir: Path, outcome: dict[str, str] | None = None) -> list[str]:
    """The end of ``calib run``: phase / status / seconds, the headline, where the report is."""
    from helpers.run import headline, run_record

    record = run_record.load(run_dir)
    rows = [("phase", "status", "seconds"), *phase_rows(record, outcome)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["", *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)]
    total = sum(
        row.get("duration_s") or 0
        for pid, row in record["phases"].items()
        if (outcome or {}).get(pid) != "skipped" and not row.get("reused_from")
    )
    lines.append(f"{record.get('status', '?')} in {total:.0f} s (phases' own time)")
    head = headline.text(headline.for_run(run_dir, record))
    if head:
        lines.append(head)
    store = latency_store(run_dir)
    if store:
        lines.append(f"latency store: {store}")
    report = run_dir / "results" / "09_report" / "report.html"
    if record["phases"].get("09_report", {}).get("status") == "complete" and report.exists():
        lines.append(f"report: {report}")
    lines.append(f"run: {run_dir}")
    return lines


def failure_banner(phase_id: str, error: str, notebook: Path, reported: bool = True) -> list[str]:
    """The lines naming a failed phase (stderr); ``reported``: the report ran on what exists (not on a full disk)."""
    bar = "=" * 78
    return [
        bar,
        f"{phase_id} FAILED: {error}",
        f"  executed notebook: {notebook}",
        "  the phases after it did not run; "
        + ("the report shows what exists" if reported else "neither did the report (the disk is full)"),
        bar,
    ]
