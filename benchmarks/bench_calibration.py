"""Confidence calibration side by side with netcal (and torch-uncertainty where it imports), and the metrics' speed.

    python benchmarks/bench_calibration.py [--cifar-dir DIR] [--h5 FILE] [--logits FILE] [--no-int8]

MLPerf Tiny pretrained ResNet-8 (the keras h5, imported with helpers.models.keras_import) on the JPEG
CIFAR-10 test set (build it with ``python ../shared/data/make_cifar10_batches.py --out DIR``); INT8 is
its ORT QDQ U8S8 MinMax model (calibrated on 100 training images per class). Every map -- ours and
the peers' -- is fitted on one stratified half of test (seed 0) and evaluated on the other half with
the same estimator (ECE 15 bins, bootstrap CI, debiased ECE, null-band p-value). ``--logits`` caches
the test logits (npz) so a second run skips the model.

Targets: our chosen method's NLL <= the best peer NLL (FP32 and INT8); the calibrated models
indistinguishable from perfect (p >= 0.05) at n = 5000; the 1000-resample bootstrap <= 2x one ECE
call at 10k and <= 5 s at 1M; ECE <= 1.5x torchmetrics; phase 06's work on the CIFAR-10 profile (every
map, selection and measurement for FP32 and three INT8 variants) <= 30 s on 2 cores, with each map's fit
time printed beside netcal's fit of its counterpart.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import numpy as np

from helpers.confidence.calibrate import calibrate, calibrate_models
from helpers.metrics.calibration import calibration_summary, ece_bootstrap_ci, expected_calibration_error, softmax

ROOT = Path(__file__).resolve().parents[1]


def model_logits(cifar_dir: str, h5: str, int8: bool) -> dict[str, np.ndarray]:
    from helpers import data
    from helpers.models.architectures import predict_logits
    from helpers.models.keras_import import import_resnet8

    ds = data.load_dataset("cifar10", cifar_dir)
    model, _ = import_resnet8(h5)
    out = {"labels": ds.test_labels, "fp32": predict_logits(model.eval(), ds.test_images)}
    if int8:
        from helpers.models.onnx_export import export_onnx, onnx_logits
        from helpers.quantize import ort as quantize_ort

        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(model, Path(tmp) / "model.onnx", ds.test_images.shape[1:])
            prepared = quantize_ort.prepare_model(fp32, Path(tmp) / "prepared.onnx")
            calibration = ds.train_images[data.stratified_slice(ds.train_labels, 100, seed=0)]
            stats = quantize_ort.collect_calibration_statistics(prepared, calibration)
            quantize_ort.quantize_model(prepared, Path(tmp) / "int8.onnx", stats, "minmax")
            out["int8"] = onnx_logits(Path(tmp) / "int8.onnx", ds.test_images)
    return out


def peer_maps(val_z: np.ndarray, val_y: np.ndarray) -> dict:
    """name -> function(test logits) -> calibrated log-probabilities, for the peer methods that install."""
    peers = {}
    try:
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from torch_uncertainty.post_processing.calibration import (
            DirichletScaler,
            MatrixScaler,
            TemperatureScaler,
            VectorScaler,
        )

        logging.getLogger().setLevel(logging.ERROR)
        loader = DataLoader(
            TensorDataset(torch.from_numpy(val_z).float(), torch.from_numpy(val_y)), batch_size=len(val_y)
        )
        k = val_z.shape[1]
        for name, scaler in {
            "TS": TemperatureScaler(),
            "vector": VectorScaler(num_classes=k),
            "matrix": MatrixScaler(num_classes=k),
            "Dirichlet (lambda=mu=1e-3)": DirichletScaler(num_classes=k, lambda_reg=1e-3, mu_reg=1e-3),
        }.items():
            scaler.fit(loader, progress=False)
            peers[f"torch-uncertainty {name}"] = lambda z, s=scaler: (
                torch.log_softmax(s(torch.from_numpy(z).float()), 1).double().numpy()
            )
    except ImportError as exc:
        print(f"torch-uncertainty not installed ({exc}); pip install torch-uncertainty (test-only)")
    try:
        from netcal.binning import HistogramBinning, IsotonicRegression
        from netcal.scaling import LogisticCalibration, TemperatureScaling

        probs = softmax(val_z)
        for name, method in {
            "TS": TemperatureScaling(),
            "logistic (matrix)": LogisticCalibration(),
            "histogram binning": HistogramBinning(bins=15),
            "isotonic": IsotonicRegression(),
        }.items():
            method.fit(probs, val_y)
            peers[f"netcal {name}"] = lambda z, m=method: _log_probs(m.transform(softmax(z)))
    except ImportError as exc:
        print(f"netcal not installed ({exc}); pip install netcal (test-only)")
    return peers


def _log_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, None)
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def row(name: str, s: dict) -> str:
    ci = s["ece_ci95"]
    return (
        f"{name:<38}{100 * s['ece']:>6.2f} [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]{100 * s['ece_debiased']:>7.2f}"
        f"{100 * s['null']['p95']:>7.2f}{s['null']['p_value']:>7.3f}{100 * s['mce']:>7.1f}{s['nll']:>8.4f}"
        f"{s['brier']:>8.4f}{100 * s['accuracy']:>7.2f}"
    )


def compare(model: str, logits: np.ndarray, labels: np.ndarray, n_boot: int) -> None:
    from sklearn.model_selection import train_test_split

    val, test = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0)
    start = time.perf_counter()
    ours = calibrate(
        {"val": logits[val], "test": logits[test]},
        {"val": labels[val], "test": labels[test]},
        "all",
        seed=0,
        n_boot=n_boot,
    )
    fit_s = time.perf_counter() - start
    peers = {
        name: calibration_summary(f(logits[test]), labels[test], n_boot=n_boot)
        for name, f in peer_maps(logits[val], labels[val]).items()
    }
    print(
        f"\n{model}: fitted on {len(val)} test images, measured on the other {len(test)} "
        f"(ours: all methods + selection in {fit_s:.1f} s)"
    )
    print(
        f"{'method':<38}{'ECE % [95% CI]':>20}{'dECE':>7}{'null95':>7}{'p':>7}{'MCE':>7}{'NLL':>8}{'Brier':>8}"
        f"{'acc %':>7}"
    )
    print(row("uncalibrated", ours.pre))
    for method, summary in ours.methods.items():
        mark = " *" if method == ours.selection["chosen"] else ""
        print(row(f"ours {ours.fits[method].label()}{mark}"[:38], summary))
    for name, summary in peers.items():
        print(row(name[:38], summary))
    chosen = ours.methods[ours.selection["chosen"]]
    best_peer = min(peers, key=lambda p: peers[p]["nll"]) if peers else None
    print(f"* chosen: {ours.selection['reason']}")
    if best_peer:
        verdict = "MET" if chosen["nll"] <= peers[best_peer]["nll"] else "NOT MET"
        print(
            f"target NLL <= best peer ({best_peer} {peers[best_peer]['nll']:.4f}): ours {chosen['nll']:.4f} {verdict}"
        )
    print(
        f"target p >= 0.05: chosen p = {chosen['null']['p_value']:.3f} "
        f"{'MET' if chosen['null']['indistinguishable'] else 'NOT MET'} -- {chosen['null']['verdict']}"
    )


def fit_times(logits: dict[str, np.ndarray], labels: np.ndarray, n_boot: int) -> None:
    """Each map's fit (its own CV included) beside netcal's counterpart, then phase 06's whole work for four
    models: FP32 and the INT8 model standing for the three ORT variants phase 06 calibrates."""
    from netcal.binning import HistogramBinning, IsotonicRegression
    from netcal.scaling import LogisticCalibration, TemperatureScaling
    from sklearn.model_selection import train_test_split

    from helpers.confidence.base import one_thread
    from helpers.confidence.methods import METHODS, fit_calibration

    val, test = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0)
    z, y = logits["fp32"][val].astype(np.float64), labels[val]
    netcal = {
        "temperature_scaling": TemperatureScaling,
        "matrix_scaling": LogisticCalibration,
        "histogram_binning": lambda: HistogramBinning(bins=15),
        "isotonic": IsotonicRegression,
    }
    print(f"\nfit time per map on {len(val)} val logits (ours on one thread, its lambda CV included; best of 3)")
    print(f"{'map':<30}{'ours s':>9}{'iterations':>12}{'netcal s':>10}{'ours / netcal':>15}")
    for method in METHODS:
        with one_thread():
            ours = best_of(lambda m=method: fit_calibration(m, z, y, seed=0), 3)
            iterations = fit_calibration(method, z, y, seed=0).iterations
        peer = best_of(lambda m=method: netcal[m]().fit(softmax(z), y), 3) if method in netcal else None
        peer_text = f"{peer:>10.3f}{ours / peer:>15.2f}" if peer else f"{'-':>10}{'-':>15}"
        print(f"{method:<30}{ours:>9.3f}{iterations:>12}{peer_text}")
    four = {
        m: {
            split: logits["int8" if m != "fp32" and "int8" in logits else "fp32"][rows]
            for split, rows in (("val", val), ("test", test))
        }
        for m in ("fp32", "minmax", "entropy", "percentile")
    }
    start = time.perf_counter()
    calibrate_models(four, {"val": y, "test": labels[test]}, "all", seed=0, n_boot=n_boot)
    print(
        f"phase 06's work for four models (every map, selection, {n_boot}-resample measurements): "
        f"{time.perf_counter() - start:.1f} s (target <= 30 s)"
    )


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(logits: np.ndarray, labels: np.ndarray) -> None:
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    print("\nspeed (best of 20 at 10k, of 3 at 1M; one process, side by side)")
    print(f"{'n':>9}{'ECE ms':>9}{'torchmetrics ms':>17}{'ratio':>7}{'bootstrap(1000) ms':>20}{'/ ECE':>7}")
    rng = np.random.default_rng(0)
    for n in (10_000, 1_000_000):
        idx = rng.integers(0, len(labels), n)
        z = logits[idx] + rng.normal(0, 0.01, (n, logits.shape[1])).astype(logits.dtype)
        y = labels[idx]
        repeats = 20 if n <= 10_000 else 3
        ece = best_of(lambda z=z, y=y: expected_calibration_error(z, y), repeats)
        zt, yt = torch.from_numpy(z), torch.from_numpy(y)
        k = z.shape[1]
        tm = best_of(
            lambda zt=zt, yt=yt, k=k: multiclass_calibration_error(torch.softmax(zt, 1), yt, k, n_bins=15), repeats
        )
        boot = best_of(lambda z=z, y=y: ece_bootstrap_ci(z, y, n_boot=1000), repeats)
        print(f"{n:>9}{1e3 * ece:>9.2f}{1e3 * tm:>17.2f}{ece / tm:>7.2f}{1e3 * boot:>20.1f}{boot / ece:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-dir", default=str(ROOT / ".cache" / "cifar-10-batches-py"))
    parser.add_argument("--h5", default=str(ROOT.parent / "shared" / "models" / "mlperf_tiny_resnet8_pretrained.h5"))
    parser.add_argument("--logits", help="npz cache of the test logits (written if missing)")
    parser.add_argument("--no-int8", action="store_true", help="FP32 only (skips the ORT quantization)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--speed-only", action="store_true", help="only the metric / bootstrap timings")
    args = parser.parse_args()
    cache = Path(args.logits) if args.logits else None
    if cache and cache.is_file():
        with np.load(cache) as f:
            logits = {k: f[k] for k in f.files}
    else:
        logits = model_logits(args.cifar_dir, args.h5, not args.no_int8)
        if cache:
            np.savez(cache, **logits)  # a benchmark cache outside any run directory
    labels = logits.pop("labels")
    for model in [
        m for m in ("fp32", "int8") if m in logits and not (m == "int8" and args.no_int8) and not args.speed_only
    ]:
        compare(model, logits[model].astype(np.float64), labels, args.n_boot)
    if not args.speed_only:
        fit_times(logits, labels, args.n_boot)
    speed(logits["fp32"].astype(np.float32), labels)


if __name__ == "__main__":
    figures.run(main)
