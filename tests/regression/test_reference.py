"""Regression against the committed reference run (runs/reference), portable across x86-64 CPUs.

The reference is re-executed from a temporary copy (the committed files are never written) twice:
on this CPU as it is, and with the CPU capped to AVX2 (:data:`AVX2_CAP`), a simulated second
machine whose kernels round differently -- the same kind of difference an Intel Xeon (AVX-512 +
AMX) shows against the AMD EPYC (AVX-512) that recorded the reference. Every check must pass on
both. What is checked where:

* nbval (cell by cell): every cell runs without error and prints the same *structure*. Phase 01
  (indices, class counts, slice hash: integer arithmetic on a fixed seed) must print exactly the
  same text; phase 00 describes the machine, so only its outputs' kinds and count are compared;
  phases 02-09 are compared with every number masked (``nbval_sanitize_numbers.cfg``).
* pytest, below: the numbers, each within a tolerance derived from measured cross-machine
  variation (the comment next to each); numbers unstable by nature are asserted by their defining
  property, not by value; phase 01's files byte for byte.

Refresh the reference deliberately with `make reference` and review the diff.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.confidence import selective
from helpers.quantize import ort as quantize_ort
from helpers.run.graph import MODEL_PHASE
from helpers.run.project import project_root
from helpers.run.runner import KERNEL_ENV

ROOT = project_root()
REFERENCE = ROOT / "runs" / "reference"
HERE = Path(__file__).resolve().parent

# The simulated second machine: torch's ATen kernels and oneDNN (its convolutions) capped to AVX2
# (test_isa_cap_takes_effect checks both are honoured). onnxruntime has no such switch: its MLAS
# kernels run at the CPU's full ISA in both runs.
AVX2_CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MACHINES = {"native": {}, "avx2": AVX2_CAP}
# nbval checks per phase: 00 structure only, 01 exact text, the rest with numbers masked
SANITIZE = {
    "structure": ("nbval_sanitize.cfg", "nbval_sanitize_structure.cfg"),
    "exact": ("nbval_sanitize.cfg",),
    "numbers": ("nbval_sanitize.cfg", "nbval_sanitize_numbers.cfg"),
}


def nbval_mode(notebook: str) -> str:
    return {"00_environment": "structure", "01_data": "exact"}.get(Path(notebook).stem, "numbers")


def copy_reference(tmp_path_factory, name: str = "reference") -> Path:
    if not (REFERENCE / "run_record.json").exists():
        pytest.fail("runs/reference is missing: create it with `make reference` and commit it")
    copy = tmp_path_factory.mktemp(f"nbval-{name}") / "reference"
    shutil.copytree(REFERENCE, copy)
    return copy


def sanitize_file(mode: str, directory: Path) -> Path:
    path = directory / f"nbval-{mode}.cfg"
    path.write_text("\n".join((HERE / name).read_text() for name in SANITIZE[mode]))
    return path


def sanitize(text: str, mode: str) -> str:
    """What nbval compares of ``text`` in ``mode``: its own parser, its order of patterns."""
    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns("\n".join((HERE / n).read_text() for n in SANITIZE[mode])):
        text = re.sub(regex, replace, text)
    return text


def nbval(run_dir: Path, notebooks: list[Path], mode: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """nbval over ``notebooks`` (in order) of the run copy ``run_dir``; junit results in ``run_dir/../<mode>.xml``."""
    kernel_env = {**os.environ, **KERNEL_ENV, **(env or {})}
    kernel_env.pop("CALIB_MANAGED_RUN", None)  # the kernels keep the copy's run_record themselves
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--nbval",
            "--nbval-current-env",
            "--nbval-cell-timeout=1800",
            "--nbval-sanitize-with",
            str(sanitize_file(mode, run_dir.parent)),
            f"--junitxml={run_dir.parent / f'{mode}.xml'}",
            *map(str, notebooks),
        ],
        cwd=run_dir,
        env=kernel_env,
        capture_output=True,
        text=True,
    )


def cells_passed(run_dir: Path, mode: str) -> dict[str, int]:
    """Per notebook, how many of its cells nbval ran and compared without a failure or error."""
    counts: dict[str, int] = {}
    for case in ET.parse(run_dir.parent / f"{mode}.xml").iter("testcase"):
        if case.find("failure") is None and case.find("error") is None and case.find("skipped") is None:
            stem = re.search(
                r"\d\d[a-z]?_[A-Za-z0-9_]+", case.get("classname", "")
            ).group()  # notebooks.02b_adapt.ipynb
            counts[stem] = counts.get(stem, 0) + 1
    return counts


@pytest.fixture(scope="module", params=list(MACHINES), ids=lambda m: f"cpu={m}")
def machine(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def reexecuted(tmp_path_factory, machine) -> Path:
    """The reference re-executed under nbval on one (real or simulated) machine."""
    copy = copy_reference(tmp_path_factory, machine)
    notebooks = sorted((copy / "notebooks").glob("*.ipynb"))
    for mode in ("structure", "exact", "numbers"):
        proc = nbval(copy, [nb for nb in notebooks if nbval_mode(nb.name) == mode], mode, MACHINES[machine])
        assert proc.returncode == 0, (
            f"nbval ({mode}, cpu={machine}) found differences:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
        )
    return copy


def read_json(run_dir: Path, rel: str) -> dict:
    return json.loads((run_dir / rel).read_text())


def summary(run_dir: Path, phase: str) -> dict:
    return read_json(run_dir, f"manifests/{phase}.json")["summary"]


def test_isa_cap_takes_effect():
    """Both caps of AVX2_CAP are honoured by this torch build (on a CPU with AVX2 or better)."""
    probe = (
        "import torch, torch.nn.functional as F; print('aten', torch.backends.cpu.get_cpu_capability()); "
        "F.conv2d(torch.ones(2, 3, 16, 16), torch.ones(4, 3, 3, 3))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **AVX2_CAP, "ONEDNN_VERBOSE": "1"},
    )
    assert "aten AVX2" in proc.stdout
    assert "isa:Intel AVX2" in proc.stdout and "convolution,jit:avx2" in proc.stdout  # oneDNN's own report


def test_sanitizers_mask_numbers_and_variant_names_but_not_structure():
    """On the reference's own outputs: another number or INT8 variant passes, another column or row does not."""
    import nbformat

    nb = nbformat.read(REFERENCE / "notebooks/04_quantize.ipynb", as_version=4)
    html = next(
        o["data"]["text/html"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if ">mcc<" in o.get("data", {}).get("text/html", "")  # the quantization report's table
    )
    printed = next(
        o["text"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "best ORT variant" in o.get("text", "")
    )
    value = re.search(r">(0\.\d{4,})<", html).group(1)  # a number the table printed (an accuracy, a diff)
    other = f"{float(value) / 2:.{len(value) - 2}f}"  # another number of the same width
    assert sanitize(html, "numbers") == sanitize(html.replace(value, other), "numbers")
    assert sanitize(printed, "numbers") == sanitize(re.sub(r"minmax|entropy", "percentile", printed), "numbers")
    assert sanitize(html, "numbers") != sanitize(html.replace(">mcc<", ">matthews<"), "numbers")
    assert sanitize(html, "numbers") != sanitize(html.replace("<tr>", "<tr><td>1</td>", 1), "numbers")
    assert sanitize(html, "exact") != sanitize(html.replace(value, other), "exact")


def test_nbval_catches_a_changed_output(tmp_path_factory):
    import nbformat

    copy = copy_reference(tmp_path_factory, "changed")
    path = copy / "notebooks" / "01_data.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(
        c for c in nb.cells if c.cell_type == "code" and "Loaded" in "".join(o.get("text", "") for o in c.outputs)
    )
    stream = next(o for o in cell.outputs if "Loaded" in o.get("text", ""))
    stream["text"] = stream["text"].replace("Loaded", "Loaded 1 extra +")
    nbformat.write(nb, path)
    proc = nbval(copy, [path], "exact")
    assert proc.returncode != 0 and "Loaded 1 extra" in proc.stdout


def test_nbval_compares_every_cell_of_every_reference_notebook(reexecuted):
    import nbformat

    passed = {}
    for mode in SANITIZE:
        passed.update(cells_passed(reexecuted, mode))
    for path in sorted((REFERENCE / "notebooks").glob("*.ipynb")):
        code_cells = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
        assert passed.get(path.stem) == code_cells, (path.stem, passed.get(path.stem), code_cells)


def test_data_phase_reproduces_exactly(reexecuted):
    for name in ("splits.npz", "calibration_slice.npz", "distribution.json"):
        assert (reexecuted / "results/01_data" / name).read_bytes() == (
            REFERENCE / "results/01_data" / name
        ).read_bytes()
    assert summary(reexecuted, "01_data")["slice_hash"] == summary(REFERENCE, "01_data")["slice_hash"]


def test_the_isa_cap_reached_the_kernels(reexecuted, machine):
    """The re-executed phase 00 records the ATen capability its kernel ran with."""
    recorded = read_json(reexecuted, "results/00_environment/environment.json")["determinism"]["torch_cpu_capability"]
    if machine == "avx2":
        assert recorded == "AVX2"
    else:
        assert recorded != "DEFAULT"


def split_labels(run_dir: Path, split: str) -> np.ndarray:
    from helpers import data

    ds = data.load_dataset("digits")
    return data.split_data(ds, data.load_splits(run_dir / "results/01_data/splits.npz", ds), split)[1]


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


# Every tolerance below is about 3x the largest change measured for that number between two
# machines on the same configuration: AVX2-capped torch vs AVX-512 (the reference, AMD EPYC),
# ATen without vector ISA + oneDNN SSE4.1 vs AVX-512, and (issue 11) an Intel Xeon with AVX-512 +
# AMX vs the EPYC. Training rounds differently on each, so the model itself differs: this is the
# variation of two equally good trainings, not of float rounding alone. Phases 04-07 evaluate the
# deployed model, 02b's adapted one: LoRA fine-tuning on the noisy target domain amplifies 02's
# difference (measured AVX2-capped, the only second machine measured since 02b exists).
@pytest.mark.parametrize(
    "phase, key, tolerance",
    [
        # 540 test images; measured 1 image (0.0019) on all three other machines -> 3 images
        ("02_train", "test_accuracy", 3 / 540),
        # 126 val images; measured 1 image (0.0079, SSE4.1) -> 3 images
        ("02_train", "val_accuracy", 3 / 126),
        # measured 0.0021 (AVX2 and SSE4.1) -> 0.0065
        ("02_train", "test_mcc", 0.0065),
        # the adapted model on the same 540 images; measured 4 images (0.0074, AVX2) -> 12 images
        ("04_quantize", "fp32_test_accuracy", 12 / 540),
        # its INT8 variants; measured 4 images (minmax, percentile), 3 (entropy, pt2e), AVX2 -> 12 images
        ("04_quantize", "int8_test_accuracy.minmax", 12 / 540),
        ("04_quantize", "int8_test_accuracy.entropy", 12 / 540),
        ("04_quantize", "int8_test_accuracy.percentile", 12 / 540),
        ("04_quantize", "int8_test_accuracy.pt2e", 12 / 540),
        # ECE after the chosen map; measured, any model: 0.0076 (entropy, AVX2) -> 0.025
        ("06_confidence", "ece_post.fp32", 0.025),
    ],
)
def test_key_results_match_the_reference_within_measured_variation(reexecuted, phase, key, tolerance):
    assert lookup(summary(reexecuted, phase), key) == pytest.approx(
        lookup(summary(REFERENCE, phase), key), abs=tolerance
    )


def test_activation_rates_match_the_reference_within_measured_variation(reexecuted):
    """r* per hooked layer; measured: 0.0085 (trained model, zscore, first layer, AVX2) -> 0.025."""
    for role in ("trained", "init"):
        for kind in ("zscore", "positive"):
            np.testing.assert_allclose(
                summary(reexecuted, "03_activation_stats")["r_star"][role][kind],
                summary(REFERENCE, "03_activation_stats")["r_star"][role][kind],
                rtol=0,
                atol=0.025,
            )


def test_threshold_maximizes_val_mcc_on_its_recorded_sweep(reexecuted):
    """Unstable by value (126 val images, one or two errors: 0.9813 here, 0.9174 on a Xeon, 0.9387 AVX2-capped):
    asserted by what defines it -- no threshold of the recorded sweep reaches a higher val MCC."""
    doc = read_json(reexecuted, "results/07_selective/threshold.json")
    sweep = pd.read_csv(reexecuted / "results/07_selective/threshold_sweep.csv")
    assert sorted(doc["models"]) == sorted(sweep["model"].unique())
    for model, report in doc["models"].items():
        rows = sweep[sweep["model"] == model]
        assert report["criterion"] == "max_mcc" and report["met"]
        chosen = rows[np.isclose(rows["threshold"], report["threshold"], rtol=0, atol=1e-12)]
        assert len(chosen) == 1 and chosen["mcc"].item() == rows["mcc"].max() == report["val"]["mcc"]
        assert report["threshold"] == selective.choose_threshold(rows.drop(columns="model"), "max_mcc").threshold


def test_test_coverage_is_what_the_threshold_accepts(reexecuted):
    """Unstable by value, as its threshold is (coverage 0.933 on the reference, 0.983 AVX2-capped, where the
    threshold moved 0.81 -> 0.52): asserted by what defines it -- the share of test images whose calibrated
    confidence reaches the recorded threshold."""
    doc = read_json(reexecuted, "results/07_selective/threshold.json")
    calibrated = np.load(reexecuted / "results/06_confidence/calibrated_logits.npz")
    test_labels = split_labels(reexecuted, "test")
    for model, report in doc["models"].items():
        logits = calibrated[f"{model}_test"]
        recomputed = selective.evaluate_threshold(logits, test_labels, report["threshold"], n_boot=1)
        assert recomputed["coverage"] == report["test"]["coverage"], model
    assert (
        summary(reexecuted, "07_selective")["test_coverage"]
        == doc["models"][doc["selective_model"]]["test"]["coverage"]
    )


def test_temperatures_minimize_val_nll(reexecuted):
    """Unstable by value (FP32 T: 0.197 on the reference, 0.457 AVX2-capped, 0.05 -- the search bound -- with
    SSE4.1, whose model classifies all 126 val images correctly): asserted by its defining property, T
    minimizes the val NLL of the model's logits within the search bounds. (T is phase 06's temperature-scaling
    candidate, fitted for every model whichever map is chosen.)"""
    from helpers.confidence import temperature_scaling
    from helpers.metrics.calibration import negative_log_likelihood

    low, high = inspect.signature(temperature_scaling.fit).parameters["bounds"].default
    raw = {"fp32": np.load(reexecuted / f"results/{MODEL_PHASE}/logits.npz")["val"]}
    int8 = np.load(reexecuted / "results/04_quantize/int8_logits.npz")
    labels = split_labels(reexecuted, "val")
    metrics = read_json(reexecuted, "results/06_confidence/calibration_metrics.json")
    assert set(metrics) == set(read_json(REFERENCE, "results/06_confidence/calibration_metrics.json"))
    for model in metrics:
        logits = raw["fp32"] if model == "fp32" else int8[f"{model}_val"]
        params = read_json(reexecuted, f"results/06_confidence/{model}/scaling_params.json")
        t = params["candidates"]["temperature_scaling"]["params"]["temperature"]
        best = negative_log_likelihood(logits / t, labels)
        for nearby in (max(low, t / 1.02), min(high, t * 1.02)):
            assert best <= negative_log_likelihood(logits / nearby, labels) + 1e-12, (model, t, nearby)


def test_best_int8_variant_is_the_documented_choice_given_the_recorded_numbers(reexecuted):
    """Which variant wins differs between machines (minmax here, entropy on a Xeon); the rule does not."""
    report = read_json(reexecuted, "results/04_quantize/quant_report.json")
    rows = {name: report["variants"][name] for name in report["ort_variants"]}
    assert (
        report["best_variant"] == quantize_ort.best_variant(rows) == summary(reexecuted, "04_quantize")["best_variant"]
    )
    assert summary(reexecuted, "06_confidence")["best_int8"] == report["best_variant"]
    assert (
        read_json(reexecuted, "results/08_bundle/bundle/bundle.json")["models"]["int8"]["variant"]
        == report["best_variant"]
    )


def test_wrong_preprocessing_ablation_still_collapses(reexecuted):
    """/255 calibration: 0.102 on the reference; by nature near chance (10 classes), not a stable value."""
    assert summary(reexecuted, "04_quantize")["divided_by_255_test_accuracy"] < 0.3


def test_bundle_reproduces_the_pipeline_on_every_machine(reexecuted):
    validation = read_json(reexecuted, "results/08_bundle/validation.json")
    assert validation["status"] == "PASS" and summary(reexecuted, "08_bundle")["status"] == "PASS"
    for precision in ("fp32", "int8"):
        assert validation[precision]["parity"]["passed"]


def test_reference_manifests_verify():
    from helpers.run import manifest

    for path in (REFERENCE / "manifests").glob("*.json"):
        assert manifest.verify(REFERENCE, path.stem) == []
