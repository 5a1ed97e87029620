"""Pipeline overheads: a kernel's first import, kernel start-up per phase, wall time of phases 00+01.

    python benchmarks/bench_pipeline.py [--cifar-dir DIR] [--repeats 3]

Kernel start-up is measured as a papermill execution of a one-cell notebook (start kernel, run
`pass`, shut down) -- the fixed cost every phase pays -- side by side with the same phases run
through `calib run`, so the ratio shows how much of a phase is infrastructure. The first import every
phase kernel makes (`import helpers.run.phase`) is timed in fresh processes, in turn with `import torch`
and an empty interpreter; each phase's fixed cost is its runner-measured wall time minus the time its
kernel spent between `Phase.open` and `finish` (from the runs' own records and logs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import nbformat
import papermill as pm
from nbformat.v4 import new_code_cell, new_notebook

from helpers.run.runner import run


def kernel_startup(workdir: Path, repeats: int) -> list[float]:
    nb = new_notebook(cells=[new_code_cell("pass")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = workdir / "empty.ipynb"
    nbformat.write(nb, src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pm.execute_notebook(
            str(src), str(workdir / "out.ipynb"), kernel_name="python3", progress_bar=False, cwd=str(workdir)
        )
        times.append(time.perf_counter() - start)
    return times


def import_times(repeats: int) -> dict[str, list[float]]:
    """Wall seconds of fresh interpreters doing one import each, the commands taken in turn (paired rounds)."""
    commands = {
        "python -c pass": "pass",
        "import torch": "import torch",
        "import helpers.run.phase": "import helpers.run.phase",
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, code in commands.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[name].append(time.perf_counter() - start)
    return times


def fixed_costs(root: Path) -> list[float]:
    """Per phase of every run under ``root``: wall seconds (run record) minus in-kernel seconds (its log)."""
    out = []
    for record_path in root.glob("*/run_record.json"):
        record = json.loads(record_path.read_text())
        for phase_id, row in record["phases"].items():
            log = record_path.parent / "logs" / f"{phase_id}.jsonl"
            finished = [json.loads(line) for line in log.read_text().splitlines() if '"phase_finished"' in line]
            if finished and row.get("duration_s") is not None:
                out.append(row["duration_s"] - finished[-1]["seconds"])
    return out


def pipeline(root: Path, repeats: int, overrides: list[str]) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(overrides=overrides, phases="00,01", root=str(root), progress=False, log=lambda *_: None)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cifar-dir", help="a cifar-10-batches-py folder (default: .cache/cifar-10-batches-py if present)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cifar = Path(args.cifar_dir or Path(__file__).resolve().parents[1] / ".cache" / "cifar-10-batches-py")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [("kernel start-up (1 empty cell)", kernel_startup(tmp, args.repeats))]
        imports = import_times(args.repeats)
        rows.append(("phases 00+01, digits", pipeline(tmp / "digits", args.repeats, [])))
        if (cifar / "batches.meta").exists():
            rows.append(
                (
                    "phases 00+01, CIFAR-10",
                    pipeline(tmp / "cifar", args.repeats, ["dataset=cifar10", f"data_dir={cifar}"]),
                )
            )
        costs = fixed_costs(tmp / "digits")  # read before the runs' folder goes
    base = statistics.median(rows[0][1])
    print(f"{'what':<34}{'median s':>10}{'min s':>8}{'x kernel start-up':>19}")
    for name, times in rows:
        med = statistics.median(times)
        print(f"{name:<34}{med:>10.2f}{min(times):>8.2f}{med / base:>19.2f}")
    print(f"kernel start-up per phase: {base:.2f} s; 2 phases pay {2 * base:.2f} s of it")
    print(f"per-phase fixed cost (wall - in-kernel), digits runs: median {statistics.median(costs):.2f} s")
    bare = statistics.median(imports["python -c pass"])
    torch_s = statistics.median(imports["import torch"]) - bare
    for name, times in imports.items():
        med = statistics.median(times) - bare
        print(f"first import {name:<26} {med:6.2f} s beyond a bare interpreter ({med / torch_s:.2f}x import torch)")


if __name__ == "__main__":
    figures.run(main)
