"""The deployment bundle: self-contained ONNX models, their calibration and rules, one verifiable folder.

A bundle is a directory holding only relative names::

    model_fp32.onnx     the deployed model, its calibration map and decision rules inside the graph
    model_int8.onnx     the most accurate INT8 variant of phase 04 (named in bundle.json), likewise
                        (bf16, where offered, is model_fp32.onnx run by OpenVINO with its bf16 hint: no file of its own)
    bundle.json         schema_version, class names, the deployment domain, the input contract, the outputs
                        (name, dtype, shape, meaning), per precision the model file, calibration map, accept rule and set
                        thresholds with each rule in words, the guarantees they come with, the source
                        run (run id, git commit and dirty flag, sha256 of the upstream manifests), versions
    README.md, client.py  how to serve it; a client that needs only numpy and onnxruntime
    checksums.json      sha256 of every other file, written last

Since schema 3 each model's graph computes everything a client needs (``helpers.confidence.onnx_graph``):
``logits``, ``probabilities`` (the chosen calibration map and softmax), ``accept`` (the global threshold,
or the class-wise rule of conformal risk control) and ``prediction_set`` (the per-class LAC conformal set),
so any ONNX runtime -- C++, Java, C#, a browser, OpenVINO -- serves the calibrated model without this
package; the map's parameters stay in bundle.json for provenance.

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
passed phase 04's accuracy and parity checks, ``helpers.runtime.checks``), the default
(``models.<p>.runtime``: phase 05's decision, ``helpers.runtime.decision``) and what each runtime is set
to (``models.<p>.settings``), with the threads and batch size their outputs were checked at
(``runtime_settings``). onnxruntime runs through ``helpers.onnx_export.onnx_logits`` as before; OpenVINO
through ``helpers.runtime.open_session``. A bundle written without these keys offers onnxruntime only.

Precisions (schema 4): ``fp32`` and ``int8`` always; ``bf16`` where the CPU that built the bundle runs bf16
natively and it passed phase 04's gates: ``models.bf16`` is the calibrated FP32 graph (``model_fp32.onnx``,
its map and rules) run by OpenVINO with ``INFERENCE_PRECISION_HINT=bf16`` (onnxruntime has no bf16 CPU
kernels). Where it is not offered, ``absent.bf16`` says why.

bundle.json holds the source run id, so two runs of one configuration give bundles that differ in
that field (and hence in checksums.json) only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from helpers.confidence import onnx_graph
from helpers.confidence.base import CalibrationMap
from helpers.data.datasets import check_image_batch, preprocess
from helpers.metrics.calibration import softmax
from helpers.models import parity
from helpers.models.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_logits, onnx_session
from helpers.run import atomic
from helpers.run.params import typed_config
from helpers.runtime.sessions import RUNTIMES
from helpers.runtime.sessions import settings as runtime_settings_of

# 4: bf16 (the FP32 graph under OpenVINO's bf16 hint) where offered, `absent` where not, per-runtime settings;
# 3: the map and rules inside each graph, per-class thresholds, sets (2: a map; 1: a temperature)
SCHEMA_VERSION = 4
PRECISIONS = ("fp32", "bf16", "int8")  # what a bundle may offer; fp32 and int8 always (REQUIRED)
REQUIRED = ("fp32", "int8")
MODEL_FILES = {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx"}  # the graph files, by the precision they hold
GRAPH = {"fp32": "fp32", "bf16": "fp32", "int8": "int8"}  # precision -> the graph (MODEL_FILES key) it runs
BF16_RUNS_AS = (
    "the calibrated FP32 graph (model_fp32.onnx, its calibration map and rules) run by OpenVINO with "
    "INFERENCE_PRECISION_HINT=bf16: bf16 arithmetic on CPUs with native bf16 (AVX512-BF16 or AMX), the calibration "
    "map and threshold comparisons included, so a decision within bf16 rounding of its threshold may differ from "
    "fp32's; onnxruntime has no bf16 CPU kernels, so client.py (onnxruntime) does not serve it"
)
BUNDLE_FILE = "bundle.json"
CHECKSUMS_FILE = "checksums.json"
GUIDE_FILES = ("README.md", "client.py")  # written beside the models: how to serve the bundle without calib-lab
# the graph's float32 probabilities vs the Python map's (float64 -> float32): worst measured 1.1e-6 (matrix
# scaling, tests/unit/confidence/test_onnx_graph.py), so ~4.5x
GRAPH_PROBABILITY_ATOL = 5e-6
# bf16 (OpenVINO's bf16 hint) runs the graph's calibration head and its threshold comparisons in bf16 too (8
# significant bits; a probability near 0.7 rounds by up to 2^-9). Per image the graph's probabilities may be
# BF16_GRAPH_REL x (1 + map Lipschitz x max |logit|) from the Python rules on the same logits (graph_tolerance).
# Measured on runs/reference's digits CNN, 540 target test images, graph vs Python on the same bf16 logits: identity
# and temperature maps 1.6e-7 (softmax stays f32) but 2 accept flags flipped at |p - threshold| 5e-4 and 3e-6 (the
# comparison rounds); matrix scaling (W ~ 5 I) 0.038 = 0.46 of the bound, Dirichlet (W ~ 3 I) 0.030 = 0.19 of it,
# their accept flips at up to 0.11 of it. 2^-8: two bf16 roundings (the threshold's and the probability's).
BF16_GRAPH_REL = 2**-8
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
    accept: np.ndarray  # bool (N,): max probability >= the threshold (of the predicted class, per-class rules)
    prediction_set: np.ndarray | None = None  # bool (N, classes): probability >= the class's set threshold


def threshold_array(threshold, num_classes: int) -> np.ndarray:
    """A bundle.json threshold -- one probability, or one per class with None for "never" -- as K floats."""
    if isinstance(threshold, (list, tuple)):
        return np.array([math.inf if t is None else float(t) for t in threshold])
    return np.full(num_classes, float(threshold))


def accept_flags(probabilities: np.ndarray, threshold) -> np.ndarray:
    """max probability >= the threshold of the predicted class (every class's the same for a global one)."""
    per_class = threshold_array(threshold, probabilities.shape[1])
    return probabilities.max(axis=1) >= per_class[probabilities.argmax(axis=1)]


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
    """The run a bundle comes from: its id, its git commit and dirty flag, and the sha256 of each named phase's
    manifest."""
    from helpers.run import run_record
    from helpers.run.manifest import manifest_path

    return {
        "run_id": Path(run_dir).name,
        "git": run_record.load(Path(run_dir)).get("git"),  # commit and dirty flag of the code that made the run
        "manifests_sha256": {pid: atomic.sha256_file(manifest_path(Path(run_dir), pid)) for pid in phase_ids},
    }


@dataclass(frozen=True)
class BundleConfig:
    """Phase 08's typed config (``phase.config``), validated when built: which of 07's rules the accept output
    carries."""

    accept_rule: str = "global"  # "global" (07's threshold) or "classwise" (07's class-wise risk control)

    def __post_init__(self) -> None:
        from helpers.confidence.guarantees import check_accept_rule

        check_accept_rule(self.accept_rule)


def check_params(params: dict, config: dict | None = None) -> BundleConfig:
    """Phase 08's precheck: its typed config."""
    return typed_config(BundleConfig, params)


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


@dataclass(frozen=True)
class Rules:
    """What the bundle's graphs decide, per precision: the accept thresholds (one, or one per class with None
    for never), the per-class set thresholds, and what they guarantee in words."""

    accept: dict
    sets: dict[str, list[float]]
    guarantees: dict


def rules_for(conformal_doc: dict, models: Mapping[str, str], accept_rule: str) -> Rules:
    """The rules phase 07 fitted (its conformal.json) for each precision's model: ``accept_rule`` "global" is
    07's threshold, "classwise" its class-wise risk-control thresholds; the prediction set is its per-class LAC
    set (``guarantees.DEPLOYED_SET``). A model 07 did not fit gets the rules of 07's ``selective_model``."""
    from helpers.confidence import guarantees

    guarantees.check_accept_rule(accept_rule)
    docs = conformal_doc["models"]
    fitted = {
        p: guarantees.Guarantees.from_document(docs.get(m, docs[conformal_doc["selective_model"]]))
        for p, m in models.items()
    }
    accept = {p: g.accept_thresholds(accept_rule) for p, g in fitted.items()}
    first = next(iter(fitted.values()))
    words = first.document()["guarantees"]
    return Rules(
        accept=accept,
        sets={p: g.set_thresholds() for p, g in fitted.items()},
        guarantees={
            "prediction_set": f"{guarantees.DEPLOYED_SET}: {words['sets']}",
            "accept": words["rejection"] if accept_rule == "classwise" else "none: a threshold chosen by a criterion",
            "alpha_sets": first.alpha_sets,
            "alpha_risk": first.alpha_risk,
            "fitted_on": "the val split (phase 07), measured on test",
        },
    )


def _check_build_args(model_paths, class_names, calibrations, thresholds) -> None:
    for precision in REQUIRED:
        path = Path(model_paths.get(precision, ""))
        if not path.is_file():
            raise FileNotFoundError(
                f"{precision} model {path} does not exist; pass the phase-02 model.onnx (fp32) "
                "and the phase-04 model_int8_<variant>.onnx (int8)"
            )
    _check_values(class_names, calibrations, thresholds)


def _check_values(class_names, calibrations, thresholds) -> None:
    """The contract's values (what write_bundle refuses to write, load refuses to read)."""
    for precision in calibrations:
        calibration = CalibrationMap.from_dict(calibrations.get(precision, {"method": None, "params": None}))
        if calibration.probability_lipschitz() is None:
            raise ValueError(
                f"calibration map for {precision} is {calibration.method}, a step map that no logit "
                "tolerance bounds; deploy a smooth map (phase 06 selects only those)"
            )
        thr = thresholds.get(precision)
        entries = thr if isinstance(thr, (list, tuple)) else [thr]
        if (isinstance(thr, (list, tuple)) and len(thr) != len(class_names)) or not all(
            (t is None and isinstance(thr, (list, tuple)))
            or (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1)
            for t in entries
        ):
            raise ValueError(
                f"threshold for {precision} must be a confidence in [0, 1], or one per class ({len(class_names)}, "
                f"None for a class never accepted), got {thr!r}"
            )
    if (
        not isinstance(class_names, (list, tuple))
        or len(class_names) < 2
        or len(set(map(str, class_names))) != len(class_names)
    ):
        raise ValueError(f"class_names must be >= 2 distinct names, got {list(class_names)!r}")


def runtime_arguments(decision, runtime_report: Mapping) -> dict:
    """:func:`write_bundle`'s runtime arguments from phase 05's decision (``helpers.runtime.decision``) and phase
    04's runtime checks (``quant_report.json`` ``runtimes``: the threads, batch size and versions they ran at)."""
    return {
        "runtimes": decision.offered(),
        "default_runtimes": decision.defaults(),
        "absent": decision.absent(),
        "runtime_settings": {k: runtime_report[k] for k in ("threads", "batch_size", "versions")},
    }


def pipeline_runtime_logits(on_runtimes: Mapping, decision, split: str = "test") -> dict[str, dict[str, np.ndarray]]:
    """:func:`validate`'s ``runtime_logits``: per runtime and offered precision, the pipeline's logits of that
    precision's phase-04 model on ``split`` (``on_runtimes``: ``logits_file.load_runtimes`` of 04's
    runtime_logits.npz)."""
    offered = decision.offered()
    return {
        runtime: {
            p: on_runtimes[runtime][decision.precisions[p].model][split] for p in offered if runtime in offered[p]
        }
        for runtime in RUNTIMES
    }


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
    set_thresholds: Mapping[str, Sequence[float]] | None = None,
    accept_rule: str = "global",
    guarantees: Mapping | None = None,
    domain: Mapping | None = None,
    absent: Mapping[str, str] | None = None,
) -> dict:
    """Write the bundle into ``bundle_dir`` (models, bundle.json, README.md, client.py, then checksums.json);
    returns bundle.json.

    Each model is written with its calibration map and rules appended to its graph
    (``onnx_graph.calibrated_model``). ``calibrations[precision]`` is the chosen map's
    ``CalibrationMap.to_dict()`` (phase 06's scaling_params.json); ``thresholds[precision]`` the accept
    threshold: one probability (``accept_rule`` "global") or one per class (None: never accepted; "classwise").
    ``set_thresholds[precision]``: the per-class LAC set thresholds (phase 07's conformal.json), or None for
    no ``prediction_set`` output; ``guarantees``: what the rules guarantee, in words (copied into bundle.json).
    All of these are fp32's and int8's (:data:`REQUIRED`): bf16 runs the FP32 graph, its map and rules.
    ``runtimes``: per precision the runtimes offered (default: onnxruntime only; bf16 is offered when listed
    here with at least one runtime, OpenVINO); ``default_runtimes``: per precision the one ``predict`` uses
    unless told (one of those offered); ``runtime_settings``: the threads and batch size the offered runtimes'
    outputs were checked at (and their versions); ``absent``: per precision not offered, why (bundle.json
    ``absent``; bf16 needs a reason when it is not offered).
    ``domain``: the domain the bundle is deployed to (``{"name", "description"}``, ``helpers.data.deployment``):
    its val split fitted the map and the rules, its test split validates the bundle.
    """
    _check_build_args(model_paths, class_names, calibrations, thresholds)
    if accept_rule not in ACCEPT_RULE_TEXT:  # the rules guarantees.ACCEPT_RULES declares, in words
        raise ValueError(f"accept_rule must be one of {list(ACCEPT_RULE_TEXT)}, got {accept_rule!r}")
    if set_thresholds is not None and any(len(set_thresholds[p]) != len(class_names) for p in REQUIRED):
        raise ValueError(f"set_thresholds must hold one probability per class ({len(class_names)}) per precision")
    offered = [p for p in PRECISIONS if p in REQUIRED or (runtimes or {}).get(p)]
    default_reason = "" if runtimes else "the bundle was written for onnxruntime only (no runtimes given)"
    absent = {p: str((absent or {}).get(p, default_reason)) for p in PRECISIONS if p not in offered}
    if not all(absent.values()):
        raise ValueError(
            f"{', '.join(p for p, why in absent.items() if not why)} is offered on no runtime: pass why in absent= "
            "(phase 05's runtime_decision.json says it)"
        )
    runtimes = {p: list((runtimes or {}).get(p, ["onnxruntime"])) for p in offered}
    defaults = {p: (default_runtimes or {}).get(p, runtimes[p][0]) for p in offered}
    for precision in offered:
        if not runtimes[precision] or defaults[precision] not in runtimes[precision]:
            raise ValueError(
                f"{precision}: the default runtime {defaults[precision]!r} must be one of the runtimes "
                f"offered, {runtimes[precision]}; pass those that passed phase 04's checks"
            )
    settings = dict(runtime_settings or {"threads": 1, "batch_size": 500})
    bundle_dir = Path(bundle_dir)
    sets = {p: (None if set_thresholds is None else [float(t) for t in set_thresholds[p]]) for p in REQUIRED}
    for precision in REQUIRED:
        graph = onnx_graph.calibrated_model(
            onnx.load(str(model_paths[precision])),
            calibrations[precision],
            threshold_array(thresholds[precision], len(class_names)).tolist()
            if isinstance(thresholds[precision], (list, tuple))
            else float(thresholds[precision]),
            sets[precision],
        )
        atomic.write_bytes(bundle_dir / MODEL_FILES[precision], graph.SerializeToString())
    outputs = {name: spec for name, spec in onnx_graph.OUTPUTS.items() if name != "prediction_set" or sets["fp32"]}
    models = {}
    for p in offered:
        graph = GRAPH[p]
        threshold = thresholds[graph]
        models[p] = {
            "file": MODEL_FILES[graph],
            "calibration": _map_doc(calibrations[graph]),
            "threshold": threshold if isinstance(threshold, (list, tuple)) else float(threshold),
            **({"set_thresholds": sets[graph]} if sets[graph] is not None else {}),
            "rules": _rules_doc(calibrations[graph], accept_rule, sets[graph] is not None),
            **({"variant": int8_variant} if p == "int8" else {}),
            **({"runs_as": BF16_RUNS_AS} if p == "bf16" else {}),
            "runtimes": runtimes[p],
            "runtime": defaults[p],
            "settings": {r: runtime_settings_of(r, p, settings.get("threads", 1)) for r in runtimes[p]},
        }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "class_names": list(class_names),
        **({"domain": dict(domain)} if domain else {}),
        "input": input_contract(input_shape),
        "outputs": outputs,
        "models": models,
        **({"absent": absent} if absent else {}),
        "selective": {
            "criterion": criterion,
            "accept_rule": accept_rule,
            "accept": ACCEPT_RULE_TEXT[accept_rule],
        },
        **({"guarantees": dict(guarantees)} if guarantees else {}),
        "source": source,
        "versions": versions,
        "runtime_settings": settings,
    }
    atomic.write_json(bundle_dir / BUNDLE_FILE, doc)
    atomic.write_text(bundle_dir / "README.md", guide_text(doc))
    atomic.write_text(bundle_dir / "client.py", CLIENT)
    names = [*MODEL_FILES.values(), BUNDLE_FILE, *GUIDE_FILES]
    atomic.write_json(
        bundle_dir / CHECKSUMS_FILE,
        {"algorithm": "sha256", "files": {n: atomic.sha256_file(bundle_dir / n) for n in names}},
    )
    return doc


ACCEPT_RULE_TEXT = {
    "global": "accept when the max calibrated probability >= threshold (phase 07's criterion on val)",
    "classwise": (
        "accept when the max calibrated probability >= threshold[predicted class] (None: never): conformal "
        "risk control on val, P(accepted and wrong | predicted class) <= alpha_risk per class"
    ),
}


def _rules_doc(calibration: dict, accept_rule: str, with_sets: bool) -> dict:
    """Each output's rule in words, for this model."""
    rules = {"probabilities": onnx_graph.describe(calibration), "accept": ACCEPT_RULE_TEXT[accept_rule]}
    if with_sets:
        rules["prediction_set"] = (
            "class j is in the set when probabilities[j] >= set_thresholds[j]: split-conformal LAC sets per class "
            "(Mondrian) fitted on val, P(true label in the set | true class) >= 1 - alpha_sets"
        )
    return rules


CLIENT = '''"""Serve this bundle with numpy and onnxruntime only:  python client.py IMAGES.npy [fp32|int8]

IMAGES.npy holds uint8 images, N x H x W x C as bundle.json's "input" says. Every output is computed inside
the ONNX graph (calibrated probabilities, the accept rule, the conformal prediction set): nothing else to apply.
bf16, where the bundle has it, runs on OpenVINO only (onnxruntime has no bf16 CPU kernels): README.md shows how.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def load(precision="fp32"):
    doc = json.loads((HERE / "bundle.json").read_text())
    if precision not in doc["models"]:
        raise SystemExit(f"this bundle has no {precision}: {doc.get('absent', {}).get(precision, 'not written')}")
    model = doc["models"][precision]
    if "onnxruntime" not in model.get("runtimes", ["onnxruntime"]):
        raise SystemExit(f"{precision} is {model.get('runs_as', 'not served by onnxruntime')}; README.md shows how")
    return doc, ort.InferenceSession(str(HERE / model["file"]), providers=["CPUExecutionProvider"])


def predict(doc, session, images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != tuple(doc["input"]["shape"][1:]):
        raise ValueError(f"need uint8 images N x {doc['input']['shape'][1:]}, got {images.dtype} {images.shape}")
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {doc["input"]["name"]: images.astype(np.float32)})))


if __name__ == "__main__":
    doc, session = load(sys.argv[2] if len(sys.argv) > 2 else "fp32")
    out = predict(doc, session, np.load(sys.argv[1]))
    classes = doc["class_names"]
    for i, probs in enumerate(out["probabilities"]):
        top = int(probs.argmax())
        members = [classes[j] for j in np.flatnonzero(out["prediction_set"][i])] if "prediction_set" in out else []
        print(f"{i}: {classes[top]} p={probs[top]:.3f} {'accept' if out['accept'][i] else 'reject'} set={members}")
'''


def _domain_line(doc: dict) -> str:
    if "domain" not in doc:
        return ""
    return (
        f"\nDeployed to the {doc['domain']['name']} domain ({doc['domain']['description']}): its calibration map and "
        "rules were fitted on that domain's val split and the bundle was validated on its test split."
    )


def guide_text(doc: dict) -> str:
    """The bundle's README.md: what it holds, its input and outputs, how to serve it anywhere."""
    shape = " x ".join("N" if d is None else str(d) for d in doc["input"]["shape"])
    rows = "\n".join(
        f"| `{name}` | {spec['dtype']} | {' x '.join(map(str, spec['shape']))} | {spec['meaning']} |"
        for name, spec in doc["outputs"].items()
    )
    rules = "\n".join(
        f"- **{precision}** (`{model['file']}`): " + "; ".join(f"{k}: {v}" for k, v in model["rules"].items())
        for precision, model in doc["models"].items()
    )
    return f"""# A calib-lab deployment bundle

Classes: {", ".join(map(str, doc["class_names"]))}. Source run: `{doc["source"].get("run_id")}`.{_domain_line(doc)}

Every model here is a self-contained ONNX graph: feed it uint8 pixels cast to float32, NHWC, shape
`{shape}` (input `{doc["input"]["name"]}`, no scaling, no normalization), and it returns:

| output | dtype | shape | meaning |
|---|---|---|---|
{rows}

Rules, per precision:
{rules}

Serve it with any ONNX runtime (onnxruntime in Python, C++, Java or C#, onnxruntime-web, OpenVINO):
`client.py` is a complete client that needs only numpy and onnxruntime:

    python client.py images.npy fp32

{_bf16_text(doc)}
`bundle.json` holds the calibration map's parameters, the thresholds and where they come from;
`checksums.json` the sha256 of every file.
"""


def _bf16_text(doc: dict) -> str:
    """README.md's bf16 paragraph: how to serve it with OpenVINO, or why the bundle has none."""
    if "bf16" not in doc["models"]:
        why = doc.get("absent", {}).get("bf16")
        return f"No bf16 in this bundle: {why}.\n" if why else ""
    config = doc["models"]["bf16"]["settings"]["openvino"]["config"]
    return f"""bf16 (`models.bf16`): {doc["models"]["bf16"]["runs_as"]}. Serve it with OpenVINO
(`pip install openvino`), with the settings it was validated with (`models.bf16.settings.openvino`):

    import numpy as np, openvino as ov
    compiled = ov.Core().compile_model("model_fp32.onnx", "CPU", {config})
    out = compiled(images.astype(np.float32))  # images: uint8 N x H x W x C
    probabilities, accept = out["probabilities"], out["accept"]
"""


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
    """``atomic.read_json``, its errors as :class:`BundleError`."""
    try:
        return atomic.read_json(
            path,
            f"a bundle directory holds {BUNDLE_FILE}, {CHECKSUMS_FILE} and the two models intact; rebuild it "
            "with phase 08 (calib run --phases 08)",
        )
    except (OSError, ValueError) as exc:
        raise BundleError(str(exc)) from None


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
    """Raise BundleError naming the first file that is missing or whose sha256 differs from checksums.json.

    When a file and its checksum disagree, either may have changed. A bundle alone cannot tell which
    and says so; a bundle inside its run asks the manifest of the phase that wrote it (``altered_side``).
    """
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
        if atomic.sha256_file(path) == expected:
            continue
        side, source = altered_side(bundle_dir, name)
        fix = "rebuild the bundle (calib run --phases 08) or restore"
        if side == CHECKSUMS_FILE:
            raise BundleError(
                f"{CHECKSUMS_FILE} was altered: it differs from the run's manifest {source}, while {name} still "
                f"matches it; {fix} {CHECKSUMS_FILE}"
            )
        if side == name:
            raise BundleError(
                f"bundle file {name} was altered: its sha256 differs from {CHECKSUMS_FILE} and from the run's "
                f"manifest {source}; {fix} the file"
            )
        raise BundleError(
            f"bundle file {name} does not match its sha256 in {CHECKSUMS_FILE}: the file or {CHECKSUMS_FILE} was "
            f"altered (a bundle outside its run cannot tell which); {fix} both from the run"
        )


def altered_side(bundle_dir: Path, name: str) -> tuple[str | None, str]:
    """Which of ``name`` and checksums.json differs from the manifest of the phase that wrote the bundle
    (``<run>/results/<phase>/<bundle dir>``), and that manifest's path; ``(None, "")`` when it cannot tell."""
    from helpers.run import manifest

    bundle_dir = bundle_dir.resolve()
    phase_dir = bundle_dir.parent
    if phase_dir.parent.name != "results":
        return None, ""
    run_dir, phase_id = phase_dir.parent.parent, phase_dir.name
    doc = manifest.read_manifest(run_dir, phase_id)
    if not doc or doc.get("sha256") != manifest.content_hash(doc):  # none, or altered itself
        return None, ""
    recorded = {rel: entry.get("sha256") for rel, entry in doc.get("files", {}).items()}
    matches = {
        n: recorded.get(f"{bundle_dir.name}/{n}") == atomic.sha256_file(bundle_dir / n) for n in (name, CHECKSUMS_FILE)
    }
    changed = [n for n, same in matches.items() if not same]
    return (changed[0] if len(changed) == 1 else None), str(manifest.manifest_path(run_dir, phase_id))


class Bundle:
    """A verified bundle: ``predict(images, precision, runtime)`` and ``logits(images, precision, runtime)``."""

    def __init__(self, directory: Path, doc: dict):
        self.directory, self.doc = directory, doc
        self.class_names: list[str] = doc["class_names"]
        self.image_shape = tuple(doc["input"]["shape"][1:])
        self.precisions = [p for p in PRECISIONS if p in doc["models"]]  # fp32 and int8, bf16 where offered
        self._sessions = {
            (p, "onnxruntime"): onnx_session(directory / doc["models"][p]["file"])
            for p in self.precisions
            if "onnxruntime" in self.runtimes(p)
        }
        self.calibration = {p: calibration_map(doc["models"][p]) for p in self.precisions}

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
        if precision not in self.doc["models"]:
            why = self.doc.get("absent", {}).get(precision, "the bundle was written without it")
            raise ValueError(f"this bundle has no {precision}: {why}")
        return self.doc["models"][precision]

    def logits(self, images, precision: str = "fp32", runtime: str | None = None) -> np.ndarray:
        """Raw float32 logits of one precision's model on uint8 NHWC images (``runtime``: the default)."""
        self._model(precision)
        return self._run(self._check_images(images), precision, runtime)

    def predict(self, images, precision: str = "fp32", runtime: str | None = None) -> Prediction:
        """Labels, calibrated probabilities and accept flags for uint8 NHWC images (``runtime``: the default)."""
        return self.decide(self.logits(images, precision, runtime), precision)

    def decide(self, logits: np.ndarray, precision: str = "fp32") -> Prediction:
        """The bundle's rules in Python on given raw logits: the map (float32, as phase 06 stores calibrated
        logits), softmax, the accept rule and the prediction set."""
        model = self._model(precision)
        calibrated = self.calibration[precision].apply(logits).astype(np.float32)
        probabilities = softmax(calibrated.astype(np.float64))
        sets = model.get("set_thresholds")
        return Prediction(
            labels=probabilities.argmax(axis=1),
            probabilities=probabilities,
            accept=accept_flags(probabilities, model["threshold"]),
            prediction_set=None if sets is None else probabilities >= np.asarray(sets),
        )

    def outputs(self, images, precision: str = "fp32", runtime: str | None = None, batch_size: int = 500) -> dict:
        """Every output of the bundled graph -- what any ONNX client gets: logits, probabilities, accept and
        (schema >= 3) prediction_set -- on uint8 NHWC images (``runtime``: the default)."""
        images = self._check_images(images)
        runtime = runtime or self.runtimes(precision)[0]
        if runtime == "onnxruntime":
            session = self._sessions[precision, "onnxruntime"]
            names = [o.name for o in session.get_outputs()]

            def run(batch):
                return dict(zip(names, session.run(None, {INPUT_NAME: batch})))

        else:
            self._run(images[:1], precision, runtime)  # opens (and checks) the session
            run = self._sessions[precision, runtime].run_named
        parts = [run(preprocess(images[s : s + batch_size])) for s in range(0, len(images), batch_size)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


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
        models = {p: doc["models"][p] for p in (*REQUIRED, *(p for p in doc["models"] if p not in REQUIRED))}
        if not set(models) <= set(PRECISIONS):
            raise ValueError(f"precisions {sorted(models)} beyond {PRECISIONS}")
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
    if any(m["file"] != MODEL_FILES[GRAPH[p]] for p, m in models.items()) or not (
        isinstance(shape, list) and shape[:1] == [None] and all(isinstance(d, int) and d > 0 for d in shape[1:])
    ):
        raise BundleError(
            f"{path}: model files must be {MODEL_FILES} (bf16: fp32's) and the input shape [null, H, W, C] with "
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
    graph = bundle.outputs(images, precision, runtime)  # one pass of the model: its logits and in-graph outputs
    logits = graph["logits"]
    prediction = bundle.decide(logits, precision)
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
    per_class = threshold_array(threshold, ref_probs.shape[1])[ref_probs.argmax(axis=1)]
    accept_diff, near_threshold = parity.flag_mismatches(
        accept_flags(ref_probs, threshold), prediction.accept, np.abs(confidence - per_class) <= allowed
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
        **_graph_checks(bundle, graph, precision, prediction),
    }
    failures = [] if logit_parity.passed else [logit_parity.message()]
    failures += row.pop("graph_failures")
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


def graph_tolerance(bundle: Bundle, logits: np.ndarray, precision: str) -> np.ndarray:
    """Per image, how far the graph's own probabilities may be from the Python rules on the same logits, and so
    how near a threshold its decisions may differ: GRAPH_PROBABILITY_ATOL (float32), or under bf16 -- where
    OpenVINO runs the calibration head and the threshold comparisons in bf16 too -- BF16_GRAPH_REL x (1 + the
    map's probability Lipschitz constant x the image's max |logit|)."""
    if precision != "bf16":
        return np.full(len(logits), GRAPH_PROBABILITY_ATOL)
    lipschitz = bundle.calibration[precision].probability_lipschitz()
    return BF16_GRAPH_REL * (1 + lipschitz * np.abs(np.asarray(logits, dtype=np.float64)).max(axis=1))


def _graph_checks(bundle: Bundle, graph: dict, precision: str, prediction: Prediction) -> dict:
    """The graph's own outputs (what a client without this package gets) against the Python rules on the same
    logits: probabilities within :func:`graph_tolerance`, accept flags and set membership identical except within
    that tolerance of their threshold (counted)."""
    if "probabilities" not in graph:  # a bundle from before schema 3: raw logits only
        return {"graph_failures": []}
    model = bundle.doc["models"][precision]
    probs = prediction.probabilities
    atol = graph_tolerance(bundle, graph["logits"], precision)
    near = np.abs(probs.max(axis=1) - threshold_array(model["threshold"], probs.shape[1])[probs.argmax(axis=1)])
    accept_diff, near_accept = parity.flag_mismatches(prediction.accept, graph["accept"], near <= atol)
    prob_diff = np.abs(graph["probabilities"] - probs).max(axis=1)
    row = {
        "graph_probability_max_abs_diff": float(prob_diff.max()),
        "graph_probability_atol": float(atol.max()),
        "graph_accept_mismatches": accept_diff,
        "graph_near_threshold_accept_mismatches": near_accept,
    }
    if prediction.prediction_set is not None:
        row["graph_set_mismatches"], row["graph_near_threshold_set_mismatches"] = parity.flag_mismatches(
            prediction.prediction_set.ravel(),
            graph["prediction_set"].ravel(),
            (np.abs(probs - np.asarray(model["set_thresholds"])) <= atol[:, None]).ravel(),
        )
    failures = []
    if np.any(prob_diff > atol):
        failures.append(f"the graph's probabilities differ by {row['graph_probability_max_abs_diff']:.3g}")
    if accept_diff > near_accept:
        failures.append(f"{accept_diff - near_accept} graph accept flag(s) differ away from the threshold")
    if row.get("graph_set_mismatches", 0) > row.get("graph_near_threshold_set_mismatches", 0):
        failures.append("graph prediction sets differ away from their thresholds")
    return {**row, "graph_failures": failures}


def validate(
    bundle: Bundle,
    images: np.ndarray,
    reference: Mapping[str, Mapping[str, np.ndarray]],
    thresholds: Mapping[str, float],
    runtime_logits: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict:
    """Compare the bundle with the pipeline on the same images: validation.json content.

    ``reference[precision]`` holds the pipeline's raw ``logits`` and ``calibrated_logits`` (onnxruntime) of fp32
    and int8; ``thresholds[precision]`` their accept thresholds (bf16 runs the FP32 graph: fp32's). Checks, per
    precision: the logits by ``parity.compare_logits`` (argmax flips only at near ties), the calibrated argmax
    (flips only at near ties of the calibrated probabilities), calibrated probabilities within
    ``probability_tolerance``, accept flags identical except within that tolerance of the threshold. Every
    other runtime the bundle offers, and every precision onnxruntime does not run (bf16), is checked the same
    way (``runtimes.<runtime>.<precision>``) against ``runtime_logits[runtime][precision]``, the pipeline's
    logits of that precision on that runtime (phase 04's ``runtime_logits.npz``), calibrated with the bundle's
    map.
    """
    checks = {p: _compare(bundle, images, p, reference[p], thresholds[p]) for p in REQUIRED}
    others: dict[str, dict] = {}
    for precision in bundle.precisions:
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
                bundle, images, precision, ref, thresholds[GRAPH[precision]], runtime
            )
    passed = all(c["passed"] for c in checks.values()) and all(c["passed"] for r in others.values() for c in r.values())
    return {
        "status": "PASS" if passed else "FAIL",
        "n": int(len(images)),
        "parity_tolerance": {"rel": parity.REL_TOL, "abs": parity.ABS_TOL},
        **checks,
        "runtimes": others,
        **({"absent": dict(bundle.doc["absent"])} if bundle.doc.get("absent") else {}),
    }


def _checks(validation: dict) -> dict[tuple[str, str], dict]:
    """Every check of a ``validate`` result by (precision, runtime)."""
    found = {(p, "onnxruntime"): validation[p] for p in REQUIRED if p in validation}
    for runtime, checks in validation.get("runtimes", {}).items():
        found |= {(p, runtime): check for p, check in checks.items()}
    return found


def raise_on_failure(validation: dict) -> None:
    """Raise RuntimeError listing every failed check of a ``validate`` result."""
    if validation["status"] != "PASS":
        failures = "; ".join(
            f"{r} {p}: {', '.join(c['failures'])}" for (p, r), c in _checks(validation).items() if c["failures"]
        )
        raise RuntimeError(
            f"bundle load-back validation FAILED on {validation['n']} images ({failures}); the bundle "
            "does not reproduce the pipeline, so the phase is not marked complete"
        )


def validation_table(validation: dict):
    """One row per precision and runtime that could run it (bf16: OpenVINO only), whatever this bundle offers --
    ``fp32`` (onnxruntime), ``fp32 openvino``, ``bf16 openvino``, ``int8``, ``int8 openvino`` --: the differences
    measured and whether the checks passed; a pair the bundle does not offer keeps its row, empty, with
    ``validated`` False (so the table's rows do not depend on the machine that built it)."""
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
        "graph_probability_max_abs_diff",
        "graph_accept_mismatches",
        "graph_set_mismatches",
        "passed",
    ]
    checks = _checks(validation)
    rows = {
        p if r == "onnxruntime" else f"{p} {r}": {
            "validated": (p, r) in checks,
            **{c: checks.get((p, r), {}).get(c) for c in columns},
        }
        for p in PRECISIONS
        for r in RUNTIMES
        if not (p == "bf16" and r == "onnxruntime")
    }
    return pd.DataFrame(rows).T


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
