"""Sweeps on Dask: throughput with 1 vs 2 workers, and what the cross-run phase cache saves.

    python benchmarks/bench_sweep.py [--members 4] [--methods minmax,entropy,percentile] [--epochs 2]

1. Throughput: the same sweep (``--members`` seeds of phase 01 on digits, single-threaded work,
   no shared phase) on a LocalCluster of 1 and of 2 workers, side by side; wall time of the
   execution (LocalCluster start-up included) and the speed-up (goal on 2 idle cores: >= 1.8x).
2. Cache: an N-method quantization sweep (grid ``04_quantize.calibration_methods``, phases 01, 02,
   04; one worker so phases run one after the other) -- its wall time, the cache hits, and the
   measured phase durations: one 01 + one 02 + N x 04 is what it should cost; N x (01 + 02 + 04)
   is what the same members cost without the cache (the sum of this run's measured durations,
   not a second sweep).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import yaml

from helpers.sweep import driver


def sweep(tmp: Path, name: str, doc: dict, overrides: list[str], phases: str, workers: int) -> tuple[float, dict, Path]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **doc}))
    root = tmp / name
    directory, created = driver.create(
        str(path), [], overrides, phases, root, {"cell_timeout": 3600, "retries": 2}, log=lambda *_: None
    )
    start = time.perf_counter()
    done = driver.execute(directory, created, None, workers, progress=False, log=lambda *_: None)
    return time.perf_counter() - start, done, root


def phase_rows(root: Path, doc: dict) -> list[dict]:
    return [json.loads((root / m["run_id"] / "run_record.json").read_text())["phases"] for m in doc["members"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4, help="members of the throughput sweep (seeds)")
    parser.add_argument("--methods", default="minmax,entropy,percentile", help="methods of the cache sweep")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs in the cache sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"1. throughput: {args.members} members (seeds) of phase 01, digits")
        walls = {}
        for workers in (1, 2):
            wall, doc, _ = sweep(tmp, f"w{workers}", {"seeds": list(range(args.members))}, [], "01", workers)
            assert doc["status"] == "complete", doc
            walls[workers] = wall
            print(f"   {workers} worker(s): {wall:7.1f} s  ({args.members / wall * 60:.1f} runs/min)")
        print(f"   speed-up 2 vs 1 workers: {walls[1] / walls[2]:.2f}x (goal >= 1.8x on 2 idle cores)")

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        overrides = [
            f"02_train.epochs={args.epochs}",
            "04_quantize.size_sweep=[]",
            "04_quantize.sensitivity=false",
            "04_quantize.torch_pt2e=false",
        ]
        print(f"\n2. cache: {len(methods)}-method quantization sweep, phases 01,02,04, 1 worker, {args.epochs} epochs")
        wall, doc, root = sweep(
            tmp, "quant", {"grid": {"04_quantize.calibration_methods": [[m] for m in methods]}}, overrides, "04", 1
        )
        assert doc["status"] == "complete", doc
        rows = phase_rows(root, doc)
        hits = sum(1 for r in rows for row in r.values() if row.get("reused_from"))
        ran = {pid: [r[pid]["duration_s"] for r in rows if not r[pid].get("reused_from")] for pid in rows[0]}
        reused = [row["duration_s"] for r in rows for row in r.values() if row.get("reused_from")]
        one = sum(ran["01_data"]) + sum(ran["02_train"]) + sum(ran["04_quantize"])
        per_member = sum(ran["01_data"]) / len(ran["01_data"]) + sum(ran["02_train"]) / len(ran["02_train"])
        without = len(methods) * per_member + sum(ran["04_quantize"])
        print(
            f"   executed: 01 x{len(ran['01_data'])}, 02 x{len(ran['02_train'])}, 04 x{len(ran['04_quantize'])}; "
            f"cache hits: {hits} (materializing took {sum(reused):.2f} s in all)"
        )
        print(
            f"   phase durations: 01 {sum(ran['01_data']):.1f} s, 02 {sum(ran['02_train']):.1f} s, "
            f"04 {' + '.join(f'{t:.1f}' for t in ran['04_quantize'])} s"
        )
        print(
            f"   sweep wall {wall:.1f} s; one training + {len(methods)} quantizations = {one:.1f} s "
            f"(wall / that = {wall / one:.2f}); without the cache: {without:.1f} s "
            f"(saved {1 - one / without:.0%})"
        )


if __name__ == "__main__":
    figures.run(main)
