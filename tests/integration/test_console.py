"""The console of `calib run` through the real CLI: quiet kernels, event lines, the end-of-run summary,
progress only in a terminal, and a report (with a banner) after a failed phase."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import sys
import termios
from pathlib import Path

import pytest

from cli_runner import calib, only_run
from helpers.run import console

pytestmark = pytest.mark.integration

NOISE = ("IPKernelApp", "KeyboardInterrupt", "without encryption")


def test_full_run_console(default_run):
    """The session's full default run, as its console printed it (stdout and stderr, piped)."""
    out = (default_run.parent.parent / "console.stdout").read_text()
    err = (default_run.parent.parent / "console.stderr").read_text()
    for noise in NOISE:
        assert noise not in out + err, noise
    assert "\r" not in out + err, "no progress bars when piped"
    phases = list(json.loads((default_run / "run_record.json").read_text())["phases"])
    announced = re.findall(r"^\[(\w+)\] .+ \(phase (\d+)/(\d+)\)$", out, re.M)  # the first run of its root: no ETA
    assert announced == [(pid, str(k), str(len(phases))) for k, pid in enumerate(phases, 1)], announced
    epochs = re.findall(r"^02_train epoch (\d+)/(\d+) loss [\d.e-]+ train_acc [\d.e-]+ val_acc [\d.e-]+$", out, re.M)
    assert epochs and epochs[-1][0] == epochs[-1][1] and len(epochs) == int(epochs[-1][1])
    assert re.search(r"^04_quantize minmax calibrated \d+\.\d s$", out, re.M)
    assert re.search(r"^05_latency measured \d+ latency records", out, re.M)
    table = re.findall(r"^(\d\d[a-z]?_\w+)\s+(complete|failed|skipped|not run)\s+([\d.]+|-)$", out, re.M)
    assert [row[0] for row in table] == list(json.loads((default_run / "run_record.json").read_text())["phases"])
    assert {row[1] for row in table} == {"complete"}
    headline = next(line for line in out.splitlines() if line.startswith("target domain, adaptation (lora) "))
    summaries = {
        pid: row["summary"] for pid, row in json.loads((default_run / "run_record.json").read_text())["phases"].items()
    }
    gain = summaries["02b_adapt"]["accuracy"]["target"]  # the story: the gain where the model is deployed
    assert headline.startswith(
        f"target domain, adaptation (lora) {100 * gain['before']:.2f}% -> {100 * gain['after']:.2f}% | "
    )
    deployed = summaries["06_confidence"]["accuracy_post"]["fp32"]  # after the chosen map, on target test
    chosen = summaries["06_confidence"]["chosen"]["fp32"]
    assert f"| deployed FP32 acc {100 * deployed:.2f}% ({chosen}) |" in headline
    latency = (  # a speed-up, or the words that replace it when its range says it is no number (headline.py)
        r"(INT8 [\d.]+x (faster|slower) than FP32 \(onnxruntime, batch 1\)"
        r"|INT8 vs FP32 latency \(onnxruntime, batch 1\): (no measurable difference|not measurable here), "
        r"[\d.]+x to [\d.]+x( \(re-measure on an idle machine\))?)"
    )
    assert re.search(
        r"INT8 \(\w+\) acc [\d.]+% \| ECE [\d.]+% -> [\d.]+% \(\w+\) \| " + latency + r" \| bundle PASS$", headline
    ), headline
    assert f"report: {default_run / 'results/09_report/report.html'}" in out
    assert f"latency store: {(default_run.parent.parent / 'store').resolve()}" in out  # conftest's -p store_dir


def test_a_later_run_gets_an_eta_from_the_history_and_a_reused_phase_says_so(default_run, tmp_path):
    """Issue 30.3: the ETA is what the phases took in the runs root's earlier runs with the same parameters; a
    phase materialized from another run is 'reused' in the table, not 'complete 0.0'."""
    root = tmp_path / "runs"
    shutil.copytree(default_run, root / default_run.name)
    before = json.loads((default_run / "run_record.json").read_text())["phases"]["01_data"]["duration_s"]
    out = calib("run", "--phases", "1", "--reuse", "--no-progress", "--runs-root", str(root)).stdout
    eta = console.duration_text(before)
    assert f"[01_data] Data and calibration slice (phase 1/1, ETA {eta})" in out, out
    assert re.search(r"^01_data\s+reused\s+-$", out, re.M), out


def test_failed_phase_gets_a_report_with_a_banner_and_exit_1(tmp_path):
    # a layer name no precheck can know (it needs the model): phase 03 fails in its kernel
    bad_layer = ["-p", "03_activation_stats.layers=[no_such_layer]"]
    proc = calib("run", "--no-progress", "--runs-root", str(tmp_path), *bad_layer, check=False)
    assert proc.returncode == 1
    run = only_run(tmp_path)
    assert "03_activation_stats FAILED" in proc.stderr and "unknown layer(s) ['no_such_layer']" in proc.stderr
    record = json.loads((run / "run_record.json").read_text())
    assert record["status"] == "failed" and record["phases"]["03_activation_stats"]["status"] == "failed"
    assert record["phases"]["09_report"]["status"] == "complete"
    assert record["phases"]["04_quantize"]["status"] == "pending"
    page = (run / "results/09_report/report.html").read_text()
    assert 'class="banner"' in page and "03_activation_stats failed" in page and "no_such_layer" in page
    assert re.search(r"^04_quantize\s+not run\s+-$", proc.stdout, re.M)
    assert re.search(r"^03_activation_stats\s+failed\s+[\d.]+$", proc.stdout, re.M)
    assert f"report: {run / 'results/09_report/report.html'}" in proc.stdout
    for noise in NOISE:
        assert noise not in proc.stdout + proc.stderr


def run_in_terminal(args: list[str], cwd: Path) -> str:
    """The real CLI under a 120x40 pseudo-terminal (stdout and stderr both a TTY), its whole output."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "helpers.cli", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a new pty is 0 columns wide
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode(errors="replace")


def test_cell_bar_only_in_a_terminal_and_no_progress_turns_it_off(tmp_path):
    shown = run_in_terminal(["run", "--phases", "00", "--runs-root", str(tmp_path / "a")], tmp_path)
    assert "Executing" in shown and "cell/s" in shown, shown[-2000:]
    quiet = run_in_terminal(["run", "--phases", "00", "--no-progress", "--runs-root", str(tmp_path / "b")], tmp_path)
    assert "Executing" not in quiet and "00_environment  complete" in quiet, quiet[-2000:]
    for noise in NOISE:
        assert noise not in shown + quiet
