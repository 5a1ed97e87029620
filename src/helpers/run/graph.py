"""The phase graph: every phase, its notebook, its upstream phases and its declared outputs.

This is the single place that says which phase reads what. A phase may read only the declared
outputs of its declared upstream phases (``Phase.input`` enforces it), and writes only its own
declared outputs (``Phase.out`` enforces it). Output patterns are globs relative to
``results/<phase id>/``.

Each phase's parameters are validated once, by its ``precheck`` (``"module:function"``, imported by name: this
layer knows nothing of the domain), which returns the phase's typed config -- a frozen object -- or None for a
phase without one. ``calib run`` calls it before any kernel starts; ``Phase.open`` calls the same function and
keeps the result as ``phase.config``, which the notebook passes on to its helpers.

A phase may narrow what it reads per mode: ``inputs`` names kinds of input (``"images"``) and the
``"<phase>/<file>"`` globs each is; the phase's config says which kinds it reads (its ``reads``, and its ``name``
for messages), so the meaning of a mode stays with the config that declares the modes. ``sealed_inputs`` lists
what becomes readable once the phase has sealed its fitted outputs (evaluation data). Phase 02b uses it so that
a label-free adaptation mode is handed target images and nothing else. :data:`MODEL_PHASE` is the phase whose
model every later phase reads (``Phase.model_input``).

``bounds`` are upper bounds of parameters where a typo is plausible and costly (epochs, sizes,
counts, bins; for a list, of each entry): ``calib run`` and ``calib sweep`` refuse a larger value
before anything starts (``params.check_upper_bounds``), ``$CALIB_LIFT_BOUNDS`` lifts one, and
``calib params`` lists them. They are generous: a value beyond one is hours of work or out of memory.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.run.project import project_root


@dataclass(frozen=True)
class PhaseSpec:
    id: str
    title: str
    upstream: tuple[str, ...]
    outputs: tuple[str, ...]
    optional: tuple[str, ...] = ()  # declared outputs a phase may leave out (e.g. no curves for an import)
    soft_upstream: bool = False  # runs on whatever upstream phases exist (the report), naming the missing
    precheck: str = ""  # "module:function": params -> the phase's typed config (or None), before any kernel starts
    inputs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (kind, "<phase>/<file>" globs); the config ``reads`` kinds
    sealed_inputs: tuple[str, ...] = ()  # "<phase>/<file>" globs readable once the phase has sealed its outputs
    bounds: tuple[tuple[str, int], ...] = ()  # (parameter, upper bound) checked before a run is created
    publish: str = ""  # "module:function" storing results outside the run once the manifest is in place (see store)

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @property
    def notebook(self) -> Path:
        return project_root() / "notebooks" / f"{self.id}.ipynb"

    def check(self, params: dict, config: dict | None = None) -> Any:
        """The phase's typed config from its params, validated by its precheck (None for a phase without one).
        ``config``: every phase's params, for cross-phase rules; None when a notebook runs alone. Called by
        ``calib run`` before any kernel and by ``Phase.open``, which keeps the result as ``phase.config``."""
        return _function(self.precheck)(params, config) if self.precheck else None

    def store(self, run_dir: Path, params: dict) -> None:
        """The phase's last step: its ``publish`` hook, ``function(run_dir, phase_id, params)``, writes what the
        phase keeps outside the run (phase 05: its records into the ground-truth store) from its results, once
        its manifest is in place -- so a phase that fails never leaves anything there. It is idempotent (a
        phase stopped before it was recorded stores again on resume) and all or nothing."""
        if self.publish:
            _function(self.publish)(run_dir, self.id, params)

    def declares(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.outputs + self.optional)

    def readable(self, config: Any, sealed: bool) -> tuple[str, ...] | None:
        """The ``"<phase>/<file>"`` globs this phase may read now (None: every declared upstream output), from the
        kinds of input its typed ``config`` reads."""
        if not self.inputs:
            return None
        declared = dict(self.inputs)
        reads = getattr(config, "reads", None)
        if reads is None or any(kind not in declared for kind in reads):
            raise ValueError(
                f"{self.id} declares its inputs by kind ({', '.join(declared)}); its config must say which it reads "
                f"(a `reads` tuple of them), got {reads!r} from {type(config).__name__}"
            )
        return tuple(g for kind, globs in self.inputs if kind in reads for g in globs) + (
            self.sealed_inputs if sealed else ()
        )


def _function(name: str):
    """The function a ``"module:function"`` name of the graph refers to (imported when first needed)."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def short_id(phase_id: str) -> str:
    """``02b_adapt`` -> ``02b``: what ``--phases`` takes and what tables print."""
    return phase_id.split("_")[0]


MODEL_PHASE = "02b_adapt"  # the phase whose model.json/.pt/.onnx and logits.npz later phases read
MAX_THREADS = 1024  # threads of one process (a machine with more cores is rare)
N_BOOT_BOUND = ("n_boot", 100_000)  # bootstrap resamples (06, 07): the default 1000 takes seconds
_BASE_MODEL = ("02_train/model.json", "02_train/model.pt")
_TARGET_IMAGES = ("02a_target/target_train_images.npz",)
_TARGET_LABELS = ("02a_target/target_train_labels.npz",)

PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec("00_environment", "Environment", (), ("environment.json", "isa.png")),
    PhaseSpec(
        "01_data",
        "Data and calibration slice",
        (),
        ("splits.npz", "calibration_slice.npz", "distribution.json", "samples.png"),
        precheck="helpers.data.datasets:check_params",
    ),
    PhaseSpec(
        "02_train",
        "Baseline model, metrics and ONNX export",
        ("01_data",),
        ("model.json", "model.pt", "logits.npz", "metrics.json", "confusion.png", "model.onnx"),
        optional=("history.json", "curves.png"),
        precheck="helpers.models.artifact:check_params",
        bounds=(("epochs", 1000), ("batch_size", 16_384)),
    ),
    PhaseSpec(
        "02a_target",
        "Target domain",
        ("01_data",),
        ("target.json", "target_val_*.npz", "target_test_*.npz", "target.png"),
        optional=("target_train_*.npz", "target_calibration_*.npz", "source_val_*.npz", "source_test_*.npz"),
        precheck="helpers.adaptation.domain:check_params",
    ),
    PhaseSpec(
        "02b_adapt",
        "Domain adaptation",
        ("01_data", "02_train", "02a_target"),
        (
            "model.json",
            "model.pt",
            "model.onnx",
            "logits.npz",
            "adapter.pt",
            "adapter_config.json",
            "adaptation.json",
            "adaptation.png",
            "shift_logits.npz",
        ),
        precheck="helpers.adaptation.methods:check_params",
        bounds=(
            ("adapt_epochs", 1000),
            ("adapt_batch_size", 16_384),
            ("lora_rank", 1024),
            ("adapt_threads", MAX_THREADS),
        ),
        inputs=(("model", _BASE_MODEL), ("images", _TARGET_IMAGES), ("labels", _TARGET_LABELS)),  # AdaptConfig.reads
        sealed_inputs=("02a_target/*_val_*.npz", "02a_target/*_test_*.npz", "01_data/splits.npz"),
    ),
    PhaseSpec(
        "03_activation_stats",
        "Activation statistics",
        ("01_data", "02_train", "02a_target", MODEL_PHASE),  # 02's model is the `base` role beside the adapted one
        ("*/calibration_stats.npz", "*/rate_targets.json", "rates.png", "sigma.png"),
        precheck="helpers.activations.stats:check_params",
        bounds=(("stats_batch_size", 65_536), ("transformer_sentences", 100_000)),
    ),
    PhaseSpec(
        "04_quantize",
        "Post-training quantization",
        ("01_data", "02a_target", MODEL_PHASE),
        ("model_int8_*.onnx", "quant_report.json", "int8_logits.npz", "runtime_logits.npz", "quant.png"),
        precheck="helpers.quantize.ort:check_params",
        bounds=(("num_bins", 16_384), ("size_sweep", 10_000), ("runtime_threads", MAX_THREADS)),
    ),
    PhaseSpec(
        "05_latency",
        "Latency ground truth",
        (MODEL_PHASE, "04_quantize"),
        ("latency.json", "estimator.json", "peaks.json", "runtime_decision.json", "latency.png"),
        optional=("estimator.png", "store/*"),
        precheck="helpers.ground_truth.runtime_latency:check_params",
        publish="helpers.ground_truth.runtime_latency:publish_phase",
        bounds=(
            ("batch_sizes", 4096),
            ("repeats", 10_000),
            ("warmup", 1000),
            ("threads", MAX_THREADS),
            ("decision_batch", 4096),
        ),
    ),
    PhaseSpec(
        "06_confidence",
        "Confidence calibration",
        ("01_data", "02a_target", MODEL_PHASE, "04_quantize"),
        (
            "*/scaling_params.json",
            "calibration_metrics.json",
            "reliability.png",
            "confidence.png",
            "calibrated_logits.npz",
            "calibration_under_shift.json",
        ),
        precheck="helpers.confidence.calibrate:check_params",
        bounds=(("n_bins", 1000), N_BOOT_BOUND),
    ),
    PhaseSpec(
        "07_selective",
        "Selective-prediction threshold",
        ("01_data", "02a_target", MODEL_PHASE, "06_confidence"),  # 02b: both domains' logits (coverage under shift)
        (
            "threshold.json",
            "threshold_sweep.csv",
            "risk_coverage.png",
            "threshold_sweep.png",
            "conformal.json",
            "conformal.png",
            "conformal_under_shift.json",
        ),
        precheck="helpers.confidence.selective:check_params",
        bounds=(N_BOOT_BOUND, ("resplits", 10000)),
    ),
    PhaseSpec(
        "08_bundle",
        "Deployment bundle",
        # 05: the runtime decision (runtime_decision.json), read instead of timing the runtimes again
        ("01_data", "02a_target", MODEL_PHASE, "04_quantize", "05_latency", "06_confidence", "07_selective"),
        (
            "bundle/model_fp32.onnx",
            "bundle/model_int8.onnx",
            "bundle/bundle.json",
            "bundle/README.md",
            "bundle/client.py",
            "bundle/checksums.json",
            "validation.json",
            "predictions.png",
        ),
        precheck="helpers.bundle:check_params",
    ),
    PhaseSpec(
        "09_report",
        "Run report",
        (
            "00_environment",
            "01_data",
            "02_train",
            "02a_target",
            MODEL_PHASE,
            "03_activation_stats",
            "04_quantize",
            "05_latency",
            "06_confidence",
            "07_selective",
            "08_bundle",
        ),
        ("report.html",),
        soft_upstream=True,
    ),
)
_BY_ID = {p.id: p for p in PHASES}


def get_phase(phase_id: str) -> PhaseSpec:
    try:
        return _BY_ID[phase_id]
    except KeyError:
        raise ValueError(f"unknown phase {phase_id!r}; phases are: {', '.join(_BY_ID)}") from None


def select(selection: str | list[str] | None) -> list[PhaseSpec]:
    """Phases to run, in dependency order, upstream phases included.

    ``selection`` is None (all), or ids or numbers like ``"00,01"``, ``"4,2b"`` or ``["02_train"]``; a
    number may drop its leading zero (``4`` is ``04``). An unknown one is an error naming the nearest phase.
    """
    from helpers.run.params import did_you_mean

    if selection is None:
        return list(PHASES)
    items = selection.split(",") if isinstance(selection, str) else list(selection)
    wanted: set[str] = set()
    for item in (s.strip() for s in items if s.strip()):
        digits = len(item) - len(item.lstrip("0123456789"))
        number = "0" + item if digits == 1 else item  # 4 -> 04, 2b -> 02b
        matches = [p.id for p in PHASES if number in (p.id, p.short_id)]
        if not matches:
            hint = did_you_mean([item], [*_BY_ID, *(p.short_id for p in PHASES)])
            raise ValueError(f"unknown phase {item!r}{hint}; phases are: {', '.join(_BY_ID)}")
        wanted.update(matches)
    if not wanted:
        raise ValueError(
            f"--phases {selection!r} names no phase; give phase ids or numbers, e.g. 00,01 "
            f"(phases are: {', '.join(_BY_ID)})"
        )
    return [p for p in PHASES if p.id in upstream_closure(wanted)]


def upstream_closure(phase_ids: set[str]) -> set[str]:
    """The given phases and everything they (transitively) read from."""
    out, stack = set(), list(phase_ids)
    while stack:
        pid = stack.pop()
        if pid not in out:
            out.add(pid)
            stack.extend(get_phase(pid).upstream)
    return out
