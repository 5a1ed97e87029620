"""``calib compare RUN RUN ... --html OUT``: one self-contained HTML page comparing any set of runs.

One column per run, in the order given: the runs' status and creation time, the whole headline
side by side, the parameters that differ (and the phases each run holds) as ``calib diff`` shows them,
then the key plots -- reliability diagrams, risk-coverage, latency -- each a row of figures. Images
are embedded as base64 PNG, so the file stands alone; a run lacking a plot's phase shows ``not run``
(or the phase's status) in its cell. The rows and their texts come from :mod:`helpers.cli.browse`;
this module owns the page and the command: its refusals (exit 2, nothing written) and the atomic write.
"""

from __future__ import annotations

import html
from pathlib import Path

from helpers.cli.browse import (
    NotRun,
    Row,
    RunFacts,
    cell_texts,
    changed,
    diff_names,
    diff_rows,
    headline_rows,
    load_facts,
    resolve_run,
    run_status,
)
from helpers.run import atomic

# the plots side by side: (phase, file under results/<phase>/, caption), as the run report captions them
PLOTS = (
    ("06_confidence", "reliability.png", "reliability diagrams (test)"),
    ("07_selective", "risk_coverage.png", "risk-coverage (test)"),
    ("05_latency", "latency.png", "end-to-end latency"),
)

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{border-bottom:2px solid #444}
h2{margin-top:1.6em;border-bottom:1px solid #bbb}table{border-collapse:collapse;font-size:0.9em;margin:0.6em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2}
tr.changed td{background:#e8f0fe;font-weight:bold}td.notrun{color:#777;font-style:italic;font-weight:normal}
table.plots{table-layout:fixed;width:100%}table.plots td{text-align:center}table.plots img{width:100%}
figure{margin:0}img{height:auto}figcaption{font-size:0.85em;color:#555}.note{color:#555;font-size:0.9em}"""


def refuse_bad_input(runs: list[str], out: Path) -> None:
    """Raise (exit 2, nothing written) for fewer than two runs or an OUT that cannot be written as a file."""
    if len(runs) < 2:
        raise ValueError("calib compare needs at least two runs (names from `calib ls`, or paths)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--html {out}: the directory {out.parent} does not exist")
    if out.is_dir():
        raise ValueError(f"--html {out} is a directory; give a file name such as {out / 'compare.html'}")


def cell(value, text: str) -> str:
    """A table cell: ``not run`` (or a phase's status) greyed, anything else as it reads."""
    css = ' class="notrun"' if isinstance(value, NotRun) else ""
    return f"<td{css}>{html.escape(text)}</td>"


def header(names: list[str], first: str | None) -> str:
    """A header row: ``first`` (the key column) when given, then one column per run."""
    labels = ([first] if first is not None else []) + names
    return "<tr>" + "".join(f"<th>{html.escape(label)}</th>" for label in labels) + "</tr>"


def rows_table(rows: list[Row], names: list[str]) -> str:
    """Compared rows as ``calib diff`` prints them, a row that differs highlighted."""
    body = "".join(
        ('<tr class="changed">' if changed(row.values) else "<tr>")
        + f"<td>{html.escape(row.key)}</td>"
        + "".join(cell(v, t) for v, t in zip(row.values, cell_texts(row.values, row.kind)))
        + "</tr>"
        for row in rows
    )
    return f"<table>{header(names, 'key')}{body}</table>"


def runs_table(runs: list[RunFacts], names: list[str]) -> str:
    """Each run's status (verified, as ``calib ls`` says it), creation time and directory."""
    facts = {
        "status": [run_status(run.run_dir, run.record) for run in runs],
        "created": [run.record.get("created", "?")[:16].replace("T", " ") for run in runs],
        "directory": [str(run.run_dir) for run in runs],
    }
    body = "".join(
        f"<tr><td>{label}</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
        for label, values in facts.items()
    )
    return f"<table>{header(names, 'run')}{body}</table>"


def plot_cell(run: RunFacts, name: str, phase: str, file: str) -> str:
    """The run's figure, embedded; ``not run`` (or the phase's status) where the phase did not complete."""
    from helpers.report import figure  # pandas and matplotlib's side: only when a page is written

    if not run.complete(phase):
        return cell(run.lacking(phase), run.lacking(phase))
    path = run.run_dir / "results" / phase / file
    return f"<td>{figure(path, name)}</td>" if path.exists() else cell(NotRun("no figure"), "no figure")


def plots_section(runs: list[RunFacts], names: list[str]) -> str:
    """Each key plot as one row of figures, a column per run."""
    parts = []
    for phase, file, caption in PLOTS:
        cells = "".join(plot_cell(run, name, phase, file) for run, name in zip(runs, names))
        parts.append(
            f"<h3>{html.escape(caption)} <small>({phase}/{file})</small></h3>"
            f'<table class="plots">{header(names, None)}<tr>{cells}</tr></table>'
        )
    return "".join(parts)


def render(runs: list[RunFacts], names: list[str]) -> str:
    """The whole page: runs, headline, the parameters that differ, the key plots."""
    title = f"calib-lab comparison: {' vs '.join(names)}"
    differ = [row for row in diff_rows(runs) if row.section == "param" or row.key == "phases"]
    params = rows_table(differ, names) if differ else '<p class="note">No parameter differs between these runs.</p>'
    note = (
        '<p class="note">One column per run, in the order given. Highlighted: a row that differs between the '
        "runs that have a value; <i>not run</i>: the run lacks that phase (no difference in value).</p>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{note}"
        f"<h2>Runs</h2>{runs_table(runs, names)}"
        f"<h2>Headline</h2>{rows_table(headline_rows(runs), names)}"
        f"<h2>Parameters that differ</h2>{params}"
        f"<h2>Key plots</h2>{plots_section(runs, names)}</body></html>\n"
    )


def cmd_compare(args) -> int:
    """``calib compare``: check the input, then write the page atomically to ``--html``."""
    out = Path(args.html)
    refuse_bad_input(args.runs, out)
    run_dirs = [resolve_run(r, args.runs_root) for r in args.runs]
    names = diff_names(run_dirs)
    runs = [load_facts(d, n) for d, n in zip(run_dirs, names)]
    atomic.write_text(out, render(runs, names))
    print(f"compare: {out} ({len(runs)} runs)")
    return 0
