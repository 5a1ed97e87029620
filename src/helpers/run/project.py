"""Where the project lives: its root, its runs root, and the hash of its helper sources."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/helpers


def project_root() -> Path:
    """The checkout holding ``pyproject.toml``, ``notebooks/`` and ``params/``.

    The package is installed editable from ``src/``; ``CALIB_PROJECT_ROOT`` overrides.
    """
    if env := os.environ.get("CALIB_PROJECT_ROOT"):
        return Path(env).resolve()
    root = _PACKAGE_DIR.parent.parent
    if not (root / "pyproject.toml").exists() or not (root / "notebooks").is_dir():
        raise RuntimeError(
            f"calib-lab's notebooks are not beside the installed package ({root}); install the "
            "checkout with `pip install -e .` or set CALIB_PROJECT_ROOT to the checkout"
        )
    return root


def runs_root(override: str | os.PathLike | None = None) -> Path:
    """``--runs-root`` if given, else ``CALIB_RUNS_ROOT``, else ``<project>/runs``."""
    if override:
        return Path(override).resolve()
    if env := os.environ.get("CALIB_RUNS_ROOT"):
        return Path(env).resolve()
    return project_root() / "runs"


def helpers_source_hash() -> str:
    """sha256 over every helper module's path (within the package) and bytes, subpackages included:
    a change to any helper changes every input key."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
