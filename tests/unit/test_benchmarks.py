"""Every benchmark still imports against today's helpers (one had called a renamed function and
failed at its first line): each file is loaded as a module, which runs its imports, not its main."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # as `python benchmarks/X.py` has it: siblings import
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert module.__doc__ and "python benchmarks/" in module.__doc__, f"{path.name}: its docstring shows no command"
