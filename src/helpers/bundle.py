"""The deployment bundle: two ONNX models, their calibration and threshold, one verifiable folder.

A bundle is a directory holding only relative names::

    model_fp32.onnx     the phase-02 model
    model_int8.onnx     the most accurate INT8 variant of phase 04 (named in bundle.json)
    bundle.json         schema_version, class names, the input contract, per precision the model
                        file, calibration map and accept threshold, the selective criterion, the
                        source run (run id, sha256 of the upstream phase manifests), versions
    checksums.json      sha256 of every other file, written last

``write_bundle`` writes it (deterministic bytes, through ``helpers.run.atomic``); ``load`` verifies
the checksums, refuses a newer ``schema_version`` and returns a :class:`Bundle` whose
``predict(images, precision, runtime=None)`` runs uint8 NHWC images through ``helpers.data.preprocess``
and one of the runtimes the bundle offers for that precision and returns labels, calibrated
probabilities and accept flags (calibrated confidence >= threshold). Calibrated logits are
``float32(map.apply(logits))`` for the precision's calibration map (``helpers.confidence``: any smooth
map phase 06 chose, e.g. temperature or Dirichlet), exactly as phase 06 stores them, so the bundle and
phase 07 see the same confidences and the same argmax (a per-class map may change it). Schema-1
bundles (a bare temperature) still load. ``validate`` compares a loaded bundle with the pipeline's own
outputs on the same images by ``helpers.models.parity`` (the definition phase 02's ONNX check uses
too); phase 08 fails unless every check passes, on every runtime the bundle offers.

Runtimes: per precision bundle.json lists the runtimes offered (``models.<p>.runtimes``: those that
passed phase 04's accuracy and parity checks, ``helpers.runtime.checks``) and the default
(``models.<p>.runtime``: the fastest of them on the machine that built the bundle), with the settings
their outputs were checked at (``runtime_settings``: threads, batch size). onnxruntime runs through
``helpers.onnx_export.onnx_logits`` as before; OpenVINO through ``helpers.runtime.open_session``. A
bundle written without these keys offers onnxruntime only.

bundle.json holds the source run id, so two runs of one configuration give bundles that differ in
that field (and hence in checksums.json) only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.confidence.base import CalibrationMap
from helpers.data.datasets import check_image_batch
from helpers.metrics.calibration import softmax
from helpers.models import parity
from helpers.models.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_logits, onnx_session
from helpers.run import atomic

SCHEMA_VERSION = 2  # 2: a calibration map per precision (1: a temperature)
PRECISIONS = ("fp32", "int8")
MODEL_FILES = {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx"}
BUNDLE_FILE = "bundle.json"
CHECKSUMS_FILE = "checksums.json"
# calibrated probabilities: float32(logits / T) rounds once more than the logits (on top of what parity allows)
PROBABILITY_ATOL = 1e-6
PREPROCESSING = (
    "uint8 NHWC pixels cast to float32 (helpers.data.preprocess); no scaling, no normalization: the model scales inside"
)


class BundleError(ValueError):
    """A bundle that is incomplete, altered, or from a newer schema."""


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # int64 (N,): argmax class index
    probabilities: np.ndarray  # float64 (N, classes): softmax(float32(calibration map(logits)))
    accept: np.ndarray  # bool (N,): max probability >= threshold


def input_contract(input_shape: Sequence[int]) -> dict:
    """What the models take: name, dtype, layout, shape (dynamic batch), value range, preprocessing."""
    return {
        "name": INPUT_NAME,
        "dtype": "float32",
        "layout": "NHWC",
        "shape": [None, *map(int, input_shape)],
        "range": [0, 255],
        "caller_dtype": "uint8",
        "preprocessing": PREPROCESSING,
        "output": OUTPUT_NAME,
    }


def source_record(run_dir: Path, phase_ids: Sequence[str]) -> dict:
    """The run a bundle comes from: its id and the sha256 of each named phase's manifest."""
    from helpers.run.manifest import manifest_path

    return {
        "run_id": Path(run_dir).name,
        "manifests_sha256": {pid: atomic.sha256_file(manifest_path(Path(run_dir), pid)) for pid in phase_ids},
    }


def check_params(params: dict, config: dict | None = None) -> None:
    """Validate phase 08's parameters before any kernel starts."""
    if params["runtime_batch"] < 1:
        raise ValueError(
            f"runtime_batch must be >= 1 (the batch of the timing that picks the default runtime), "
            f"got {params['runtime_batch']}"
        )


def thresholds_for(threshold_doc: dict, models: Mapping[str, str]) -> tuple[dict[str, float], str]:
    """Per precision the accept threshold phase 07 chose for that precision's model, and the criterion.

    ``threshold_doc`` is 07's threshold.json (``selective_model`` and one report per model);
    ``models`` maps precision -> model name (``{"fp32": "fp32", "int8": "<variant>"}``). A model
    07 did not evaluate gets the threshold of 07's ``selective_model``.
    """
    reports = threshold_doc["models"]
    primary = reports[threshold_doc["selective_model"]]
    thresholds = {p: float(reports.get(m, primary)["threshold"]) for p, m in models.items()}
    return thresholds, primary["criterion"]


def _check_build_args(model_paths, class_names, calibrations, thresholds) -> None:
    for precision in PRECISIONS:
        path = Path(model_paths.get(precision, ""))
        if not path.is_file():
            raise FileNotFoundError(
                f"{precision} model {path} does not exist; pass the phase-02 model.onnx (fp32) "
                "and the phase-04 model_int8_<variant>.onnx (int8)"
            )
    _check_values(class_names, calibrations, thresholds)


def _check_values(class_names, calibrations, thresholds) -> None:
    """The contract's values (what write_bundle refuses to write, load refuses to read)."""
    for precision in PRECISIONS:
        calibration = CalibrationMap.from_dict(calibrations.get(precision, {"method": None, "params": None}))
        if calibration.probability_lipschitz() is None:
            raise ValueError(
                f"calibration map for {precision} is {calibration.method}, a step map that no logit "
                "tolerance bounds; deploy a smooth map (phase 06 selects only those)"
            )
        thr = thresholds.get(precision)
        if not isinstance(thr, (int, float)) or isinstance(thr, bool) or not 0 <= thr <= 1:
            raise ValueError(f"threshold for {precision} must be a confidence in [0, 1], got {thr!r}")
    if (
        not isinstance(class_names, (list, tuple))
        or len(class_names) < 2
        or len(set(map(str, class_names))) != len(class_names)
    ):
        raise ValueError(f"class_names must be >= 2 distinct names, got {list(class_names)!r}")


def write_bundle(
    bundle_dir: str | Path,
    *,
    model_paths: Mapping[str, str | Path],
    int8_variant: str,
    class_names: Sequence[str],
    input_shape: Sequence[int],
    calibrations: Mapping[str, dict],
    thresholds: Mapping[str, float],
    criterion: str,
    source: dict,
    versions: dict,
    runtimes: Mapping[str, Sequence[str]] | None = None,
    default_runtimes: Mapping[str, str] | None = None,
    runtime_settings: Mapping | None = None,
) -> dict:
    """Write the bundle into ``bundle_dir`` (models, bundle.json, then checksums.json); returns bundle.json.

    ``calibrations[precision]`` is the chosen map's ``CalibrationMap.to_dict()`` (phase 06's scaling_params.json).
    ``runtimes``: per precision the runtimes offered (default: onnxruntime only); ``default_runtimes``:
    per precision the one ``predict`` uses unless told (one of those offered); ``runtime_settings``:
    the threads and batch size the offered runtimes' outputs were checked at (and their versions).
    """
    _check_build_args(model_paths, class_names, calibrations, thresholds)
    runtimes = {p: list((runtimes or {}).get(p, ["onnxruntime"])) for p in PRECISIONS}
    defaults = {p: (default_runtimes or {}).get(p, runtimes[p][0]) for p in PRECISIONS}
    for precision in PRECISIONS:
        if not runtimes[precision] or defaults[precision] not in runtimes[precision]:
            raise ValueError(
                f"{precision}: the default runtime {defaults[precision]!r} must be one of the runtimes "
                f"offered, {runtimes[precision]}; pass those that passed phase 04's checks"
            )
    bundle_dir = Path(bundle_dir)
    for precision in PRECISIONS:
        atomic.write_bytes(bundle_dir / MODEL_FILES[precision], Path(model_paths[precision]).read_bytes())
    doc = {
        "schema_version": SCHEMA_VERSION,
        "class_names": list(class_names),
        "input": input_contract(input_shape),
        "models": {
            p: {"file": MODEL_FILES[p], "calibration": _map_doc(calibrations[p]), "threshold": float(thresholds[p])}
            for p in PRECISIONS
        },
        "selective": {"criterion": criterion, "accept": "max calibrated probability >= threshold"},
        "source": source,
        "versions": versions,
    }
    doc["models"]["int8"]["variant"] = int8_variant
    for precision in PRECISIONS:
        doc["models"][precision] |= {"runtimes": runtimes[precision], "runtime": defaults[precision]}
    doc["runtime_settings"] = dict(runtime_settings or {"threads": 1, "batch_size": 500})
    atomic.write_json(bundle_dir / BUNDLE_FILE, doc)
    names = [*MODEL_FILES.values(), BUNDLE_FILE]
    atomic.write_json(
        bundle_dir / CHECKSUMS_FILE,
        {"algorithm": "sha256", "files": {n: atomic.sha256_file(bundle_dir / n) for n in names}},
    )
    return doc


def _map_doc(calibration: dict) -> dict:
    """The part of a calibration map a bundle needs: method, parameters, how it was fitted."""
    return {
        k: calibration[k] for k in ("method", "params", "optimizer", "converged", "seed", "hyper") if k in calibration
    }


def calibration_doc(model_doc: dict) -> dict:
    """A bundle.json model entry's calibration map as ``CalibrationMap.to_dict`` wrote it (schema 1: its bare
    temperature)."""
    if "calibration" in model_doc:
        return model_doc["calibration"]
    return {"method": "temperature_scaling", "params": {"temperature": model_doc["temperature"]}}


def calibration_map(model_doc: dict) -> CalibrationMap:
    """A bundle.json model entry's calibration map, validated."""
    return CalibrationMap.from_dict(calibration_doc(model_doc))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise BundleError(
            f"{path} is missing: a bundle directory holds {BUNDLE_FILE}, {CHECKSUMS_FILE} and "
            "the two models; rebuild it with phase 08 (calib run --phases 08)"
        )
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged, rebuild it") from exc


def _check_schema(doc: dict, path: Path) -> None:
    version = doc.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{path} has no integer schema_version; it is not a calib-lab bundle")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{path} has schema_version {version}, newer than this helpers.bundle reads "
            f"({SCHEMA_VERSION}); update calib-lab to load it"
        )


def verify_checksums(bundle_dir: Path) -> None:
    """Raise BundleError naming the first file that is missing or whose sha256 differs."""
    listed = _read_json(bundle_dir / CHECKSUMS_FILE).get("files", {})
    for name in [*MODEL_FILES.values(), BUNDLE_FILE]:
        if name not in listed:
            raise BundleError(f"{bundle_dir / CHECKSUMS_FILE} does not list {name}; the bundle is incomplete")
    for name, expected in sorted(listed.items()):
        path = bundle_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{CHECKSUMS_FILE} names {name!r}; a bundle uses relative names inside it only")
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing from {bundle_dir}")
        if atomic.sha256_file(path) != expected:
            raise BundleError(
                f"bundle file {name} was altered: its sha256 differs from {CHECKSUMS_FILE}; "
                "rebuild the bundle (calib run --phases 08) or restore the file"
            )


class Bundle:
    """A verified bundle: ``predict(images, precision, runtime)`` and ``logits(images, precision, runtime)``."""

    def __init__(self, directory: Path, doc: dict):
        self.directory, self.doc = directory, doc
        self.class_names: list[str] = doc["class_names"]
        self.image_shape = tuple(doc["input"]["shape"][1:])
        self._sessions = {(p, "onnxruntime"): onnx_session(directory / doc["models"][p]["file"]) for p in PRECISIONS}
        self.calibration = {p: calibration_map(doc["models"][p]) for p in PRECISIONS}

    def runtimes(self, precision: str) -> list[str]:
        """The runtimes this bundle offers for ``precision`` (the default first)."""
        model = self._model(precision)
        offered = model.get("runtimes", ["onnxruntime"])
        return sorted(offered, key=lambda r: r != model.get("runtime", "onnxruntime"))

    def _run(self, images: np.ndarray, precision: str, runtime: str | None) -> np.ndarray:
        runtime = runtime or self.runtimes(precision)[0]
        if runtime not in self.runtimes(precision):
            offered = ", ".join(self.runtimes(precision))
            raise ValueError(f"this bundle offers {precision} on {offered}, not {runtime!r}")
        if (precision, runtime) not in self._sessions:
            from helpers.runtime import open_session

            settings = self.doc.get("runtime_settings", {})
            self._sessions[precision, runtime] = open_session(
                self.directory / self.doc["models"][precision]["file"],
                runtime,
                precision=precision,
                threads=settings.get("threads", 1),
                batch_size=settings.get("batch_size", 500),
            )
        session = self._sessions[precision, runtime]
        return onnx_logits(session, images) if runtime == "onnxruntime" else session.logits(images)

    def _check_images(self, images) -> np.ndarray:
        return check_image_batch(images, what="bundle input", shape=self.image_shape)

    def _model(self, precision: str) -> dict:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        return self.doc["models"][precision]

    def logits(self, images, precision: str = "fp32", runtime: str | None = None) -> np.ndarray:
        """Raw float32 logits of one precision's model on uint8 NHWC images (``runtime``: the default)."""
        self._model(precision)
        return self._run(self._check_images(images), precision, runtime)

    def predict(self, images, precision: str = "fp32", runtime: str | None = None) -> Prediction:
        """Labels, calibrated probabilities and accept flags for uint8 NHWC images (``runtime``: the default)."""
        model = self._model(precision)
        calibrated = self.calibration[precision].apply(self.logits(images, precision, runtime)).astype(np.float32)
        probabilities = softmax(calibrated.astype(np.float64))
        return Prediction(
            labels=probabilities.argmax(axis=1),
            probabilities=probabilities,
            accept=probabilities.max(axis=1) >= model["threshold"],
        )


def load(path: str | Path) -> Bundle:
    """Load a bundle directory (or its bundle.json): schema check, checksum check, onnxruntime sessions."""
    path = Path(path)
    directory = path.parent if path.name == BUNDLE_FILE else path
    if not directory.is_dir():
        raise FileNotFoundError(
            f"bundle directory {directory} does not exist; phase 08 writes one to <run>/results/08_bundle/bundle/"
        )
    verify_checksums(directory)  # checksums.json keeps its format across schema versions
    doc = _read_json(directory / BUNDLE_FILE)
    _check_schema(doc, directory / BUNDLE_FILE)
    _check_contract(doc, directory / BUNDLE_FILE)
    return Bundle(directory, doc)


def _check_contract(doc: dict, path: Path) -> None:
    """Validate the values a checksum cannot vouch for (checksums.json can be recomputed after an edit)."""
    try:
        models = {p: doc["models"][p] for p in PRECISIONS}
        _check_values(
            doc["class_names"],
            {p: calibration_doc(m) for p, m in models.items()},
            {p: m["threshold"] for p, m in models.items()},
        )
        shape = doc["input"]["shape"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{path} does not hold a valid bundle contract ({type(exc).__name__}: {exc}); "
            "rebuild the bundle with phase 08 (calib run --phases 08)"
        ) from None
    if any(m["file"] != MODEL_FILES[p] for p, m in models.items()) or not (
        isinstance(shape, list) and shape[:1] == [None] and all(isinstance(d, int) and d > 0 for d in shape[1:])
    ):
        raise BundleError(
            f"{path}: model files must be {MODEL_FILES} and the input shape [null, H, W, C] with "
            f"positive sizes, got {[m['file'] for m in models.values()]} and {shape}; rebuild the bundle"
        )


def probability_tolerance(reference_logits: np.ndarray, lipschitz: float) -> np.ndarray:
    """Per image, how far the bundle's calibrated probabilities may be from the pipeline's.

    The logits may differ by the parity tolerance (``helpers.models.parity``); through the calibration
    map and softmax that moves a probability by at most ``lipschitz`` (``CalibrationMap.probability_lipschitz``:
    softmax's 1/2 times the map's own gain, 1/T for temperature scaling, the max row sum of W for matrix
    maps) times that tolerance, plus PROBABILITY_ATOL for the float32 rounding of the calibrated logits.
    """
    return PROBABILITY_ATOL + lipschitz * parity.logit_tolerance(reference_logits)


def _compare(
    bundle: Bundle,
    images: np.ndarray,
    precision: str,
    reference: Mapping[str, np.ndarray],
    threshold: float,
    runtime: str = "onnxruntime",
) -> dict:
    logits = bundle.logits(images, precision, runtime)
    prediction = bundle.predict(images, precision, runtime)
    ref_logits = np.asarray(reference["logits"])
    ref_probs = softmax(np.asarray(reference["calibrated_logits"], dtype=np.float64))
    if logits.shape != ref_logits.shape or prediction.probabilities.shape != ref_probs.shape:
        raise ValueError(
            f"{precision}: reference logits {ref_logits.shape} / calibrated {ref_probs.shape} do not match "
            f"the bundle's {logits.shape}; pass the pipeline's outputs on the same images"
        )
    logit_parity = parity.compare_logits(ref_logits, logits)
    allowed = probability_tolerance(ref_logits, bundle.calibration[precision].probability_lipschitz())
    prob_diff = np.abs(prediction.probabilities - ref_probs).max(axis=1)
    confidence = ref_probs.max(axis=1)
    accept_diff, near_threshold = parity.flag_mismatches(
        confidence >= threshold, prediction.accept, np.abs(confidence - threshold) <= allowed
    )
    top2 = np.sort(ref_probs, axis=1)[:, -2:]
    label_diff, near_tie_labels = parity.flag_mismatches(
        prediction.labels == ref_probs.argmax(1), np.ones(len(ref_probs), bool), top2[:, 1] - top2[:, 0] <= 2 * allowed
    )
    row = {
        "logit_max_abs_diff": logit_parity.max_abs_diff,
        "argmax_mismatches": logit_parity.argmax_mismatches,
        "near_tie_argmax_mismatches": logit_parity.near_tie_mismatches,
        "calibrated_argmax_mismatches": label_diff,
        "near_tie_calibrated_argmax_mismatches": near_tie_labels,
        "probability_max_abs_diff": float(prob_diff.max()),
        "probability_atol": float(allowed.max()),
        "accept_mismatches": accept_diff,
        "near_threshold_accept_mismatches": near_threshold,
        "accepted": int(prediction.accept.sum()),
        "parity": logit_parity.describe(),
    }
    failures = [] if logit_parity.passed else [logit_parity.message()]
    if label_diff > near_tie_labels:
        failures.append(f"{label_diff - near_tie_labels} calibrated argmax differ(s) away from a near tie")
    if np.any(prob_diff > allowed):
        failures.append(
            f"max |probability diff| {row['probability_max_abs_diff']:.3g} beyond its tolerance on "
            f"{int(np.sum(prob_diff > allowed))} image(s)"
        )
    if accept_diff > near_threshold:
        failures.append(f"{accept_diff - near_threshold} accept flag(s) differ away from the threshold")
    return {**row, "passed": not failures, "failures": failures}


def validate(
    bundle: Bundle,
    images: np.ndarray,
    reference: Mapping[str, Mapping[str, np.ndarray]],
    thresholds: Mapping[str, float],
    runtime_logits: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict:
    """Compare the bundle with the pipeline on the same images: validation.json content.

    ``reference[precision]`` holds the pipeline's raw ``logits`` and ``calibrated_logits`` (onnxruntime);
    ``thresholds[precision]`` its accept threshold. Checks, per precision: the logits by
    ``parity.compare_logits`` (argmax flips only at near ties), the calibrated argmax (flips only at near
    ties of the calibrated probabilities), calibrated probabilities within ``probability_tolerance``,
    accept flags identical except within that tolerance of the threshold. Every other runtime the
    bundle offers is checked the same way (``runtimes.<runtime>.<precision>``) against
    ``runtime_logits[runtime][precision]``, the pipeline's logits on that runtime (phase 04's
    ``runtime_logits.npz``), calibrated with the bundle's map.
    """
    checks = {p: _compare(bundle, images, p, reference[p], thresholds[p]) for p in PRECISIONS}
    others: dict[str, dict] = {}
    for precision in PRECISIONS:
        for runtime in bundle.runtimes(precision):
            if runtime == "onnxruntime":
                continue
            logits = (runtime_logits or {}).get(runtime, {}).get(precision)
            if logits is None:
                raise ValueError(
                    f"the bundle offers {precision} on {runtime}: pass the pipeline's {runtime} logits "
                    "(phase 04's runtime_logits.npz) as runtime_logits"
                )
            ref = {
                "logits": logits,
                "calibrated_logits": bundle.calibration[precision].apply(np.asarray(logits)).astype(np.float32),
            }
            others.setdefault(runtime, {})[precision] = _compare(
                bundle, images, precision, ref, thresholds[precision], runtime
            )
    passed = all(c["passed"] for c in checks.values()) and all(c["passed"] for r in others.values() for c in r.values())
    return {
        "status": "PASS" if passed else "FAIL",
        "n": int(len(images)),
        "parity_tolerance": {"rel": parity.REL_TOL, "abs": parity.ABS_TOL},
        **checks,
        "runtimes": others,
    }


def raise_on_failure(validation: dict) -> None:
    """Raise RuntimeError listing every failed check of a ``validate`` result."""
    if validation["status"] != "PASS":
        failures = "; ".join(
            [f"{p}: {', '.join(validation[p]['failures'])}" for p in PRECISIONS if validation[p]["failures"]]
            + [
                f"{r} {p}: {', '.join(c['failures'])}"
                for r, checks in validation.get("runtimes", {}).items()
                for p, c in checks.items()
                if c["failures"]
            ]
        )
        raise RuntimeError(
            f"bundle load-back validation FAILED on {validation['n']} images ({failures}); the bundle "
            "does not reproduce the pipeline, so the phase is not marked complete"
        )


def validation_table(validation: dict):
    """One row per precision and runtime: the differences measured and whether the checks passed."""
    import pandas as pd

    columns = [
        "logit_max_abs_diff",
        "argmax_mismatches",
        "near_tie_argmax_mismatches",
        "calibrated_argmax_mismatches",
        "probability_max_abs_diff",
        "probability_atol",
        "accept_mismatches",
        "near_threshold_accept_mismatches",
        "accepted",
        "passed",
    ]
    rows = {p: validation[p] for p in PRECISIONS}  # onnxruntime; other runtimes: "<precision> <runtime>"
    rows |= {f"{p} {r}": c for r, checks in validation.get("runtimes", {}).items() for p, c in checks.items()}
    return pd.DataFrame({name: {c: row[c] for c in columns} for name, row in rows.items()}).T


def prediction_grid_figure(
    images: np.ndarray, labels: np.ndarray, prediction: Prediction, class_names: Sequence[str], count: int = 16
):
    """The ``count`` least confident images: the bundle's label, calibrated confidence, accept or reject."""
    import matplotlib.pyplot as plt

    confidence = prediction.probabilities.max(axis=1)
    shown = np.argsort(confidence, kind="stable")[:count]
    cols = min(8, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        ax.imshow(images[i].squeeze(), cmap="gray" if images.shape[-1] == 1 else None)
        verdict = "accept" if prediction.accept[i] else "reject"
        ax.set_title(
            f"{class_names[prediction.labels[i]]} {confidence[i]:.2f}\n{verdict}",
            fontsize=8,
            color="tab:green" if prediction.labels[i] == labels[i] else "tab:red",
        )
    fig.suptitle(f"the {len(shown)} least confident of {len(images)} images (green: correct, red: wrong)", fontsize=9)
    fig.tight_layout()
    return fig
