"""Static INT8 vs FP32 on CIFAR-10 ResNet-8: accuracy, size, calibration time and latency, in one run.

    TQDM_DISABLE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_quantization.py \\
        [--checkpoint CKPT] [--threads 1 2] [--batches 1 32 256] [--reps 30] [--rounds 3] [--skip-torch] [--json OUT]

Model: the MLPerf Tiny pretrained ResNet-8 (../shared/models/mlperf_tiny_resnet8_pretrained.h5,
imported by helpers.models.keras_import; trained on raw 0-255 inputs, so it has *no* internal 1/255
scaling), or ``--checkpoint``: a helpers.models.training checkpoint of ``build_model("resnet8", 10)``.
Data: .cache/cifar-10-batches-py (built from ../shared when missing); the calibration slice is
phase 01's default (100 images per class from the train split, seed 0), accuracy is on the
10,000 test images, sensitivity and the fallback use the val split.

Accuracy part (this process): FP32, ORT U8S8 QDQ x {minmax, entropy, percentile}, ORT S8S8
minmax, PT2E X86Inductor with the weight-eps floor lowered and at torchao's default (the model has
no internal scaling, so the default floor clamps the first conv), the /255 calibration ablation,
the calibration-size sweep, per-layer sensitivity and the accuracy-aware fallback.

Latency part: every model in a FRESH process per thread count (several sessions in one process
inflate latencies), batch 1, 32 and 256, ``--reps`` calls after warm-up; ``--rounds`` such
processes per model, models alternating within a round so load from other jobs hits FP32 and
INT8 alike; medians over all samples. With one thread the median process CPU time per call is
printed too: on a shared CPU it leaves out the time other processes held the core. Targets: ORT INT8/FP32 latency <= 0.5 at batch 32; accuracy
drop of the default variant (ort_minmax) <= 0.3 points.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import numpy as np
import pandas as pd
import torch

from helpers.data.datasets import load_dataset, make_splits, preprocess
from helpers.models.onnx_export import export_onnx, onnx_logits, onnx_session
from helpers.quantize import ort as q
from helpers.quantize import pt2e as qt
from helpers.run import atomic

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIFAR_DIR = ROOT / ".cache" / "cifar-10-batches-py"
H5 = SHARED / "models" / "mlperf_tiny_resnet8_pretrained.h5"
SHAPE = (32, 32, 3)
DEFAULT_VARIANT = "ort_minmax"
LATENCY_TARGET, ACCURACY_TARGET_POINTS = 0.5, 0.3


# ---------------------------------------------------------------------------- inputs


def load_cifar():
    if not (CIFAR_DIR / "batches.meta").exists():
        subprocess.run(
            [sys.executable, str(SHARED / "data" / "make_cifar10_batches.py"), "--out", str(CIFAR_DIR)], check=True
        )
    ds = load_dataset("cifar10", CIFAR_DIR)
    return ds, make_splits(ds, val_fraction=0.1, samples_per_class=100, seed=0)


def load_model(checkpoint: str | None):
    if checkpoint:
        from helpers.models.architectures import build_model
        from helpers.models.training import load_checkpoint

        return load_checkpoint(build_model("resnet8", 10), checkpoint), f"resnet8 checkpoint {checkpoint}"
    from helpers.models.keras_import import import_resnet8

    model, info = import_resnet8(H5)
    return model, f"MLPerf Tiny ResNet-8 ({H5.name}, input_scale {info['input_scale']})"


# ---------------------------------------------------------------------------- accuracy


def accuracy_part(model, ds, splits, work: Path, skip_torch: bool) -> tuple[dict, dict, dict[str, Path]]:
    calib = ds.train_images[splits["calibration"]]
    val_images, val_labels = ds.train_images[splits["val"]], ds.train_labels[splits["val"]]
    test_images, test_labels = ds.test_images, ds.test_labels
    fp32 = export_onnx(model, work / "fp32.onnx", SHAPE)
    prepared = q.prepare_model(fp32, work / "prepared.onnx")
    stats = q.collect_calibration_statistics(prepared, calib)
    fp32_logits = onnx_logits(prepared, test_images)
    variants, timings, paths = {}, {}, {"ort_fp32": fp32}
    for method in q.METHODS:
        name = f"ort_{method}"
        info = q.quantize_model(prepared, work / f"{name}.onnx", stats, method)
        variants[name] = (onnx_logits(work / f"{name}.onnx", test_images), info)
        timings[name] = stats.calibration_seconds(method)
        paths[name] = work / f"{name}.onnx"
    info = q.quantize_model(prepared, work / "ort_minmax_s8s8.onnx", stats, "minmax", activation_type="int8")
    variants["ort_minmax_s8s8"] = (onnx_logits(work / "ort_minmax_s8s8.onnx", test_images), info)
    paths["ort_minmax_s8s8"] = work / "ort_minmax_s8s8.onnx"
    if not skip_torch:
        for name, eps in (("pt2e_x86", qt.LOWERED_WEIGHT_EPS), ("pt2e_x86_default_eps", qt.DEFAULT_WEIGHT_EPS)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = qt.quantize_pt2e(model, calib, weight_eps=eps)
            runner = qt.compile_int8(result.module, test_images[:256])
            floor = [str(w.message)[:160] for w in caught if "observer floor" in str(w.message)]
            variants[name] = (
                qt.predict_logits(runner, test_images),
                {**result.describe(), **runner.describe(), "warnings": floor},
            )
            timings[name] = result.calibration_seconds
            paths[name] = qt.save_converted(result.module, work / f"{name}.pt2", calib[:8])
        program = torch.export.export(
            model.eval(), (torch.from_numpy(preprocess(calib[:8])),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
        )
        paths["torch_fp32"] = atomic.save_with(work / "torch_fp32.pt2", lambda p: torch.export.save(program, str(p)))

    sensitivity = q.layer_sensitivity(prepared, stats, val_images, val_labels)
    fallback = q.quantize_within_tolerance(
        prepared,
        work / "fallback.onnx",
        stats,
        val_images,
        val_labels,
        max_accuracy_drop=0.003,
        sensitivity=sensitivity,
    )
    sweep = q.calibration_size_sweep(
        prepared,
        ds.train_images[splits["calibration"]],
        ds.train_labels[splits["calibration"]],
        (10, 50, 100),
        test_images,
        test_labels,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guard's warn-only finding is part of the result
        ablation = q.wrong_preprocessing_ablation(prepared, calib, test_images, test_labels, stats=stats)
    report = q.build_quant_report(
        test_labels,
        fp32_logits,
        fp32.stat().st_size,
        variants,
        DEFAULT_VARIANT,
        calibration=stats.describe(),
        sensitivity=sensitivity,
        fallback=fallback,
        size_sweep=sweep,
        ablation=ablation,
    )
    return report, timings, paths


def print_accuracy(report: dict, timings: dict) -> None:
    pd.set_option("display.width", 200, "display.max_columns", 20)
    table = q.report_table(report, timings)
    table["accuracy_ci95"] = [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in table["accuracy_ci95"]]
    print("\n== accuracy on the 10,000 CIFAR-10 test images (FP32 = ONNX Runtime FP32) ==")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    for name in ("pt2e_x86", "pt2e_x86_default_eps"):
        if name in report["variants"]:
            row = report["variants"][name]
            print(
                f"{name}: weight_eps {row['weight_eps']:.3g}, clamped channels {row['clamped_weight_channels']}, "
                f"backend {row['backend']}, kernels {row['int8_kernels']}, fallback: {row['fallback_reason']}"
            )
    print("\n== per-layer sensitivity (val split, one weighted layer in INT8 at a time) ==")
    print(pd.DataFrame(report["sensitivity"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    fb = report["fallback"]
    print(
        f"accuracy-aware fallback (val, max drop {fb['max_accuracy_drop']}): FP32 layers {fb['nodes_excluded']} -> "
        f"accuracy {fb['accuracy']:.4f} vs FP32 {fb['fp32_accuracy']:.4f}, within tolerance {fb['within_tolerance']}"
    )
    print("\n== calibration-set size sweep (minmax, test accuracy) ==")
    print(pd.DataFrame(report["size_sweep"]).to_string(index=False))
    ab = report["ablation"]
    print(
        f"\n== /255 calibration ablation ({ab['method']}) ==\ncorrect calibration {ab['correct']['accuracy']:.4f} | "
        f"calibrated on pixels/255 {ab['divided_by_255']['accuracy']:.4f} | guard: {ab['guard_finding']['diagnosis']}"
    )
    drop = 100 * report["variants"][DEFAULT_VARIANT]["accuracy_drop"]
    verdict = "met" if drop <= ACCURACY_TARGET_POINTS else "MISSED"
    print(f"target: {DEFAULT_VARIANT} accuracy drop {drop:+.2f} points (<= {ACCURACY_TARGET_POINTS}: {verdict})")


# ---------------------------------------------------------------------------- latency (fresh processes)


def make_runner(kind: str, path: str, threads: int, example: np.ndarray):
    torch.set_num_threads(threads)
    if kind == "onnx":
        session = onnx_session(path, threads)
        return lambda x: session.run(None, {"images": x})
    module = qt.load_converted(path)
    if kind == "pt2e":
        runner = qt.compile_int8(module, example.astype(np.uint8))
        return lambda x: runner(torch.from_numpy(x))
    compiled = torch.compile(module, dynamic=False)

    def run_fp32(x):
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            return compiled(torch.from_numpy(x))

    return run_fp32


def measure_child(kind: str, path: str, threads: int, batches: list[int], reps: int) -> None:
    """Runs in a fresh process: one model, one thread count, every batch size; prints the samples as JSON."""
    rng = np.random.default_rng(0)
    images = {b: rng.integers(0, 256, size=(b, *SHAPE), dtype=np.uint8) for b in batches}
    run = make_runner(kind, path, threads, images[batches[0]])
    samples = {}
    for batch in batches:
        x = preprocess(images[batch])
        for _ in range(5):  # warm-up (and, for torch, compilation of this batch size)
            run(x)
        wall, cpu = [], []
        for _ in range(reps):
            start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
            run(x)
            cpu.append((time.process_time_ns() - start_cpu) / 1e6)
            wall.append((time.perf_counter_ns() - start) / 1e6)
        samples[batch] = {"wall_ms": wall, "cpu_ms": cpu}
    print("RESULT " + json.dumps(samples))


def measure_fresh(kind: str, path: Path, threads: int, batches: list[int], reps: int) -> dict[int, dict]:
    command = [
        sys.executable,
        __file__,
        "--no-figures",  # a measuring child: the parent records the figures
        "--child",
        kind,
        str(path),
        "--threads",
        str(threads),
        "--reps",
        str(reps),
        "--batches",
        *map(str, batches),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"latency child {kind} {path.name} ({threads} threads) failed:\n{done.stderr[-3000:]}")
    return {int(batch): value for batch, value in json.loads(lines[-1][len("RESULT ") :]).items()}


LATENCY_MODELS = (
    ("ort_fp32", "onnx", "ort_fp32"),
    ("ort_int8_u8s8", "onnx", "ort_minmax"),
    ("ort_int8_s8s8", "onnx", "ort_minmax_s8s8"),
    ("torch_fp32_inductor", "torch", "torch_fp32"),
    ("pt2e_int8_inductor", "pt2e", "pt2e_x86"),
)
BASELINE = {"onnx": "ort_fp32", "torch": "torch_fp32_inductor", "pt2e": "torch_fp32_inductor"}


def latency_part(
    paths: dict[str, Path], threads: list[int], batches: list[int], reps: int, rounds: int
) -> pd.DataFrame:
    """Every model x thread count in ``rounds`` fresh processes, models alternating within a round,
    so that load from other jobs falls on FP32 and INT8 alike; medians over all rounds' samples."""
    models = [(label, kind, key) for label, kind, key in LATENCY_MODELS if key in paths]
    samples = {}
    for round_ in range(rounds):
        for label, kind, key in models:
            for t in threads:
                print(f"  round {round_ + 1}/{rounds}: {label}, {t} thread(s), fresh process ...", flush=True)
                for batch, s in measure_fresh(kind, paths[key], t, batches, reps).items():
                    cell = samples.setdefault((label, kind, t, batch), {"wall_ms": [], "cpu_ms": []})
                    cell["wall_ms"] += s["wall_ms"]
                    cell["cpu_ms"] += s["cpu_ms"]
    table = pd.DataFrame(
        [
            {
                "model": label,
                "kind": kind,
                "threads": t,
                "batch": batch,
                "median_ms": statistics.median(s["wall_ms"]),
                "cpu_median_ms": statistics.median(s["cpu_ms"]) if t == 1 else float("nan"),
            }
            for (label, kind, t, batch), s in samples.items()
        ]
    )
    indexed = table.set_index(["model", "threads", "batch"])
    for column, ratio in (("median_ms", "ratio_vs_fp32"), ("cpu_median_ms", "cpu_ratio_vs_fp32")):
        table[ratio] = [
            getattr(row, column) / indexed.loc[(BASELINE[row.kind], row.threads, row.batch), column]
            for row in table.itertuples()
        ]
    table["ms_per_image"] = table["median_ms"] / table["batch"]
    return table.drop(columns="kind")


def print_latency(table: pd.DataFrame) -> None:
    print(
        "\n== latency: median wall ms per call (fresh process per model x threads x round; CPU shared with "
        "other jobs);\n   cpu_median_ms = process CPU time per call, 1 thread only (excludes time other jobs held "
        "the core) =="
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ratios = table[(table.model == "ort_int8_u8s8") & (table.batch == 32)]
    for row in ratios.itertuples():
        verdict = "met" if row.ratio_vs_fp32 <= LATENCY_TARGET else "MISSED"
        cpu = f", CPU-time ratio {row.cpu_ratio_vs_fp32:.2f}" if row.threads == 1 else ""
        print(
            f"target: ORT INT8/FP32 wall latency at batch 32, {row.threads} thread(s): {row.ratio_vs_fp32:.2f} "
            f"(<= {LATENCY_TARGET}: {verdict}){cpu}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="resnet8 checkpoint instead of the MLPerf model")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--reps", type=int, default=30, help="timed calls per batch size, per process")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per model x thread count")
    parser.add_argument("--skip-torch", action="store_true", help="ONNX Runtime only (no PT2E, no torch.compile)")
    parser.add_argument("--json", default=None, help="also write every number (timings included) here")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure_child(args.child[0], args.child[1], args.threads[0], args.batches, args.reps)

    ds, splits = load_cifar()
    model, description = load_model(args.checkpoint)
    print(f"model: {description}; calibration slice {len(splits['calibration'])} images; CPU shared with other jobs")
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        start = time.perf_counter()
        report, timings, paths = accuracy_part(model, ds, splits, Path(tmp), args.skip_torch)
        print(f"(accuracy part took {time.perf_counter() - start:.0f} s)")
        print_accuracy(report, timings)
        latency = latency_part(paths, args.threads, args.batches, args.reps, args.rounds)
    print_latency(latency)
    if args.json:
        atomic.write_json(
            args.json,
            {
                "model": description,
                "report": report,
                "calibration_seconds": timings,
                "latency": latency.astype(object).where(latency.notna(), None).to_dict(orient="records"),
            },
        )


if __name__ == "__main__":
    figures.run(main)
