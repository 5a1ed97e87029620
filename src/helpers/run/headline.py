"""A run's headline: the few numbers a user looks for first, from the phases' recorded summaries.

FP32 and INT8 test accuracy, ECE before -> after temperature scaling, INT8 vs FP32 latency as a
speed-up beside both latencies (one runtime at one batch size, named by ``latency_runtime`` and
``latency_batch``), the bundle's load-back status. One definition for the console's end-of-run
line, the report's headline card and the ``calib ls`` / ``diff`` columns. Reads JSON only
(summaries from the run record or the manifests, and phase 05's ``latency.json``); a phase that
did not run leaves its entries out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LATENCY_FILE = Path("results") / "05_latency" / "latency.json"


def _setting(key: str) -> tuple[str, str, int]:
    """``<model>/<runtime>/b<batch>`` (a key of ``int8_over_fp32``) as its model, runtime and batch."""
    model, runtime, batch = key.rsplit("/", 2)
    return model, runtime, int(batch[1:])


def latency_headline(latency: Mapping | None) -> dict:
    """INT8 vs FP32 as phase 05 measured it, all from one runtime at one batch size.

    The smallest batch measured at both precisions (the first runtime by name where several were);
    ``latency_runtime`` and ``latency_batch`` name it. ``fp32_latency_ms`` and ``int8_latency_ms``
    are the contention-free end-to-end latencies (``contention_free_ms``) that phase 05 computed its
    ratio from, so ``int8_speedup`` is exactly their quotient.
    """
    ratios = (latency or {}).get("int8_over_fp32") or {}
    if not ratios:
        return {}
    key = min(ratios, key=lambda k: (_setting(k)[2], k))
    model, runtime, batch = _setting(key)
    ratio = ratios[key]
    out = {"latency_runtime": runtime, "latency_batch": batch, "int8_speedup": 1.0 / ratio if ratio else math.nan}
    for m in latency.get("measurements", []):
        if (m.get("model"), m.get("runtime"), m.get("batch_size")) == (model, runtime, batch):
            if m.get("precision") in ("fp32", "int8") and m.get("contention_free_ms") is not None:
                out[f"{m['precision']}_latency_ms"] = m["contention_free_ms"]
    return out


def latency_setting(head: Mapping[str, Any]) -> str:
    """Where the headline's latencies were measured: ``onnxruntime, batch 1`` (empty without them)."""
    if "latency_runtime" not in head:
        return ""
    return f"{head['latency_runtime']}, batch {head['latency_batch']}"


def from_summaries(summaries: Mapping[str, Mapping], latency: Mapping | None = None) -> dict[str, Any]:
    """Headline numbers from ``{phase id: summary}`` (the dicts phases pass to ``phase.finish``)."""
    train, quant = summaries.get("02_train") or {}, summaries.get("04_quantize") or {}
    conf, bundle = summaries.get("06_confidence") or {}, summaries.get("08_bundle") or {}
    out: dict[str, Any] = {}
    if "fp32_test_accuracy" in quant:  # the deployed FP32 model (the adapted one, when 02b adapts)
        out["fp32_accuracy"] = quant["fp32_test_accuracy"]
    elif "test_accuracy" in train:
        out["fp32_accuracy"] = train["test_accuracy"]
    variant = quant.get("best_variant")
    if variant is not None and variant in (quant.get("int8_test_accuracy") or {}):
        out["int8_variant"] = variant
        out["int8_accuracy"] = quant["int8_test_accuracy"][variant]
    for when in ("pre", "post"):
        value = (conf.get(f"ece_{when}") or {}).get("fp32")
        if value is not None:
            out[f"ece_{when}"] = value
    if (conf.get("chosen") or {}).get("fp32"):
        out["calibration_map"] = conf["chosen"]["fp32"]  # the map the ECE after is measured with
    out.update(latency_headline(latency))
    if "status" in bundle:
        out["bundle"] = bundle["status"]
    return out


def for_run(run_dir: Path, record: Mapping) -> dict[str, Any]:
    """Headline of a run directory from its record's phase summaries (complete phases only)."""
    summaries = {
        pid: row.get("summary") or {}
        for pid, row in record.get("phases", {}).items()
        if row.get("status") == "complete"
    }
    latency = None
    if "05_latency" in summaries and (Path(run_dir) / LATENCY_FILE).is_file():
        latency = json.loads((Path(run_dir) / LATENCY_FILE).read_text())
    return from_summaries(summaries, latency)


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%"


def text(head: Mapping[str, Any]) -> str:
    """``FP32 acc 97.41% | INT8 (minmax) acc 97.22% | ECE 4.12% -> 1.03% (temperature_scaling) | INT8 1.6x
    faster than FP32 (onnxruntime, batch 1) | bundle PASS``."""
    parts = []
    if "fp32_accuracy" in head:
        parts.append(f"FP32 acc {_pct(head['fp32_accuracy'])}")
    if "int8_accuracy" in head:
        parts.append(f"INT8 ({head['int8_variant']}) acc {_pct(head['int8_accuracy'])}")
    if "ece_pre" in head and "ece_post" in head:
        chosen = f" ({head['calibration_map']})" if "calibration_map" in head else ""
        parts.append(f"ECE {_pct(head['ece_pre'])} -> {_pct(head['ece_post'])}{chosen}")
    if "int8_speedup" in head and math.isfinite(head["int8_speedup"]):
        parts.append(f"INT8 {speedup_text(head['int8_speedup'])} than FP32 ({latency_setting(head)})")
    if "bundle" in head:
        parts.append(f"bundle {head['bundle']}")
    return " | ".join(parts)


def speedup_text(speedup: float, digits: int = 1) -> str:
    """``1.6x faster`` or ``1.3x slower`` (never a bare ratio a reader may take either way), with
    ``digits`` decimals."""
    return f"{speedup:.{digits}f}x faster" if speedup >= 1 else f"{1 / speedup:.{digits}f}x slower"
