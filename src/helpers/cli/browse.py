"""Browsing runs: ``calib ls``, ``calib show``, ``calib diff`` and ``calib params``.

Runs are named as ``calib ls`` prints them: a name under the runs root (``--runs-root`` or
``$CALIB_RUNS_ROOT`` or ``runs/``), a unique prefix of one, or a path (:func:`resolve_run`).

``ls`` and ``diff`` compare runs and show what changed: the headline first, in the report's units
(``97.41%``, ``1.3x faster``; latencies name their runtime and batch), a parameter shared by several
phases with one value as one row (``dataset``), results flattened (``06_confidence.ece_post.fp32``).
A value of a phase that a run lacks reads ``not run`` and is no difference. Parameters are printed
exactly; other numbers with as many digits as it takes to tell the runs' different values apart.
``show`` prints one run with 4 significant digits, hashes shortened and long lists summarised.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.cli.sweep import sweeps_table
from helpers.run import atomic, headline, run_record
from helpers.run.graph import PHASES, short_id
from helpers.run.integrity import check_run
from helpers.run.params import LIFT_BOUNDS_ENV, RUN_DIR_PARAM, notebook_parameters, parameter_comments
from helpers.run.project import runs_root

FORMATS = ("table", "md", "json", "csv")
MAX_WIDTH = 120


# -- naming runs ------------------------------------------------------------------------------


def list_runs(root: Path) -> list[Path]:
    return (
        sorted(
            (p for p in root.iterdir() if not p.name.startswith(".") and (p / run_record.FILENAME).exists()),
            key=lambda p: p.name,
        )
        if root.is_dir()
        else []
    )


def resolve_run(name: str, root: str | None = None) -> Path:
    """A run directory from a path, a name under the runs root, or a unique prefix of a name."""
    path = Path(name)
    if (path / run_record.FILENAME).exists():
        return path.resolve()
    base = runs_root(root)
    if (base / name / run_record.FILENAME).exists():
        return (base / name).resolve()
    names = [p.name for p in list_runs(base)]
    prefixed = [n for n in names if n.startswith(name)]
    if len(prefixed) == 1:
        return (base / prefixed[0]).resolve()
    if len(prefixed) > 1:
        raise FileNotFoundError(
            f"run name {name!r} is ambiguous under {base}: {', '.join(prefixed[:6])}"
            f"{' ...' if len(prefixed) > 6 else ''}; give more of the name"
        )
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `calib ls` lists the runs"
    raise FileNotFoundError(f"{name} is neither a run directory nor a run under {base}{hint}")


# -- values ---------------------------------------------------------------------------------


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, Mapping) and value else {name: value})
    return out


def fmt(value: Any) -> str:
    """4 significant digits, shortened hashes, summarised long lists; ``-`` for nothing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, str):
        if re.fullmatch(r"[0-9a-f]{32,}", value):
            return value[:12] + "…"
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, (list, tuple)):
        if len(value) <= 4 and all(not isinstance(v, (list, dict)) for v in value):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return f"[{len(value)} items]"
    if isinstance(value, Mapping):
        return "{}" if not value else f"{{{len(value)} keys}}"
    return str(value)


class NotRun(str):
    """The cell of a run that lacks the phase a value comes from (``not run``, or the phase's status
    when it did not complete): shown as such, never counted as a difference in value."""


NOT_RUN = NotRun("not run")


def exact(value: Any) -> str:
    """A parameter as given: floats to the last digit (``99.999``), the rest in YAML's spelling."""
    if isinstance(value, str):
        return value or "''"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return json.dumps(value, default=str)


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}g}"


def _percent(value: float, digits: int) -> str:
    return f"{100 * value:.{digits}f}%"


def _speedup(value: float, digits: int) -> str:
    return headline.speedup_text(value, digits) if value > 0 else fmt(value)


def _ms(value: float, digits: int) -> str:
    return f"{value:.{digits}g} ms"


# how each kind of row prints a float, and the fewest digits it starts from (the report's where it has one)
FLOAT_TEXT: dict[str, tuple[Callable[[float, int], str], int]] = {
    "number": (_number, 4),
    "percent": (_percent, 2),
    "speedup": (_speedup, 1),
    "ms": (_ms, 3),
}


def apart(values: list[Any], texts: list[str]) -> bool:
    """Whether ``texts`` tell ``values`` apart: no text stands for two different values."""
    meant: dict[str, set[str]] = {}
    for value, text in zip(values, texts):
        meant.setdefault(text, set()).add(json.dumps(value, sort_keys=True, default=str))
    return all(len(v) == 1 for v in meant.values())


def cell_texts(values: list[Any], kind: str) -> list[str]:
    """One row's (or column's) cells, so that different values read differently: parameters (``exact``)
    as given; floats of a :data:`FLOAT_TEXT` kind with the fewest digits that do it; anything else
    shortened as :func:`fmt` does, or whole where shortening would hide a difference."""
    if kind == "exact":
        return [exact(v) for v in values]
    show, fewest = FLOAT_TEXT.get(kind, (None, 0))
    for whole in (fmt, exact):
        for digits in range(fewest, 18) if show else [0]:
            texts = [
                show(v, digits) if show and isinstance(v, float) and math.isfinite(v) else whole(v) for v in values
            ]
            if apart(values, texts):
                return texts
    return texts


def changed(values: list[Any]) -> bool:
    """Whether the runs that have a value disagree on it (a run lacking the phase is no difference)."""
    have = {json.dumps(v, sort_keys=True, default=str) for v in values if not isinstance(v, NotRun)}
    return len(have) > 1


def render(rows: list[dict], columns: list[str], form: str = "table", whole: tuple[str, ...] = ()) -> str:
    """``rows`` (raw values) as an aligned text table, Markdown, JSON or CSV (``whole`` columns: not shortened)."""
    if form == "json":
        return json.dumps(rows, indent=1, default=str)
    if form == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if row.get(c) is None else row.get(c) for c in columns] for row in rows])
        return buf.getvalue().rstrip("\n")
    cells = [[str(row.get(c, "")) if c in whole else fmt(row.get(c)) for c in columns] for row in rows]
    return layout(columns, cells, form)


def layout(columns: list[str], cells: list[list[str]], form: str = "table") -> str:
    """Text cells under their column names: an aligned text table, or Markdown (``form="md"``)."""
    if form == "md":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells])
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda items: "  ".join(x.ljust(w) for x, w in zip(items, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns)] + [line(r) for r in cells])


# -- run facts --------------------------------------------------------------------------------


def run_status(run_dir: Path, record: Mapping, verify: bool = True) -> str:
    """The record's status, except that a run whose files fail verify is not ``complete``."""
    status = record.get("status", "?")
    phases = record["phases"]
    if run_dir.name.startswith("scratch-"):
        done = sum(row.get("status") == "complete" for row in phases.values())
        status = f"scratch {done}/{len(phases)}"
    if verify and status != "failed" and check_run(run_dir).damaged:
        return "altered (verify fails)"
    return status


@dataclass
class RunFacts:
    """What ``ls`` and ``diff`` compare of one run: its record, resolved params and headline."""

    name: str
    run_dir: Path
    record: dict = field(default_factory=lambda: {"phases": {}})
    config: dict = field(default_factory=dict)
    head: dict = field(default_factory=dict)
    damaged: str = ""

    def complete(self, phase: str) -> bool:
        return (self.record["phases"].get(phase) or {}).get("status") == "complete"

    def lacking(self, phase: str) -> NotRun:
        """The cell for a value of ``phase`` when it did not complete here: ``not run`` or its status."""
        status = (self.record["phases"].get(phase) or {}).get("status")
        return NOT_RUN if status in (None, "not run") else NotRun(status)


def load_facts(run_dir: Path, name: str | None = None, tolerant: bool = False) -> RunFacts:
    """A run's facts. A damaged record raises ``RecordDamaged``, or with ``tolerant`` gives facts with
    nothing but ``damaged`` (in ``ls``, one bad run must not hide the others)."""
    name = name or run_dir.name
    try:
        record = run_record.load(run_dir)
    except run_record.RecordDamaged:
        if not tolerant:
            raise
        return RunFacts(name, run_dir, damaged=f"damaged record: calib verify {run_dir.name}")
    try:
        config = run_record.load_config(run_dir)
    except FileNotFoundError:
        config = {}
    return RunFacts(name, run_dir, record, config, headline.for_run(run_dir, record))


# -- rows: one list of values per key, a value per run -----------------------------------------


@dataclass
class Row:
    """One compared key: its section, name, a value per run and how the values print (``cell_texts``)."""

    section: str
    key: str
    values: list[Any]
    kind: str = "number"


def param_rows(runs: list[RunFacts]) -> list[Row]:
    """One row per parameter, in phase order: ``key`` where in every run the phases declaring it agree
    (a shared key once), else ``phase.key`` per phase; ``not run`` where a run has none of them."""
    phases_of: dict[str, list[str]] = {}
    for run in runs:
        for pid, params in run.config.items():
            for key in params or {}:
                if pid not in phases_of.setdefault(key, []):
                    phases_of[key].append(pid)
    rows = []
    for key, phases in phases_of.items():
        per_run = [{pid: run.config[pid][key] for pid in phases if key in (run.config.get(pid) or {})} for run in runs]
        if all(not changed(list(values.values())) for values in per_run):
            values = [next(iter(v.values())) if v else NOT_RUN for v in per_run]
            rows.append(Row("param", key, values, "exact"))
        else:
            rows += [Row("param", f"{pid}.{key}", [v.get(pid, NOT_RUN) for v in per_run], "exact") for pid in phases]
    return rows


def phase_rows(runs: list[RunFacts]) -> list[Row]:
    """The phases each run holds (short ids), then each phase's status (``not run`` where a run lacks it)."""
    held = [" ".join(short_id(pid) for pid in run.record["phases"]) for run in runs]
    rows = [Row("phase", "phases", held, "text")]
    for spec in PHASES:
        statuses = [(run.record["phases"].get(spec.id) or {}).get("status") for run in runs]
        if any(statuses):
            rows.append(Row("phase", f"{spec.id}.status", [s or NOT_RUN for s in statuses], "text"))
    return rows


def result_rows(runs: list[RunFacts]) -> list[Row]:
    """Every phase summary value, flattened (``04_quantize.int8_test_accuracy.minmax``), in phase order."""
    rows = []
    for spec in PHASES:
        flat = [
            flatten(run.record["phases"][spec.id].get("summary") or {}) if run.complete(spec.id) else {} for run in runs
        ]
        for key in dict.fromkeys(k for f in flat for k in f):
            values = [f.get(key) if run.complete(spec.id) else run.lacking(spec.id) for f, run in zip(flat, runs)]
            rows.append(Row("result", f"{spec.id}.{key}", values))
    return rows


# (headline key, label, how it prints, the phase it comes from)
HEADLINE = (
    ("domain", "deployment domain", "text", "02a_target"),
    ("adaptation", "adaptation", "text", "02b_adapt"),
    ("accuracy_before_adaptation", "test accuracy before adaptation", "percent", "02b_adapt"),
    ("accuracy_after_adaptation", "test accuracy after adaptation", "percent", "02b_adapt"),
    ("fp32_accuracy", "FP32 test accuracy", "percent", "02_train"),
    ("deployed_accuracy", "deployed FP32 test accuracy (after the chosen map)", "percent", "06_confidence"),
    ("int8_variant", "INT8 best variant", "text", "04_quantize"),
    ("int8_accuracy", "INT8 test accuracy (best variant)", "percent", "04_quantize"),
    ("ece_pre", "FP32 ECE before calibration", "percent", "06_confidence"),
    ("calibration_map", "FP32 calibration map (chosen on val)", "text", "06_confidence"),
    ("ece_post", "FP32 ECE after the chosen map", "percent", "06_confidence"),
    ("int8_speedup", "INT8 vs FP32 latency", "speedup", "05_latency"),
    ("fp32_latency_ms", "FP32 latency", "ms", "05_latency"),
    ("int8_latency_ms", "INT8 latency", "ms", "05_latency"),
    ("bundle", "bundle load-back", "text", "08_bundle"),
)
HEADLINE_PHASE = {key: phase for key, _, _, phase in HEADLINE}
HEADLINE_LABEL = {key: label for key, label, _, _ in HEADLINE}
LATENCY_KEYS = ("int8_speedup", "fp32_latency_ms", "int8_latency_ms")


def headline_label(key: str, label: str, head: Mapping) -> str:
    """A headline row's label; a latency's names its runtime and batch: ``INT8 vs FP32 latency
    (onnxruntime, batch 1)``."""
    setting = headline.latency_setting(head) if key in LATENCY_KEYS else ""
    return f"{label} ({setting})" if setting else label


def headline_rows(runs: list[RunFacts]) -> list[Row]:
    """The headline in the report's units. Latencies of different runtimes or batches are not
    comparable, so each setting is a row of its own (``-`` for a run measured at another)."""
    rows = []
    for key, label, kind, phase in HEADLINE:
        labels = [headline_label(key, label, run.head) if key in run.head else None for run in runs]
        for name in dict.fromkeys(x for x in labels if x) or [label]:
            values = [
                run.head[key] if here == name else None if run.complete(phase) else run.lacking(phase)
                for here, run in zip(labels, runs)
            ]
            rows.append(Row("headline", name, values, kind))
    return rows


def compare(runs: list[RunFacts]) -> list[Row]:
    """Every row ``diff`` compares: headline, parameters, phases, results."""
    return headline_rows(runs) + param_rows(runs) + phase_rows(runs) + result_rows(runs)


def metric(rows: list[Row], name: str, columns: tuple[str, ...] = ()) -> Row:
    """The row ``--sort`` names: a headline key (``int8_speedup``) or label (``FP32 test accuracy``),
    a parameter or a result key; an error with the closest of these names (or ``columns``) otherwise."""
    by_name: dict[str, Row] = {}
    for row in rows:
        by_name.setdefault(row.key, row)
    for key, label, _, _ in HEADLINE:
        row = next((r for r in rows if r.section == "headline" and r.key.startswith(label)), None)
        if row:
            by_name.setdefault(key, row)
            by_name.setdefault(label, row)
    if name not in by_name:
        close = difflib.get_close_matches(name, [*columns, *by_name], n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"--sort {name!r} is no column, headline metric, parameter or result of these runs{hint}")
    return by_name[name]


def sort_order(values: list[Any], reverse: bool = False) -> list[int]:
    """Indices of ``values`` in sorted order (numbers, then text, then anything else by its JSON); no
    value (``None``, ``not run``, NaN) last, whatever the direction."""

    def rank(value: Any) -> tuple:
        if isinstance(value, (int, float)):
            return (0, value)
        return (1, value) if isinstance(value, str) else (2, json.dumps(value, sort_keys=True, default=str))

    def none(value: Any) -> bool:
        return value is None or isinstance(value, NotRun) or (isinstance(value, float) and math.isnan(value))

    present = [i for i, v in enumerate(values) if not none(v)]
    order = sorted(present, key=lambda i: rank(values[i]), reverse=reverse)
    return order + [i for i in range(len(values)) if none(values[i])]


# -- commands ---------------------------------------------------------------------------------

# calib ls's headline columns: (column, headline key, how it prints, the headline key that qualifies it)
LS_HEADLINE = (
    ("fp32 acc", "fp32_accuracy", "percent", None),
    ("int8 acc", "int8_accuracy", "percent", "int8_variant"),
    ("ece pre", "ece_pre", "percent", None),
    ("ece post", "ece_post", "percent", None),
    ("int8 speed-up", "int8_speedup", "speedup", "latency_setting"),
    ("bundle", "bundle", "text", None),
)
LEGEND = {"int8_variant": "best INT8 variant ", "latency_setting": "INT8 vs FP32 latency, "}
# the names of a headline metric that `ls --sort` takes for its column: its key and its diff label
LS_ALIASES = {name: column for column, key, _, _ in LS_HEADLINE for name in (key, HEADLINE_LABEL[key])}
LS_COLUMNS = ["run", "created", "status", "phases", *(column for column, *_ in LS_HEADLINE)]


def ls_row(run: RunFacts, verify: bool) -> dict[str, Any]:
    """A run's ``ls`` row, raw values: name, creation, status (verified), phases done, headline."""
    if run.damaged:
        return {"run": run.name, "status": run.damaged}
    phases = run.record["phases"]
    done = sum(row.get("status") == "complete" for row in phases.values())
    row = {
        "run": run.name,
        "created": run.record["created"][:16].replace("T", " "),
        "status": run_status(run.run_dir, run.record, verify),
        "phases": f"{done}/{len(phases)}",
    }
    for column, key, _, _ in LS_HEADLINE:
        phase = HEADLINE_PHASE[key]
        row[column] = run.head.get(key) if run.complete(phase) else run.lacking(phase)
    return row


def qualifier(run: RunFacts, name: str) -> str:
    """What an ``ls`` headline value depends on: the best INT8 variant, or the latency's runtime and batch."""
    return headline.latency_setting(run.head) if name == "latency_setting" else str(run.head.get(name) or "")


def ls_table(runs: list[RunFacts], rows: list[dict], columns: list[str], kinds: Mapping[str, str]) -> str:
    """The ``ls`` table: each column printed as its kind says; a qualifier that all runs share goes to a
    legend under the table, one that differs into each value (``2.3x slower (openvino, batch 1)``)."""
    texts = {c: cell_texts([r.get(c) for r in rows], kinds.get(c, "text")) for c in columns}
    legend = []
    for column, _, _, name in LS_HEADLINE:
        have = [i for i, r in enumerate(rows) if not isinstance(r.get(column), NotRun) and r.get(column) is not None]
        said = {qualifier(runs[i], name) for i in have} if name else set()
        if len(said) == 1 and "" not in said:
            legend.append(f"{column}: {LEGEND[name]}{said.pop()}")
        elif said:
            for i in have:
                texts[column][i] += f" ({qualifier(runs[i], name)})"
    table = layout(columns, [[texts[c][i] for c in columns] for i in range(len(rows))])
    return table + (f"\n({'; '.join(legend)})" if legend else "")


def cmd_ls(args) -> int:
    """``calib ls``: a row per run with its headline and the parameters that differ (``--all``: every one)."""
    root = runs_root(args.runs_root)
    runs = [load_facts(run_dir, tolerant=True) for run_dir in list_runs(root)]
    rows = [ls_row(run, verify=not args.no_verify) for run in runs]
    show_all = args.all
    params = [row for row in param_rows(runs) if show_all or changed(row.values)]
    kinds = {column: kind for column, _, kind, _ in LS_HEADLINE}
    for param in params:
        kinds[param.key] = "exact"
        for row, value in zip(rows, param.values):
            row[param.key] = value
    columns = LS_COLUMNS + [p.key for p in params]
    if args.sort:
        sort = LS_ALIASES.get(args.sort, args.sort)
        if sort in columns:
            values = [row.get(sort) for row in rows]
        else:  # any metric of the runs, shown as a column of its own
            sort_row = metric(compare(runs), sort, tuple(columns))
            values, kinds[sort] = sort_row.values, sort_row.kind
            columns.append(sort)
            for row, value in zip(rows, values):
                row[sort] = value
        order = sort_order(values, args.reverse)
        rows, runs = [rows[i] for i in order], [runs[i] for i in order]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    elif rows:
        print(ls_table(runs, rows, columns, kinds))
        notes = []
        if params and not show_all:
            notes.append(f"parameter columns: the {len(params)} that differ between these runs")
        if any(isinstance(v, NotRun) for row in rows for v in row.values()):
            notes.append("not run: the run lacks that phase (no difference)")
        if notes:
            print(f"({'; '.join(notes)})")
    else:
        print(f"no runs under {root}")
    if not args.json and (sweeps := sweeps_table(root)):
        print(f"\n{sweeps}")
    return 0


def diff_rows(runs: list[RunFacts], show_all: bool = False) -> list[Row]:
    """What ``diff`` prints: the rows whose values differ between the runs that have them (``--all``: every row)."""
    return [row for row in compare(runs) if show_all or changed(row.values)]


def diff_names(run_dirs: list[Path]) -> list[str]:
    """The runs' column names: their names, or their paths where two share a name."""
    names = [r.name for r in run_dirs]
    return names if len(set(names)) == len(names) else [str(r) for r in run_dirs]


def diff_table(rows: list[Row], names: list[str], form: str) -> str:
    """``rows`` as ``form``: JSON and CSV with raw values, a table or Markdown with each row's cells
    printed as its kind says, so that different values read differently."""
    columns = ["section", "key", *names]
    if form in ("json", "csv"):
        return render([{"section": r.section, "key": r.key, **dict(zip(names, r.values))} for r in rows], columns, form)
    return layout(columns, [[r.section, r.key, *cell_texts(r.values, r.kind)] for r in rows], form)


def cmd_diff(args) -> int:
    """``calib diff``: what changed between runs (``--all``: everything), runs in the order given or by
    ``--sort METRIC``."""
    if len(args.runs) < 2:
        raise ValueError("calib diff needs at least two runs (names from `calib ls`, or paths)")
    run_dirs = [resolve_run(r, args.runs_root) for r in args.runs]
    runs = [load_facts(d, n) for d, n in zip(run_dirs, diff_names(run_dirs))]
    if sort := args.sort:
        order = sort_order(metric(compare(runs), sort).values, args.reverse)
        runs = [runs[i] for i in order]
    rows = diff_rows(runs, args.all)
    if not rows:
        print("no differences" if not args.all else "nothing to compare")
        return 0
    print(diff_table(rows, [run.name for run in runs], args.format))
    if args.format == "table" and any(isinstance(v, NotRun) for row in rows for v in row.values):
        print("(not run: the run lacks that phase, or it did not complete; no difference in value)")
    return 0


def domain_tables(run_dir: Path, record: Mapping) -> list[tuple[str, str]]:
    """The source metrics beside the deployment ones: 02b's 2x2 table (source / target x before / after
    adaptation, accuracy and ECE with CIs) and 06's calibration under shift, as text, where the run has them."""
    from helpers.adaptation.validation import results_table
    from helpers.confidence.shift import METHOD, shift_table

    def complete(pid: str, rel: str) -> Path | None:
        path = run_dir / "results" / pid / rel
        return path if record["phases"].get(pid, {}).get("status") == "complete" and path.is_file() else None

    tables = []
    if path := complete("02b_adapt", "adaptation.json"):
        frame = results_table(atomic.read_json(path, f"`calib run --resume {run_dir}` re-runs 02b_adapt"))
        tables.append(("accuracy and ECE before -> after adaptation (test):", frame.round(4).to_string()))
    if (path := complete("06_confidence", "calibration_under_shift.json")) and isinstance(
        rows := atomic.read_json(path, f"`calib run --resume {run_dir}` re-runs 06_confidence"), list
    ):
        frame = shift_table(rows)[["n", "accuracy", "ece", "ece_ci95", "p", "verdict"]]
        tables.append(
            (f"calibration under shift ({METHOD} fitted on each domain's val split, test):", frame.to_string())
        )
    return tables


def cmd_show(args) -> int:
    run_dir = resolve_run(args.run, args.runs_root)
    record = run_record.load(run_dir)
    git = record.get("git") or {}
    print(
        f"run {record['run_id']}  status {run_status(run_dir, record)}  created {record['created']}  "
        f"git {str(git.get('sha'))[:10]}{' (dirty)' if git.get('dirty') else ''}"
    )
    print(f"dir {run_dir}")
    rows = [
        {
            "phase": pid,
            "status": row.get("status"),
            "seconds": row.get("duration_s"),
            "error": (row.get("error") or "")[:80],
        }
        for pid, row in record["phases"].items()
    ]
    print(render(rows, ["phase", "status", "seconds", "error"]))
    head = headline.text(headline.for_run(run_dir, record))
    if head:
        print(f"\n{head}")
    for title, text in domain_tables(run_dir, record):
        print(f"\n{title}\n{text}")
    for label, pid, rel in (
        ("report", "09_report", "results/09_report/report.html"),
        ("bundle", "08_bundle", "results/08_bundle/bundle"),
    ):
        if record["phases"].get(pid, {}).get("status") == "complete" and (run_dir / rel).exists():
            print(f"{label}: {run_dir / rel}")
    for pid, row in record["phases"].items():
        if row.get("summary"):
            print(f"\n{pid}:")
            flat = flatten(row["summary"])
            width = max(len(k) for k in flat)
            for key, value in flat.items():
                print(f"  {key.ljust(width)}  {fmt(value)}")
    return 0


def parameter_rows(phase: str | None = None) -> list[dict]:
    """Every parameter: name, type, default, its upper bound (``PhaseSpec.bounds``), its comment in the
    parameters cell, the phases declaring it."""
    from helpers.run.graph import get_phase

    specs = [get_phase(phase)] if phase else list(PHASES)
    declared: dict[str, dict] = {}
    for spec in PHASES:
        if not spec.notebook.exists():
            continue
        defaults, comments = notebook_parameters(spec.notebook), parameter_comments(spec.notebook)
        for name, default in defaults.items():
            if name == RUN_DIR_PARAM:
                continue
            entry = declared.setdefault(name, {"phases": [], "defaults": {}, "comment": "", "max": {}})
            entry["phases"].append(spec.id)
            entry["defaults"][spec.id] = default
            entry["comment"] = entry["comment"] or comments.get(name, "")
            entry["max"][spec.id] = dict(spec.bounds).get(name)
    wanted = {s.id for s in specs}
    rows = []
    for name, entry in declared.items():
        if not wanted & set(entry["phases"]):
            continue
        phase = next(p for p in entry["phases"] if p in wanted)
        phases = "all" if len(entry["phases"]) == len(PHASES) else ",".join(map(short_id, entry["phases"]))
        rows.append(
            {
                "key": name,
                "type": type(entry["defaults"][phase]).__name__,
                "default": entry["defaults"][phase],
                "max": entry["max"].get(phase),
                "phases": phases,
                "comment": entry["comment"],
            }
        )
    return rows


def cmd_params(args) -> int:
    phase = None
    if args.phase:
        from helpers.run.graph import select

        matches = [s for s in PHASES if args.phase in (s.id, s.short_id)]
        if not matches:
            select(args.phase)  # raises the usual "unknown phase" error
        phase = matches[0].id
    rows = parameter_rows(phase)
    if args.format == "table":
        for row in rows:
            row["default"] = json.dumps(row["default"]) if not isinstance(row["default"], str) else repr(row["default"])
    columns = ["key", "type", "default", "max", "phases", "comment"]
    print(render(rows, columns, args.format, whole=("default", "comment")))
    if args.format == "table":
        print(
            "\nset with -p key value (every phase sharing it) or -p PHASE.key value (that phase only); "
            f"files with -f FILE.yaml\nmax: an upper bound that catches typos; lift one with {LIFT_BOUNDS_ENV}=PHASE.key"
        )
    return 0
