"""helpers.report: the page rendered from result files built here with the project's own helpers,
and opened in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from browser import CHROMIUM_FLAGS, images_marker, open_in_chromium  # noqa: E402
from helpers import environment, report  # noqa: E402
from helpers.confidence import calibrate, selective
from helpers.metrics import classification as metrics
from helpers.quantize import ort as quantize_ort
from helpers.run import atomic, run_record

CLASSES = [str(i) for i in range(4)]


def labels_and_logits(n, seed, noise=1.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, noise, (n, len(CLASSES))) + 3.0 * np.eye(len(CLASSES))[labels]
    return labels, logits.astype(np.float32)


def png(path, title):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    atomic.save_figure(fig, path)
    plt.close(fig)


def write_phase(root, pid, files):
    """Write {name: dict (JSON) | "png" | callable(path)} under root/pid; return {name: path}."""
    out = {}
    for name, content in files.items():
        path = root / pid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "png":
            png(path, f"{pid} {name}")
        elif callable(content):
            content(path)
        else:
            atomic.write_json(path, content)
        out[name] = path
    return out


def adaptation_doc(labels, before, after):
    """adaptation.json as phase 02b writes it (validation.record), for logits before/after adaptation."""
    from helpers.adaptation import methods, validation

    results = {
        "target": {
            when: {
                **metrics.accuracy_with_ci(labels, x.argmax(1)),
                "per_class": metrics.per_class_accuracy(labels, x.argmax(1), len(CLASSES)).tolist(),
            }
            for when, x in (("before", before), ("after", after))
        }
    }
    adapted = methods.Adapted(None, None, {}, {}, {"epoch": [1, 2], "loss": [0.5, 0.3]}, 10, 100)
    parity = {"n": len(labels), "max_abs_logit_diff": 1e-6, "tolerance": 1e-4, "argmax_differ": 0, "status": "PASS"}
    return validation.record(methods.AdaptConfig("lora"), adapted, ["fc"], parity, None, results, {})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Results of phases 00-08 in the layouts the phases write, built with the phases' helpers."""
    root = tmp_path_factory.mktemp("results")
    val_y, val_logits = labels_and_logits(300, 0)
    test_y, test_logits = labels_and_logits(400, 1)
    int8_logits = test_logits + np.random.default_rng(2).normal(0, 0.05, test_logits.shape).astype(np.float32)
    summary = {
        s: metrics.classification_summary(y, x.argmax(1), CLASSES)
        for s, y, x in (("val", val_y, val_logits), ("test", test_y, test_logits))
    }
    calibration = calibrate.calibrate(
        {"val": val_logits, "test": test_logits}, {"val": val_y, "test": test_y}, "temperature_scaling", n_boot=20
    )
    calibrated = calibration.calibrated
    threshold_report, _, _ = selective.select_and_evaluate(
        calibrated["val"], val_y, calibrated["test"], test_y, n_boot=20
    )
    quant = quantize_ort.build_quant_report(
        test_y, test_logits, 4000, {"minmax": (int8_logits, {"size_bytes": 1200})}, "minmax", best_variant="minmax"
    )
    cal = {"fp32": calibration.metrics_doc()}
    latency_row = {
        "model": "m",
        "runtime": "onnxruntime",
        "precision": "fp32",
        "batch_size": 1,
        "end_to_end_latency_ms": {"mean": 0.2},
        "contention_free_ms": 0.1,
        "throughput_fps": 5000.0,
    }
    validation_row = {
        "logit_max_abs_diff": 1e-6,
        "argmax_mismatches": 0,
        "near_tie_argmax_mismatches": 0,
        "calibrated_argmax_mismatches": 0,
        "probability_max_abs_diff": 1e-7,
        "probability_atol": 1e-6,
        "accept_mismatches": 0,
        "near_threshold_accept_mismatches": 0,
        "accepted": 390,
        "passed": True,
        "failures": [],
    }
    phases = {
        "00_environment": {"environment.json": environment.collect(), "isa.png": "png"},
        "01_data": {
            "distribution.json": {
                "dataset": "digits",
                "class_names": CLASSES,
                "slice_hash": "ab" * 32,
                "distribution": dict.fromkeys(CLASSES, 5),
                "inputs": {"dtype": "float32", "shape": [20, 8, 8, 1], "min": 0.0, "max": 255.0},
            },
            "splits.npz": lambda p: atomic.save_npz(p, train=np.arange(50), val=np.arange(300), test=np.arange(400)),
            "samples.png": "png",
        },
        "02_train": {
            "metrics.json": summary,
            "model.json": {"name": "mlp", "num_classes": 4, "input_shape": [8, 8, 1]},
            "curves.png": "png",
            "confusion.png": "png",
        },
        "02a_target": {
            "target.json": {
                "description": "digits with Gaussian noise",
                "deployment": "target",
                "sizes": {"target_test_labels.npz": 400},
            },
            "target.png": "png",
        },
        "02b_adapt": {"adaptation.json": adaptation_doc(test_y, test_logits, int8_logits), "adaptation.png": "png"},
        "03_activation_stats": {
            "trained/rate_targets.json": {
                "r_star": {"positive": [0.5, 0.4], "zscore": [0.15, 0.16]},
                "layer_names": ["a", "b"],
                "role": "trained",
            },
            "rates.png": "png",
            "sigma.png": "png",
        },
        "04_quantize": {"quant_report.json": quant, "quant.png": "png"},
        "05_latency": {
            "latency.json": {
                "hardware_id": "cpu-x",
                "int8_variant": "minmax",
                "measurements": [latency_row],
                "int8_over_fp32": {"m/onnxruntime/b1": 0.8},
            },
            "estimator.json": {"lomo": {"available": False, "reason": "one model only"}},
            "latency.png": "png",
        },
        "06_confidence": {
            "fp32/scaling_params.json": calibration.params_doc(),
            "calibration_metrics.json": cal,
            "reliability.png": "png",
            "confidence.png": "png",
        },
        "07_selective": {
            "threshold.json": {"selective_model": "fp32", "models": {"fp32": threshold_report}},
            "risk_coverage.png": "png",
            "threshold_sweep.png": "png",
        },
        "08_bundle": {
            "validation.json": {"status": "PASS", "n": 400, "fp32": validation_row, "int8": validation_row},
            "bundle/bundle.json": {
                "schema_version": 1,
                "source": {"run_id": "run-7"},
                "models": {"fp32": {"file": "model_fp32.onnx", "temperature": 1.2, "threshold": 0.9}},
            },
            "predictions.png": "png",
        },
    }
    return {pid: write_phase(root, pid, files) for pid, files in phases.items()}


def png_count(inputs):
    """Figures the page shows: every PNG but 00's ISA chart (it repeats the environment table)."""
    return sum(name.endswith(".png") and name != "isa.png" for files in inputs.values() for name in files)


def test_full_report_has_every_section_table_and_figure(inputs):
    page = report.render(inputs)
    assert "Every phase is present." in page and 'class="missing"' not in page
    for pid in report.SECTIONS:
        assert f'<section id="{pid}">' in page
    assert page.count("<img ") == png_count(inputs) == page.count('src="data:image/png;base64,')
    assert page.count("<table") >= 10
    assert "minmax" in page and "run-7" in page and 'class="pass">PASS' in page
    assert (
        "INT8 vs FP32 latency (05: runtime, batch)" in page and "onnxruntime batch 1: 1.2x faster" in page
    )  # 05's ratio, runtime named, joined into 04's table
    assert "<th>model</th>" in page and "<th>accuracy (%)</th>" in page and "accuracy_drop_points" not in page


def test_calibration_section_shows_every_candidate_and_why_the_chosen_one_won():
    """On the committed reference run's real phase-06 files: a row per candidate map per model, the chosen one
    marked, and the selection's own sentence (the identity winning says why no map was applied)."""
    results = Path(report.__file__).resolve().parents[2] / "runs/reference/results/06_confidence"
    files = {p.relative_to(results).as_posix(): p for p in results.rglob("*") if p.is_file()}
    html_text = "\n".join(
        report.candidate_tables(files, json.loads((results / "calibration_metrics.json").read_text()), "target")
    )
    assert "chosen on target val (CV NLL), measured on target test" in html_text
    for name in (n for n in files if n.endswith("/scaling_params.json")):
        doc = json.loads(files[name].read_text())
        model = report.model_label(name.split("/")[0])  # FP32, INT8 minmax, ...
        assert f"<h4>{model}</h4>" in html_text
        assert f"{model}: {doc['selection']['chosen']} chosen: {doc['selection']['reason']}" in html_text
    assert html_text.count("<td>chosen</td>") == len([n for n in files if n.endswith("/scaling_params.json")])
    assert html_text.count("<tr>") == sum(  # body rows (the header row has a style)
        len(json.loads(files[n].read_text())["candidates"]) for n in files if n.endswith("/scaling_params.json")
    )


def test_page_is_self_contained(inputs):
    page = report.render(inputs)
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)  # only inline images and in-page anchors
    assert "<script" not in page and "<link" not in page and "http" not in page


def test_missing_phases_are_named_not_fatal(inputs):
    partial = {pid: files for pid, files in inputs.items() if pid not in ("04_quantize", "05_latency", "08_bundle")}
    page = report.render(partial)
    assert "Missing phases (not run, or their results no longer verify): 04_quantize, 05_latency, 08_bundle" in page
    for pid in ("04_quantize", "05_latency", "08_bundle"):
        assert f"Phase {pid} is missing from this run" in page
    assert page.count("<img ") == png_count(partial)
    assert report.missing_phases(partial) == ["04_quantize", "05_latency", "08_bundle"]
    assert list(report.section_table(partial)["status"]).count("missing") == 3


def test_same_results_anywhere_give_the_same_bytes(inputs, tmp_path):
    moved = {}
    for pid, files in inputs.items():
        moved[pid] = {}
        for name, path in files.items():
            dest = tmp_path / "elsewhere" / pid / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
            moved[pid][name] = dest
    assert report.render(inputs) == report.render(moved)
    assert str(tmp_path) not in report.render(moved)


def test_results_in_another_layout_name_the_phase(inputs, tmp_path):
    bad = tmp_path / "threshold.json"
    atomic.write_json(bad, {"threshold": 0.5})  # no selective_model / models
    with pytest.raises(ValueError, match="results of 07_selective do not have the layout"):
        report.render({**inputs, "07_selective": {**inputs["07_selective"], "threshold.json": bad}})


def test_unknown_phase_is_refused(inputs):
    with pytest.raises(ValueError, match="no report section for phase"):
        report.render({**inputs, "10_extra": {}})


# -- headless Chromium (tests/browser.py; the `chromium` fixture is in tests/conftest.py) ----------


def test_report_loads_in_chromium_with_every_figure_decoded(chromium, inputs, tmp_path):
    n = png_count(inputs)
    dom = open_in_chromium(chromium, report.render(inputs), tmp_path)
    assert images_marker(dom) == f"{n}/{n}"
    for pid in report.SECTIONS:
        assert f'id="{pid}"' in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1200,3000",
            f"--screenshot={shot}",
            (tmp_path / "page.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000


def test_chromium_probe_catches_a_broken_figure(chromium, inputs, tmp_path):
    page = report.render(inputs)
    broken = page.replace('src="data:image/png;base64,iVBOR', 'src="data:image/png;base64,AAAAR', 1)
    assert broken != page
    n = png_count(inputs)
    assert images_marker(open_in_chromium(chromium, broken, tmp_path)) == f"{n - 1}/{n}"


# -- the overview at the top: the run itself ------------------------------------------------------


@pytest.fixture
def overview_run(tmp_path):
    """A real run directory (record + config_resolved.yaml) with two non-default params and a failed phase."""
    from helpers.run import run_record, runner
    from helpers.run.graph import PHASES

    resolved = runner.resolve_config(overrides=["epochs=3", "02_train.lr=0.05"])
    run_dir = runner.create_run(resolved, list(PHASES), tmp_path / "runs", run_id="run-7")
    run_record.set_phase(run_dir, "06_confidence", status="failed", error="ValueError: <bad> & worse")
    return run_dir


SUMMARIES = {
    "01_data": {"dataset": "digits"},
    "02_train": {"architecture": "mlp", "source": "train", "test_accuracy": 0.81},
    "04_quantize": {"best_variant": "minmax", "int8_test_accuracy": {"minmax": 0.8025}},
    "08_bundle": {"status": "PASS"},
}


def overview_page(inputs, run_dir):
    latency = {
        "int8_over_fp32": {"m/onnxruntime/b32": 0.5, "m/onnxruntime/b1": 0.8},
        "measurements": [
            {"precision": p, "batch_size": 1, "end_to_end_latency_ms": {"mean": ms}}
            for p, ms in (("fp32", 0.2), ("int8", 0.16))
        ],
    }
    return report.render(inputs, overview=report.overview(run_dir, SUMMARIES, latency, exclude="09_report"))


def test_overview_names_the_run_its_failure_params_and_headline(inputs, overview_run):
    page = overview_page(inputs, overview_run)
    assert "<h1>calib-lab run report: run-7</h1>" in page
    assert '<div class="banner"><b>06_confidence failed</b>: ValueError: &lt;bad&gt; &amp; worse' in page
    assert page.index('class="banner"') < page.index('<section id="00_environment">')
    assert '<tr class="changed"><td>epochs</td><td>3</td><td>changed</td><td>02</td></tr>' in page
    assert '<tr class="changed"><td>lr</td><td>0.05</td>' in page
    assert "<tr><td>seed</td><td>0</td><td>default</td>" in page  # shared by every phase: one row
    distinct_keys = {key for params in run_record.load_config(overview_run).values() for key in params}
    assert "Parameters: 2 changed from the notebooks' defaults" in page
    assert f"all {len(distinct_keys)} resolved parameters" in page  # a key shared by several phases: one row
    for card in (
        "<b>81.00%</b><span>FP32 accuracy on test",  # no 02a in these summaries: the run's one domain
        "<b>80.25%</b><span>INT8 (minmax) accuracy on test",
        "<b>1.2x faster</b><span>INT8 vs FP32 end-to-end latency, onnxruntime, batch 1",
        '<b class="pass">PASS</b>',
    ):
        assert card in page, card
    git = json.loads((overview_run / "run_record.json").read_text())["git"]
    assert f"<th>git</th><td>{str(git['sha'])[:12]}" in page
    assert "<th>dataset</th><td>digits</td>" in page and "<th>model</th><td>mlp (train)</td>" in page


def test_tables_have_units_and_keep_small_values():
    frame = pd.DataFrame(
        {"accuracy": [0.97412], "test_aurc": [9.7e-05], "size_bytes": [2048], "throughput_fps": [45370.2]},
        index=["fp32"],
    )
    html = report.table(frame, index="model")
    assert "<th>model</th>" in html and "<th>accuracy (%)</th>" in html and "<td>97.41</td>" in html
    assert "<td>9.70e-05</td>" in html and "<th>size (KiB)</th>" in html and "<td>2</td>" in html
    assert "<td>45,370</td>" in html and "throughput fps" in html


def test_overview_in_chromium_fits_the_page(chromium, inputs, overview_run, tmp_path):
    """The overview and the widest table (quantization) fit a 1200 px window: no horizontal scrolling."""
    probe = (
        '<script>window.addEventListener("load", () => {const de = document.documentElement;'
        'const wide = [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right'
        " > window.innerWidth).length;"
        'document.body.setAttribute("data-fit", (de.scrollWidth <= window.innerWidth) + "/" + wide);});'
        "</script></body>"
    )
    path = tmp_path / "overview.html"
    path.write_text(overview_page(inputs, overview_run).replace("</body>", probe))
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert re.search(r'data-fit="true/0"', dom), re.search(r'data-fit="[^"]*"', dom)
    assert 'class="banner"' in dom and 'class="cards"' in dom and 'class="params"' in dom
    shot = tmp_path / "overview.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


# -- labels, on the committed reference run's real results ------------------------------------------


def reference_page() -> str:
    """The report of runs/reference rendered from its own results (every phase's manifest files) and record."""
    from helpers.run import manifest

    run = Path(report.__file__).resolve().parents[2] / "runs/reference"
    inputs, summaries = {}, {}
    for pid in report.SECTIONS:
        doc = manifest.read_manifest(run, pid)
        inputs[pid] = {name: run / "results" / pid / name for name in sorted(doc["files"])}
        summaries[pid] = doc.get("summary") or {}
    latency = json.loads(inputs["05_latency"]["latency.json"].read_text())
    return report.render(inputs, overview=report.overview(run, summaries, latency, exclude="09_report"))


def section_of(page: str, pid: str) -> str:
    start = page.index(f'<section id="{pid}">')
    return page[start : page.index("</section>", start)]


def test_every_label_names_its_model_split_domain_and_unit():
    """Issue 30: no internal key as a column name, no bare "test" where the deployment domain's test split is
    meant, row labels that say which model and which domain's split."""
    page = reference_page()
    domain = json.loads(
        (Path(report.__file__).resolve().parents[2] / "runs/reference/results/02a_target/target.json").read_text()
    )["deployment"]
    headers = [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", page, re.S)]
    internal = [h for h in headers if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+|ece|nll|brier|p|r\* \w+", h)]
    assert not internal, internal
    for table_html in re.findall(r"<table.*?</table>", page, re.S):  # the row labels' column is named
        assert re.search(r"<th[^>]*>\s*\S", re.search(r"<tr.*?</tr>", table_html, re.S).group()), table_html[:300]
    # the deployment domain in every heading, caption and split column of phases 03-08
    for pid in ("04_quantize", "06_confidence", "07_selective", "08_bundle"):
        body = section_of(page, pid)
        for caption in re.findall(r"<(?:h3|figcaption)>(.*?)</", body):
            if "test" in caption or "val" in caption:
                assert f"{domain} test" in caption or f"{domain} val" in caption or "each domain" in caption, caption
        assert not re.search(r"\((test|val)\)", body), re.search(r".{80}\((test|val)\).{20}", body).group()
    assert f"<th>{domain} val coverage (%)</th>" in section_of(page, "07_selective")
    assert f"<th>{domain} test coverage (%) [95% CI]</th>" in section_of(page, "07_selective")
    assert f"<h3>FP32 and every INT8 variant on {domain} test</h3>" in section_of(page, "04_quantize")
    # which model each row is, and which domain's split
    assert "<td>FP32</td>" in section_of(page, "04_quantize") and "<td>INT8 minmax</td>" in section_of(
        page, "04_quantize"
    )
    adaptation = section_of(page, "02b_adapt")
    assert "<td>source test</td>" in adaptation and f"<td>{domain} test (deployment domain)</td>" in adaptation
    assert "<th>accuracy before (%)</th>" in adaptation and "<th>gain (points)</th>" in adaptation
    assert "<td>source val</td>" in section_of(page, "02_train") and "<td>source test</td>" in section_of(
        page, "02_train"
    )
    assert f"<td>{domain} test</td>" in section_of(page, "02a_target")  # 02a's sets, named (the index was hidden)
    bundle_rows = re.findall(r"<tr>\s*<td>([^<]*, (?:onnxruntime|openvino))</td>", section_of(page, "08_bundle"))
    assert "FP32, onnxruntime" in bundle_rows and any(r.startswith("INT8 ") for r in bundle_rows), bundle_rows
    # one unit per quantity: an ECE interval in % beside an ECE in % (the shift table held fractions)
    shift = section_of(page, "06_confidence")[section_of(page, "06_confidence").index("Calibration under shift") :]
    assert not re.search(r"<td>\[0\.0\d+, 0\.\d+\]</td>", shift)
    # the cards at the top
    for card in (f"FP32 accuracy on {domain} test, before -&gt; after adaptation", f"FP32 ECE on {domain} test"):
        assert card in page, card


def test_latency_section_carries_the_measurement_warnings():
    """Issue 24: phase 05's warnings (a noisy machine) reach the report, each one, beside the table they qualify."""
    page = reference_page()
    run = Path(report.__file__).resolve().parents[2] / "runs/reference"
    warnings = json.loads((run / "results/05_latency/latency.json").read_text())["warnings"]
    latency = section_of(page, "05_latency")
    if not warnings:  # an idle machine: nothing to say, and nothing said
        assert "measurement warning" not in latency
        return
    assert f"{len(warnings)} measurement warning(s)" in latency
    assert all(html.escape(w) in latency for w in warnings)


def test_model_label_names_every_bundle_precision_and_int8_variant():
    labels = {name: report.model_label(name) for name in ("fp32", "bf16", "int8", "minmax", "percentile")}
    assert labels == {
        "fp32": "FP32",
        "bf16": "bf16",  # the FP32 graph under a bf16 hint: not an INT8 variant
        "int8": "INT8",
        "minmax": "INT8 minmax",
        "percentile": "INT8 percentile",
    }
