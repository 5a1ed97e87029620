"""onnxruntime vs OpenVINO on the same .onnx files: accuracy first, then throughput, in one run.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_runtime.py [--models digits resnet8] [--threads 2]
        [--batches 1 8 32 256] [--rounds 7] [--calls 10] [--json OUT]

(``CALIB_SHARED_DIR`` / ``CALIB_TEST_CACHE`` point at ../shared and the .cache folder from a worktree.)

Models: the digits CNN and its INT8 minmax model from the committed reference run
(``runs/reference/results/02_train``, ``04_quantize``), test split from its ``splits.npz``; the MLPerf
Tiny ResNet-8 (``../shared/models/mlperf_tiny_resnet8_pretrained.h5`` through the project's keras import),
exported to ONNX and quantized U8S8 QDQ minmax on phase 01's default slice (100 training images per
class, seed 0), evaluated on the 10,000 JPEG CIFAR-10 test images (``.cache/cifar-10-batches-py``,
built from ../shared when missing).

1. Accuracy: every runtime x precision (fp32, bf16 where this CPU has it, int8) on the test split,
   with agreement and max |logit diff| vs onnxruntime on the same file (bf16: vs onnxruntime FP32, with the
   bf16 parity tolerance) and both gates of ``helpers.runtime.checks`` (a runtime > 0.3 points below
   onnxruntime's accuracy fails).
2. Throughput: per batch size, paired A/B rounds -- every session timed in turn within a round, so a
   load change hits all of them alike -- ``--rounds`` rounds of ``--calls`` calls; medians; images/s
   and the ratio to onnxruntime FP32. The load average is printed before and after.
3. Peaks: FP32, bf16 and INT8 GEMM FLOP/s measured through the runtimes (``helpers.runtime.peak``);
   each row's model FLOP/s as a fraction of its precision's peak.
4. Layer by layer: OpenVINO's own profiler (PERF_COUNT) on the INT8 model at batch 32: per layer kernel,
   precision, median and minimum time over 10 calls (the minimum: the layer with the cores to itself on a
   shared machine), share of the call and fraction of the INT8 peak at the minimum.

Targets (ResNet-8, batch 32, ``--threads`` 2): best INT8 >= 4x onnxruntime FP32 and >= 2x the best
FP32; INT8 accuracy drop vs FP32 <= 0.3 points with the chosen runtime. The summary puts bf16 beside them and
says what a bundle built here would offer: per precision the runtimes that passed the gates, the default by
phase 05's rule (``helpers.runtime.decision``: another runtime replaces onnxruntime only when > 10 % faster,
on the paired medians at that batch), whether bf16 is offered (or why not), and the fastest precision offered.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import numpy as np
import pandas as pd

from helpers import runtime as rt
from helpers.data import load_dataset, load_splits, make_splits, split_data
from helpers.runtime import decision, peak

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CALIB_SHARED_DIR", ROOT.parent / "shared"))
CIFAR_DIR = Path(os.environ.get("CALIB_TEST_CACHE", ROOT / ".cache")) / "cifar-10-batches-py"
H5 = SHARED / "models" / "mlperf_tiny_resnet8_pretrained.h5"
REFERENCE = ROOT / "runs" / "reference" / "results"
TARGET_OVER_ORT_FP32, TARGET_OVER_BEST_FP32, TARGET_DROP_POINTS = 4.0, 2.0, 0.3


def load_digits():
    ds = load_dataset("digits")
    images, labels = split_data(ds, load_splits(REFERENCE / "01_data" / "splits.npz", ds), "test")
    return (
        {"fp32": REFERENCE / "02_train" / "model.onnx", "int8": REFERENCE / "04_quantize" / "model_int8_minmax.onnx"},
        images,
        labels,
    )


def load_resnet8(work: Path):
    from helpers.models.keras_import import import_resnet8
    from helpers.models.onnx_export import export_onnx
    from helpers.quantize import ort as q

    if not (CIFAR_DIR / "batches.meta").exists():
        subprocess.run(
            [sys.executable, str(SHARED / "data" / "make_cifar10_batches.py"), "--out", str(CIFAR_DIR)], check=True
        )
    ds = load_dataset("cifar10", CIFAR_DIR)
    splits = make_splits(ds, val_fraction=0.1, samples_per_class=100, seed=0)
    model, _ = import_resnet8(H5)
    fp32 = export_onnx(model, work / "resnet8.onnx", (32, 32, 3))
    prepared = q.prepare_model(fp32, work / "resnet8_prepared.onnx")
    stats = q.collect_calibration_statistics(prepared, ds.train_images[splits["calibration"]])
    q.quantize_model(prepared, work / "resnet8_int8.onnx", stats, "minmax")
    return {"fp32": fp32, "int8": work / "resnet8_int8.onnx"}, ds.test_images, ds.test_labels


def configurations() -> list[tuple[str, str]]:
    """(runtime, precision) pairs this machine runs, onnxruntime FP32 first."""
    return [(r, p) for p in ("fp32", "bf16", "int8") for r in rt.RUNTIMES if rt.support(r, p)[0]]


def model_file(paths: dict, precision: str) -> Path:
    return paths["int8"] if precision == "int8" else paths["fp32"]


def accuracy_table(paths: dict, images: np.ndarray, labels: np.ndarray, threads: int) -> pd.DataFrame:
    rows = []
    fp32 = rt.open_session(paths["fp32"], "onnxruntime", threads=threads, batch_size=250).logits(images)
    for precision in ("fp32", "bf16", "int8"):
        logits = {
            r: rt.open_session(
                model_file(paths, precision), r, precision=precision, threads=threads, batch_size=250
            ).logits(images)
            for r, p in configurations()
            if p == precision
        }
        if not logits:  # bf16 without native bf16
            continue
        against = fp32 if precision == "bf16" else None  # bf16: against onnxruntime FP32 on the same float file
        for runtime, row in rt.compare_runtimes(labels, logits, precision, against=against).items():
            rows.append(
                {
                    "runtime": runtime,
                    "precision": precision,
                    **{
                        k: row[k]
                        for k in (
                            "accuracy",
                            "agreement",
                            "max_abs_logit_diff",
                            "accuracy_drop_points",
                            "passed",
                            "parity",
                        )
                    },
                }
            )
    table = pd.DataFrame(rows)
    table["drop_vs_ort_fp32_points"] = 100 * (float(np.mean(fp32.argmax(1) == labels)) - table["accuracy"])
    return table


def throughput_table(
    paths: dict,
    shape: tuple,
    batches: list[int],
    threads: int,
    rounds: int,
    calls: int,
    flops_per_image: dict[str, float],
    peaks: dict,
) -> pd.DataFrame:
    rows = []
    for batch in batches:
        x = rt.random_batch((batch, *shape))
        sessions = {
            (r, p): rt.open_session(model_file(paths, p), r, precision=p, threads=threads, batch_size=batch)
            for r, p in configurations()
        }
        seconds = rt.paired_timings({k: functools.partial(s.run, x) for k, s in sessions.items()}, rounds, calls)
        base = np.median(seconds[("onnxruntime", "fp32")])
        for (runtime, precision), values in seconds.items():
            median = float(np.median(values))
            fps = batch / median
            rows.append(
                {
                    "batch": batch,
                    "runtime": runtime,
                    "precision": precision,
                    "ms_per_call": 1e3 * median,
                    "images_per_s": fps,
                    "x_ort_fp32": base / median,
                    "fraction_of_peak": fps * flops_per_image[precision] / peaks[precision]["flops_per_s"],
                }
            )
    return pd.DataFrame(rows)


def layer_table(path: Path, shape: tuple, threads: int, int8_peak: float) -> pd.DataFrame:
    session = rt.open_session(path, "openvino", precision="int8", threads=threads, batch_size=32)
    profiler = session.profiler(rt.random_batch((32, *shape)))
    samples = []
    for _ in range(10):
        profiler.call()
        samples.append(profiler.last_ms())
    ms, fastest = np.median(np.array(samples), axis=0), np.min(np.array(samples), axis=0)
    rows = [
        {
            "layer": w.name[:40],
            "type": w.layer_type,
            "kernel": w.kernel,
            "out": w.precision,
            "ms": t,
            "min_ms": m,
            "share": t / ms.sum(),
            "MFLOP": w.flops / 1e6,
            "fraction_of_int8_peak_at_min": (w.flops / (m / 1e3) / int8_peak) if m > 0 else 0.0,
        }
        for w, t, m in zip(profiler.work, ms, fastest)
    ]
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits", "resnet8"], choices=["digits", "resnet8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 256])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    print(
        f"load average before: {os.getloadavg()}; threads {args.threads}; "
        f"configurations {['/'.join(c) for c in configurations()]}"
    )
    peaks = peak.measured_peaks(args.threads)
    print(
        f"measured GEMM peaks (best of 20 at n = {', '.join(map(str, peak.SIZES))}):",
        {p: f"{v['flops_per_s'] / 1e9:.1f} G/s ({v['by']}, n = {v['n']})" for p, v in peaks.items()},
    )
    out = {"peaks": peaks, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        for name in args.models:
            paths, images, labels = load_digits() if name == "digits" else load_resnet8(Path(tmp))
            shape = images.shape[1:]
            accuracy = accuracy_table(paths, images, labels, args.threads)
            table = accuracy.drop(columns="parity").round(4).to_string(index=False)
            print(f"\n== {name}: accuracy on {len(images)} test images\n{table}")
            for row in accuracy.query("precision == 'bf16'").itertuples():
                print(f"{row.runtime} bf16 parity: {row.parity}")
            flops = {
                p: sum(
                    w.flops
                    for w in rt.open_session(model_file(paths, p), "openvino", precision=p, threads=args.threads)
                    .profiler(rt.random_batch((1, *shape)))
                    .work
                )
                for p in ("fp32", "int8")
            }
            flops["bf16"] = flops["fp32"]
            table = throughput_table(paths, shape, args.batches, args.threads, args.rounds, args.calls, flops, peaks)
            print(
                f"\n== {name}: throughput ({args.rounds} paired rounds x {args.calls} calls, medians; "
                f"{flops['fp32'] / 1e6:.2f} MFLOP/image)\n{table.round(3).to_string(index=False)}"
            )
            summary = summarize(name, accuracy, table)
            print(json.dumps(summary, indent=1))
            layers = layer_table(paths["int8"], shape, args.threads, peaks["int8"]["flops_per_s"])
            print(
                f"\n== {name}: OpenVINO INT8 layer by layer, batch 32 (PERF_COUNT, 10 calls)\n"
                f"{layers.round(3).to_string(index=False)}"
            )
            out["models"][name] = {
                "accuracy": accuracy.to_dict("records"),
                "throughput": table.to_dict("records"),
                "summary": summary,
                "layers": layers.to_dict("records"),
            }
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


def summarize(name: str, accuracy: pd.DataFrame, table: pd.DataFrame) -> dict:
    """The targets at batch 32: best INT8 (among runtimes passing the accuracy gate) vs ORT FP32 and best FP32;
    bf16 beside them; what a bundle built here would offer and default to (phase 05's rule)."""
    passed = accuracy.query("precision == 'int8' and passed")["runtime"].tolist()
    batch = 32 if (table["batch"] == 32).any() else table["batch"].max()
    at32 = table[table["batch"] == batch]
    int8 = at32[(at32["precision"] == "int8") & at32["runtime"].isin(passed)].sort_values("images_per_s").iloc[-1]
    fp32 = at32[at32["precision"] == "fp32"].sort_values("images_per_s").iloc[-1]
    drop = accuracy.query("precision == 'int8' and runtime == @int8.runtime")["drop_vs_ort_fp32_points"].iloc[0]
    return {
        "model": name,
        "batch": int(at32["batch"].iloc[0]),
        "int8_runtime": int8["runtime"],
        "int8_x_ort_fp32": float(int8["x_ort_fp32"]),
        "int8_x_best_fp32": float(int8["images_per_s"] / fp32["images_per_s"]),
        "best_fp32_runtime": fp32["runtime"],
        "int8_accuracy_drop_points": float(drop),
        "int8_fraction_of_peak": float(int8["fraction_of_peak"]),
        "bf16": bf16_summary(accuracy, at32, fp32),
        "bundle": bundle_choice(accuracy, at32),
        "targets": {
            f">= {TARGET_OVER_ORT_FP32}x ort fp32": bool(int8["x_ort_fp32"] >= TARGET_OVER_ORT_FP32),
            f">= {TARGET_OVER_BEST_FP32}x best fp32": bool(
                int8["images_per_s"] / fp32["images_per_s"] >= TARGET_OVER_BEST_FP32
            ),
            f"drop <= {TARGET_DROP_POINTS} points": bool(drop <= TARGET_DROP_POINTS),
        },
        "int8_rejected_by_accuracy_gate": accuracy.query("precision == 'int8' and not passed")["runtime"].tolist(),
    }


def bf16_summary(accuracy: pd.DataFrame, at_batch: pd.DataFrame, best_fp32: pd.Series) -> dict:
    """bf16 (OpenVINO's bf16 hint) at the summary's batch, or why it did not run here."""
    row = accuracy.query("precision == 'bf16'")
    if row.empty:
        return {"ran": False, "why": rt.support("openvino", "bf16")[1]}
    speed = at_batch[at_batch["precision"] == "bf16"].iloc[0]
    return {
        "ran": True,
        "x_ort_fp32": float(speed["x_ort_fp32"]),
        "x_best_fp32": float(speed["images_per_s"] / best_fp32["images_per_s"]),
        "accuracy_drop_points": float(row["drop_vs_ort_fp32_points"].iloc[0]),
        "max_abs_logit_diff_vs_fp32": float(row["max_abs_logit_diff"].iloc[0]),
        "passed_gates": bool(row["passed"].iloc[0]),
    }


def bundle_choice(accuracy: pd.DataFrame, at_batch: pd.DataFrame) -> dict:
    """What phase 05 would decide and a bundle offer here: per precision the runtimes that passed, the default by
    the decision's rule on these paired medians, and the fastest precision offered (images/s of its default)."""
    offered, defaults, speed = {}, {}, {}
    for precision in ("fp32", "bf16", "int8"):
        runtimes = accuracy.query("precision == @precision and passed")["runtime"].tolist()
        if not runtimes:
            continue
        rows = at_batch[at_batch["precision"] == precision].set_index("runtime")
        offered[precision] = runtimes
        defaults[precision] = decision.fastest({r: np.array([rows.loc[r, "ms_per_call"]]) for r in runtimes}, runtimes)
        speed[precision] = float(rows.loc[defaults[precision], "images_per_s"])
    return {
        "offered": offered,
        "defaults": defaults,
        "bf16_offered": "bf16" in offered,
        "fastest_precision": max(speed, key=speed.get),
        "images_per_s": speed,
    }


if __name__ == "__main__":
    figures.run(main)
