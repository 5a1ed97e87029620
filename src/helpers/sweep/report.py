"""The sweep report: every member's key results in one table (CSV) and one self-contained HTML page.

One row per member run: its status, the parameters that vary across the sweep, which phases it
reused from another run, how many times Dask re-ran it (a lost worker, a task that raised; the page
names them and the lost workers), and every numeric key result its phases recorded (``<phase>.<key>``,
nested keys dotted; for phase 04 also the INT8 accuracy drop per variant). The page has, for every
varying parameter and every result that varies, the result against that parameter: one line per
combination of the other varying parameters, the mean over seeds with the seed spread (standard
deviation) as error bars.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.run import atomic, run_record
from helpers.run.graph import short_id
from helpers.sweep import record
from helpers.sweep.plan import SEED, value_label

CSV_NAME, HTML_NAME = "sweep_results.csv", "sweep_report.html"
MAX_FIGURES = 24


def numeric_leaves(tree: dict, prefix: str) -> dict[str, float]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(numeric_leaves(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def derived(metrics: dict[str, float]) -> dict[str, float]:
    """The INT8 accuracy drop (FP32 - INT8 test accuracy) per variant, from phase 04's summary."""
    fp32 = metrics.get("04_quantize.fp32_test_accuracy")
    prefix = "04_quantize.int8_test_accuracy."
    return {
        f"04_quantize.int8_accuracy_drop.{k[len(prefix) :]}": fp32 - v
        for k, v in metrics.items()
        if fp32 is not None and k.startswith(prefix)
    }


def results_table(doc: dict, root: Path) -> pd.DataFrame:
    rows = []
    for member in doc["members"]:
        row = {"run": member["run_id"], "status": member["status"]}
        row.update(
            {
                key: value_label(member["point"].get(key))
                if isinstance(member["point"].get(key), (list, dict))
                else member["point"].get(key)
                for key in doc["varying"]
            }
        )
        try:
            phases = run_record.load(root / member["run_id"])["phases"]
        except FileNotFoundError:
            phases = {}
        row["reused"] = ",".join(short_id(pid) for pid, r in phases.items() if r.get("reused_from")) or ""
        row["retries"] = len(member.get("retries", []))
        metrics = {}
        for pid, r in phases.items():
            metrics.update(numeric_leaves(r.get("summary") or {}, pid))
        row.update(metrics)
        row.update(derived(metrics))
        rows.append(row)
    return pd.DataFrame(rows)


def metric_columns(table: pd.DataFrame, doc: dict) -> list[str]:
    """Result columns worth a figure: numeric and not the same in every member."""
    fixed = {"run", "status", "reused", "retries", *doc["varying"]}
    return [
        c
        for c in table.columns
        if c not in fixed
        and pd.api.types.is_numeric_dtype(table[c])
        and table[c].notna().sum() > 1
        and table[c].nunique(dropna=True) > 1
    ]


def spread(table: pd.DataFrame, param: str, metric: str, series: list[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof 0) and count of ``metric`` per (series..., param) over seeds."""
    keys = [*series, param]
    grouped = table.dropna(subset=[metric]).groupby(keys, dropna=False, sort=True)[metric]
    return grouped.agg(mean="mean", std=lambda s: float(np.std(s)), n="count").reset_index()


def figure_png(table: pd.DataFrame, param: str, metric: str, series: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = spread(table, param, metric, series)
    numeric_x = pd.api.types.is_numeric_dtype(table[param])
    categories = sorted(stats[param].unique(), key=lambda v: (not numeric_x, v if numeric_x else str(v)))
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    groups = stats.groupby(series, dropna=False, sort=True) if series else [((), stats)]
    for name, part in groups:
        part = part.set_index(param).reindex(categories).dropna(subset=["mean"])
        x = part.index.to_numpy(dtype=float) if numeric_x else [categories.index(v) for v in part.index]
        label = (
            ", ".join(
                f"{k.split('.')[-1]}={value_label(v)}"
                for k, v in zip(series, name if isinstance(name, tuple) else (name,))
            )
            or None
        )
        ax.errorbar(x, part["mean"], yerr=part["std"], marker="o", capsize=3, label=label)
    if not numeric_x:
        ax.set_xticks(range(len(categories)), [value_label(c) for c in categories])
    ax.set_xlabel(param)
    ax.set_ylabel(metric.split(".", 1)[-1])
    seeds = int(stats["n"].max()) if len(stats) else 0
    spread_text = f"mean ± std over seeds (up to {seeds} per point)" if seeds > 1 else "one run per point"
    ax.set_title(f"{metric}\n{spread_text}", fontsize=9)
    if series:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def figures(table: pd.DataFrame, doc: dict) -> list[tuple[str, bytes]]:
    params = [k for k in doc["varying"] if k != SEED]
    complete = table[table["status"] == "complete"]
    out = []
    for metric in metric_columns(complete, doc):
        for param in params:
            others = [k for k in params if k != param]
            out.append((f"{metric} vs {param}", figure_png(complete, param, metric, others)))
            if len(out) >= MAX_FIGURES:
                return out
    return out


def render(table: pd.DataFrame, doc: dict, plots: list[tuple[str, bytes]]) -> str:
    css = (
        "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;font-size:12px}"
        "td,th{padding:2px 6px;border-bottom:1px solid #ddd}.scroll{overflow-x:auto}"
        "figure{display:inline-block;margin:0.5em}figcaption{font-size:12px}"
    )
    grid = ", ".join(f"{k}: {', '.join(value_label(v) for v in vals)}" for k, vals in doc["spec"]["grid"].items())
    retried = [m for m in doc["members"] if m.get("retries")]
    facts = [
        f"sweep {doc['sweep_id']}, status {doc['status']}, {len(doc['members'])} run(s), "
        f"phases {', '.join(doc['phases'])}",
        f"grid: {grid or '-'}; explicit points: {len(doc['spec']['points'])}; "
        f"seeds: {', '.join(map(str, doc['spec']['seeds'])) or '-'}",
        f"varying parameters: {', '.join(doc['varying']) or '-'}",
        "lost workers: "
        + (
            ", ".join(f"{w['worker']} (running {', '.join(w['running']) or 'no member'})" for w in doc["lost_workers"])
            if doc.get("lost_workers")
            else "none"
        ),
        "retried members: "
        + (", ".join(f"{m['run_id']} ({record.describe(m['retries'])})" for m in retried) if retried else "none"),
    ]
    imgs = (
        "".join(
            f'<figure><img alt="{html.escape(c)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}"><figcaption>{html.escape(c)}</figcaption></figure>'
            for c, png in plots
        )
        or "<p>No result varies across complete members: nothing to plot.</p>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>sweep {html.escape(doc["sweep_id"])}'
        f"</title><style>{css}</style></head><body><h1>Sweep {html.escape(doc['sweep_id'])}</h1>"
        + "".join(f"<p>{html.escape(f)}</p>" for f in facts)
        + f'<h2>Figures</h2>{imgs}<h2>Results</h2><div class="scroll">'
        + table.to_html(index=False, border=0, na_rep="-", float_format="{:.4g}".format)
        + "</div></body></html>\n"
    )


def write(directory: Path, doc: dict) -> tuple[Path, Path]:
    """Write ``sweep_results.csv`` and ``sweep_report.html`` into the sweep directory (atomically)."""
    root = Path(directory).parent.parent
    table = results_table(doc, root)
    csv_path = atomic.write_text(Path(directory) / CSV_NAME, table.to_csv(index=False))
    html_path = atomic.write_text(Path(directory) / HTML_NAME, render(table, doc, figures(table, doc)))
    return csv_path, html_path
