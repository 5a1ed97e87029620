"""The README's CIFAR-10 + MLPerf Tiny ResNet-8 command (params/cifar10.yaml, model_source=keras_h5), all phases.

CI runs that command on a reduced slice of the real data in ../shared (the first 200 images of
each training batch and the first 1,000 test images, written as a standard cifar-10-batches-py
folder); the full command, exactly as the README gives it, is a slow test.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from cli_runner import calib, only_run
from helpers import data
from helpers.run.graph import PHASES
from helpers.run.project import project_root

ROOT = project_root()
README_DATA_DIR, README_H5 = ".cache/cifar-10-batches-py", "../shared/models/mlperf_tiny_resnet8_pretrained.h5"
# the README's keras_h5 command, argument by argument (test_readme_gives_this_command keeps them equal)
KERAS_H5_COMMAND = [
    "run",
    "--params",
    "params/cifar10.yaml",
    "-p",
    f"data_dir={README_DATA_DIR}",
    "-p",
    "model_source=keras_h5",
    "-p",
    f"h5_path={README_H5}",
    "-p",
    "val_source=test",
    "-p",
    "val_fraction=0.5",
]
SLICE = {"train_per_batch": 200, "test": 1000}


def command(data_dir: Path, h5: Path, *extra: str) -> list[str]:
    """The README command with this machine's data folder and .h5 (the paths are the only change)."""
    args = [a.replace(README_DATA_DIR, str(data_dir)).replace(README_H5, str(h5)) for a in KERAS_H5_COMMAND]
    return [*args, *extra]


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    planar = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))  # NHWC -> 1024 R, G, B
    path.write_bytes(pickle.dumps({"data": planar, "labels": [int(x) for x in labels]}, protocol=2))


@pytest.fixture(scope="module")
def cifar10_slice(cifar10_dir, tmp_path_factory) -> Path:
    """A cifar-10-batches-py folder holding a reduced slice of the real one."""
    ds = data.load_dataset("cifar10", cifar10_dir)
    out = tmp_path_factory.mktemp("cifar10-slice") / "cifar-10-batches-py"
    out.mkdir()
    per_batch, keep = len(ds.train_labels) // 5, SLICE["train_per_batch"]
    for i in range(5):
        rows = slice(i * per_batch, i * per_batch + keep)
        write_batch(out / f"data_batch_{i + 1}", ds.train_images[rows], ds.train_labels[rows])
    write_batch(out / "test_batch", ds.test_images[: SLICE["test"]], ds.test_labels[: SLICE["test"]])
    (out / "batches.meta").write_bytes((cifar10_dir / "batches.meta").read_bytes())
    return out


@pytest.fixture(scope="module")
def keras_run(cifar10_slice, keras_h5, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar-keras")
    calib(
        *command(
            cifar10_slice,
            keras_h5,
            "-p",
            "01_data.samples_per_class=20",
            "--no-progress",
            "--runs-root",
            str(root / "runs"),
            "-p",
            f"store_dir={root / 'store'}",
        ),
        cwd=ROOT,
    )
    return only_run(root / "runs")


def test_readme_gives_this_command():
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    assert re.sub(r"\s+", " ", " ".join(["calib", *KERAS_H5_COMMAND])) in re.sub(r"\s+", " ", readme)


def test_keras_h5_without_val_from_test_is_refused_before_any_kernel(cifar10_slice, keras_h5, tmp_path):
    slice_sized = ("-p", "01_data.samples_per_class=20")  # the slice holds 100 images per class
    args = command(cifar10_slice, keras_h5, *slice_sized, "--no-progress", "--runs-root", str(tmp_path))
    args = args[: args.index("val_source=test") - 1] + args[args.index("val_source=test") + 1 :]
    proc = calib(*args, check=False, cwd=ROOT)
    assert proc.returncode == 2 and "val_source=test" in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # every phase on the imported model over a CIFAR slice: about 7 min of CI on 2 cores
def test_all_phases_complete_with_a_bundle_that_passes_load_back(keras_run):
    record = json.loads((keras_run / "run_record.json").read_text())
    assert record["status"] == "complete" and set(record["phases"]) == {p.id for p in PHASES}
    assert {row["status"] for row in record["phases"].values()} == {"complete"}
    assert "all manifests verify" in calib("verify", str(keras_run)).stdout
    validation = json.loads((keras_run / "results/08_bundle/validation.json").read_text())
    assert validation["status"] == "PASS", validation
    assert (keras_run / "results/09_report/report.html").stat().st_size > 10_000


@pytest.mark.slow  # shares the CIFAR slice run above
def test_temperature_and_threshold_are_fitted_on_test_images_the_model_never_saw(keras_run, cifar10_slice):
    ds = data.load_dataset("cifar10", cifar10_slice)
    splits = data.load_splits(keras_run / "results/01_data/splits.npz", ds)
    assert splits["val_source"] == "test" and len(splits["val"]) == len(splits["test"]) == SLICE["test"] // 2
    assert not set(splits["val"]) & set(splits["test"])
    metrics = json.loads((keras_run / "results/02_train/metrics.json").read_text())
    # 75.5 % FP32 on the full JPEG test split (README); 500 images: 95 % Wilson CI about +-4 %
    assert metrics["test"]["n"] == 500 and metrics["test"]["accuracy"] > 0.65
    assert metrics["onnx"]["parity"]["passed"]


@pytest.mark.slow
def test_the_readme_command_in_full(cifar10_dir, keras_h5, tmp_path):
    """About 9 minutes on 2 cores: the README's command on the full data, to a bundle and a report."""
    calib(
        *command(
            cifar10_dir,
            keras_h5,
            "--no-progress",
            "--runs-root",
            str(tmp_path / "runs"),
            "-p",
            f"store_dir={tmp_path / 'store'}",
        ),
        cwd=ROOT,
    )
    run = only_run(tmp_path / "runs")
    validation = json.loads((run / "results/08_bundle/validation.json").read_text())
    assert validation["status"] == "PASS" and validation["n"] == 5000, validation
    assert (run / "results/09_report/report.html").is_file()
    assert json.loads((run / "results/02_train/metrics.json").read_text())["test"]["accuracy"] > 0.72
