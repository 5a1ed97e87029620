"""Bad input the reliability review tried: a clear message and exit 2, before any run directory exists."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import calib
from helpers.run.project import project_root


def refused(root: Path, *args: str) -> str:
    proc = calib("run", "--no-progress", "--runs-root", str(root), *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def no_run_dirs(root: Path) -> bool:
    return not root.exists() or not any(p for p in root.iterdir() if not p.name.startswith("."))


def test_existing_run_id_empty_phase_list_and_a_file_as_runs_root(tmp_path):
    root = tmp_path / "runs"
    (root / "taken").mkdir(parents=True)
    message = refused(root, "--run-id", "taken")
    assert "run taken already exists" in message and "--resume" in message
    assert "names no phase" in refused(root, "--phases", ",")
    assert [p.name for p in root.iterdir()] == ["taken"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert f"runs root {blocker} is a file, not a folder" in refused(blocker)
    assert f"{blocker} is a file" in refused(blocker / "runs")


def test_samples_per_class_beyond_a_class_is_caught_before_any_run_directory(tmp_path):
    message = refused(tmp_path / "runs", "--phases", "01", "-p", "01_data.samples_per_class=500")
    assert "samples_per_class=500 but class '0' has only" in message
    assert no_run_dirs(tmp_path / "runs")


def test_a_val_split_too_small_for_the_confidence_bins_is_refused_before_any_run_directory(tmp_path):
    """Issue 24: 126 val images (val_fraction 0.1 of digits) cannot calibrate against 15 ECE bins."""
    message = refused(tmp_path / "runs", "--phases", "06", "-p", "val_fraction=0.1")
    assert "val holds 126 images" in message and "15 confidence bins" in message and "raise val_fraction" in message
    assert no_run_dirs(tmp_path / "runs")
    fewer_bins = calib(  # 126 images hold 10 per bin of 10 bins: accepted
        "run",
        "--phases",
        "01",
        "--no-progress",
        "--runs-root",
        str(tmp_path / "runs"),
        "-p",
        "val_fraction=0.1",
        "-p",
        "06_confidence.n_bins=10",
    )
    assert fewer_bins.returncode == 0


def cifar_copy(cifar10_dir: Path, tmp_path: Path) -> Path:
    """A cifar-10-batches-py folder whose files link to the real ones (replace one to damage it)."""
    copy = tmp_path / "cifar-10-batches-py"
    copy.mkdir()
    for path in cifar10_dir.iterdir():
        (copy / path.name).symlink_to(path)
    return copy


class Evil:
    def __reduce__(self):
        return (print, ("EVIL-PICKLE-RAN",))


def test_truncated_batch_unsafe_pickle_and_large_slice_are_caught_in_the_precheck(cifar10_dir, tmp_path):
    root = tmp_path / "runs"
    data_dir = cifar_copy(cifar10_dir, tmp_path)
    args = ["--params", str(project_root() / "params/cifar10.yaml"), "-p", f"data_dir={data_dir}", "--phases", "00,01"]
    batch = (cifar10_dir / "data_batch_2").read_bytes()
    (data_dir / "data_batch_2").unlink()
    (data_dir / "data_batch_2").write_bytes(batch[: len(batch) // 2])
    assert "data_batch_2 is not a readable CIFAR-10 batch" in refused(root, *args)
    for protocol in (2, 4):
        (data_dir / "data_batch_2").write_bytes(pickle.dumps(Evil(), protocol=protocol))
        message = refused(root, *args)
        assert "refusing to load" in message and "EVIL-PICKLE-RAN" not in message
    (data_dir / "data_batch_2").unlink()
    (data_dir / "data_batch_2").symlink_to(cifar10_dir / "data_batch_2")
    message = refused(root, *args, "-p", "samples_per_class=5000")
    assert "samples_per_class=5000 but class 'airplane' has only 4500 training samples" in message
    assert no_run_dirs(root)


FULL_DISK = """
set -u
mount -t tmpfs -o size=100k tmpfs "$1"
cd "$2"
"$3" -m helpers.cli run --phases 00,01 --no-progress --runs-root "$1/runs"; echo "first-exit=$?"
run=$(ls -d "$1"/runs/*/)
"$3" -m helpers.cli verify "$run"; echo "verify-exit=$?"
mount -o remount,size=20m "$1"
"$3" -m helpers.cli run --resume "$run" --no-progress; echo "resume-exit=$?"
"$3" -m helpers.cli verify "$run"; echo "final-verify-exit=$?"
"""


def test_full_disk_is_a_clear_error_and_resume_finishes_after_space_is_freed(tmp_path):
    """A 100 KiB tmpfs (a private mount namespace: no root needed) fills up in phase 01, then grows."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -Urm (user + mount namespaces) is not available here")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    args = ["unshare", "-Urm", "sh", "-c", FULL_DISK, "sh", str(mnt), str(project_root()), sys.executable]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert "first-exit=1" in out and "no space left on device" in out and "--resume" in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert "verify-exit=3" in out, "a full disk leaves an incomplete, not a damaged, run"
    assert "resume-exit=0" in out and "final-verify-exit=0" in out, out[-4000:]


def test_a_run_id_is_one_name_under_the_runs_root(tmp_path):
    """Issue 29.2: --run-id ../../escape created a directory two levels above the runs root, invisible to ls."""
    root = tmp_path / "a" / "b" / "runs"
    for bad in ("../../escape", str(tmp_path / "abs" / "path"), "..", "x/y"):
        message = refused(root, "--phases", "00", "--run-id", bad)
        assert f"--run-id {bad!r} is not a valid name: use 1-200 letters, digits" in message, message
    assert list(tmp_path.iterdir()) == [], "nothing was created, the runs root included"


@pytest.mark.parametrize(
    "override, key",
    [
        ("02_train.lr=.nan", "02_train (set by -p (02_train.lr)): parameter 'lr' must be a finite number, got nan"),
        ("lr=-.inf", "02_train (set by -p (lr)): parameter 'lr' must be a finite number, got -inf"),
        ("lora_target_modules=[2024-01-01]", "parameter 'lora_target_modules' holds 2024-01-01, a date"),
    ],
    ids=["nan", "inf", "date"],
)
def test_a_value_no_run_record_can_hold_is_refused_naming_the_key_and_leaves_nothing(tmp_path, override, key):
    """Issue 29.3: NaN passed validation, failed writing the run record and left a half-created run per try."""
    root = tmp_path / "runs"
    for _ in range(2):
        message = refused(root, "-p", override)
        assert key in message and "Out of range float" not in message, message
    assert no_run_dirs(root)


def test_epochs_beyond_its_bound_is_refused_with_the_bound_and_how_to_lift_it(tmp_path):
    """Issue 29.4: epochs=1000000000 was accepted and trained until someone killed it."""
    root = tmp_path / "runs"
    message = refused(root, "-p", "epochs=1000000000")
    assert "02_train.epochs=1000000000 is above its upper bound 1000 (set by -p (epochs))" in message, message
    assert "CALIB_LIFT_BOUNDS=02_train.epochs" in message
    assert no_run_dirs(root)


def test_a_misspelled_phase_id_in_a_key_gets_a_suggestion(tmp_path):
    message = refused(tmp_path / "runs", "-p", "02_trian.epochs=3")
    assert "unknown parameter(s) 02_trian in -p (did you mean 02_train?)" in message, message
    assert no_run_dirs(tmp_path / "runs")


def test_an_h5_path_that_is_not_hdf5_is_refused_before_any_phase_runs(cifar10_dir, tmp_path):
    """Issue 29.9: only existence was checked; phase 02 failed after 00 and 01 had run."""
    fake = tmp_path / "model.h5"
    fake.write_text("not an HDF5 file")
    root = tmp_path / "runs"
    args = ["--params", str(project_root() / "params/cifar10.yaml"), "-p", f"data_dir={cifar10_dir}"]
    args += ["-p", "model_source=keras_h5", "-p", f"h5_path={fake}", "-p", "val_source=test", "--phases", "02"]
    message = refused(root, *args)
    assert f"h5_path: {fake} is not an HDF5 file" in message, message
    assert no_run_dirs(root)
