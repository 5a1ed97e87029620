"""The run report: one self-contained HTML page rendered from every phase's RESULTS files.

``gather(phase)`` collects, for each upstream phase that is present (manifest written and
verifying), its declared result files through ``phase.input`` (sha256-checked); phases that did
not run are simply absent. ``render(inputs)`` turns that into one HTML page: one section per
phase (tables through pandas ``to_html``, figures embedded as base64 PNG), and a notice naming
the missing phases instead of failing. The page has no scripts and no external references.

``render(inputs, overview)`` starts the page with the run itself (``run_overview``: run id, date,
git sha and dirty flag, dataset, model, a banner naming any failed phase and its error, the
headline card, the resolved parameters with non-defaults highlighted); these come from the run
record and ``config_resolved.yaml``, so that part differs between two runs of one configuration
(as phase 05's latency does). Without an overview the page holds only what the results hold: the
same results give the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from helpers.run import headline, manifest
from helpers.run.graph import get_phase

Files = Mapping[str, Path]  # result file name (relative to results/<phase>/) -> path

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;font-size:0.85em;margin:0.8em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}
.missing{background:#fff3cd;border:1px solid #e0c060;padding:0.6em 1em}.pass{color:#176f2c;font-weight:bold}
.fail{color:#b00020;font-weight:bold}.scroll{overflow-x:auto}th{white-space:normal;max-width:9em}
.banner{background:#fde2e4;border:2px solid #b00020;padding:0.6em 1em;margin:1em 0}
.facts td,.facts th{text-align:left}.cards{display:flex;flex-wrap:wrap;gap:0.6em;margin:1em 0}
.card{border:1px solid #ccc;border-radius:6px;padding:0.5em 0.9em;min-width:9em}
.card b{display:block;font-size:1.4em}.card span{font-size:0.8em;color:#555}
tr.changed td{background:#e8f0fe;font-weight:bold}.params td{text-align:left}"""


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
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def figures(files: Files, captions: Mapping[str, str]) -> list[str]:
    """Figures for those of ``captions``' PNG names the phase wrote (optional ones may be absent)."""
    return [figure(files[name], caption) for name, caption in captions.items() if name in files]


# Human column names (units in the name). Columns in PERCENT hold fractions and are shown x100.
COLUMN_NAMES = {
    "n": "n",
    "accuracy": "accuracy (%)",
    "ci95 low": "95% CI low (%)",
    "ci95 high": "95% CI high (%)",
    "MCC": "classifier MCC",
    "mcc": "classifier MCC",
    "accuracy_ci95": "accuracy 95% CI (%)",
    "agreement_with_fp32": "agrees with FP32 (%)",
    "max_abs_logit_diff": "max |logit diff| vs FP32",
    "mean_abs_logit_diff": "mean |logit diff| vs FP32",
    "size_bytes": "size (KiB)",
    "accuracy_drop_points": "accuracy drop (points)",
    "threshold": "threshold",
    "met": "target met",
    "val_coverage": "val coverage (%)",
    "val_risk": "val selective risk (%)",
    "val_mcc": "val accept/reject MCC",
    "test_coverage": "test coverage [95% CI]",
    "test_risk": "test selective risk [95% CI]",
    "test_mcc": "test accept/reject MCC [95% CI]",
    "test_aurc": "test AURC",
    "test_e_aurc": "test E-AURC",
    "ece_pre": "ECE before (%)",
    "ece_post": "ECE after (%)",
    "ece_pre_ci95": "ECE before 95% CI (%)",
    "ece_post_ci95": "ECE after 95% CI (%)",
    "temperature": "temperature T",
    "nll_pre": "NLL before",
    "nll_post": "NLL after",
    "brier_pre": "Brier before",
    "brier_post": "Brier after",
    "logit_max_abs_diff": "max |logit diff|",
    "argmax_mismatches": "argmax mismatches",
    "probability_max_abs_diff": "max |probability diff|",
    "probability_atol": "probability tolerance",
    "accept_mismatches": "accept mismatches",
    "accepted": "accepted",
    "passed": "passed",
    "graph_probability_max_abs_diff": "graph |prob diff|",
    "graph_accept_mismatches": "graph accept diffs",
    "graph_set_mismatches": "graph set diffs",
    "val_cv_nll": "val CV NLL",
    "test_nll": "test NLL",
    "test_ece": "test ECE (%)",
    "p": "p",
    "eligible": "selectable",
}
PERCENT = {
    "accuracy",
    "ci95 low",
    "ci95 high",
    "agreement_with_fp32",
    "val_coverage",
    "val_risk",
    "ece_pre",
    "ece_post",
    "ece",
    "ece_debiased",
    "null_p95",
    "test_ece",
}


def number(value) -> str:
    """4 significant digits; scientific below 1e-3 (an AURC of 9.7e-05 stays 9.7e-05); thousands separated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != value:  # NaN
        return "-"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    if abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def table(frame: pd.DataFrame, index: str | None = None) -> str:
    """An HTML table: human column names with units, fractions in %, KiB, 4 significant digits.

    ``index`` names the row labels' column (e.g. ``model``); without it the index is not shown.
    """
    frame = frame.copy()
    for column in frame.columns:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        if column in PERCENT and numeric.notna().all():
            frame[column] = 100 * numeric
        elif column == "size_bytes" and numeric.notna().all():
            frame[column] = numeric / 1024
    frame = frame.rename(columns=lambda c: COLUMN_NAMES.get(c, str(c).replace("_", " ")))
    if index is not None:
        frame = frame.rename_axis(index).reset_index()
    body = frame.to_html(border=0, na_rep="-", index=False, formatters={c: number for c in frame.columns})
    return f'<div class="scroll">{body}</div>'


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


# -- one function per phase -----------------------------------------------------------------


def environment_section(files: Files, inputs) -> list[str]:
    from helpers.environment import summary_table

    return [table(summary_table(_json(files, "environment.json")), index="item")]  # isa.png repeats the table


def data_section(files: Files, inputs) -> list[str]:
    import numpy as np

    dist = _json(files, "distribution.json")
    with np.load(files["splits.npz"]) as splits:
        sizes = {name: len(splits[name]) for name in ("train", "val", "test")}
    facts = pd.DataFrame(
        {
            "value": {
                "dataset": dist["dataset"],
                **{f"{k} images": v for k, v in sizes.items()},
                "calibration slice": sum(dist["distribution"].values()),
                "slice sha256": dist["slice_hash"],
                "input dtype": dist["inputs"]["dtype"],
                "input shape": str(dist["inputs"]["shape"]),
                "pixel range": f"[{dist['inputs']['min']:g}, {dist['inputs']['max']:g}]",
            }
        }
    )
    per_class = pd.DataFrame({"calibration slice": dist["distribution"]}).T
    return [
        table(facts, index="item"),
        "<h3>Calibration slice per class</h3>",
        table(per_class, index="images"),
        *figures(files, {"samples.png": "calibration slice samples"}),
    ]


def training_section(files: Files, inputs) -> list[str]:
    from helpers.metrics.classification import summary_table

    report = _json(files, "metrics.json")
    model = _json(files, "model.json")
    parts = [
        paragraph(f"model: {model['name']}, {model['num_classes']} classes, input {model['input_shape']}"),
        table(summary_table({split: report[split] for split in ("val", "test")}), index="split"),
        paragraph(
            "classifier MCC: Matthews correlation of the predicted class over all classes (not the "
            "accept/reject MCC of selective prediction, 07)"
        ),
    ]
    if "onnx" in report:
        onnx = report["onnx"]["parity"]
        parts.append(
            paragraph(
                f"ONNX export: max |logit diff| vs torch {onnx['max_abs_diff']:.2e} "
                f"({onnx['max_tolerance_used']:.2g} of the parity tolerance), "
                f"{onnx['argmax_mismatches']} argmax differ(s) ({onnx['near_tie_mismatches']} at near ties)"
            )
        )
    return parts + figures(files, {"curves.png": "training curves", "confusion.png": "test confusion matrix"})


def target_section(files: Files, inputs) -> list[str]:
    doc = _json(files, "target.json")
    sizes = pd.DataFrame({"images": doc["sizes"]}).rename_axis("labels file")
    return [
        paragraph(doc["description"]),
        table(sizes),
        *figures(files, {"target.png": "test images: as loaded, target"}),
    ]


def adaptation_section(files: Files, inputs) -> list[str]:
    from helpers.adaptation.validation import results_table

    doc = _json(files, "adaptation.json")
    share, parity, guard = doc["trainable_parameters"], doc["merge_parity"], doc.get("collapse_guard")
    mode = doc["adaptation"] + (
        f" ({doc['config'].get('objective', 'supervised')})" if doc["adaptation"] == "lora" else ""
    )
    mode += ", label-free" if doc.get("label_free") else ""
    return [
        paragraph(
            f"adaptation: {mode}; trainable parameters {share['count']} of {share['total']} "
            f"({share['percent']:.2f}%); merged checkpoint vs adapter model: max |logit diff| "
            f"{parity['max_abs_logit_diff']:.2e} (tolerance {parity['tolerance']:g}), {parity['status']}"
            + (
                f"; collapse guard: {guard['after'][-1]['effective_classes']:.2f} effective predicted classes on "
                f"{guard['images']} target train images after adaptation (before {guard['before']['effective_classes']:.2f}, "
                f"limit {guard['limit']:.2f})"
                if guard
                else ""
            )
        ),
        table(results_table(doc)),
        *figures(files, {"adaptation.png": "per-class accuracy before/after, learning curve"}),
    ]


def activation_section(files: Files, inputs) -> list[str]:
    rows = {}
    for name in sorted(n for n in files if n.endswith("/rate_targets.json") and n.count("/") == 1):
        targets = _json(files, name)
        for definition, rates in targets["r_star"].items():
            for layer, rate in zip(targets["layer_names"], rates):
                rows[(targets["role"], layer)] = {**rows.get((targets["role"], layer), {}), f"r* {definition}": rate}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.names = ["role", "layer"]
    caption = (
        "rate target r*: the fraction of a layer's unit-positions that spike over the calibration slice, "
        "per spike definition: 'a > 0' (the activation is positive) and 'z-score > theta' (the activation "
        "exceeds the unit's mean by theta of its standard deviations; mean and std per unit over the slice)"
    )
    return [
        paragraph(caption),
        table(frame.reset_index()),
        *figures(
            files,
            {
                "rates.png": "spike-rate targets r* per layer, per spike definition (see above)",
                "sigma.png": "per-unit standard deviation per layer (log scale; dashed: the eps floor "
                "that smaller ones are raised to)",
            },
        ),
    ]


def _latency_ratios(inputs) -> dict[str, str]:
    """INT8 vs FP32 speed-ups that phase 05 measured, keyed by the INT8 variant it measured."""
    if "05_latency" not in inputs:
        return {}
    latency = _json(inputs["05_latency"], "latency.json")
    ratios = "; ".join(  # key: <model>/<runtime>/b<batch>
        f"{runtime} {batch.replace('b', 'batch ', 1)}: {headline.speedup_text(1 / value)}"
        for key, value in latency["int8_over_fp32"].items()
        if value
        for runtime, batch in [key.rsplit("/", 2)[1:]]
    )
    return {latency["int8_variant"]: ratios} if ratios else {}


def quantization_section(files: Files, inputs) -> list[str]:
    from helpers.quantize.ort import report_table

    report = _json(files, "quant_report.json")
    frame = report_table(report)
    frame["accuracy_ci95"] = [f"[{100 * low:.2f}, {100 * high:.2f}]" for low, high in frame["accuracy_ci95"]]
    ratios = _latency_ratios(inputs)
    if ratios:
        frame["INT8 latency vs FP32 (05)"] = [ratios.get(name, "-") for name in frame.index]
    return [
        paragraph(
            f"best INT8 variant: {report['best_variant']}, chosen on val "
            f"({report.get('selection', {}).get('rule', 'older runs: on test accuracy')}); the table shows test"
        ),
        table(frame, index="model"),
        *figures(files, {"quant.png": "FP32 vs INT8 variants"}),
    ]


def latency_section(files: Files, inputs) -> list[str]:
    latency = _json(files, "latency.json")
    rows = [
        {
            "model": m["model"],
            "runtime": m["runtime"],
            "precision": m["precision"],
            "batch": m["batch_size"],
            "mean latency (ms)": m["end_to_end_latency_ms"]["mean"],
            "contention-free (ms)": m["contention_free_ms"],
            "throughput (images/s)": m["throughput_fps"],
        }
        for m in latency["measurements"]
    ]
    lomo = _json(files, "estimator.json")["lomo"]
    mape = (
        f"estimator leave-one-model-out MAPE {lomo['mape_pct']:.1f}% (median APE {lomo['median_ape_pct']:.1f}%, "
        f"{lomo['predictions']} predictions)"
        if lomo["available"]
        else f"estimator MAPE not available: {lomo['reason']}"
    )
    return [
        paragraph(f"hardware {latency['hardware_id']}, INT8 variant {latency['int8_variant']}"),
        table(pd.DataFrame(rows)),
        paragraph(mape),
        *figures(files, {"latency.png": "end-to-end latency", "estimator.png": "estimator: predicted vs measured"}),
    ]


def candidate_tables(files: Files, results: Mapping[str, dict]) -> list[str]:
    """Per model, every candidate map: how its fit went, its val CV NLL (what chose), its test figures, and the
    sentence that says why the chosen one won (the identity winning means no map beat the raw logits on val)."""
    from helpers.confidence.base import CalibrationMap

    parts = ["<h3>Candidate maps: chosen on val (CV NLL), measured on test (p: the ECE against its null band)</h3>"]
    for name in sorted(n for n in files if n.endswith("/scaling_params.json")):
        model, doc = name.split("/")[0], _json(files, name)
        chosen, measured = doc["selection"]["chosen"], results[model]["methods"]
        frame = pd.DataFrame(
            {
                method: {
                    "map": CalibrationMap.from_dict(fit).label(),
                    "converged": fit["converged"],
                    "val_cv_nll": doc["selection"]["cv_nll"][method],
                    "test_nll": measured[method]["nll"],
                    "test_ece": measured[method]["ece"],
                    "p": measured[method]["null"]["p_value"],
                    "eligible": method in doc["selection"]["eligible"],
                    "chosen": "chosen" if method == chosen else "",
                }
                for method, fit in doc["candidates"].items()
            }
        ).T.sort_values("val_cv_nll", kind="stable")
        parts += [f"<h4>{html.escape(model)}</h4>", table(frame.set_index("map"), index="map")]
        parts.append(paragraph(f"{model}: {chosen} chosen: {doc['selection']['reason']}"))
    return parts


def calibration_section(files: Files, inputs) -> list[str]:
    from helpers.confidence.base import CalibrationMap
    from helpers.metrics.calibration import before_after_table

    results = _json(files, "calibration_metrics.json")
    maps = {
        name.split("/")[0]: CalibrationMap.from_dict(_json(files, name)).label()
        for name in sorted(files)
        if name.endswith("/scaling_params.json")
    }
    models = {m: results[m] for m in maps if m in results}
    frame = before_after_table(models, maps)
    for when in ("pre", "post"):  # the CIs in % like the ECE beside them
        frame[f"ece_{when}_ci95"] = [
            "[{:.2f}, {:.2f}]".format(*(100 * b for b in models[m][f"{when}_calibration"]["ece_ci95"]))
            for m in frame.index
        ]
    tables = []
    for when, title in (("pre", "before calibration (test)"), ("post", "after calibration (test)")):
        part = frame[[c for c in frame.columns if when in c.split("_")] + (["map"] if when == "post" else [])]
        part = part.rename(
            columns=lambda c, when=when: c if c == "map" else "_".join(w for w in c.split("_") if w != when)
        )
        tables.append(f"<h3>{title}</h3>" + table(part, index="model"))
    return [
        *tables,
        *candidate_tables(files, results),
        *shift_tables(files),
        *figures(files, {"reliability.png": "reliability diagrams (test)"}),
        *figures(
            files, {n: n.removesuffix(".png") for n in sorted(files) if n.endswith(".png") and n != "reliability.png"}
        ),
    ]


def shift_tables(files: Files) -> list[str]:
    """Phase 06's calibration under shift: which val split a map is fitted on, measured on each test split."""
    from helpers.confidence.shift import METHOD, shift_table

    if "calibration_under_shift.json" not in files:
        return []
    rows = _json(files, "calibration_under_shift.json")
    if not isinstance(rows, list):  # runs recorded before the fitted-on rows: one map, no split to compare
        return []
    return [
        "<h3>calibration under shift (test)</h3>",
        paragraph(
            f"{METHOD} fitted on each domain's val split, for the model before and after adaptation; the target test "
            "rows compare the map fitted on the target's own val split with one fitted on the source's."
        ),
        table(shift_table(rows).reset_index(), index=None),
    ]


def selective_section(files: Files, inputs) -> list[str]:
    from helpers.confidence.selective import report_table

    doc = _json(files, "threshold.json")
    primary = doc["models"][doc["selective_model"]]
    return [
        paragraph(
            f"threshold set on {doc['selective_model']} by {primary['criterion']}: "
            f"{primary['threshold']:.6g} ({'met' if primary['met'] else 'NOT met'}): {primary['message']}"
        ),
        table(report_table(doc["models"]), index="model"),
        paragraph(
            "accept/reject MCC: Matthews correlation between accepting a prediction and it being correct "
            "(not the classifier MCC of 02); coverage and selective risk as fractions"
        ),
        *figures(files, {"risk_coverage.png": "risk-coverage (test)", "threshold_sweep.png": "threshold sweep (val)"}),
        *conformal_part(files),
    ]


def conformal_part(files: Files) -> list[str]:
    """Phase 07's conformal sets and class-wise rejection (test), where the run has them."""
    if "conformal.json" not in files:
        return []
    doc = _json(files, "conformal.json")
    rules = doc["models"][doc["selective_model"]]
    sets, rejection = rules["test"]["sets"], rules["test"]["rejection"]
    frame = pd.DataFrame(
        {
            name: {
                "coverage": m["coverage"],
                "mean_size": m["mean_size"],
                "min_class_coverage": min(c for c in m["class_coverage"] if c is not None),
            }
            for name, m in sets.items()
        }
    ).T
    return [
        f"<h3>Conformal prediction sets (alpha = {rules['alpha_sets']:g}, fitted on val, test)</h3>",
        table(frame, index="set"),
        paragraph(
            f"the bundle computes {rules['deployed_set']}; class-wise rejection (risk control at alpha = "
            f"{rules['alpha_risk']:g}) accepts {100 * rejection['classwise']['coverage']:.1f}% of test images "
            f"(selective accuracy {100 * rejection['classwise']['selective_accuracy']:.1f}%), the global threshold "
            f"{100 * rejection['global']['coverage']:.1f}% ({100 * rejection['global']['selective_accuracy']:.1f}%)"
        ),
        *figures(files, {"conformal.png": "set size by difficulty, per-class coverage and miss rate (test)"}),
        *conformal_shift_part(files),
    ]


def conformal_shift_part(files: Files) -> list[str]:
    """Phase 07's coverage under shift: sets fitted on each domain's val split, measured on each test split."""
    from helpers.confidence.guarantees import shift_table

    if "conformal_under_shift.json" not in files:
        return []
    doc = _json(files, "conformal_under_shift.json")
    return [
        f"<h3>Coverage under shift (FP32, {doc['calibration']}, alpha = {doc['alpha_sets']:g})</h3>",
        paragraph(
            "the guarantee holds where val and test come from one domain; the other rows show what is left of it"
        ),
        table(shift_table(doc["rows"]).reset_index(), index=None),
    ]


def bundle_section(files: Files, inputs) -> list[str]:
    from helpers.bundle import validation_table

    validation = _json(files, "validation.json")
    doc = _json(files, "bundle/bundle.json")
    status = validation["status"]
    checks = validation_table(validation)
    graph = [c for c in checks.columns if c.startswith("graph_")]
    models = pd.DataFrame(
        {
            precision: {
                "file": m["file"],
                "variant": m.get("variant", "-"),
                "calibration": m.get("calibration", {}).get("method", "temperature_scaling"),
                "accept threshold": "per class" if isinstance(m["threshold"], list) else m["threshold"],
                "prediction set": "per class (LAC)" if "set_thresholds" in m else "-",
                "runtimes": ", ".join(m.get("runtimes", ["onnxruntime"])),
                "default runtime": m.get("runtime", "onnxruntime"),
            }
            for precision, m in doc["models"].items()
        }
    ).T
    return [
        f"<p>load-back validation on {validation['n']} test images: "
        f'<span class="{status.lower()}">{html.escape(status)}</span></p>',
        table(checks.drop(columns=graph), index="precision"),
        "<h3>The bundled graphs' own outputs (what any ONNX client gets) against the same rules in Python</h3>",
        table(checks[graph], index="precision"),
        "<h3>Bundle contents</h3>",
        table(models, index="precision"),
        paragraph(f"source run {doc['source']['run_id']}; schema_version {doc['schema_version']}"),
        *figures(files, {"predictions.png": "bundle predictions on test images"}),
    ]


# phase id -> the function that renders its section; the titles are the graph's (helpers.run.graph)
SECTIONS: dict[str, Callable[[Files, Mapping[str, Files]], list[str]]] = {
    "00_environment": environment_section,
    "01_data": data_section,
    "02_train": training_section,
    "02a_target": target_section,
    "02b_adapt": adaptation_section,
    "03_activation_stats": activation_section,
    "04_quantize": quantization_section,
    "05_latency": latency_section,
    "06_confidence": calibration_section,
    "07_selective": selective_section,
    "08_bundle": bundle_section,
}


def section_title(pid: str) -> str:
    return get_phase(pid).title


def missing_phases(inputs: Mapping[str, Files]) -> list[str]:
    return [pid for pid in SECTIONS if pid not in inputs]


def _section(pid: str, inputs: Mapping[str, Files]) -> str:
    build = SECTIONS[pid]
    head = f'<section id="{pid}"><h2>{pid.split("_")[0]} · {html.escape(section_title(pid))}</h2>'
    if pid not in inputs:
        return head + f'<p class="missing">Phase {pid} is missing from this run: no results to show.</p></section>'
    try:
        body = build(inputs[pid], inputs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"report: the results of {pid} do not have the layout this report reads "
            f"({type(exc).__name__}: {exc}); re-run {pid} with the current notebooks"
        ) from exc
    return head + "\n".join(body) + "</section>"


# -- the top of the page: the run itself ------------------------------------------------------


def run_overview(phase, inputs: Mapping[str, Files]) -> dict:
    """:func:`overview` of the run ``phase`` (the report) is in: the present phases' summaries and latency."""
    summaries = {pid: phase.upstream_summary(pid) for pid in inputs}
    latency = _json(inputs["05_latency"], "latency.json") if "05_latency" in inputs else None
    return overview(phase.run_dir, summaries, latency, exclude=phase.spec.id)


def overview(
    run_dir: Path, summaries: Mapping[str, Mapping], latency: Mapping | None = None, exclude: str | None = None
) -> dict:
    """What the page's top shows about the run: id, date, git, failed phases and their errors, dataset,
    model, resolved params beside the notebooks' defaults, and the headline.

    From ``run_record.json``, ``config_resolved.yaml``, the notebooks' defaults and the phases'
    ``summaries`` (their manifests'), with 05's ``latency.json`` for the speed-up.
    """
    import yaml

    from helpers.run import run_record
    from helpers.run.runner import CONFIG_FILE, all_defaults

    record = run_record.load(run_dir)
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    defaults = all_defaults()
    return {
        "run_id": record["run_id"],
        "created": record["created"],
        "git": record.get("git") or {},
        "failed": {
            pid: row.get("error") or "" for pid, row in record["phases"].items() if row.get("status") == "failed"
        },
        "dataset": (summaries.get("01_data") or {}).get("dataset"),
        "model": (summaries.get("02_train") or {}).get("architecture"),
        "model_source": (summaries.get("02_train") or {}).get("source"),
        "params": {pid: params for pid, params in config.items() if pid != exclude},
        "defaults": {pid: defaults.get(pid, {}) for pid in config},
        "headline": headline.from_summaries(summaries, latency),
    }


def _cards(head: Mapping) -> str:
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    cards = []
    if "domain" in head:
        cards.append(("deployment domain (every figure here is on its test split)", head["domain"]))
    if "adaptation" in head:
        gain = f"{pct(head['accuracy_before_adaptation'])} -> {pct(head['accuracy_after_adaptation'])}"
        cards.append((f"test accuracy, before -> after adaptation ({head['adaptation']})", gain))
    if "deployed_accuracy" in head:
        cards.append((f"deployed FP32 test accuracy ({head['calibration_map']})", pct(head["deployed_accuracy"])))
    elif "fp32_accuracy" in head:
        cards.append(("FP32 test accuracy", pct(head["fp32_accuracy"])))
    if "int8_accuracy" in head:
        cards.append((f"INT8 ({head['int8_variant']}) test accuracy", pct(head["int8_accuracy"])))
    if "ece_pre" in head and "ece_post" in head:
        chosen = head.get("calibration_map", "the chosen map")
        cards.append((f"FP32 ECE, before -> after ({chosen})", f"{pct(head['ece_pre'])} -> {pct(head['ece_post'])}"))
    if "int8_speedup" in head:
        cards.append((f"INT8 vs FP32 latency, {headline.latency_setting(head)}", headline.speedup_short(head)))
    if "bundle" in head:
        cards.append(("bundle load-back", head["bundle"]))
    items = []
    for label, value in cards:
        cls = f' class="{value.lower()}"' if label.startswith("bundle") else ""
        items.append(f'<div class="card"><b{cls}>{html.escape(value)}</b><span>{html.escape(label)}</span></div>')
    return f'<div class="cards">{"".join(items)}</div>' if items else ""


def _params_table(overview: Mapping) -> str:
    """Resolved parameters, a shared key once, non-defaults first and highlighted."""
    rows: dict[str, dict] = {}
    for pid, params in overview["params"].items():
        for key, value in params.items():
            row = rows.setdefault(key, {"values": {}, "changed": False, "phases": []})
            row["values"][json.dumps(value, sort_keys=True, default=str)] = value
            row["changed"] |= value != overview["defaults"].get(pid, {}).get(key, value)
            row["phases"].append(pid.split("_")[0])
    body = []
    for key in sorted(rows, key=lambda k: (not rows[k]["changed"], k)):
        row = rows[key]
        value = "; ".join(html.escape(json.dumps(v, default=str)) for v in row["values"].values())
        cls, word = (' class="changed"', "changed") if row["changed"] else ("", "default")
        body.append(
            f"<tr{cls}><td>{html.escape(key)}</td><td>{value}</td><td>{word}</td>"
            f"<td>{','.join(row['phases'])}</td></tr>"
        )
    changed = sum(r["changed"] for r in rows.values())
    head = '<table class="params"><thead><tr><th>parameter</th><th>value</th><th></th><th>phases</th></tr></thead>'
    shown = f"{head}<tbody>{''.join(body[:changed])}</tbody></table>" if changed else ""
    return (
        f"<h3>Parameters: {changed} changed from the notebooks' defaults</h3>{shown}"
        f"<details><summary>all {len(rows)} resolved parameters</summary>{head}<tbody>{''.join(body)}"
        "</tbody></table></details>"
    )


def overview_html(overview: Mapping) -> str:
    git = overview["git"]
    sha = (
        str(git["sha"])[:12] + (" (dirty: uncommitted changes)" if git.get("dirty") else "")
        if git.get("sha")
        else "not a git checkout"
    )
    facts = [
        ("run", overview["run_id"]),
        ("created", overview["created"]),
        ("git", sha),
        ("dataset", overview.get("dataset") or "-"),
        (
            "model",
            f"{overview.get('model') or '-'}"
            + (f" ({overview['model_source']})" if overview.get("model_source") else ""),
        ),
    ]
    banner = "".join(
        f'<div class="banner"><b>{html.escape(pid)} failed</b>: {html.escape(error)}<br>'
        "The phases after it did not run; the sections below show what exists.</div>"
        for pid, error in overview["failed"].items()
    )
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f'{banner}<table class="facts">{rows}</table>{_cards(overview["headline"])}{_params_table(overview)}'


def render(inputs: Mapping[str, Files], title: str = "calib-lab run report", overview: Mapping | None = None) -> str:
    """The report page for ``{phase id: {file name: path}}`` (absent phases are named, not fatal);
    ``overview`` (:func:`run_overview`) puts the run itself at the top."""
    unknown = sorted(set(inputs) - set(SECTIONS))
    if unknown:
        raise ValueError(f"no report section for phase(s) {unknown}; known phases: {', '.join(SECTIONS)}")
    missing = missing_phases(inputs)
    notice = (
        f'<p class="missing">Missing phases (not run, or their results no longer verify): '
        f"{html.escape(', '.join(missing))}</p>"
        if missing
        else "<p>Every phase is present.</p>"
    )
    contents = "".join(
        f'<li><a href="#{pid}">{pid.split("_")[0]} · {html.escape(section_title(pid))}</a>'
        f"{' (missing)' if pid in missing else ''}</li>"
        for pid in SECTIONS
    )
    top = overview_html(overview) if overview else ""
    heading = f"{title}: {overview['run_id']}" if overview else title
    body = "\n".join(_section(pid, inputs) for pid in SECTIONS)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(heading)}</h1>{top}{notice}<ul>{contents}</ul>\n"
        f"{body}\n</body></html>\n"
    )


def section_table(inputs: Mapping[str, Files]) -> pd.DataFrame:
    """Which sections the report shows, and how many result files each phase provided."""
    return pd.DataFrame(
        {
            "section": [section_title(pid) for pid in SECTIONS],
            "status": ["present" if pid in inputs else "missing" for pid in SECTIONS],
            "result files": [len(inputs.get(pid, {})) for pid in SECTIONS],
        },
        index=list(SECTIONS),
    )
