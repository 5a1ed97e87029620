"""Every benchmark still imports against today's helpers (one had called a renamed function and
failed at its first line): each file is loaded as a module, which runs its imports, not its main."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("bench_*.py"))


def load_figures():
    """benchmarks/figures.py, loaded as the benchmarks import it."""
    path = BENCHMARKS[0].parent / "figures.py"
    spec = importlib.util.spec_from_file_location("benchmark_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # as `python benchmarks/X.py` has it: siblings import
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert module.__doc__ and "python benchmarks/" in module.__doc__, f"{path.name}: its docstring shows no command"


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_regenerates_its_block_of_the_figures_page(path):
    """Each benchmark ends in ``figures.run(main)`` and docs/FIGURES.md holds exactly one block for it."""
    figures = load_figures()
    assert path.read_text().rstrip().endswith("figures.run(main)"), f"{path.name} does not end in figures.run(main)"
    figures.replace_block(figures.PAGE.read_text(), path.stem, "")  # raises when the block is missing


BENCH_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
import figures

def main():
    Path({ran!r}).write_text("ran")
    print("accuracy 91.2 %")
    print("speed-up 1.7x")
    {ending}

figures.run(main, page=Path({page!r}))
"""


def run_bench(tmp_path, ending: str, *args: str, page_text: str | None = None):
    """Run a real benchmark process named ``bench_toy`` whose ``main`` ends with ``ending``; its page starts as
    ``page_text``. Returns (completed process, page text after, whether main ran)."""
    import subprocess
    import sys

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    page, ran = tmp_path / "FIGURES.md", tmp_path / "ran"
    page.write_text(
        page_text
        if page_text is not None
        else "# Figures\n\nbefore\n<!-- figures:bench_toy -->\nold figures\n<!-- /figures:bench_toy -->\nafter\n"
    )
    script = tmp_path / "bench_toy.py"
    script.write_text(
        BENCH_SCRIPT.format(benchmarks=str(benchmarks), ran=str(ran), page=str(page), ending=ending or "pass")
    )
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    return done, page.read_text(), ran.exists()


def test_a_run_replaces_only_its_block_with_its_stamped_output(tmp_path):
    done, page, _ = run_bench(tmp_path, "", "--flag", "3")
    assert done.returncode == 0, done.stderr
    assert page.startswith("# Figures\n\nbefore\n<!-- figures:bench_toy -->\n") and page.endswith(
        "<!-- /figures:bench_toy -->\nafter\n"
    )
    assert "old figures" not in page
    assert "`python benchmarks/bench_toy.py --flag 3`" in page  # the command, with its arguments
    assert "accuracy 91.2 %\nspeed-up 1.7x\n```" in page  # the output verbatim, fenced
    assert "cores" in page and "load average" in page and "commit" in page  # the machine and the checkout
    assert "figures: " in done.stdout and "updated (bench_toy)" in done.stdout


def test_a_missed_target_is_still_recorded_with_its_exit_status(tmp_path):
    done, page, _ = run_bench(tmp_path, "return 1")
    assert done.returncode == 1
    assert "exit status 1 (a target missed)" in page and "speed-up 1.7x" in page


def test_no_figures_and_a_crash_leave_the_page_as_it_was(tmp_path):
    before = "# Figures\n\nbefore\n<!-- figures:bench_toy -->\nold figures\n<!-- /figures:bench_toy -->\nafter\n"
    done, page, ran = run_bench(tmp_path, "", "--no-figures")
    assert done.returncode == 0 and ran and page == before
    assert "--no-figures" not in done.stdout  # main never saw the option
    done, page, ran = run_bench(tmp_path, "raise RuntimeError('measurement failed')")
    assert done.returncode != 0 and "measurement failed" in done.stderr and page == before


def test_a_page_without_the_block_is_refused_before_measuring(tmp_path):
    done, page, ran = run_bench(tmp_path, "", page_text="# Figures\n")
    assert done.returncode != 0 and not ran and page == "# Figures\n"
    assert "<!-- figures:bench_toy -->" in done.stderr and "add these two lines" in done.stderr
