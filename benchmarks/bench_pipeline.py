"""Pipeline overheads: kernel start-up per phase, and wall time of phases 00+01 (digits, CIFAR-10).

    python benchmarks/bench_pipeline.py [--cifar-dir DIR] [--repeats 3]

Kernel start-up is measured as a papermill execution of a one-cell notebook (start kernel, run
`pass`, shut down) -- the fixed cost every phase pays -- side by side with the same phases run
through `calib run`, so the ratio shows how much of a phase is infrastructure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

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
        rows.append(("phases 00+01, digits", pipeline(tmp / "digits", args.repeats, [])))
        if (cifar / "batches.meta").exists():
            rows.append(
                (
                    "phases 00+01, CIFAR-10",
                    pipeline(tmp / "cifar", args.repeats, ["dataset=cifar10", f"data_dir={cifar}"]),
                )
            )
    base = statistics.median(rows[0][1])
    print(f"{'what':<34}{'median s':>10}{'min s':>8}{'x kernel start-up':>19}")
    for name, times in rows:
        med = statistics.median(times)
        print(f"{name:<34}{med:>10.2f}{min(times):>8.2f}{med / base:>19.2f}")
    print(f"kernel start-up per phase: {base:.2f} s; 2 phases pay {2 * base:.2f} s of it")


if __name__ == "__main__":
    main()
