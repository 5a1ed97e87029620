"""Confidence calibration on CIFAR-10 ResNet-8: ECE before/after temperature scaling, FP32 and INT8.

    python benchmarks/bench_calibration.py [--cifar-dir DIR] [--h5 FILE] [--run RUN_DIR]

Runs the pipeline through phase 06 on CIFAR-10 with the MLPerf Tiny pretrained ResNet-8
(params/cifar10.yaml, model_source=keras_h5; val is half of the test split, since the model was
trained on every training image) into a temporary runs root -- or reads an existing
run with --run -- then prints, for FP32 and every INT8 variant: test ECE (15 bins) before and after
with bootstrap 95% CIs, the relative reduction, T, and the temperature fit time (median of 5 fits
on the val logits, timed here side by side). Targets: ECE after <= 1.0% and a reduction >= 75% for
FP32 and the best INT8 model.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from helpers.confidence.temperature_scaling import fit_temperature
from helpers.run.runner import run

ROOT = Path(__file__).resolve().parents[1]


def val_logits(run_dir: Path) -> dict[str, np.ndarray]:
    out = {"fp32": np.load(run_dir / "results/02_train/logits.npz")["val"]}
    with np.load(run_dir / "results/04_quantize/int8_logits.npz") as f:
        out.update({name[:-4]: f[name] for name in f.files if name.endswith("_val")})
    return out


def fit_seconds(logits: np.ndarray, labels: np.ndarray, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit_temperature(logits, labels)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-dir", default=str(ROOT / ".cache" / "cifar-10-batches-py"))
    parser.add_argument("--h5", default=str(ROOT.parent / "shared" / "models" / "mlperf_tiny_resnet8_pretrained.h5"))
    parser.add_argument("--run", help="an existing CIFAR-10 run directory with phases 02-06")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run) if args.run else run(
            [str(ROOT / "params" / "cifar10.yaml")],
            [f"data_dir={args.cifar_dir}", "model_source=keras_h5", f"h5_path={args.h5}",
             "val_source=test", "val_fraction=0.5"],  # the pretrained model saw every training image
            phases="06", root=tmp, progress=False)
        metrics = json.loads((run_dir / "results/06_confidence/calibration_metrics.json").read_text())
        from helpers import data

        ds = data.load_dataset("cifar10", args.cifar_dir)
        splits = data.load_splits(run_dir / "results/01_data/splits.npz", ds)
        labels = data.split_data(ds, splits, "val")[1]
        logits = val_logits(run_dir)
        print(f"{'model':<12}{'acc':>7}{'ECE pre % [95% CI]':>24}{'ECE post % [95% CI]':>24}{'reduction':>11}"
              f"{'T':>7}{'fit s':>8}")
        for model, m in metrics.items():
            pre, post = m["pre_calibration"], m["post_calibration"]
            params = json.loads((run_dir / f"results/06_confidence/{model}/scaling_params.json").read_text())
            ci = lambda d: f"{100 * d['ece']:.2f} [{100 * d['ece_ci95'][0]:.2f}, {100 * d['ece_ci95'][1]:.2f}]"
            print(f"{model:<12}{post['accuracy']:>7.4f}{ci(pre):>24}{ci(post):>24}"
                  f"{1 - post['ece'] / pre['ece']:>10.1%}{params['temperature']:>7.3f}"
                  f"{fit_seconds(logits[model], labels):>8.3f}")


if __name__ == "__main__":
    main()
