"""Regression against the committed reference run (runs/reference), portable across x86-64 CPUs by construction.

The rule (docs/REGRESSION.md): nothing nbval compares may depend on a float. Numbers, words a float
chooses (verdicts, chosen maps and variants, PASS/FAIL, flags), table body cells and layouts whose
wrapping follows printed widths are masked (``nbval_sanitize_numbers.cfg``); pytest checks each of them
here, numbers within a tolerance derived from measured cross-machine variation, words by their
defining property. Three kinds of evidence, all in the default selection:

* **re-executions** of the reference from a temporary copy (the committed files are never written):
  on this CPU as it is, and capped to AVX2 (:data:`AVX2_CAP`), whose kernels round differently;
  nbval compares every cell's structure, pytest the numbers.
* **a real second machine, offline**: ``../shared/machines/intel-xeon-amx/reference``, the same
  configuration executed on an Intel Xeon with AMX, compared cell by cell through the same sanitizers
  (nbval's own comparison, :mod:`notebook_compare`) and checked by the same numeric tests. It needs no
  kernel; it compares the notebooks whose sources are the reference's, names the others, and skips, saying
  why, once none is left.
* **the canary**: the reference re-executed with another seed from phase 02 on, so every float moves far
  more than any CPU moves it (a checked fact, :func:`test_canary_moved_the_floats_beyond_any_cpu`);
  nbval's structural comparison must still pass. Any float-derived text that leaks fails here, on the
  developer's own machine, before another CPU sees it.

Phase 01 (indices, class counts, slice hash: integer arithmetic on a fixed seed) must print exactly the
same text and write the same bytes; phase 00 describes the machine, so only its outputs' kinds and count
are compared. Refresh the reference deliberately with `make reference` and review the diff.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from notebook_compare import differences

from helpers.confidence import selection, selective
from helpers.confidence.methods import METHODS, SELECTABLE
from helpers.metrics.calibration import NULL_LEVEL, VERDICTS
from helpers.quantize import ort as quantize_ort
from helpers.run.graph import MODEL_PHASE
from helpers.run.project import project_root
from helpers.run.runner import KERNEL_ENV
from helpers.runtime import RUNTIMES

ROOT = project_root()
REFERENCE = ROOT / "runs" / "reference"
HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("CALIB_SHARED_DIR", ROOT.parent / "shared"))

# The simulated second machine: torch's ATen kernels and oneDNN (its convolutions) capped to AVX2
# (test_isa_cap_takes_effect checks both are honoured). onnxruntime has no such switch: its MLAS
# kernels run at the CPU's full ISA in both runs.
AVX2_CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Re-executed here (env for the kernels), or another machine's run of the reference's configuration (offline).
MACHINES = {"native": {}, "avx2": AVX2_CAP}
OTHER_MACHINES = {"intel-xeon-amx": SHARED / "machines" / "intel-xeon-amx" / "reference"}
# The canary's seed for phases 02-09 (the reference's is 0); phases 00 and 01 keep theirs.
CANARY_SEED = 1
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


def sanitize_text(mode: str) -> str:
    return "\n".join((HERE / name).read_text() for name in SANITIZE[mode])


def sanitize_file(mode: str, directory: Path) -> Path:
    path = directory / f"nbval-{mode}.cfg"
    path.write_text(sanitize_text(mode))
    return path


def patterns(mode: str) -> list[tuple[str, str]]:
    """nbval's own parse of the sanitizers of ``mode``, in its order."""
    from nbval.plugin import get_sanitize_patterns

    return get_sanitize_patterns(sanitize_text(mode))


def sanitize(text: str, mode: str) -> str:
    """What nbval compares of ``text`` in ``mode``: its own parser, its order of patterns."""
    for regex, replace in patterns(mode):
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


def code_sources(run_dir: Path) -> dict[str, list[str]]:
    """Each executed notebook's code cells' sources, its injected parameters included."""
    return {
        path.stem: [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        for path in sorted((run_dir / "notebooks").glob("*.ipynb"))
    }


def other_machine_run(name: str) -> tuple[Path, list[str]]:
    """Another machine's run of the reference's configuration and the notebooks it can be compared on (those
    executed from the same sources and parameters as the reference's), or a skip that says why it cannot be."""
    run = OTHER_MACHINES[name]
    if not (run / "run_record.json").is_file():
        pytest.skip(f"{run} is absent (it comes with ../shared)")
    ours, theirs = code_sources(REFERENCE), code_sources(run)
    same = [stem for stem in ours if theirs.get(stem) == ours[stem]]
    diverged = sorted(set(ours) - set(same))
    if not same:
        pytest.skip(
            f"runs/reference was recorded from other notebook sources than {name}'s run ({run}): its outputs "
            "can no longer match; the canary (test_canary_*) is the guard that lasts"
        )
    if diverged:
        warnings.warn(
            f"{name}: {', '.join(diverged)} not compared offline (runs/reference was recorded from other sources "
            "or parameters of these notebooks); the canary covers them",
            stacklevel=1,
        )
    return run, same


# The AVX2-capped re-execution is slow-marked: the real second machine (compared offline) and the
# canary guard portability in CI; `-m slow` adds the capped third machine (about 95 s).
@pytest.fixture(
    scope="module",
    params=[pytest.param(m, marks=pytest.mark.slow) if m == "avx2" else m for m in [*MACHINES, *OTHER_MACHINES]],
    ids=lambda m: f"cpu={m}",
)
def machine(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def reexecuted(tmp_path_factory, machine) -> Path:
    """The reference's configuration run on one machine, compared by nbval cell by cell with the reference:
    re-executed here under nbval (this CPU, or AVX2-capped), or another machine's run compared offline."""
    if machine in OTHER_MACHINES:
        run, comparable = other_machine_run(machine)
        found = [
            d
            for stem in comparable
            for d in differences(
                REFERENCE / "notebooks" / f"{stem}.ipynb",
                run / "notebooks" / f"{stem}.ipynb",
                patterns(nbval_mode(stem)),
            )
        ]
        assert not found, f"{machine}'s run differs from runs/reference where nbval looks:\n" + "\n".join(found)
        if "01_data" not in comparable:  # another data configuration: none of its numbers is the reference's
            pytest.skip(
                f"{machine}'s run was recorded with other phase-01 parameters than runs/reference, so its numbers "
                f"belong to other splits; compared offline: {', '.join(comparable)} (no differences)"
            )
        return run
    copy = copy_reference(tmp_path_factory, machine)
    notebooks = sorted((copy / "notebooks").glob("*.ipynb"))
    for mode in ("structure", "exact", "numbers"):
        proc = nbval(copy, [nb for nb in notebooks if nbval_mode(nb.name) == mode], mode, MACHINES[machine])
        assert proc.returncode == 0, (
            f"nbval ({mode}, cpu={machine}) found differences:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
        )
    return copy


@pytest.fixture(scope="module")
def canary(tmp_path_factory) -> Path:
    """The reference re-executed with seed CANARY_SEED from phase 02 on (another training, another target
    domain draw, other bootstrap resamples), under nbval's structural comparison with the reference."""
    copy = copy_reference(tmp_path_factory, "canary")
    notebooks = [nb for nb in sorted((copy / "notebooks").glob("*.ipynb")) if nbval_mode(nb.name) == "numbers"]
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
        injected.source, count = re.subn(r"^seed = 0$", f"seed = {CANARY_SEED}", injected.source, flags=re.M)
        assert count == 1, f"{path.name}: no `seed = 0` in its injected parameters"
        nbformat.write(nb, path)
    proc = nbval(copy, notebooks, "numbers")
    assert proc.returncode == 0, (
        "float-derived text leaks into what nbval compares (the canary moved every float, and the output's "
        f"structure changed with them):\n{proc.stdout[-12000:]}\n{proc.stderr[-2000:]}"
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


def test_every_float_chosen_word_is_masked():
    """The sanitizers' word lists are the code's own vocabularies: a new map, variant, runtime or verdict
    that is not masked fails here, not on another machine."""
    printed = [
        *((m, text) for m in METHODS for text in (f"'{m}'", f"'{m} (lambda = 0.01)'", f"<td>{m}</td>")),
        *((v, f"best variant: {v}") for v in quantize_ort.METHODS),
        *((r, text) for r in RUNTIMES for text in (f"'{r}'", f"<td>{r}</td>")),
        *((v, f"target test: {v} (p = 0.3)") for v in VERDICTS),
        *((w, f"load-back validation: {w}; 'met': {w}") for w in ("PASS", "FAIL", "True", "False")),
    ]
    for word, text in printed:
        assert word not in sanitize(text, "numbers"), text
    assert sanitize("fp32: criterion NOT MET: target 0.9 cannot be met", "numbers") == sanitize(
        "fp32: criterion met: highest decision MCC on this split", "numbers"
    )


def test_sanitizers_mask_layouts_that_follow_printed_widths():
    """IPython wraps a repr at 79 characters: the same dict printed with other number widths breaks elsewhere."""
    from IPython.lib.pretty import pretty

    long = summary(REFERENCE, "03_activation_stats")  # r* printed with up to 13 digits
    short = json.loads(json.dumps(long), parse_float=lambda x: round(float(x), 2))
    assert pretty(short).count("\n") != pretty(long).count("\n")
    assert sanitize(pretty(short), "numbers") == sanitize(pretty(long), "numbers")
    assert sanitize(pretty(short), "numbers") != sanitize(pretty({**short, "extra": 1}), "numbers")


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


def test_offline_comparison_is_nbvals_and_catches_a_changed_structure(tmp_path):
    """notebook_compare on real executed notebooks: another number passes, another column or a missing
    output does not (what nbval itself reports for a re-execution)."""
    path = REFERENCE / "notebooks" / "04_quantize.ipynb"
    text = path.read_text()
    value = re.search(r">(0\.\d{4,})<", text).group(1)
    cases = {
        "number": text.replace(value, f"{float(value) / 2:.{len(value) - 2}f}", 1),
        "column": text.replace("&gt;mcc&lt;", "&gt;matthews&lt;").replace("<th>mcc</th>", "<th>matthews</th>"),
        "message": text.replace("best ORT variant", "best variant", 1),
    }
    found = {}
    for case, changed in cases.items():
        (tmp_path / case).mkdir()
        (tmp_path / case / path.name).write_text(changed)
        assert changed != text, case
        found[case] = differences(path, tmp_path / case / path.name, patterns("numbers"))
    assert found["number"] == [] and found["column"] and found["message"], found


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


def assert_every_cell_compared(run_dir: Path, modes) -> None:
    passed = {}
    for mode in modes:
        passed.update(cells_passed(run_dir, mode))
    for path in sorted((REFERENCE / "notebooks").glob("*.ipynb")):
        if nbval_mode(path.name) in modes:
            code_cells = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
            assert passed.get(path.stem) == code_cells, (path.stem, passed.get(path.stem), code_cells)


def test_nbval_compares_every_cell_of_every_reference_notebook(reexecuted, machine):
    if machine in OTHER_MACHINES:
        pytest.skip("compared offline in the fixture, every checked code cell by nbval's own comparison")
    assert_every_cell_compared(reexecuted, tuple(SANITIZE))


def test_canary_keeps_the_structure_of_every_cell(canary):
    """Another seed from phase 02 on: every float moves, and nbval finds the same structure in every cell."""
    assert_every_cell_compared(canary, ("numbers",))


def test_canary_moved_the_floats_beyond_any_cpu(canary):
    """The canary is only a guard if its floats move more than another CPU's do. Measured mean |logit
    difference| to the reference on the Intel Xeon (AMX) run: 0.158 (02's val logits), 0.289 (02b's); the
    canary must move both at least 3x as far (it measured 1.14 and 1.49)."""
    for phase, cpu in (("02_train", 0.158), ("02b_adapt", 0.289)):
        moved = np.abs(
            np.load(canary / f"results/{phase}/logits.npz")["val"]
            - np.load(REFERENCE / f"results/{phase}/logits.npz")["val"]
        ).mean()
        assert moved >= 3 * cpu, (phase, moved)


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
# difference (measured AVX2-capped, and on the shared Intel Xeon (AMX) run of 2ee9d69, whose figures
# stand after "Xeon:"; every one is inside its tolerance, so none changed). Since the run deploys to the
# target domain (issue 24: phases 04-07 on the noisy digits' 540 test images, val 378 images), the
# AVX2-capped re-execution of that reference measured, after "deployed:", a change inside every tolerance.
@pytest.mark.parametrize(
    "phase, key, tolerance",
    [
        # 540 test images; measured 1 image (0.0019) on all three other machines -> 3 images (Xeon: 1;
        # deployed: 2 images, 879 training images now)
        ("02_train", "test_accuracy", 3 / 540),
        # derived on 126 val images: measured 1 image (0.0079, SSE4.1) -> 3 images (Xeon: 1); on today's 378,
        # 0.0238 is 9 images (deployed: 0)
        ("02_train", "val_accuracy", 3 / 126),
        # measured 0.0021 (AVX2 and SSE4.1) -> 0.0065 (Xeon: 0.0020; deployed: 0.0041)
        ("02_train", "test_mcc", 0.0065),
        # the adapted model on the same 540 images; measured 4 images (0.0074, AVX2) -> 12 images (Xeon: 1;
        # deployed, on the noisy test images: 0)
        ("04_quantize", "fp32_test_accuracy", 12 / 540),
        # its INT8 variants; measured 4 images (minmax, percentile), 3 (entropy, pt2e), AVX2 -> 12 images
        # (Xeon: 2 minmax and pt2e, 1 entropy and percentile; deployed: 3 entropy and percentile, 0 minmax, pt2e)
        ("04_quantize", "int8_test_accuracy.minmax", 12 / 540),
        ("04_quantize", "int8_test_accuracy.entropy", 12 / 540),
        ("04_quantize", "int8_test_accuracy.percentile", 12 / 540),
        ("04_quantize", "int8_test_accuracy.pt2e", 12 / 540),
        # ECE after the chosen map; measured, any model: 0.0076 (entropy, AVX2) -> 0.025 (Xeon: 0.0033, fp32;
        # deployed: 0.0001)
        ("06_confidence", "ece_post.fp32", 0.025),
    ],
)
def test_key_results_match_the_reference_within_measured_variation(reexecuted, phase, key, tolerance):
    assert lookup(summary(reexecuted, phase), key) == pytest.approx(
        lookup(summary(REFERENCE, phase), key), abs=tolerance
    )


# A role's name in runs recorded before 03 took the base/adapted pair: they called the model they read
# (02b's, as `adapted` is now) "trained" -- the Intel run of ../shared among them.
ROLE_NAMES = {"adapted": ("adapted", "trained"), "base": ("base",)}


def test_activation_rates_match_the_reference_within_measured_variation(reexecuted):
    """r* per hooked layer, for each role both runs hold; measured on 02b's model (then named `trained`):
    0.0085 (zscore, first layer, AVX2) -> 0.025 (Xeon: 0.0040; on the target-domain slice, AVX2-capped: 0.0041,
    base 0.0005). `base` (02's model, which 02b starts
    from, so it varies no more than 02b's) is held to the same bound."""
    recorded = summary(reexecuted, "03_activation_stats")["r_star"]
    compared = []
    for role, names in ROLE_NAMES.items():
        name = next((n for n in names if n in recorded), None)
        if name is None:
            continue
        for kind in ("zscore", "positive"):
            np.testing.assert_allclose(
                recorded[name][kind],
                summary(REFERENCE, "03_activation_stats")["r_star"][role][kind],
                rtol=0,
                atol=0.025,
            )
        compared.append(role)
    assert "adapted" in compared, f"no role to compare: {sorted(recorded)}"


def test_threshold_maximizes_val_mcc_on_its_recorded_sweep(reexecuted):
    """Unstable by value (0.9813 here, 0.9174 on a Xeon, 0.9387 AVX2-capped on the 126 clean val images of an older
    reference; 0.719 -> 0.603 AVX2-capped on today's 378 noisy ones):
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
    if "selection" in report:  # the choice is made on val, reported on test
        rows = report["selection"]["rows"]
    else:  # a run recorded before it moved to val (the Intel run of ../shared) chose on test, by the same rule
        rows = {name: report["variants"][name] for name in report["ort_variants"]}
    assert sorted(rows) == sorted(report["ort_variants"])
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


def verdict_rows(tree, path=""):
    """Every calibration summary's null-band record in a results JSON tree, with where it sits."""
    if isinstance(tree, dict):
        if {"p_value", "indistinguishable", "verdict"} <= tree.keys():
            yield path, tree
        for key, value in tree.items():
            yield from verdict_rows(value, f"{path}.{key}")


def test_verdicts_are_what_their_p_values_say(reexecuted):
    """Masked for nbval (a p-value near 0.05 falls either side on another CPU); defined by p >= NULL_LEVEL."""
    rows = [
        row
        for name in ("calibration_metrics.json", "calibration_under_shift.json")
        for row in verdict_rows(read_json(reexecuted, f"results/06_confidence/{name}"))
    ]
    assert len(rows) >= 4 * (len(METHODS) + 2)  # every model's maps, before and after, and the shift table
    for path, null in rows:
        assert null["indistinguishable"] == (null["p_value"] >= NULL_LEVEL), path
        assert null["verdict"].startswith(VERDICTS[0] if null["indistinguishable"] else VERDICTS[1]), path


def test_chosen_maps_are_what_the_selection_rule_picks(reexecuted):
    """Masked for nbval (identity here, vector scaling AVX2-capped on a Xeon); defined by the rule: the
    lowest recorded CV NLL among the selectable maps that converged, ties to the simpler map."""
    chosen = summary(reexecuted, "06_confidence")["chosen"]
    for model, name in chosen.items():
        doc = read_json(reexecuted, f"results/06_confidence/{model}/scaling_params.json")
        picked = doc["selection"]
        eligible = [
            m
            for m in METHODS  # the fits' order (the JSON sorts its keys)
            if m in doc["candidates"]
            and m in SELECTABLE
            and doc["candidates"][m]["converged"]
            and np.isfinite(picked["cv_nll"][m])
        ]
        assert picked["eligible"] == eligible, model
        assert name == doc["method"] == picked["chosen"] == selection.rank(picked["cv_nll"], eligible)[0], model
    bundled = read_json(reexecuted, "results/08_bundle/bundle/bundle.json")["models"]
    best = summary(reexecuted, "04_quantize")["best_variant"]
    assert bundled["fp32"]["calibration"]["method"] == chosen["fp32"]
    assert bundled["int8"]["calibration"]["method"] == chosen[best]


def test_gate_outcomes_follow_their_recorded_numbers(reexecuted):
    """PASS/FAIL are masked for nbval; each is what its recorded figures say."""
    merge = read_json(reexecuted, "results/02b_adapt/adaptation.json")["merge_parity"]
    assert merge["status"] == (
        "PASS" if merge["max_abs_logit_diff"] <= merge["tolerance"] and not merge["argmax_differ"] else "FAIL"
    )
    assert summary(reexecuted, "02b_adapt")["status"] == merge["status"] == "PASS"
    bundle_doc = read_json(reexecuted, "results/08_bundle/bundle/bundle.json")
    for precision, model in bundle_doc["models"].items():
        assert model["runtime"] in model["runtimes"] and set(model["runtimes"]) <= set(RUNTIMES), precision


def test_reference_manifests_verify():
    from helpers.run import manifest

    for path in (REFERENCE / "manifests").glob("*.json"):
        assert manifest.verify(REFERENCE, path.stem) == []
