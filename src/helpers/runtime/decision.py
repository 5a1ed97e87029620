"""The runtime decision: per precision, which runtimes a bundle offers and which one it uses by default.

Phase 05 (the phase that measures latency) writes it as ``runtime_decision.json`` and phase 08 reads it,
through the one pair :func:`write` / :func:`read`; 08 times nothing. A :class:`RuntimeDecision` holds, per
precision (:class:`PrecisionChoice`): phase 04's model behind it, the runtimes that passed 04's accuracy and
parity checks (:func:`offered_by_checks`, from ``quant_report.json`` ``runtimes``), the default, the
paired timings it was based on, and -- where no runtime is offered (bf16 without native bf16 on this CPU,
or bf16 outside its gates) -- why. The settings of the timing (batch, threads, rounds, calls) and the rule
are recorded beside them.

The rule (:data:`RULE`, :func:`fastest`): paired timings (every offered runtime timed in turn within each
round, ``sessions.paired_timings``, so a load change hits all alike); another runtime replaces onnxruntime
(the first listed) only when its median time per call is more than :data:`MARGIN` (10 %) below. The
default is a measurement: like phase 05's latencies it can differ between two runs of one configuration
when the runtimes are within noise of each other.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from helpers.run import atomic
from helpers.runtime.sessions import PRECISIONS, RUNTIMES, open_session, paired_timings, random_batch, support

FILE = "runtime_decision.json"
SCHEMA_VERSION = 1
MARGIN = 0.10
RULE = (
    "paired timings at one batch (every offered runtime timed in turn within each round); another runtime "
    "replaces onnxruntime (the first listed) only when its median time per call is more than 10 % below"
)


@dataclass(frozen=True)
class PrecisionChoice:
    """One precision: phase 04's model, the runtimes offered, the default and the median ms per call measured;
    ``absent`` says why nothing is offered (empty when something is)."""

    model: str
    offered: tuple[str, ...]
    default: str | None
    median_ms: dict[str, float] = field(default_factory=dict)
    absent: str = ""


@dataclass(frozen=True)
class RuntimeDecision:
    """Per precision a :class:`PrecisionChoice`, and the settings of the timing behind the defaults."""

    precisions: dict[str, PrecisionChoice]
    batch_size: int
    threads: int
    rounds: int
    calls: int
    rule: str = RULE
    margin: float = MARGIN

    def offered(self) -> dict[str, list[str]]:
        """Per precision with at least one runtime offered: those runtimes."""
        return {p: list(c.offered) for p, c in self.precisions.items() if c.offered}

    def defaults(self) -> dict[str, str]:
        """Per offered precision: its default runtime."""
        return {p: c.default for p, c in self.precisions.items() if c.offered}

    def absent(self) -> dict[str, str]:
        """Per precision offered on no runtime: why."""
        return {p: c.absent for p, c in self.precisions.items() if not c.offered}

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["precisions"] = {p: {**asdict(c), "offered": list(c.offered)} for p, c in self.precisions.items()}
        return {"schema_version": SCHEMA_VERSION, **doc}

    @classmethod
    def from_dict(cls, doc: Mapping, source: str = "runtime_decision.json") -> RuntimeDecision:
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{source} has schema_version {version!r}; this helpers.runtime.decision reads {SCHEMA_VERSION}: "
                "re-run phase 05 (calib run --resume RUN --phases 05)"
            )
        try:
            precisions = {
                p: PrecisionChoice(**{**c, "offered": tuple(c["offered"])}) for p, c in doc["precisions"].items()
            }
            settings = {k: doc[k] for k in ("batch_size", "threads", "rounds", "calls", "rule", "margin")}
            decision = cls(precisions=precisions, **settings)
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"{source} is not a runtime decision ({type(exc).__name__}: {exc}); re-run phase 05"
            ) from None
        decision.check(source)
        return decision

    def check(self, source: str = "the decision") -> None:
        """Every precision known, every runtime offered known, the default one of them, a reason where none is."""
        for precision, choice in self.precisions.items():
            if precision not in PRECISIONS or not set(choice.offered) <= set(RUNTIMES):
                raise ValueError(
                    f"{source}: precision {precision!r} offered on {list(choice.offered)}; precisions are "
                    f"{PRECISIONS}, runtimes {RUNTIMES}"
                )
            if choice.offered and choice.default not in choice.offered:
                raise ValueError(f"{source}: {precision}'s default {choice.default!r} is not offered {choice.offered}")
            if not choice.offered and not choice.absent:
                raise ValueError(f"{source}: {precision} is offered on no runtime and does not say why")


def write(path: str | Path, decision: RuntimeDecision) -> Path:
    """Write ``runtime_decision.json`` (atomic, deterministic bytes)."""
    decision.check(str(path))
    return atomic.write_json(Path(path), decision.to_dict())


def read(path: str | Path) -> RuntimeDecision:
    """The decision phase 05 wrote, validated."""
    doc = atomic.read_json(Path(path), "phase 05 writes it: calib run --resume RUN --phases 05")
    return RuntimeDecision.from_dict(doc, str(path))


def offered_by_checks(runtime_report: Mapping, models: Mapping[str, str]) -> dict[str, tuple[list[str], str]]:
    """Per precision (``models``: precision -> phase 04's model name, e.g. ``{"fp32": "fp32", "bf16": "bf16",
    "int8": "percentile"}``): (the runtimes that passed phase 04's checks, why none did -- empty when some did),
    from ``quant_report.json`` ``runtimes`` (``checks.evaluate_models``)."""
    out = {}
    for precision, model in models.items():
        entry = runtime_report["models"].get(model)
        if entry is None:
            out[precision] = ([], f"phase 04 did not evaluate {model!r} on the runtimes")
        elif entry["passed"]:
            out[precision] = (list(entry["passed"]), "")
        elif "absent" in entry:
            out[precision] = ([], entry["absent"])
        else:
            failed = "; ".join(f"{r}: {row['accuracy_check']}, {row['parity']}" for r, row in entry["runtimes"].items())
            out[precision] = ([], f"no runtime passed phase 04's accuracy and parity checks ({failed})")
    return out


def fastest(seconds: Mapping[str, np.ndarray], candidates: list[str], margin: float = MARGIN) -> str:
    """The candidate with the smallest median time; another replaces the earlier-listed one only when it is
    more than ``margin`` faster (the explicit tie-break: near-ties keep the first listed, onnxruntime)."""
    if not candidates:
        raise ValueError("no runtime passed its checks; nothing to choose from")
    best = candidates[0]
    for runtime in candidates[1:]:
        if np.median(seconds[runtime]) < (1 - margin) * np.median(seconds[best]):
            best = runtime
    return best


def decide(
    paths: Mapping[str, str | Path],
    checks: Mapping[str, tuple[list[str], str]],
    models: Mapping[str, str],
    *,
    threads: int,
    batch_size: int = 32,
    rounds: int = 5,
    calls: int = 5,
    native_bf16: bool | None = None,
) -> RuntimeDecision:
    """Time every offered runtime of each precision (paired, one ``batch_size`` batch of seeded random inputs)
    and apply :data:`RULE`. ``paths``: per precision the ONNX file (bf16: the FP32 file); ``checks``:
    :func:`offered_by_checks`; ``models``: per precision phase 04's model name. A runtime phase 04 passed that
    this machine cannot run (04 reused from a run on another CPU) is not offered, and the reason says so;
    ``native_bf16``: the CPU capability check's answer (``sessions.support``; None asks this machine)."""
    if batch_size < 1 or threads < 1:
        raise ValueError(f"batch_size and threads must be >= 1, got {batch_size}, {threads}")
    choices = {}
    for precision, (passed, absent) in checks.items():
        offered = [
            r for r in passed if support(r, precision, native_bf16=native_bf16)[0]
        ]  # phase 04 may have run on another CPU (its cache)
        if passed and not offered:
            absent = f"phase 04 passed it on {passed}, but this machine cannot run it: {support(passed[0], precision, native_bf16=native_bf16)[1]}"
        if not offered:
            choices[precision] = PrecisionChoice(models[precision], (), None, {}, absent)
            continue
        sessions = {
            r: open_session(paths[precision], r, precision=precision, threads=threads, batch_size=batch_size)
            for r in offered
        }
        batch = random_batch((batch_size, *next(iter(sessions.values())).input_shape))
        seconds = paired_timings({r: functools.partial(s.run, batch) for r, s in sessions.items()}, rounds, calls)
        choices[precision] = PrecisionChoice(
            models[precision],
            tuple(offered),
            fastest(seconds, list(offered)),
            {r: 1e3 * float(np.median(v)) for r, v in seconds.items()},
        )
    return RuntimeDecision(choices, batch_size=batch_size, threads=threads, rounds=rounds, calls=calls)


def decide_from_report(
    runtime_report: Mapping,
    fp32_path: str | Path,
    int8_path: str | Path,
    int8_model: str,
    *,
    batch_size: int = 32,
    rounds: int = 5,
    calls: int = 5,
) -> RuntimeDecision:
    """Phase 05's decision: FP32 (``fp32_path``), bf16 (the same file) and INT8 (``int8_path``, phase 04's model
    ``int8_model``) offered on what passed phase 04's checks (``quant_report.json`` ``runtimes``), each default
    timed at 04's threads -- the threads the bundle records its runtimes at."""
    models = {"fp32": "fp32", "bf16": "bf16", "int8": int8_model}
    paths = {"fp32": fp32_path, "bf16": fp32_path, "int8": int8_path}
    checks = offered_by_checks(runtime_report, models)
    return decide(
        paths, checks, models, threads=runtime_report["threads"], batch_size=batch_size, rounds=rounds, calls=calls
    )


def table(decision: RuntimeDecision):
    """One row per precision (all of :data:`PRECISIONS`, whatever this machine offers): the runtimes offered, the
    default, each runtime's median ms per call, and why a precision is absent."""
    import pandas as pd

    rows = {}
    for precision in PRECISIONS:
        choice = decision.precisions.get(precision)
        rows[precision] = {
            "model": choice.model if choice else "",
            "offered": ", ".join(choice.offered) if choice else "",
            "default": (choice.default or "") if choice else "",
            **{f"{r}_ms": (choice.median_ms.get(r, np.nan) if choice else np.nan) for r in RUNTIMES},
            "absent": (choice.absent if choice else "not decided"),
        }
    return pd.DataFrame(rows).T
