"""helpers.bundle: real ONNX models, real onnxruntime sessions, real files on disk."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.special import softmax as scipy_softmax

from helpers import bundle, runtime
from helpers.confidence.base import CalibrationMap
from helpers.models import parity
from helpers.models.architectures import build_model
from helpers.models.onnx_export import export_onnx
from helpers.quantize import ort as quantize_ort
from helpers.run import atomic

SHAPE = (8, 8, 1)
TEMPERATURES = {"fp32": 0.1, "int8": 0.12}  # sharpen the untrained model's near-uniform outputs...
THRESHOLDS = {"fp32": 0.26, "int8": 0.24}  # ...so these thresholds accept some images and reject others


def temperature_map(t):
    return CalibrationMap(method="temperature_scaling", params={"temperature": t}).to_dict()


CALIBRATIONS = {p: temperature_map(t) for p, t in TEMPERATURES.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An exported MLP (fp32) and its static INT8 (QDQ, MinMax) quantization by helpers.quantize_ort."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    fp32 = export_onnx(build_model("mlp", 10, SHAPE).eval(), root / "model.onnx", SHAPE)
    prepared = quantize_ort.prepare_model(fp32, root / "prepared.onnx")
    stats = quantize_ort.collect_calibration_statistics(prepared, images(64, seed=1))
    int8 = root / "model_int8_minmax.onnx"
    quantize_ort.quantize_model(prepared, int8, stats, "minmax")
    return {"fp32": fp32, "int8": int8}


def build(bundle_dir, models, **overrides):
    args = dict(
        model_paths=models,
        int8_variant="dynamic",
        class_names=[str(i) for i in range(10)],
        input_shape=SHAPE,
        calibrations=CALIBRATIONS,
        thresholds=THRESHOLDS,
        criterion="max_mcc",
        source={"run_id": "run-1", "manifests_sha256": {"02_train": "0" * 64}},
        versions={"onnxruntime": "x"},
    )
    return bundle.write_bundle(bundle_dir, **{**args, **overrides})


@pytest.fixture
def bundle_dir(tmp_path, models):
    build(tmp_path / "bundle", models)
    return tmp_path / "bundle"


def images(n=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def plain_ort_logits(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": x.astype(np.float32)})[0]


@pytest.mark.parametrize("precision", bundle.REQUIRED)
def test_predict_matches_plain_onnxruntime_and_scipy_softmax(bundle_dir, models, precision):
    x = images()
    prediction = bundle.load(bundle_dir).predict(x, precision)
    logits = plain_ort_logits(models[precision], x)
    expected = scipy_softmax(logits.astype(np.float64) / TEMPERATURES[precision], axis=1)
    np.testing.assert_allclose(prediction.probabilities, expected, rtol=0, atol=1e-6)  # float32 calibrated logits
    np.testing.assert_allclose(prediction.probabilities.sum(1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(prediction.labels, logits.argmax(1))
    np.testing.assert_array_equal(prediction.accept, expected.max(1) >= THRESHOLDS[precision])
    assert 0 < prediction.accept.sum() < len(x)


def test_bundle_json_records_the_contract_and_relative_names_only(bundle_dir, tmp_path):
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    assert doc["schema_version"] == bundle.SCHEMA_VERSION
    assert doc["input"]["name"] == "images" and doc["input"]["dtype"] == "float32" and doc["input"]["layout"] == "NHWC"
    assert doc["input"]["shape"] == [None, 8, 8, 1] and doc["input"]["range"] == [0, 255]
    assert doc["models"]["int8"]["variant"] == "dynamic"
    assert {p: m["calibration"]["params"]["temperature"] for p, m in doc["models"].items()} == TEMPERATURES
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "README.md",
        "bundle.json",
        "checksums.json",
        "client.py",
        "model_fp32.onnx",
        "model_int8.onnx",
    ]
    for name in ("bundle.json", "checksums.json"):
        assert str(tmp_path) not in (bundle_dir / name).read_text()
    listed = json.loads((bundle_dir / "checksums.json").read_text())["files"]
    assert listed == {
        n: atomic.sha256_file(bundle_dir / n)
        for n in ("bundle.json", "model_fp32.onnx", "model_int8.onnx", "README.md", "client.py")
    }


def test_same_inputs_give_byte_identical_bundles(bundle_dir, tmp_path, models):
    build(tmp_path / "again", models)
    for path in bundle_dir.iterdir():
        assert path.read_bytes() == (tmp_path / "again" / path.name).read_bytes(), path.name


@pytest.mark.parametrize("name", ["model_fp32.onnx", "model_int8.onnx", "bundle.json"])
def test_tampered_file_is_named(bundle_dir, name):
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match=f"{name} does not match its sha256 in checksums.json"):
        bundle.load(bundle_dir)


def alter_listed_sha(bundle_dir, name):
    sums = json.loads((bundle_dir / "checksums.json").read_text())
    sums["files"][name] = sums["files"][name][:-1] + ("0" if sums["files"][name][-1] != "0" else "1")
    atomic.write_json(bundle_dir / "checksums.json", sums)


def test_an_altered_checksums_json_is_not_blamed_on_the_model(bundle_dir):
    """Issue 29.9: one digit of checksums.json changed, and load said model_fp32.onnx was altered. Alone, a
    bundle cannot tell which of the two changed: the error says so."""
    alter_listed_sha(bundle_dir, "model_fp32.onnx")
    with pytest.raises(bundle.BundleError) as info:
        bundle.load(bundle_dir)
    message = str(info.value)
    assert "model_fp32.onnx was altered" not in message
    assert "model_fp32.onnx does not match its sha256 in checksums.json: the file or checksums.json was altered" in (
        message
    )


def in_a_run(tmp_path, models):
    """A bundle where phase 08 writes it, with that phase's manifest (sha256 of every file under results/08)."""
    from helpers.run import manifest

    run_dir = tmp_path / "run"
    build(run_dir / "results/08_bundle/bundle", models)
    manifest.write_manifest(run_dir, "08_bundle", {"phase": "08_bundle", "upstream": {}})
    return run_dir / "results/08_bundle/bundle"


def test_in_a_run_the_phase_manifest_says_which_file_was_altered(tmp_path, models):
    bundle_dir = in_a_run(tmp_path, models)
    alter_listed_sha(bundle_dir, "model_fp32.onnx")
    with pytest.raises(bundle.BundleError, match=r"checksums.json was altered: it differs from the run's manifest"):
        bundle.load(bundle_dir)
    bundle_dir = in_a_run(tmp_path / "again", models)
    path = bundle_dir / "model_fp32.onnx"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        bundle.BundleError, match=r"model_fp32.onnx was altered: its sha256 differs from checksums.json"
    ):
        bundle.load(bundle_dir)


def test_missing_model_is_named(bundle_dir):
    (bundle_dir / "model_int8.onnx").unlink()
    with pytest.raises(bundle.BundleError, match="model_int8.onnx is missing"):
        bundle.load(bundle_dir)


def test_newer_schema_is_refused_even_with_valid_checksums(bundle_dir):
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    atomic.write_json(bundle_dir / "bundle.json", {**doc, "schema_version": bundle.SCHEMA_VERSION + 1})
    sums = json.loads((bundle_dir / "checksums.json").read_text())
    sums["files"]["bundle.json"] = atomic.sha256_file(bundle_dir / "bundle.json")
    atomic.write_json(bundle_dir / "checksums.json", sums)
    with pytest.raises(bundle.BundleError, match="newer than this helpers.bundle reads"):
        bundle.load(bundle_dir)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["models"]["fp32"]["calibration"]["params"].update(temperature=0.0),
            "temperature must be a finite number > 0",
        ),
        (lambda d: d["models"]["int8"]["calibration"]["params"].update(temperature=-1.0), "temperature must be"),
        (lambda d: d["models"]["fp32"].update(threshold=1.5), "threshold for fp32 must be a confidence in"),
        (lambda d: d["models"]["int8"].update(threshold="high"), "threshold for int8"),
        (lambda d: d.update(class_names=["a"]), "class_names must be >= 2 distinct names"),
        (lambda d: d["models"]["int8"].update(file="../model.onnx"), "model files must be"),
        (lambda d: d["models"].pop("int8"), "does not hold a valid bundle contract"),
    ],
    ids=["temperature-0", "temperature-negative", "threshold-above-1", "threshold-str", "one-class", "file", "no-int8"],
)
def test_edited_contract_values_are_refused_even_with_recomputed_checksums(bundle_dir, edit, message):
    """The review's case: bundle.json says temperature 0, checksums.json recomputed -- it loaded and gave NaN."""
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    edit(doc)
    atomic.write_json(bundle_dir / "bundle.json", doc)
    sums = json.loads((bundle_dir / "checksums.json").read_text())
    sums["files"]["bundle.json"] = atomic.sha256_file(bundle_dir / "bundle.json")
    atomic.write_json(bundle_dir / "checksums.json", sums)
    with pytest.raises(bundle.BundleError, match=message):
        bundle.load(bundle_dir)


def test_an_empty_batch_is_called_empty(bundle_dir):
    with pytest.raises(ValueError, match="the batch is empty"):
        bundle.load(bundle_dir).predict(np.zeros((0, *SHAPE), np.uint8))


def test_not_a_bundle_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bundle.load(tmp_path / "nowhere")
    with pytest.raises(bundle.BundleError, match="checksums.json is missing"):
        bundle.load(tmp_path)


@pytest.mark.parametrize(
    "bad",
    [images().astype(np.float32), images()[..., 0], np.zeros((3, 8, 8, 3), np.uint8), np.zeros((0, 8, 8, 1), np.uint8)],
    ids=["float", "no-channel", "rgb", "empty"],
)
def test_wrong_images_get_the_contract_in_the_error(bundle_dir, bad):
    with pytest.raises(ValueError, match=r"uint8 NHWC images of shape \(N, 8, 8, 1\)"):
        bundle.load(bundle_dir).predict(bad)


def test_unknown_precision(bundle_dir):
    with pytest.raises(ValueError, match="precision must be one of"):
        bundle.load(bundle_dir).predict(images(), "fp16")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"calibrations": {**CALIBRATIONS, "fp32": temperature_map(0.0)}}, "temperature must be a finite number > 0"),
        (
            {
                "calibrations": {
                    **CALIBRATIONS,
                    "int8": {"method": "histogram_binning", "params": {"n_bins": 1, "values": [[0.5]] * 10}},
                }
            },
            "int8 is histogram_binning, a step map",
        ),
        ({"thresholds": {"fp32": 0.5, "int8": 1.5}}, "threshold for int8"),
        ({"class_names": ["a", "a"]}, "distinct"),
    ],
)
def test_write_refuses_bad_arguments_before_writing(tmp_path, models, override, message):
    with pytest.raises(ValueError, match=message):
        build(tmp_path / "b", models, **override)
    assert not (tmp_path / "b").exists()


def test_write_refuses_a_missing_model(tmp_path, models):
    with pytest.raises(FileNotFoundError, match="int8 model"):
        build(tmp_path / "b", models, model_paths={**models, "int8": tmp_path / "none.onnx"})


def reference(models, x):
    """The pipeline's outputs, computed independently of helpers.bundle."""
    out = {}
    for precision, path in models.items():
        logits = plain_ort_logits(path, x)
        calibrated = (logits.astype(np.float64) / TEMPERATURES[precision]).astype(np.float32)  # as phase 06 stores them
        out[precision] = {"logits": logits, "calibrated_logits": calibrated}
    return out


def test_validate_passes_on_the_pipelines_own_outputs(bundle_dir, models):
    x = images(200)
    result = bundle.validate(bundle.load(bundle_dir), x, reference(models, x), THRESHOLDS)
    assert result["status"] == "PASS" and result["n"] == 200
    assert result["fp32"]["logit_max_abs_diff"] == 0 and result["int8"]["probability_max_abs_diff"] == 0
    bundle.raise_on_failure(result)
    table = bundle.validation_table(result)
    assert list(table.index) == ["fp32", "fp32 openvino", "bf16 openvino", "int8", "int8 openvino"]
    assert list(table.index[table["validated"].astype(bool)]) == ["fp32", "int8"]


def test_fp32_probability_tolerance_is_what_the_logit_tolerance_allows(bundle_dir, models):
    """Logits moved by just under the parity tolerance pass; the resulting probability change stays within the bound."""
    x = images(200)
    ref = reference(models, x)
    drift = np.where(np.arange(10) % 2, 0.9, -0.9) * parity.logit_tolerance(ref["fp32"]["logits"])[:, None]
    ref["fp32"]["logits"] = (ref["fp32"]["logits"] + drift).astype(np.float32)
    ref["fp32"]["calibrated_logits"] = (ref["fp32"]["logits"].astype(np.float64) / TEMPERATURES["fp32"]).astype(
        np.float32
    )
    result = bundle.validate(bundle.load(bundle_dir), x, ref, THRESHOLDS)
    assert result["fp32"]["probability_max_abs_diff"] > bundle.PROBABILITY_ATOL  # the plain tolerance would fail
    assert result["fp32"]["passed"], result["fp32"]["failures"]
    assert (
        result["fp32"]["probability_atol"]
        == bundle.probability_tolerance(ref["fp32"]["logits"], 0.5 / TEMPERATURES["fp32"]).max()
    )
    assert result["fp32"]["parity"]["max_tolerance_used"] > 0.8


def test_validate_fails_on_drifted_logits_wrong_temperature_and_threshold(bundle_dir, models):
    x = images(200)
    ref = reference(models, x)
    ref["fp32"]["logits"] = ref["fp32"]["logits"] + 3 * parity.logit_tolerance(ref["fp32"]["logits"])[:, None]
    ref["int8"]["calibrated_logits"] = ref["int8"]["calibrated_logits"] * TEMPERATURES["int8"] / 2.0
    result = bundle.validate(bundle.load(bundle_dir), x, ref, {"fp32": THRESHOLDS["fp32"], "int8": 0.3})
    assert result["status"] == "FAIL"
    assert any("logit diff" in f for f in result["fp32"]["failures"])
    assert any("probability diff" in f for f in result["int8"]["failures"])
    assert any("accept flag" in f for f in result["int8"]["failures"])
    with pytest.raises(RuntimeError, match="validation FAILED"):
        bundle.raise_on_failure(result)


def test_thresholds_for_takes_each_models_own_threshold_else_the_selective_models():
    doc = {
        "selective_model": "fp32",
        "models": {
            "fp32": {"threshold": 0.9, "criterion": "max_mcc"},
            "minmax": {"threshold": 0.8, "criterion": "max_mcc"},
        },
    }
    assert bundle.thresholds_for(doc, {"fp32": "fp32", "int8": "minmax"}) == ({"fp32": 0.9, "int8": 0.8}, "max_mcc")
    assert bundle.thresholds_for(doc, {"fp32": "fp32", "int8": "entropy"})[0] == {"fp32": 0.9, "int8": 0.9}


@pytest.fixture
def openvino_bundle(tmp_path, models):
    pytest.importorskip("openvino")
    offered = {"fp32": ["onnxruntime", "openvino"], "int8": ["onnxruntime", "openvino"]}
    build(
        tmp_path / "ov",
        models,
        runtimes=offered,
        default_runtimes={"fp32": "openvino", "int8": "onnxruntime"},
        runtime_settings={"threads": 1, "batch_size": 16},
        absent={"bf16": "not offered in this test"},
    )
    return bundle.load(tmp_path / "ov")


def openvino_logits(models, x):
    return {
        p: runtime.open_session(models[p], "openvino", precision=p, threads=1, batch_size=16).logits(x)
        for p in bundle.REQUIRED
    }


def test_bundle_records_and_uses_its_default_runtime_per_precision(openvino_bundle, models):
    x = images()
    assert openvino_bundle.runtimes("fp32") == ["openvino", "onnxruntime"]
    assert openvino_bundle.runtimes("int8") == ["onnxruntime", "openvino"]
    assert openvino_bundle.doc["runtime_settings"] == {"threads": 1, "batch_size": 16}
    expected = openvino_logits(models, x)
    np.testing.assert_array_equal(openvino_bundle.logits(x, "fp32"), expected["fp32"])  # the default: OpenVINO
    np.testing.assert_array_equal(openvino_bundle.logits(x, "int8", runtime="openvino"), expected["int8"])
    np.testing.assert_allclose(openvino_bundle.logits(x, "int8"), plain_ort_logits(models["int8"], x), atol=1e-6)
    with pytest.raises(ValueError, match="offers fp32 on openvino, onnxruntime, not 'tensorrt'"):
        openvino_bundle.predict(x, "fp32", runtime="tensorrt")


def test_validation_runs_on_every_runtime_offered(openvino_bundle, models):
    x = images()
    ref = reference(models, x)
    on_openvino = openvino_logits(models, x)
    validation = bundle.validate(openvino_bundle, x, ref, THRESHOLDS, {"openvino": on_openvino})
    assert validation["status"] == "PASS", bundle.validation_table(validation)
    assert sorted(validation["runtimes"]["openvino"]) == ["fp32", "int8"]
    assert bundle.validation_table(validation)["validated"].sum() == 4
    drifted = {p: v + np.float32(1e-3) * (np.arange(v.shape[1]) == 0) for p, v in on_openvino.items()}
    failed = bundle.validate(openvino_bundle, x, ref, THRESHOLDS, {"openvino": drifted})
    assert failed["status"] == "FAIL" and failed["fp32"]["passed"]
    assert not failed["runtimes"]["openvino"]["fp32"]["passed"]
    with pytest.raises(RuntimeError, match="openvino fp32: max .logit diff"):
        bundle.raise_on_failure(failed)
    with pytest.raises(ValueError, match="pass the pipeline's openvino logits"):
        bundle.validate(openvino_bundle, x, ref, THRESHOLDS)


def test_write_refuses_a_default_runtime_it_does_not_offer(tmp_path, models):
    with pytest.raises(ValueError, match="default runtime 'openvino' must be one of the runtimes offered"):
        build(tmp_path / "b", models, default_runtimes={"fp32": "openvino"})
    assert not (tmp_path / "b").exists()


def test_a_bundle_without_runtime_keys_offers_onnxruntime(bundle_dir):
    loaded = bundle.load(bundle_dir)
    assert loaded.runtimes("fp32") == loaded.runtimes("int8") == ["onnxruntime"]


def dirichlet_map(k=10, seed=3):
    """A Dirichlet map whose off-diagonal weights reorder classes (a per-class map changes the argmax)."""
    rng = np.random.default_rng(seed)
    weights = np.eye(k) * 30 + rng.normal(0, 8, (k, k))
    return CalibrationMap(
        method="dirichlet", params={"weights": weights.tolist(), "bias": rng.normal(0, 1, k).tolist()}
    ).to_dict()


def test_a_per_class_map_is_applied_in_predict_and_covered_by_validation(tmp_path, models):
    calibrations = {"fp32": dirichlet_map(), "int8": CALIBRATIONS["int8"]}
    build(tmp_path / "b", models, calibrations=calibrations)
    loaded = bundle.load(tmp_path / "b")
    x = images(200)
    logits = plain_ort_logits(models["fp32"], x)
    calibrated = CalibrationMap.from_dict(calibrations["fp32"]).apply(logits).astype(np.float32)
    prediction = loaded.predict(x, "fp32")
    np.testing.assert_allclose(
        prediction.probabilities, scipy_softmax(calibrated.astype(np.float64), axis=1), rtol=0, atol=1e-12
    )
    assert (prediction.labels != logits.argmax(1)).any()  # the map moved some argmax...
    np.testing.assert_array_equal(prediction.labels, calibrated.argmax(1))  # ...exactly as phase 06 stores it
    ref = reference(models, x)
    ref["fp32"]["calibrated_logits"] = calibrated
    result = bundle.validate(loaded, x, ref, THRESHOLDS)
    assert result["status"] == "PASS", result
    ref["fp32"]["calibrated_logits"] = (logits / TEMPERATURES["fp32"]).astype(np.float32)  # 07 used another map
    result = bundle.validate(loaded, x, ref, THRESHOLDS)
    assert result["fp32"]["calibrated_argmax_mismatches"] > 0 and result["status"] == "FAIL"


def test_a_schema_1_bundle_with_a_bare_temperature_still_predicts(bundle_dir):
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    for model in doc["models"].values():
        model["temperature"] = model.pop("calibration")["params"]["temperature"]
    atomic.write_json(bundle_dir / "bundle.json", {**doc, "schema_version": 1})
    sums = json.loads((bundle_dir / "checksums.json").read_text())
    sums["files"]["bundle.json"] = atomic.sha256_file(bundle_dir / "bundle.json")
    atomic.write_json(bundle_dir / "checksums.json", sums)
    loaded = bundle.load(bundle_dir)
    assert loaded.calibration["fp32"].temperature == TEMPERATURES["fp32"]
    x = images()
    expected = scipy_softmax(plain_ort_logits(loaded.directory / "model_fp32.onnx", x) / TEMPERATURES["fp32"], axis=1)
    np.testing.assert_allclose(loaded.predict(x).probabilities, expected, rtol=0, atol=1e-6)


# bf16: the FP32 graph under OpenVINO's bf16 hint, offered where phase 04's gates passed it on a CPU with native
# bf16, absent elsewhere with the reason. The whole chain on real sessions: 04's evaluation
# (runtime.evaluate_models), 05's decision (runtime.decision), the bundle and its load-back validation.


def bf16_chain(tmp_path, models, native_bf16=None):
    """04's cross-runtime evaluation (with bf16) of the two models on ``images(200)``, 05's decision, the bundle."""
    from helpers.runtime import decision

    x = images(200)
    labels = plain_ort_logits(models["fp32"], x).argmax(1)  # the FP32 model's own predictions as labels
    names = {"fp32": (models["fp32"], "fp32"), "bf16": (models["fp32"], "bf16"), "minmax": (models["int8"], "int8")}
    report, logits = runtime.evaluate_models(
        names, {"test": x}, labels, threads=1, batch_size=64, native_bf16=native_bf16
    )
    precisions = {"fp32": "fp32", "bf16": "bf16", "int8": "minmax"}
    checks = decision.offered_by_checks(report, precisions)
    paths = {"fp32": models["fp32"], "bf16": models["fp32"], "int8": models["int8"]}
    chosen = decision.decide(paths, checks, precisions, threads=1, batch_size=8, rounds=2, calls=2)
    build(
        tmp_path / "b",
        models,
        runtimes=chosen.offered(),
        default_runtimes=chosen.defaults(),
        absent=chosen.absent(),
        runtime_settings={"threads": 1, "batch_size": 64},
    )
    on_runtimes = {
        r: {p: logits[key] for p, m in precisions.items() if (key := runtime.logits_key(r, m, "test")) in logits}
        for r in runtime.RUNTIMES
    }
    return bundle.load(tmp_path / "b"), x, on_runtimes, report


@pytest.mark.skipif(not runtime.cpu_bf16()[0], reason="this CPU has no native bf16 (the absent path is tested below)")
def test_bf16_is_offered_validated_and_served_where_the_cpu_has_it(tmp_path, models, monkeypatch):
    loaded, x, on_runtimes, report = bf16_chain(tmp_path, models)
    assert report["models"]["bf16"]["passed"] == ["openvino"], report["models"]["bf16"]
    doc = loaded.doc
    assert "absent" not in doc and loaded.precisions == ["fp32", "bf16", "int8"]
    bf16 = doc["models"]["bf16"]
    assert bf16["file"] == "model_fp32.onnx" and bf16["runtimes"] == ["openvino"] and bf16["runtime"] == "openvino"
    assert (
        bf16["settings"]["openvino"]["config"]["INFERENCE_PRECISION_HINT"] == "bf16" and "OpenVINO" in bf16["runs_as"]
    )
    assert bf16["calibration"] == doc["models"]["fp32"]["calibration"] and bf16["threshold"] == THRESHOLDS["fp32"]
    expected = runtime.open_session(models["fp32"], "openvino", precision="bf16", threads=1, batch_size=64).logits(x)
    np.testing.assert_array_equal(loaded.logits(x, "bf16"), expected)  # the bf16 hint really runs: not fp32's
    assert np.abs(expected - plain_ort_logits(models["fp32"], x)).max() > 1e-4
    validation = bundle.validate(loaded, x, reference(models, x), THRESHOLDS, on_runtimes)
    assert validation["status"] == "PASS" and validation["runtimes"]["openvino"]["bf16"]["passed"]
    tolerance = bundle.graph_tolerance(loaded, expected, "bf16")  # the calibration head runs in bf16 too
    assert validation["runtimes"]["openvino"]["bf16"]["graph_probability_atol"] == tolerance.max()
    assert (tolerance > bundle.GRAPH_PROBABILITY_ATOL).all()
    assert (bundle.graph_tolerance(loaded, expected, "fp32") == bundle.GRAPH_PROBABILITY_ATOL).all()
    assert bundle.validation_table(validation).loc["bf16 openvino", "validated"]
    drifted = {**on_runtimes["openvino"], "bf16": on_runtimes["openvino"]["bf16"] + np.float32(1e-3)}
    failed = bundle.validate(loaded, x, reference(models, x), THRESHOLDS, {"openvino": drifted})
    assert failed["status"] == "FAIL" and not failed["runtimes"]["openvino"]["bf16"]["passed"]
    readme = (loaded.directory / "README.md").read_text()
    snippet = readme.split("    import numpy as np, openvino as ov\n")[1].split("\n\n")[0]
    scope = {"images": x}
    monkeypatch.chdir(loaded.directory)  # the README's snippet runs beside the bundle's files
    exec("import numpy as np, openvino as ov\n" + "\n".join(line[4:] for line in snippet.splitlines()), scope)
    np.testing.assert_allclose(scope["probabilities"], loaded.predict(x, "bf16").probabilities, atol=1e-6)


def test_bf16_is_absent_and_says_why_where_the_cpu_lacks_it(tmp_path, models, monkeypatch):
    """The capability check answers False (its parameter, as on a CPU without AVX512-BF16 or AMX): 04 keeps bf16's
    row without a runtime, 05's decision and the bundle say why, and nothing serves bf16."""
    loaded, x, on_runtimes, report = bf16_chain(tmp_path, models, native_bf16=False)
    assert report["models"]["bf16"]["passed"] == [] and report["models"]["bf16"]["absent"] == runtime.NO_NATIVE_BF16
    assert list(runtime.runtime_table(report).index) == [
        ("fp32", "onnxruntime"),
        ("fp32", "openvino"),
        ("bf16", "openvino"),  # its row stays, empty: the table's rows do not depend on the CPU
        ("minmax", "onnxruntime"),
        ("minmax", "openvino"),
    ]
    assert loaded.doc["absent"] == {"bf16": runtime.NO_NATIVE_BF16} and "bf16" not in loaded.doc["models"]
    assert loaded.precisions == ["fp32", "int8"]
    with pytest.raises(ValueError, match="this bundle has no bf16: OpenVINO reports no native bf16"):
        loaded.predict(x, "bf16")
    assert f"No bf16 in this bundle: {runtime.NO_NATIVE_BF16}" in (loaded.directory / "README.md").read_text()
    validation = bundle.validate(loaded, x, reference(models, x), THRESHOLDS, on_runtimes)
    assert validation["status"] == "PASS" and validation["absent"] == {"bf16": runtime.NO_NATIVE_BF16}
    assert not bundle.validation_table(validation).loc["bf16 openvino", "validated"]
    monkeypatch.syspath_prepend(str(loaded.directory))
    import client  # the bundle's own numpy + onnxruntime client

    with pytest.raises(SystemExit, match="this bundle has no bf16: OpenVINO reports no native bf16"):
        client.load("bf16")


def test_write_refuses_a_precision_offered_nowhere_without_a_reason(tmp_path, models):
    with pytest.raises(ValueError, match="bf16 is offered on no runtime: pass why in absent="):
        build(tmp_path / "b", models, runtimes={"fp32": ["onnxruntime"], "int8": ["onnxruntime"]})
    assert not (tmp_path / "b").exists()
