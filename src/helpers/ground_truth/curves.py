"""Efficiency curves: how close to its precision's theoretical peak each kind of subgraph runs, by arithmetic intensity.

Owns ``<hardware_id>/efficiency_curves/<precision>/curves.json`` and ``curves.png`` of a store
(:func:`write_efficiency_curves`, rewritten whenever measurements are added): per runtime, the median
subgraph efficiency per operation type and arithmetic-intensity bin (:func:`efficiency_curves`) beside
the roofline fitted on the machine's records (``roofline.RooflineEstimator``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.ground_truth.layout import efficiency_curves_dir
from helpers.ground_truth.records import MeasurementRecord
from helpers.ground_truth.roofline import RooflineEstimator
from helpers.ground_truth.store import GroundTruthLoader
from helpers.ground_truth.targets import target_for, typical_ms
from helpers.run import atomic


def efficiency_curves(records: Sequence[MeasurementRecord], bins_per_decade: int = 4) -> pd.DataFrame:
    """Median subgraph efficiency per (runtime, precision, operation type, arithmetic-intensity bin).

    A subgraph's efficiency is its FLOPs over its typical latency (:func:`typical_ms`), over the
    theoretical peak. Bins are ``bins_per_decade`` per decade of FLOP/byte, labelled by their
    geometric centre; subgraphs without FLOPs (layout) are left out.
    """
    rows = [
        {
            "runtime": r.runtime,
            "precision": r.precision,
            "operation_type": s.operation_type,
            "log_intensity": np.log10(s.arithmetic_intensity),
            "efficiency": s.flops / (typical_ms(s.measured_latency) / 1e3) / s.theoretical_peak_flops,
        }
        for r in records
        for s in r.subgraphs
        if s.flops > 0 and s.arithmetic_intensity > 0
    ]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(
            columns=["runtime", "precision", "operation_type", "arithmetic_intensity", "efficiency_median", "count"]
        )
    table["bin"] = np.floor(table["log_intensity"] * bins_per_decade)
    curves = (
        table.groupby(["runtime", "precision", "operation_type", "bin"])["efficiency"]
        .agg(efficiency_median="median", count="size")
        .reset_index()
    )
    curves["arithmetic_intensity"] = 10 ** ((curves.pop("bin") + 0.5) / bins_per_decade)
    return curves


def efficiency_curves_figure(curves: pd.DataFrame, title: str):
    """Median efficiency against arithmetic intensity, one line per (runtime, operation type), log-log."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (runtime, kind), rows in curves.groupby(["runtime", "operation_type"]):
        ax.plot(
            rows["arithmetic_intensity"],
            rows["efficiency_median"] * 100,
            marker="o",
            ms=3,
            label=kind if curves["runtime"].nunique() == 1 else f"{runtime} {kind}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="arithmetic intensity (FLOP/byte)",
        ylabel="median efficiency (% of theoretical peak)",
        title=title,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_efficiency_curves(root: str | Path, hardware_id: str) -> list[Path]:
    """Rewrite ``efficiency_curves/<precision>/curves.json`` and ``curves.png`` of a machine from its records.

    Each ``curves.json`` holds, per runtime, the efficiency curves per operation type and the roofline
    fitted on the machine's records of that runtime and precision (target :func:`target_for`). Any
    hardware id of the store works, its files read in place; nothing else is written. Call it after
    adding measurements.
    """
    import matplotlib.pyplot as plt

    records = GroundTruthLoader(root).load_all(hardware_id)
    target = target_for(records)
    estimator = RooflineEstimator.fit(records, target).to_dict()
    curves = efficiency_curves(records)
    written = []
    for precision, rows in curves.groupby("precision"):
        folder = efficiency_curves_dir(root, hardware_id, precision)
        document = {
            "hardware_id": hardware_id,
            "precision": precision,
            "target": target,
            "statistic": "median over subgraphs of FLOPs / minimum latency / theoretical peak",
            "runtimes": {
                runtime: {
                    "roofline": estimator[f"{runtime}/{precision}"],
                    "curves": {
                        kind: part[["arithmetic_intensity", "efficiency_median", "count"]].to_dict(orient="list")
                        for kind, part in by_runtime.groupby("operation_type")
                    },
                }
                for runtime, by_runtime in rows.groupby("runtime")
            },
        }
        written.append(atomic.write_json(folder / "curves.json", document))
        figure = efficiency_curves_figure(rows, f"{hardware_id} {precision}: efficiency per operation type")
        written.append(atomic.save_figure(figure, folder / "curves.png"))
        plt.close(figure)
    return written
