"""Shared fixtures: the ../shared data (skipped cleanly when absent) and isolated run roots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CALIB_SHARED_DIR", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("CALIB_TEST_CACHE", ROOT / ".cache"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit, tests/integration, tests/regression."""
    for item in items:
        category = Path(item.fspath).relative_to(ROOT / "tests").parts[0]
        if category in ("unit", "integration", "regression"):
            item.add_marker(category)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared not present at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def cifar10_dir(shared_dir: Path) -> Path:
    """A standard cifar-10-batches-py folder built once from ../shared into .cache/."""
    target = CACHE / "cifar-10-batches-py"
    if not (target / "batches.meta").exists():
        builder = shared_dir / "data" / "make_cifar10_batches.py"
        if not builder.exists():
            pytest.skip(f"{builder} missing")
        subprocess.run([sys.executable, str(builder), "--out", str(target)], check=True)
    return target


@pytest.fixture(scope="session")
def keras_h5(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "mlperf_tiny_resnet8_pretrained.h5"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """One full default (digits) `calib run` shared by the phase tests; copy it before changing it.

    Its latency measurements go to a private ground-truth store: ``<run>/../../store``; what its
    console printed (piped) is in ``<run>/../../console.stdout`` and ``console.stderr``.
    """
    from cli_runner import calib, only_run

    root = tmp_path_factory.mktemp("default")
    proc = calib("run", "--no-progress", "--runs-root", str(root / "runs"), "-p", f"store_dir={root / 'store'}")
    (root / "console.stdout").write_text(proc.stdout)
    (root / "console.stderr").write_text(proc.stderr)
    return only_run(root / "runs")


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated runs/ root for tests that create run directories."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("CALIB_RUNS_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, installed with apt-get when missing (needs root and the Debian mirror)."""
    if shutil.which("chromium") is None:
        install = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True)
        if install.returncode != 0 or shutil.which("chromium") is None:
            pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {install.stderr[-300:]}")
    return shutil.which("chromium")
