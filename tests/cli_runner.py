"""Running the real `calib` CLI from tests (a subprocess, as a user would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def calib(*args: str, env: dict | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"calib {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if (p / "run_record.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]
