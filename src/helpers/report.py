"""The run report: one self-contained HTML page rendered from every phase's RESULTS files.

``gather(phase)`` collects, for each upstream phase that is present (manifest written and
verifying), its declared result files through ``phase.input`` (sha256-checked); phases that did
not run are simply absent. ``render(inputs)`` turns that into one HTML page: one section per
phase (tables through pandas ``to_html``, figures embedded as base64 PNG), and a notice naming
the missing phases instead of failing. The page has no scripts and no external references, and
contains nothing that is not in the results (no dates), so the same results give the same bytes.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from helpers.run import manifest

Files = Mapping[str, Path]  # result file name (relative to results/<phase>/) -> path

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;font-size:0.85em;margin:0.8em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}
.missing{background:#fff3cd;border:1px solid #e0c060;padding:0.6em 1em}.pass{color:#176f2c;font-weight:bold}
.fail{color:#b00020;font-weight:bold}.scroll{overflow-x:auto}"""


def gather(phase) -> dict[str, dict[str, Path]]:
    """{phase id: {file name: verified path}} for every upstream phase of ``phase`` that is present."""
    inputs = {}
    for pid in phase.spec.upstream:
        if phase.has(pid):
            names = manifest.read_manifest(phase.run_dir, pid)["files"]
            inputs[pid] = {name: phase.input(pid, name) for name in sorted(names)}
    return inputs


# -- building blocks ----------------------------------------------------------------------

def _json(files: Files, name: str) -> dict:
    return json.loads(files[name].read_text())


def figure(path: Path, caption: str) -> str:
    """An <img> with the PNG's bytes inline (base64), and its caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def figures(files: Files, captions: Mapping[str, str]) -> list[str]:
    """Figures for those of ``captions``' PNG names the phase wrote (optional ones may be absent)."""
    return [figure(files[name], caption) for name, caption in captions.items() if name in files]


def table(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    return f'<div class="scroll">{frame.to_html(border=0, na_rep="-", float_format=float_format.format)}</div>'


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


# -- one function per phase -----------------------------------------------------------------

def environment_section(files: Files, inputs) -> list[str]:
    from helpers.environment import summary_table

    return [table(summary_table(_json(files, "environment.json")).rename_axis(None)), *figures(files, {"isa.png": "vector ISA support"})]


def data_section(files: Files, inputs) -> list[str]:
    import numpy as np

    dist = _json(files, "distribution.json")
    with np.load(files["splits.npz"]) as splits:
        sizes = {name: len(splits[name]) for name in ("train", "val", "test")}
    facts = pd.DataFrame({"value": {"dataset": dist["dataset"], **{f"{k} images": v for k, v in sizes.items()},
                                    "calibration slice": sum(dist["distribution"].values()),
                                    "slice sha256": dist["slice_hash"], "input dtype": dist["inputs"]["dtype"],
                                    "input shape": str(dist["inputs"]["shape"]),
                                    "pixel range": f"[{dist['inputs']['min']:g}, {dist['inputs']['max']:g}]"}})
    per_class = pd.DataFrame({"calibration slice": dist["distribution"]}).T
    return [table(facts), "<h3>Calibration slice per class</h3>", table(per_class),
            *figures(files, {"samples.png": "calibration slice samples"})]


def training_section(files: Files, inputs) -> list[str]:
    from helpers.metrics.classification import summary_table

    report = _json(files, "metrics.json")
    model = _json(files, "model.json")
    parts = [paragraph(f"model: {model['name']}, {model['num_classes']} classes, input {model['input_shape']}"),
             table(summary_table({split: report[split] for split in ("val", "test")}))]
    if "onnx" in report:
        parts.append(paragraph(f"ONNX export: max |logit diff| vs torch {report['onnx']['max_abs_logit_diff']:.2e} "
                               f"(tolerance {report['onnx']['tolerance']:g}), argmax identical"))
    return parts + figures(files, {"curves.png": "training curves", "confusion.png": "test confusion matrix"})


def target_section(files: Files, inputs) -> list[str]:
    doc = _json(files, "target.json")
    sizes = pd.DataFrame({"images": doc["sizes"]}).rename_axis("labels file")
    return [paragraph(doc["description"]), table(sizes),
            *figures(files, {"target.png": "test images: as loaded, target"})]


def adaptation_section(files: Files, inputs) -> list[str]:
    from helpers.adaptation.validation import results_table

    doc = _json(files, "adaptation.json")
    share, parity = doc["trainable_parameters"], doc["merge_parity"]
    return [paragraph(f"adaptation: {doc['adaptation']}; trainable parameters {share['count']} of {share['total']} "
                      f"({share['percent']:.2f}%); merged checkpoint vs adapter model: max |logit diff| "
                      f"{parity['max_abs_logit_diff']:.2e} (tolerance {parity['tolerance']:g}), {parity['status']}"),
            table(results_table(doc)),
            *figures(files, {"adaptation.png": "per-class accuracy before/after, learning curve"})]


def activation_section(files: Files, inputs) -> list[str]:
    rows = {}
    for name in sorted(n for n in files if n.endswith("/rate_targets.json") and n.count("/") == 1):
        targets = _json(files, name)
        for definition, rates in targets["r_star"].items():
            for layer, rate in zip(targets["layer_names"], rates):
                rows[(targets["role"], layer)] = {**rows.get((targets["role"], layer), {}), f"r* {definition}": rate}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.names = ["role", "layer"]
    return [table(frame), *figures(files, {"rates.png": "spike-rate targets per layer",
                                            "sigma.png": "per-unit sigma per layer"})]


def _latency_ratios(inputs) -> dict[str, str]:
    """INT8/FP32 latency ratios that phase 05 measured, keyed by the INT8 variant it measured."""
    if "05_latency" not in inputs:
        return {}
    latency = _json(inputs["05_latency"], "latency.json")
    ratios = "; ".join(f"{key.rsplit('/', 1)[-1]}: {value:.2f}x" for key, value in latency["int8_over_fp32"].items())
    return {latency["int8_variant"]: ratios} if ratios else {}


def quantization_section(files: Files, inputs) -> list[str]:
    from helpers.quantize.ort import report_table

    report = _json(files, "quant_report.json")
    frame = report_table(report)
    frame["accuracy_ci95"] = [f"[{low:.4f}, {high:.4f}]" for low, high in frame["accuracy_ci95"]]
    ratios = _latency_ratios(inputs)
    if ratios:
        frame["latency int8/fp32 (05)"] = [ratios.get(name, "-") for name in frame.index]
    return [paragraph(f"best INT8 variant (test accuracy): {report['best_variant']}"), table(frame),
            *figures(files, {"quant.png": "FP32 vs INT8 variants"})]


def latency_section(files: Files, inputs) -> list[str]:
    latency = _json(files, "latency.json")
    rows = [{"model": m["model"], "runtime": m["runtime"], "precision": m["precision"], "batch": m["batch_size"],
             "mean ms": m["end_to_end_latency_ms"]["mean"], "contention-free ms": m["contention_free_ms"],
             "throughput/s": m["throughput_fps"]} for m in latency["measurements"]]
    lomo = _json(files, "estimator.json")["lomo"]
    mape = (f"estimator leave-one-model-out MAPE {lomo['mape_pct']:.1f}% (median APE {lomo['median_ape_pct']:.1f}%, "
            f"{lomo['predictions']} predictions)" if lomo["available"] else f"estimator MAPE not available: {lomo['reason']}")
    return [paragraph(f"hardware {latency['hardware_id']}, INT8 variant {latency['int8_variant']}"),
            table(pd.DataFrame(rows)), paragraph(mape),
            *figures(files, {"latency.png": "end-to-end latency", "estimator.png": "estimator: predicted vs measured"})]


def calibration_section(files: Files, inputs) -> list[str]:
    from helpers.metrics.calibration import before_after_table

    results = _json(files, "calibration_metrics.json")
    temperatures = {name.split("/")[0]: _json(files, name)["temperature"]
                    for name in sorted(files) if name.endswith("/scaling_params.json")}
    models = {m: results[m] for m in temperatures if m in results}
    return [table(before_after_table(models, temperatures)),
            *figures(files, {"reliability.png": "reliability diagrams (test)"}),
            *figures(files, {n: n.removesuffix(".png") for n in sorted(files)
                             if n.endswith(".png") and n != "reliability.png"})]


def selective_section(files: Files, inputs) -> list[str]:
    from helpers.confidence.selective import report_table

    doc = _json(files, "threshold.json")
    primary = doc["models"][doc["selective_model"]]
    return [paragraph(f"threshold set on {doc['selective_model']} by {primary['criterion']}: "
                      f"{primary['threshold']:.6g} ({'met' if primary['met'] else 'NOT met'}): {primary['message']}"),
            table(report_table(doc["models"])),
            *figures(files, {"risk_coverage.png": "risk-coverage (test)", "threshold_sweep.png": "threshold sweep (val)"})]


def bundle_section(files: Files, inputs) -> list[str]:
    from helpers.bundle import validation_table

    validation = _json(files, "validation.json")
    doc = _json(files, "bundle/bundle.json")
    status = validation["status"]
    models = pd.DataFrame(doc["models"]).T
    return [f'<p>load-back validation on {validation["n"]} test images: '
            f'<span class="{status.lower()}">{html.escape(status)}</span></p>',
            table(validation_table(validation)), "<h3>Bundle contents</h3>", table(models),
            paragraph(f"source run {doc['source']['run_id']}; schema_version {doc['schema_version']}"),
            *figures(files, {"predictions.png": "bundle predictions on test images"})]


SECTIONS: dict[str, tuple[str, Callable[[Files, Mapping[str, Files]], list[str]]]] = {
    "00_environment": ("Environment", environment_section),
    "01_data": ("Data and calibration slice", data_section),
    "02_train": ("Training", training_section),
    "02a_target": ("Target domain", target_section),
    "02b_adapt": ("Domain adaptation", adaptation_section),
    "03_activation_stats": ("Activation statistics", activation_section),
    "04_quantize": ("Quantization", quantization_section),
    "05_latency": ("Latency", latency_section),
    "06_confidence": ("Confidence calibration", calibration_section),
    "07_selective": ("Selective prediction", selective_section),
    "08_bundle": ("Deployment bundle", bundle_section),
}


def missing_phases(inputs: Mapping[str, Files]) -> list[str]:
    return [pid for pid in SECTIONS if pid not in inputs]


def _section(pid: str, inputs: Mapping[str, Files]) -> str:
    title, build = SECTIONS[pid]
    head = f'<section id="{pid}"><h2>{pid.split("_")[0]} · {html.escape(title)}</h2>'
    if pid not in inputs:
        return head + f'<p class="missing">Phase {pid} is missing from this run: no results to show.</p></section>'
    try:
        body = build(inputs[pid], inputs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"report: the results of {pid} do not have the layout this report reads "
                         f"({type(exc).__name__}: {exc}); re-run {pid} with the current notebooks") from exc
    return head + "\n".join(body) + "</section>"


def render(inputs: Mapping[str, Files], title: str = "calib-lab run report") -> str:
    """The report page for ``{phase id: {file name: path}}`` (absent phases are named, not fatal)."""
    unknown = sorted(set(inputs) - set(SECTIONS))
    if unknown:
        raise ValueError(f"no report section for phase(s) {unknown}; known phases: {', '.join(SECTIONS)}")
    missing = missing_phases(inputs)
    notice = (f'<p class="missing">Missing phases (not run, or their results no longer verify): '
              f'{html.escape(", ".join(missing))}</p>' if missing else "<p>Every phase is present.</p>")
    contents = "".join(f'<li><a href="#{pid}">{pid}</a>{" (missing)" if pid in missing else ""}</li>'
                       for pid in SECTIONS)
    body = "\n".join(_section(pid, inputs) for pid in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{notice}<ul>{contents}</ul>\n"
            f"{body}\n</body></html>\n")


def section_table(inputs: Mapping[str, Files]) -> pd.DataFrame:
    """Which sections the report shows, and how many result files each phase provided."""
    return pd.DataFrame({"section": [t for t, _ in SECTIONS.values()],
                         "status": ["present" if pid in inputs else "missing" for pid in SECTIONS],
                         "result files": [len(inputs.get(pid, {})) for pid in SECTIONS]}, index=list(SECTIONS))
