"""Browsing runs: ``calib ls``, ``calib show``, ``calib diff`` and ``calib params``.

Runs are named as ``calib ls`` prints them: a name under the runs root (``--runs-root`` or
``$CALIB_RUNS_ROOT`` or ``runs/``), a unique prefix of one, or a path (:func:`resolve_run`).
Values are flattened (``06_confidence.ece_post.fp32``) and printed with 4 significant digits,
hashes shortened and long lists summarised, so every line stays readable.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers.cli.sweep import sweeps_table
from helpers.run import headline, run_record
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


def render(rows: list[dict], columns: list[str], form: str = "table", whole: tuple[str, ...] = ()) -> str:
    """``rows`` (raw values) as an aligned text table, Markdown, JSON or CSV (``whole`` columns: not shortened)."""
    if form == "json":
        return json.dumps(rows, indent=1, default=str)
    cells = [[str(row.get(c, "")) if c in whole else fmt(row.get(c)) for c in columns] for row in rows]
    if form == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if row.get(c) is None else row.get(c) for c in columns] for row in rows])
        return buf.getvalue().rstrip("\n")
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


def shared_params(config: Mapping[str, Mapping]) -> dict[str, Any]:
    """One flat view of a run's params: ``key`` where every phase agrees, else ``phase.key``."""
    by_key: dict[str, dict[str, Any]] = {}
    for pid, params in config.items():
        for key, value in params.items():
            by_key.setdefault(key, {})[pid] = value
    out = {}
    for key, per_phase in by_key.items():
        values = list(per_phase.values())
        if all(v == values[0] for v in values):
            out[key] = values[0]
        else:
            out.update({f"{pid}.{key}": v for pid, v in per_phase.items()})
    return out


def run_row(run_dir: Path, verify: bool = True) -> dict[str, Any]:
    try:
        record = run_record.load(run_dir)
    except run_record.RecordDamaged:  # one bad run must not hide the others
        return {"run": run_dir.name, "status": f"damaged record: calib verify {run_dir.name}"}
    phases = record["phases"]
    summary = {pid: row.get("summary") or {} for pid, row in phases.items()}
    head = headline.for_run(run_dir, record)
    done = sum(row.get("status") == "complete" for row in phases.values())
    return {
        "run": run_dir.name,
        "created": record["created"][:16].replace("T", " "),
        "status": run_status(run_dir, record, verify),
        "dataset": summary.get("01_data", {}).get("dataset"),
        "model": summary.get("02_train", {}).get("architecture"),
        "phases": f"{done}/{len(phases)}",
        "fp32 acc": head.get("fp32_accuracy"),
        "int8 acc": head.get("int8_accuracy"),
        "ece pre": head.get("ece_pre"),
        "ece post": head.get("ece_post"),
        "int8 speed-up": head.get("int8_speedup"),
        "bundle": head.get("bundle"),
    }


def differing(dicts: list[Mapping[str, Any]]) -> list[str]:
    keys = sorted(set().union(*dicts)) if dicts else []
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]


# -- commands ---------------------------------------------------------------------------------

LS_COLUMNS = [
    "run",
    "created",
    "status",
    "dataset",
    "model",
    "phases",
    "fp32 acc",
    "int8 acc",
    "ece pre",
    "ece post",
    "int8 speed-up",
    "bundle",
]


def cmd_ls(args) -> int:
    root = runs_root(args.runs_root)
    rows, params = [], []
    for run_dir in list_runs(root):
        rows.append(run_row(run_dir, verify=not args.no_verify))
        try:
            params.append(shared_params(run_record.load_config(run_dir)))
        except FileNotFoundError:
            params.append({})
    changed = differing(params)
    for row, p in zip(rows, params):
        row.update({k: p.get(k) for k in changed})
    columns = LS_COLUMNS + changed
    if args.sort:
        if args.sort not in columns:
            close = difflib.get_close_matches(args.sort, columns, n=1)
            hint = f"; did you mean {close[0]!r}" if close else ""
            raise ValueError(f"--sort {args.sort!r} is not a column{hint} (columns: {', '.join(columns)})")
        present = [r for r in rows if r.get(args.sort) is not None]
        absent = [r for r in rows if r.get(args.sort) is None]
        order = sorted(present, key=lambda r: (isinstance(r[args.sort], str), r[args.sort]), reverse=args.reverse)
        rows = order + absent
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    elif rows:
        print(render(rows, columns, "table"))
        if changed:
            print(f"\n(parameter columns: the {len(changed)} that differ between these runs)")
    else:
        print(f"no runs under {root}")
    if not args.json and (sweeps := sweeps_table(root)):
        print(f"\n{sweeps}")
    return 0


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


def run_facts(run_dir: Path) -> dict[str, dict[str, Any]]:
    """What ``diff`` compares: flattened params, phase summaries and the headline (latency included)."""
    record = run_record.load(run_dir)
    results = flatten({pid: row.get("summary") or {} for pid, row in record["phases"].items()})
    results.update({f"headline.{k}": v for k, v in headline.for_run(run_dir, record).items()})
    return {
        "param": flatten(run_record.load_config(run_dir)),
        "result": results,
        "phase": {f"{pid}.status": row.get("status") for pid, row in record["phases"].items()},
    }


def diff_rows(runs: list[Path], show_all: bool = False) -> tuple[list[dict], list[str]]:
    facts = [run_facts(r) for r in runs]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r) for r in runs]
    rows = []
    for section in ("param", "phase", "result"):
        dicts = [f[section] for f in facts]
        keys = sorted(set().union(*dicts)) if show_all else differing(dicts)
        rows += [{"section": section, "key": k, **{n: d.get(k) for n, d in zip(names, dicts)}} for k in keys]
    return rows, names


def cmd_diff(args) -> int:
    if len(args.runs) < 2:
        raise ValueError("calib diff needs at least two runs (names from `calib ls`, or paths)")
    runs = [resolve_run(r, args.runs_root) for r in args.runs]
    rows, names = diff_rows(runs, args.all)
    if not rows:
        print("no differences" if not args.all else "nothing to compare")
        return 0
    print(render(rows, ["section", "key", *names], args.format))
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
