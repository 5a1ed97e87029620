"""The run report: one self-contained HTML page rendered from every phase's RESULTS files.

Its input is ``{phase id: {file name: path}}`` for each upstream phase that is present (manifest written and
verifying; ``Phase.present_inputs`` in phase 09, sha256-checked); phases that did not run are simply absent.
``render(inputs)`` turns that into one HTML page: one section per
phase (tables through pandas ``to_html``, figures embedded as base64 PNG), and a notice naming
the missing phases instead of failing. The page has no scripts and no external references.

``render(inputs, overview)`` starts the page with the run itself (``run_overview``: run id, date,
git sha and dirty flag, dataset, model, a banner naming any failed phase and its error, the
headline card, the resolved parameters with non-defaults highlighted); these come from the run
record and ``config_resolved.yaml``, so that part differs between two runs of one configuration
(as phase 05's latency does). Without an overview the page holds only what the results hold: the
same results give the same bytes.

Every label says what it shows and of what: which model (``FP32``, ``INT8 <variant>``), which split of which
domain (phases 03-08 work on the deployment domain that phase 02a recorded, :func:`deployment`: ``target test``,
not "test"), the runtime and batch of a latency, and the unit (%, ms, KiB).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from helpers.run import atomic, headline
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


# -- building blocks ----------------------------------------------------------------------


def _json(files: Files, name: str) -> dict:
    return atomic.read_json(files[name], "re-run the phase that wrote it (calib run --resume RUN --phases NN)")


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
    "met": "criterion met",
    "val_coverage": "val coverage (%)",
    "val_risk": "val selective risk (%)",
    "val_mcc": "val accept/reject MCC",
    "test_coverage": "test coverage (%) [95% CI]",
    "test_risk": "test selective risk (%) [95% CI]",
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
    "logit_max_abs_diff": "max |logit diff| vs Python",
    "argmax_mismatches": "argmax mismatches",
    "probability_max_abs_diff": "max |probability diff| vs Python",
    "probability_atol": "probability tolerance",
    "accept_mismatches": "accept mismatches",
    "accepted": "accepted",
    "passed": "passed",
    "graph_probability_max_abs_diff": "graph max |probability diff| vs Python",
    "graph_accept_mismatches": "graph accept mismatches",
    "graph_set_mismatches": "graph prediction-set mismatches",
    "val_cv_nll": "val CV NLL (5-fold)",
    "test_nll": "test NLL",
    "test_ece": "test ECE (%)",
    "p": "p (ECE vs its null band)",
    "eligible": "selectable",
    "ece": "ECE (%)",
    "ece_ci95": "ECE 95% CI (%)",
    "ece_debiased": "debiased ECE (%)",
    "null_p95": "null-band ECE, 95th pct (%)",
    "nll": "NLL",
    "brier": "Brier score",
    "map": "calibration map",
    "coverage": "coverage (%)",
    "mean_size": "mean set size (classes)",
    "min_class_coverage": "lowest class coverage (%)",
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
    "coverage",
    "min_class_coverage",
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


def table(frame: pd.DataFrame, index: str | None = None, domain: str | None = None) -> str:
    """An HTML table: human column names with units, fractions in %, KiB, 4 significant digits.

    ``index`` names the row labels' column (e.g. ``model``); without it the index is not shown. With ``domain``,
    a column of a split (``val ...``, ``test ...``) names the domain too (``target val coverage (%)``).
    """
    frame = frame.copy()
    for column in frame.columns:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        if column in PERCENT and numeric.notna().all():
            frame[column] = 100 * numeric
        elif column == "size_bytes" and numeric.notna().all():
            frame[column] = numeric / 1024
    frame = frame.rename(columns=lambda c: COLUMN_NAMES.get(c, str(c).replace("_", " ")))
    if domain:
        frame = frame.rename(columns=lambda c: f"{domain} {c}" if c.split(" ")[0] in ("val", "test") else c)
    if index is not None:
        frame = frame.rename_axis(index).reset_index()
    body = frame.to_html(border=0, na_rep="-", index=False, formatters={c: number for c in frame.columns})
    return f'<div class="scroll">{body}</div>'


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def percent_ci(bounds, value=None) -> str:
    """``[1.66, 2.87]`` (or ``84.39 [81.2, 87.3]`` with ``value``) for fractions, in %; a missing bound is nan."""
    low, high = ("nan" if b is None else f"{100 * b:.2f}" for b in bounds)
    return (f"{100 * value:.2f} " if value is not None else "") + f"[{low}, {high}]"


def deployment(inputs: Mapping[str, Files]) -> str:
    """The domain phases 03-08 work on: the one phase 02a recorded (``source`` in a run without 02a)."""
    if "02a_target" not in inputs:
        return "source"
    return _json(inputs["02a_target"], "target.json").get("deployment", "source")


def model_label(name: str) -> str:
    """``FP32``, ``bf16``, ``INT8`` or ``INT8 <variant>`` for a result's model key (``fp32``, ``bf16``, ``int8``,
    ``minmax``)."""
    return {"fp32": "FP32", "bf16": "bf16", "int8": "INT8"}.get(name, f"INT8 {name}")


def _models(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(index=lambda name: model_label(str(name)))


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
                "dataset (the source domain)": dist["dataset"],
                **{f"source {k} images": v for k, v in sizes.items()},
                "calibration slice (source train images)": sum(dist["distribution"].values()),
                "calibration slice sha256": dist["slice_hash"],
                "calibration slice dtype": dist["inputs"]["dtype"],
                "calibration slice shape (N, H, W, C)": str(dist["inputs"]["shape"]),
                "calibration slice pixel range": f"[{dist['inputs']['min']:g}, {dist['inputs']['max']:g}]",
            }
        }
    )
    per_class = pd.DataFrame({"calibration slice images": dist["distribution"]}).T
    return [
        table(facts, index="item"),
        "<h3>Calibration slice: images per class</h3>",
        table(per_class, index="class"),
        *figures(files, {"samples.png": "calibration slice samples (source train images)"}),
    ]


def training_section(files: Files, inputs) -> list[str]:
    from helpers.metrics.classification import summary_table

    report = _json(files, "metrics.json")
    model = _json(files, "model.json")
    splits = summary_table({split: report[split] for split in ("val", "test")})
    parts = [
        paragraph(
            f"model: {model['name']}, {model['num_classes']} classes, input shape (H, W, C) {model['input_shape']}; "
            "the FP32 base model (before any adaptation) on the source domain's splits"
        ),
        table(splits.rename(index=lambda split: f"source {split}"), index="split (FP32 base model)"),
        paragraph(
            "classifier MCC: Matthews correlation of the predicted class over all classes (not the "
            "accept/reject MCC of selective prediction, 07)"
        ),
    ]
    if "onnx" in report:
        onnx = report["onnx"]["parity"]
        parts.append(
            paragraph(
                f"ONNX export of the FP32 base model, on source test: max |logit diff| vs torch {onnx['max_abs_diff']:.2e} "
                f"({onnx['max_tolerance_used']:.2g} of the parity tolerance), "
                f"{onnx['argmax_mismatches']} argmax differ(s) ({onnx['near_tie_mismatches']} at near ties)"
            )
        )
    return parts + figures(
        files,
        {
            "curves.png": "training curves: loss per epoch; accuracy on the augmented train batches and on source val",
            "confusion.png": "confusion matrix: FP32 base model on source test",
        },
    )


def target_section(files: Files, inputs) -> list[str]:
    doc = _json(files, "target.json")
    sizes = pd.DataFrame({"images": doc["sizes"]})
    sizes.index = [name.removesuffix("_labels.npz").replace("_", " ") for name in sizes.index]
    domain = doc.get("deployment")
    return [
        paragraph(
            f"target domain: {doc['description']}"
            + (f"; the run deploys to the {domain} domain (phases 03-08 use its splits)" if domain else "")
        ),
        table(sizes, index="set (domain and split)"),
        *figures(
            files,
            {"target.png": "the first source test images as loaded (top row) and in the target domain (bottom row)"},
        ),
    ]


def adaptation_section(files: Files, inputs) -> list[str]:
    doc = _json(files, "adaptation.json")
    share, parity, guard = doc["trainable_parameters"], doc["merge_parity"], doc.get("collapse_guard")
    mode = doc["adaptation"] + (
        f" ({doc['config'].get('objective', 'supervised')})" if doc["adaptation"] == "lora" else ""
    )
    mode += ", label-free" if doc.get("label_free") else ""
    return [
        paragraph(
            f"adaptation: {mode}; trainable parameters {share['count']} of {share['total']} "
            f"({share['percent']:.2f}%); merged checkpoint vs adapter model"
            + (f" on {parity['n']} target test images" if "n" in parity else "")
            + ": max |logit diff| "
            f"{parity['max_abs_logit_diff']:.2e} (tolerance {parity['tolerance']:g}), {parity['status']}"
            + (
                f"; collapse guard: {guard['after'][-1]['effective_classes']:.2f} effective predicted classes on "
                f"{guard['images']} target train images after adaptation (before {guard['before']['effective_classes']:.2f}, "
                f"limit {guard['limit']:.2f})"
                if guard
                else ""
            )
        ),
        paragraph("before: the FP32 base model (02); after: the adapted FP32 model (02b); gain in percentage points"),
        table(_adaptation_table(doc, deployment(inputs)), index="test set (FP32 model)"),
        *figures(
            files,
            {
                "adaptation.png": "per-class accuracy on each domain's test split before and after adaptation; "
                "learning curve on the target train images"
            },
        ),
    ]


def _adaptation_table(doc: Mapping, domain: str):
    """02b's 2x2 table with the page's units (accuracy and ECE in %, the gain in points), the deployed domain named."""
    from helpers.adaptation.validation import results_table

    frame = results_table(doc)
    for name, r in doc["accuracy"].items():
        for when in ("before", "after"):
            frame.loc[f"{name} test", f"accuracy {when} 95% CI"] = percent_ci((r[when]["ci_low"], r[when]["ci_high"]))
            if "ece" in r[when]:
                frame.loc[f"{name} test", f"ECE {when} 95% CI"] = percent_ci(r[when]["ece_ci"])
    values = [c for c in frame.columns if c != "n" and not c.endswith("CI")]
    frame[values] = 100 * frame[values].astype(float)
    frame = frame.rename(columns=lambda c: c if c == "n" else f"{c} ({'points' if c == 'gain' else '%'})")
    return frame.rename(index=lambda row: f"{row} (deployment domain)" if row == f"{domain} test" else row)


SPIKE_DEFINITIONS = {"positive": "a > 0", "zscore": "z-score > theta"}  # 03's r_star keys, as the caption says
ROLES = {"base": "base (FP32, 02)", "adapted": "adapted (FP32, 02b)"}


def activation_section(files: Files, inputs) -> list[str]:
    rows = {}
    for name in sorted(n for n in files if n.endswith("/rate_targets.json") and n.count("/") == 1):
        targets = _json(files, name)
        role = ROLES.get(targets["role"], targets["role"])
        for definition, rates in targets["r_star"].items():
            column = f"r* ({SPIKE_DEFINITIONS.get(definition, definition)})"
            for layer, rate in zip(targets["layer_names"], rates):
                rows[(role, layer)] = {**rows.get((role, layer), {}), column: rate}
    frame, domain = pd.DataFrame.from_dict(rows, orient="index"), deployment(inputs)
    frame.index.names = ["model", "layer"]
    caption = (
        f"rate target r*: the fraction of a layer's unit-positions that spike over the {domain} "
        "calibration slice, "
        "per spike definition: 'a > 0' (the activation is positive) and 'z-score > theta' (the activation "
        "exceeds the unit's mean by theta of its standard deviations; mean and std per unit over the slice)"
    )
    return [
        paragraph(caption),
        table(frame.reset_index()),
        *figures(
            files,
            {
                "rates.png": f"spike-rate targets r* per layer and model, per spike definition (see above), over the "
                f"{domain} calibration slice",
                "sigma.png": f"per-unit standard deviation per layer over the {domain} calibration slice (log scale; "
                "dashed: the eps floor that smaller ones are raised to)",
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

    report, domain = _json(files, "quant_report.json"), deployment(inputs)
    frame = report_table(report)
    frame["accuracy_ci95"] = [percent_ci(bounds) for bounds in frame["accuracy_ci95"]]
    ratios = _latency_ratios(inputs)
    if ratios:
        frame["INT8 vs FP32 latency (05: runtime, batch)"] = [ratios.get(name, "-") for name in frame.index]
    return [
        paragraph(
            f"best INT8 variant: {report['best_variant']}, chosen on {domain} val "
            f"({report.get('selection', {}).get('rule', 'older runs: on test accuracy')})"
        ),
        f"<h3>FP32 and every INT8 variant on {domain} test</h3>",
        table(_models(frame), index="model"),
        *figures(files, {"quant.png": f"FP32 vs INT8 variants: accuracy on {domain} test (95% CI), model size (KiB)"}),
    ]


def latency_section(files: Files, inputs) -> list[str]:
    latency = _json(files, "latency.json")
    rows = [
        {
            "model (latency store name)": m["model"],
            "runtime": m["runtime"],
            "precision": m["precision"],
            "batch": m["batch_size"],
            "mean end-to-end latency (ms)": m["end_to_end_latency_ms"]["mean"],
            "contention-free latency (ms)": m["contention_free_ms"],
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
    warnings = latency.get("warnings") or []
    noisy = (
        [paragraph(f"{len(warnings)} measurement warning(s), their ratios not to be trusted: " + "; ".join(warnings))]
        if warnings
        else []
    )
    return [
        paragraph(f"hardware {latency['hardware_id']}; the INT8 model measured: {latency['int8_variant']}"),
        table(pd.DataFrame(rows)),
        *noisy,
        paragraph(mape),
        *figures(
            files,
            {
                "latency.png": "end-to-end latency per call (ms) per runtime and precision, one panel per batch size",
                "estimator.png": "latency estimator: predicted vs measured end-to-end latency (ms), leave-one-model-out",
            },
        ),
    ]


def candidate_tables(files: Files, results: Mapping[str, dict], domain: str) -> list[str]:
    """Per model, every candidate map: how its fit went, its val CV NLL (what chose), its test figures, and the
    sentence that says why the chosen one won (the identity winning means no map beat the raw logits on val);
    val and test are the ``domain``'s."""
    from helpers.confidence.base import CalibrationMap

    parts = [f"<h3>Candidate maps: chosen on {domain} val (CV NLL), measured on {domain} test</h3>"]
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
        label = model_label(model)
        parts += [f"<h4>{html.escape(label)}</h4>", table(frame.set_index("map"), index="candidate map", domain=domain)]
        parts.append(paragraph(f"{label}: {chosen} chosen: {doc['selection']['reason']}"))
    return parts


def calibration_section(files: Files, inputs) -> list[str]:
    from helpers.confidence.base import CalibrationMap
    from helpers.metrics.calibration import before_after_table

    results, domain = _json(files, "calibration_metrics.json"), deployment(inputs)
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
    titles = (
        ("pre", f"Before calibration: {domain} test"),
        ("post", f"After calibration (each model's chosen map, fitted on {domain} val): {domain} test"),
    )
    for when, title in titles:
        part = frame[[c for c in frame.columns if when in c.split("_")] + (["map"] if when == "post" else [])]
        part = part.rename(
            columns=lambda c, when=when: c if c == "map" else "_".join(w for w in c.split("_") if w != when)
        )
        tables.append(f"<h3>{title}</h3>" + table(_models(part), index="model"))
    named = {
        "reliability.png": f"reliability diagrams on {domain} test: FP32 and the best INT8 variant, before and after "
        "calibration",
        "confidence.png": f"confidence histograms on {domain} test: FP32 and the best INT8 variant, before and after "
        "calibration",
    }
    return [
        *tables,
        *candidate_tables(files, results, domain),
        *shift_tables(files),
        *figures(files, named),
        *figures(files, {n: n.removesuffix(".png") for n in sorted(files) if n.endswith(".png") and n not in named}),
    ]


def shift_tables(files: Files) -> list[str]:
    """Phase 06's calibration under shift: which val split a map is fitted on, measured on each test split."""
    from helpers.confidence.shift import METHOD, shift_table

    if "calibration_under_shift.json" not in files:
        return []
    rows = _json(files, "calibration_under_shift.json")
    if not isinstance(rows, list):  # runs recorded before the fitted-on rows: one map, no split to compare
        return []
    frame = shift_table(rows)
    frame["ece_ci95"] = [percent_ci(r["summary"]["ece_ci95"]) for r in rows]  # in % like the ECE beside it
    return [
        f"<h3>Calibration under shift: FP32, {METHOD} fitted on each domain's val split, on each domain's test "
        "split</h3>",
        paragraph(
            f"{METHOD} fitted on each domain's val split, for the model before and after adaptation; the target test "
            "rows compare the map fitted on the target's own val split with one fitted on the source's."
        ),
        table(frame.reset_index(), index=None),
    ]


def selective_section(files: Files, inputs) -> list[str]:
    from helpers.confidence.selective import report_table

    doc, domain = _json(files, "threshold.json"), deployment(inputs)
    primary, selective_model = doc["models"][doc["selective_model"]], model_label(doc["selective_model"])
    frame = report_table(doc["models"])
    for name, key in (("coverage", "coverage"), ("risk", "selective_risk")):  # in % like the val columns
        frame[f"test_{name}"] = [
            "undefined (nothing accepted)"
            if r["test"][key] is None
            else percent_ci(r["test"]["ci"][key], r["test"][key])
            for r in doc["models"].values()
        ]
    return [
        paragraph(
            f"threshold set on {selective_model} by {primary['criterion']} on {domain} val: "
            f"{primary['threshold']:.6g} ({'met' if primary['met'] else 'NOT met'}): {primary['message']}"
        ),
        table(_models(frame), index="model", domain=domain),
        paragraph(
            "accept/reject MCC: Matthews correlation between accepting a prediction and it being correct "
            "(not the classifier MCC of 02); AURC and E-AURC: area under the risk-coverage curve, and its excess "
            "over the best possible ordering (fractions)"
        ),
        *figures(
            files,
            {
                "risk_coverage.png": f"risk-coverage curves on {domain} test",
                "threshold_sweep.png": f"threshold sweep on {domain} val ({selective_model})",
            },
        ),
        *conformal_part(files, domain),
    ]


def conformal_part(files: Files, domain: str) -> list[str]:
    """Phase 07's conformal sets and class-wise rejection (on the ``domain``'s test split), where the run has them."""
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
    model = model_label(doc["selective_model"])
    return [
        f"<h3>Conformal prediction sets ({model}, alpha = {rules['alpha_sets']:g}): fitted on {domain} val, "
        f"measured on {domain} test</h3>",
        table(frame, index="set rule"),
        paragraph(
            f"the bundle computes {rules['deployed_set']}; class-wise rejection (risk control at alpha = "
            f"{rules['alpha_risk']:g}) accepts {100 * rejection['classwise']['coverage']:.1f}% of {domain} test images "
            f"(selective accuracy {100 * rejection['classwise']['selective_accuracy']:.1f}%), the global threshold "
            f"{100 * rejection['global']['coverage']:.1f}% ({100 * rejection['global']['selective_accuracy']:.1f}%)"
        ),
        *figures(
            files,
            {"conformal.png": f"{model}: set size by difficulty, per-class coverage and miss rate on {domain} test"},
        ),
        *conformal_shift_part(files),
    ]


def conformal_shift_part(files: Files) -> list[str]:
    """Phase 07's coverage under shift: sets fitted on each domain's val split, measured on each test split."""
    from helpers.confidence.guarantees import shift_table

    if "conformal_under_shift.json" not in files:
        return []
    doc = _json(files, "conformal_under_shift.json")
    return [
        f"<h3>Coverage under shift (FP32, {doc['calibration']}, alpha = {doc['alpha_sets']:g}): sets fitted on each "
        "domain's val split, measured on each domain's test split</h3>",
        paragraph(
            "the guarantee holds where val and test come from one domain; the other rows show what is left of it"
        ),
        table(shift_table(doc["rows"]).reset_index(), index=None),
    ]


def bundle_section(files: Files, inputs) -> list[str]:
    from helpers.bundle import validation_table

    validation, domain = _json(files, "validation.json"), deployment(inputs)
    doc = _json(files, "bundle/bundle.json")
    status = validation["status"]
    checks = validation_table(validation)
    variants = {precision: m.get("variant") for precision, m in doc["models"].items()}
    checks.index = [  # "int8 openvino": the INT8 model on openvino; a bare precision ran on onnxruntime
        f"{model_label(variants.get(precision) or precision)}, {runtime[0] if runtime else 'onnxruntime'}"
        for precision, *runtime in (name.split(" ", 1) for name in checks.index)
    ]
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
        f"<p>load-back validation on {validation['n']} {html.escape(domain)} test images: "
        f'<span class="{status.lower()}">{html.escape(status)}</span></p>',
        table(checks.drop(columns=graph), index="model, runtime"),
        "<h3>The bundled graphs' own outputs (what any ONNX client gets) against the same rules in Python</h3>",
        table(checks[graph], index="model, runtime"),
        "<h3>Bundle contents</h3>",
        table(_models(models), index="model"),
        paragraph(f"source run {doc['source']['run_id']}; schema_version {doc['schema_version']}"),
        *figures(
            files,
            {
                "predictions.png": f"the bundle's INT8 predictions on the {domain} test images it is least confident "
                "about: label, calibrated confidence, accepted or rejected"
            },
        ),
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


def run_overview(
    run_dir: Path, inputs: Mapping[str, Files], summary: Callable[[str], Mapping], exclude: str | None = None
) -> dict:
    """:func:`overview` of the run in ``run_dir`` from its present phases (``inputs``, as ``Phase.present_inputs``
    gives them): their manifest summaries (``summary(phase id)``, e.g. ``phase.upstream_summary``) and 05's latency;
    ``exclude``: the report's own phase."""
    latency = _json(inputs["05_latency"], "latency.json") if "05_latency" in inputs else None
    return overview(run_dir, {pid: summary(pid) for pid in inputs}, latency, exclude=exclude)


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
    test = f"{head['domain']} test" if "domain" in head else "test"  # runs before 02a: their one domain
    cards = []
    if "domain" in head:
        cards.append(
            ("deployment domain (phases 03-08 choose on its val split, report on its test split)", head["domain"])
        )
    if "adaptation" in head:
        gain = f"{pct(head['accuracy_before_adaptation'])} -> {pct(head['accuracy_after_adaptation'])}"
        cards.append((f"FP32 accuracy on {test}, before -> after adaptation ({head['adaptation']})", gain))
    if "deployed_accuracy" in head:
        cards.append(
            (
                f"deployed FP32 accuracy on {test} (calibration map: {head['calibration_map']})",
                pct(head["deployed_accuracy"]),
            )
        )
    elif "fp32_accuracy" in head:
        cards.append((f"FP32 accuracy on {test}", pct(head["fp32_accuracy"])))
    if "int8_accuracy" in head:
        cards.append((f"INT8 ({head['int8_variant']}) accuracy on {test}", pct(head["int8_accuracy"])))
    if "ece_pre" in head and "ece_post" in head:
        chosen = head.get("calibration_map", "the chosen map")
        cards.append(
            (
                f"FP32 ECE on {test}, before -> after calibration ({chosen})",
                f"{pct(head['ece_pre'])} -> {pct(head['ece_post'])}",
            )
        )
    if "int8_speedup" in head:
        cards.append(
            (f"INT8 vs FP32 end-to-end latency, {headline.latency_setting(head)}", headline.speedup_short(head))
        )
    if "bundle" in head:
        cards.append((f"bundle load-back validation on {test}", head["bundle"]))
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
    head = '<table class="params"><thead><tr><th>parameter</th><th>value</th><th>vs notebook default</th><th>phases</th></tr></thead>'
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
