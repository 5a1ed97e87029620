"""`calib compare RUN RUN ... --html OUT` through the real CLI: the page it writes, read in headless Chromium,
and its refusals (exit 2, one line, nothing written)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from browser import images_marker, open_in_chromium
from cli_runner import calib

pytestmark = pytest.mark.integration

# every table of the loaded page as the browser lays it out: its class, header cells, and each row's
# cells (a figure cell reads IMG <natural width>)
TABLES_PROBE = (
    '<script>window.addEventListener("load", () => {const tables = [...document.querySelectorAll("table")].map('
    "t => ({cls: t.className, rows: [...t.rows].map(r => [...r.cells].map(c => {const img = c.querySelector('img');"
    "return img ? 'IMG ' + img.naturalWidth : c.textContent.trim();}))}));"
    'document.body.setAttribute("data-tables", JSON.stringify(tables));});</script></body>'
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A run of phase 01 alone with 10 images per class: it lacks every plotted phase, and one parameter differs."""
    root = tmp_path_factory.mktemp("compare") / "runs"
    calib(*"run --phases 01 --no-progress --run-id small -p samples_per_class=10".split(), "--runs-root", str(root))
    return root / "small"


def loaded_tables(chromium: str, page: Path, tmp_path: Path) -> tuple[str, list[dict]]:
    """The page's DOM after Chromium loaded it, and its tables as laid out (:data:`TABLES_PROBE`)."""
    dom = open_in_chromium(chromium, page.read_text().replace("</body>", TABLES_PROBE), tmp_path)
    found = re.search(r'data-tables="([^"]*)"', dom)
    assert found, "the tables probe did not run"
    return dom, json.loads(html.unescape(found.group(1)))


def test_page_puts_the_runs_side_by_side_in_chromium(chromium, default_run, small_run, tmp_path):
    out = tmp_path / "cmp.html"
    proc = calib("compare", str(default_run), str(small_run), "--html", str(out))
    assert proc.stdout.strip() == f"compare: {out} (2 runs)"
    names = [default_run.name, "small"]
    dom, tables = loaded_tables(chromium, out, tmp_path)
    assert f"<title>calib-lab comparison: {names[0]} vs small</title>" in dom
    for title in ("Runs", "Headline", "Parameters that differ", "Key plots"):
        assert f"<h2>{title}</h2>" in dom
    for caption in ("reliability diagrams (test)", "risk-coverage (test)", "end-to-end latency"):
        assert f"<h3>{caption} <small>" in dom

    runs, head, params, *plots = tables
    for table in (runs, head, params):
        assert table["rows"][0][1:] == names and all(len(row) == 3 for row in table["rows"])  # key + a column per run
    assert ["status", "complete", "complete"] in runs["rows"]
    headline = {row[0]: row[1:] for row in head["rows"][1:]}
    assert headline["deployment domain"] == ["target", "not run"]  # the story's first row: where figures are from
    fp32 = headline["FP32 test accuracy"]
    assert fp32[0].endswith("%") and fp32[1] == "not run"
    assert ["samples_per_class", "0", "10"] in params["rows"]
    assert len(plots) == 3 and all(table["cls"] == "plots" for table in plots)
    for table in plots:  # the full run's figure decoded, the small run's cell says why it has none
        header, (figure, missing) = table["rows"]
        assert header == names and re.fullmatch(r"IMG [1-9]\d+", figure) and missing == "not run"
    assert images_marker(dom) == "3/3"


def test_bad_input_is_refused_in_one_line_and_nothing_is_written(default_run, small_run, tmp_path):
    out = tmp_path / "cmp.html"
    refusals = {
        "at least two runs": [str(default_run)],
        "nosuch is neither a run directory": [str(default_run), "nosuch"],
    }
    for expected, runs in refusals.items():
        proc = calib("compare", *runs, "--html", str(out), "--runs-root", str(small_run.parent), check=False)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    lost = tmp_path / "missing" / "cmp.html"
    proc = calib("compare", str(default_run), str(small_run), "--html", str(lost), check=False)
    assert proc.returncode == 2 and proc.stderr == f"error: --html {lost}: the directory {lost.parent} does not exist\n"
    assert list(tmp_path.iterdir()) == []  # no page, no temporary file, no directory made
