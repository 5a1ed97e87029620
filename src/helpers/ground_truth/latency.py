"""A campaign's latencies as phase 05 reports them: ``latency.json`` (:func:`latency_report`) and ``latency.png``
(:func:`latency_figure`), with INT8's latency as a fraction of FP32's (:func:`int8_over_fp32`).

The measurement wing of ``helpers.ground_truth``, by what each module owns:

* ``measurement`` -- settings, the interleaved timing loop and the one record builder (``build_measurement``);
* ``onnx_ops`` -- ONNX operator classes, FLOPs and bytes of an executed node;
* ``measure_onnxruntime``, ``measure_torch``, ``measure_openvino`` -- one record per runtime, each
  timing the subgraphs that runtime executes;
* ``campaign`` -- the sweep of ``params/ground_truth.yaml``: build -> quantize -> measure -> store;
* ``runtime_latency`` -- phase 05's campaign over a run's own files, staged and stored when the phase completes;
* this module -- the report and figure of a campaign's records.

What a measurement holds: the whole model as one call (``end to end``), timed ``repeats`` times
after ``warmup`` calls with its raw samples kept, and with one thread the call's on-CPU time (on a
shared machine, the latency without the time other processes held the core); and the subgraphs the
runtime actually executes, each with its FLOPs and bytes, timed by an instrumented call alternating
with the plain one. Inputs are seeded uniform 0-255 float32 NHWC, the input contract.

The names phase 05's notebook and ``helpers.sweep.remote`` reach through this module
(``latency.MeasurementSettings``, ``latency.SweepConfig``, ``latency.SweepResult``,
``latency.run_sweep``) are the ``measurement`` and ``campaign`` modules' own, re-exported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers.ground_truth.campaign import SweepConfig as SweepConfig
from helpers.ground_truth.campaign import SweepResult
from helpers.ground_truth.campaign import run_sweep as run_sweep
from helpers.ground_truth.measurement import MeasurementSettings as MeasurementSettings
from helpers.ground_truth.records import MeasurementRecord
from helpers.ground_truth.targets import end_to_end_ms
from helpers.run.headline import speedup_text


def latency_report(result: SweepResult) -> dict:
    """latency.json content: per stored record its end-to-end latency (wall clock and on-CPU), throughput
    and subgraph count, the INT8/FP32 latency ratio per batch size, and what was skipped or flagged.

    Timings: the phase writing this is not byte-deterministic, by nature.
    """
    rows = []
    for record, path in sorted(zip(result.records, result.paths), key=lambda rp: rp[0].run_index):
        summary = record.model_summary
        rows.append(
            {
                "model": record.model,
                "runtime": record.runtime,
                "precision": record.precision,
                "batch_size": record.batch_size,
                "file": path.relative_to(result.store).as_posix(),
                "end_to_end_latency_ms": summary.end_to_end_latency.to_dict(),
                "end_to_end_cpu_time_ms": (
                    summary.end_to_end_cpu_time.to_dict() if summary.end_to_end_cpu_time else None
                ),
                "contention_free_ms": end_to_end_ms(record),
                "throughput_fps": summary.throughput_fps,
                "num_subgraphs": summary.num_subgraphs,
                "total_flops": summary.total_flops,
            }
        )
    return {
        "hardware_id": result.records[0].hardware_id if result.records else None,
        "run_id": result.run_id,
        "measurements": rows,
        "int8_over_fp32": int8_over_fp32(result.records),
        "skipped": result.skipped,
        "warnings": result.warnings,
    }


def int8_over_fp32(records: Sequence[MeasurementRecord]) -> dict[str, float]:
    """INT8 latency as a fraction of FP32 (contention-free, ``targets.end_to_end_ms``), per
    ``<model>/<runtime>/b<batch>`` measured at both precisions."""
    by_config = {(r.model, r.runtime, r.batch_size, r.precision): end_to_end_ms(r) for r in records}
    return {
        f"{m}/{rt}/b{b}": by_config[m, rt, b, "int8"] / fp32
        for (m, rt, b, p), fp32 in sorted(by_config.items())
        if p == "fp32" and (m, rt, b, "int8") in by_config
    }


def latency_figure(records: Sequence[MeasurementRecord]):
    """One panel per batch size: mean end-to-end latency per precision with its 95% CI (clipped at 0 ms),
    the contention-free latency as a dot, and INT8's speed-up over FP32 in the title."""
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("no records to plot; measure some first")
    batches = sorted({r.batch_size for r in records})
    ratios = int8_over_fp32(records)
    fig, axes = plt.subplots(1, len(batches), figsize=(3.6 * len(batches), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = sorted((r for r in records if r.batch_size == batch), key=lambda r: (r.model, r.runtime, r.precision))
        labels = [f"{r.precision}\n{r.model}" if len({r.model for r in rows}) > 1 else r.precision for r in rows]
        if len({r.runtime for r in rows}) > 1:  # name the runtime too (phase 05 measures several)
            labels = [f"{label}\n{r.runtime}" for label, r in zip(labels, rows)]
        stats = [r.model_summary.end_to_end_latency for r in rows]
        means = np.array([s.mean for s in stats])
        errors = np.array(
            [
                [s.mean - max(s.ci_lower, 0.0) for s in stats],  # a latency CI stops at 0 ms
                [s.ci_upper - s.mean for s in stats],
            ]
        )
        x = np.arange(len(rows))
        ax.bar(
            x,
            means,
            yerr=errors,
            capsize=4,
            color=["C0" if r.precision == "fp32" else "C1" for r in rows],
            label="mean wall clock, 95% CI",
        )
        ax.plot(x, [end_to_end_ms(r) for r in rows], "kD", ms=5, label="contention-free (min on-CPU)")
        speedup = "; ".join(  # ratio keys: <model>/<runtime>/b<batch>
            f"{k.rsplit('/', 2)[1]} {speedup_text(1 / v)}" for k, v in ratios.items() if k.endswith(f"/b{batch}") and v
        )
        ax.set(
            xticks=x,
            xticklabels=labels,
            ylabel="end-to-end latency per call (ms)",
            title=f"batch {batch}" + (f"\nINT8 vs FP32: {speedup} (contention-free)" if speedup else ""),
        )
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
