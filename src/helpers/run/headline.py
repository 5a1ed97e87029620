"""A run's headline: the few numbers a user looks for first, from the phases' recorded summaries.

The story of the run, each figure named: the domain it deploys to (phase 02a), adaptation's gain there
(the unadapted model's test accuracy beside the adapted one's, phase 02b), the deployed FP32 accuracy
(after the calibration map chosen on val, which may change the argmax) with the map's name, INT8's test
accuracy, ECE before -> after the map, INT8 vs FP32 latency as a speed-up beside both latencies (one
runtime at one batch size, named by ``latency_runtime`` and ``latency_batch``; in words where its range
makes it no number), the bundle's load-back status. Every accuracy and ECE is on the deployment domain's
test split. One definition for the console's end-of-run line, the report's headline card and the
``calib ls`` / ``diff`` columns. Reads JSON only (summaries from the run record or the manifests, and
phase 05's ``latency.json``); a phase that did not run leaves its entries out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers.run.atomic import read_json

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
    calls = {}
    for m in latency.get("measurements", []):
        if (m.get("model"), m.get("runtime"), m.get("batch_size")) == (model, runtime, batch):
            if m.get("precision") in ("fp32", "int8") and m.get("contention_free_ms") is not None:
                out[f"{m['precision']}_latency_ms"] = m["contention_free_ms"]
                calls[m["precision"]] = m.get("end_to_end_cpu_time_ms") or m.get("end_to_end_latency_ms") or {}
    if all(calls.get(p, {}).get("p50") for p in ("fp32", "int8")):
        fp32, int8 = calls["fp32"], calls["int8"]
        out["int8_speedup_range"] = [fp32["min"] / int8["p50"], fp32["p50"] / int8["min"]]
    return out


UNMEASURABLE_SPREAD = 1.5  # a speed-up whose range spans more than this factor is not reported as a number


def speedup_short(head: Mapping[str, Any]) -> str:
    """The INT8 vs FP32 latency in a few words, from the speed-up and its range.

    The range runs from the fastest FP32 call over the median INT8 call to the median FP32 call over
    the fastest INT8 call: what the ratio could be if either model's best call were its typical one.
    One wider than :data:`UNMEASURABLE_SPREAD` reads ``not measurable here, ...`` (the machine was too
    noisy); one that contains 1 reads ``no measurable difference, ...``; otherwise the speed-up
    (``1.6x faster``). Runs recorded without the range give the speed-up as before.
    """
    low, high = head.get("int8_speedup_range") or (head["int8_speedup"], head["int8_speedup"])
    span = f"{low:.2f}x to {high:.2f}x"
    if high / low > UNMEASURABLE_SPREAD:
        return f"not measurable here, {span} (re-measure on an idle machine)"
    if low <= 1 <= high:
        return f"no measurable difference, {span}"
    return speedup_text(head["int8_speedup"])


def speedup_verdict(head: Mapping[str, Any]) -> str:
    """The headline's latency part: ``INT8 1.6x faster than FP32 (onnxruntime, batch 1)``, or
    ``INT8 vs FP32 latency (onnxruntime, batch 1): no measurable difference, 0.96x to 1.02x``."""
    short = speedup_short(head)
    if short.endswith(("faster", "slower")):
        return f"INT8 {short} than FP32 ({latency_setting(head)})"
    return f"INT8 vs FP32 latency ({latency_setting(head)}): {short}"


def latency_setting(head: Mapping[str, Any]) -> str:
    """Where the headline's latencies were measured: ``onnxruntime, batch 1`` (empty without them)."""
    if "latency_runtime" not in head:
        return ""
    return f"{head['latency_runtime']}, batch {head['latency_batch']}"


def from_summaries(summaries: Mapping[str, Mapping], latency: Mapping | None = None) -> dict[str, Any]:
    """Headline numbers from ``{phase id: summary}`` (the dicts phases pass to ``phase.finish``)."""
    train, quant = summaries.get("02_train") or {}, summaries.get("04_quantize") or {}
    conf, bundle = summaries.get("06_confidence") or {}, summaries.get("08_bundle") or {}
    target, adapt = summaries.get("02a_target") or {}, summaries.get("02b_adapt") or {}
    out: dict[str, Any] = {}
    if target.get("deployment"):
        out["domain"] = target["deployment"]
    gain = (adapt.get("accuracy") or {}).get(out.get("domain"))
    if adapt.get("adaptation") not in (None, "none") and gain:
        out["adaptation"] = adapt["adaptation"]
        out["accuracy_before_adaptation"] = gain["before"]
        out["accuracy_after_adaptation"] = gain["after"]
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
    if (conf.get("accuracy_post") or {}).get("fp32") is not None:
        out["deployed_accuracy"] = conf["accuracy_post"]["fp32"]  # after the map (it may change the argmax)
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
        latency = read_json(Path(run_dir) / LATENCY_FILE, f"`calib run --resume {run_dir}` re-runs 05_latency")
    return from_summaries(summaries, latency)


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%"


def text(head: Mapping[str, Any]) -> str:
    """``target domain, adaptation (lora) 76.48% -> 90.19% | deployed FP32 acc 90.37% (temperature_scaling) |
    INT8 (minmax) acc 90.19% | ECE 4.12% -> 1.03% (temperature_scaling) | INT8 1.6x faster than FP32
    (onnxruntime, batch 1) | bundle PASS``: the domain and adaptation's gain there first, then what is
    deployed (the FP32 accuracy after the chosen map, or the raw one for a run without phase 06)."""
    parts = []
    if "domain" in head:
        gain = ""
        if "adaptation" in head:
            before, after = _pct(head["accuracy_before_adaptation"]), _pct(head["accuracy_after_adaptation"])
            gain = f", adaptation ({head['adaptation']}) {before} -> {after}"
        parts.append(f"{head['domain']} domain{gain}")
    if "deployed_accuracy" in head:
        parts.append(f"deployed FP32 acc {_pct(head['deployed_accuracy'])} ({head['calibration_map']})")
    elif "fp32_accuracy" in head:
        parts.append(f"FP32 acc {_pct(head['fp32_accuracy'])}")
    if "int8_accuracy" in head:
        parts.append(f"INT8 ({head['int8_variant']}) acc {_pct(head['int8_accuracy'])}")
    if "ece_pre" in head and "ece_post" in head:
        chosen = f" ({head['calibration_map']})" if "calibration_map" in head else ""
        parts.append(f"ECE {_pct(head['ece_pre'])} -> {_pct(head['ece_post'])}{chosen}")
    if "int8_speedup" in head and math.isfinite(head["int8_speedup"]):
        parts.append(speedup_verdict(head))
    if "bundle" in head:
        parts.append(f"bundle {head['bundle']}")
    return " | ".join(parts)


def speedup_text(speedup: float, digits: int = 1) -> str:
    """``1.6x faster`` or ``1.3x slower`` (never a bare ratio a reader may take either way), with
    ``digits`` decimals."""
    return f"{speedup:.{digits}f}x faster" if speedup >= 1 else f"{1 / speedup:.{digits}f}x slower"
