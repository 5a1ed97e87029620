"""Phase parameters: notebook defaults, YAML layers, command-line overrides, validation.

Layers, lowest first::

    notebook defaults  <  params/default.yaml  <  --params FILE.yaml  <  -p key=value

One precedence: a later layer wins; within one layer a phase-scoped key beats a shared one
(``resolve``), and ``config_sources.yaml`` beside a run's ``config_resolved.yaml`` says which
layer set each non-default value.

A layer is a mapping. Top-level keys are *shared* parameters: they apply to every phase whose
notebook declares them (``seed``, ``dataset`` ...). A top-level key naming a phase
(``02_train: {epochs: 3}``) holds parameters for that phase only. On the command line
``-p epochs=3`` sets a shared key and ``-p 02_train.epochs=3`` a phase key; values are YAML
(``-p roles=[trained,init]``).

Everything is validated before any kernel starts: an unknown key is an error listing the valid
keys, a value whose type does not match the notebook default is an error, a value a run record
cannot hold (NaN, infinity, an unquoted date YAML read as one) is an error, and a notebook without
a cell tagged ``parameters`` is an error. Upper bounds (``check_upper_bounds``) are declared per
phase in the graph and lifted per key through ``$CALIB_LIFT_BOUNDS``. Run ids, sweep names and
member ids are names (``check_name``): one folder under the runs root.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from helpers.run.notebook_file import code_cells

T = TypeVar("T")
RUN_DIR_PARAM = "run_dir"  # injected by the runner, never part of the configuration
LIFT_BOUNDS_ENV = "CALIB_LIFT_BOUNDS"  # comma-separated keys (02_train.epochs, or epochs for every phase)
MAX_NAME = 200  # characters of a run id (a folder name; the file system allows 255)
NAME_CHARS = "letters, digits, '.', '_', '+', '=' or '-'"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


class ParamError(ValueError):
    """A parameter problem found before any work started."""


def check_name(name: object, what: str, max_len: int = MAX_NAME) -> str:
    """A run id, sweep name or sweep member id: one folder name under the runs root, never a path.

    1 to ``max_len`` of NAME_CHARS, starting with a letter or digit (so no ``..``, no hidden
    name, nothing an option parser takes for a flag); raises ParamError naming ``what`` otherwise.
    """
    if not isinstance(name, str) or len(name) > max_len or not _NAME.fullmatch(name):
        raise ParamError(
            f"{what} {name!r} is not a valid name: use 1-{max_len} {NAME_CHARS}, starting with a letter or "
            "digit (it names one folder under the runs root: no '/', no '..')"
        )
    return name


def parameters_source(path: Path) -> str:
    """The source of the notebook's cell tagged ``parameters``."""
    cells = [cell for cell in code_cells(path) if "parameters" in cell.tags]
    if not cells:
        raise ParamError(
            f"{path.name} has no cell tagged 'parameters'; tag the cell holding its defaults "
            "(JupyterLab: property inspector > cell tags)"
        )
    return cells[0].source


def parameter_comments(path: Path) -> dict[str, str]:
    """``name = value  # comment`` lines of the parameters cell -> {name: comment} (names without one left out)."""
    out = {}
    for line in parameters_source(path).splitlines():
        name, sep, rest = line.partition("=")
        if sep and name.strip().isidentifier() and "#" in rest:
            out[name.strip()] = rest.rsplit("#", 1)[1].strip()
    return out


NEAR = 0.6  # difflib's similarity ratio from which a valid name counts as meant


def did_you_mean(names: Iterable[str], valid: Iterable[str]) -> str:
    """`` (did you mean epochs?)`` for names close to a valid one, else ``""``: for keys, phase ids, values
    of a choice parameter (``-p methods=temprature_scaling``) alike."""
    import difflib

    valid = list(valid)
    return hint_text([m[0] for n in names if (m := difflib.get_close_matches(n, valid, n=1, cutoff=NEAR))])


def hint_text(hints: list[str]) -> str:
    """`` (did you mean a, b?)``, or ``""`` for no hint."""
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def near_phase_key(name: str, phase_id: str, defaults: dict[str, dict[str, Any]]) -> str | None:
    """The key meant by ``name``, unknown in ``phase_id``'s section: the closest parameter of any phase.

    A parameter of ``phase_id`` itself is named bare (``epochs``), one of another phase with its phase
    id (``02b_adapt.adapt_epochs`` for ``02_train.adapt_epochs``); a tie goes to ``phase_id``. None when
    nothing is close (``NEAR``).
    """
    import difflib

    scored = [
        (difflib.SequenceMatcher(None, name, key).ratio(), pid == phase_id, key if pid == phase_id else f"{pid}.{key}")
        for pid, params in defaults.items()
        for key in params
        if key != RUN_DIR_PARAM
    ]
    ratio, _, key = max(scored, default=(0.0, False, None))
    return key if ratio >= NEAR else None


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Defaults of the cell tagged ``parameters``: ``name = <literal>`` lines, in order."""
    params: dict[str, Any] = {}
    for node in ast.parse(parameters_source(path)).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParamError(
                f"{path.name}: the parameters cell may only hold `name = literal` lines, found: {ast.unparse(node)}"
            )
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ParamError(
                f"{path.name}: parameter {node.targets[0].id} must be a literal, found {ast.unparse(node.value)}"
            ) from None
    return params


def near_file(path: Path) -> str:
    """`` (did you mean params/cifar10.yaml?)`` for a missing file with a near namesake in its folder, else ``""``."""
    import difflib

    folder = path.parent
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=NEAR)
    return f" (did you mean {folder / close[0]}?)" if close else ""


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"params file {path} does not exist{near_file(path)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamError(f"params file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamError(f"params file {path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> dict:
    """``["epochs=3", "02_train.lr=0.1"]`` -> ``{"epochs": 3, "02_train": {"lr": 0.1}}``."""
    layer: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"-p expects key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        *scopes, name = key.strip().split(".")
        target = layer
        for scope in scopes:
            target = target.setdefault(scope, {})
        target[name] = value
    return layer


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_type(name: str, default: Any, value: Any, where: str) -> None:
    """A value must have its default's type (an int is accepted where a float is expected)."""
    if default is None:  # a None default accepts any value
        return
    ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ParamError(
            f"{where}: parameter {name!r} must be {type(default).__name__} like its default "
            f"{default!r}, got {type(value).__name__} {value!r}"
        )


def not_plain(value: Any) -> str | None:
    """What in ``value`` a run record (JSON) cannot hold, said for the error; None when it is plain data."""
    if isinstance(value, float) and not math.isfinite(value):
        return "finite"
    if isinstance(value, (list, tuple)):
        return next((problem for item in value if (problem := not_plain(item))), None)
    if isinstance(value, dict):
        return next((problem for item in value.values() if (problem := not_plain(item))), None)
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    kind = "a date" if isinstance(value, (dt.date, dt.datetime)) else f"a {type(value).__name__}"
    return f"holds {value}, {kind}"


def check_value(name: str, default: Any, value: Any, where: str) -> None:
    """A value has its default's type (``check_type``) and is plain data: finite numbers, strings, booleans,
    null, lists and mappings of them -- what a run record (JSON) holds."""
    check_type(name, default, value, where)
    problem = not_plain(value)
    if problem == "finite":
        shape = "be a finite number" if isinstance(value, float) else "hold finite numbers only"
        raise ParamError(
            f"{where}: parameter {name!r} must {shape}, got {value!r} (no NaN or infinity); "
            f"give a value like its default {default!r}"
        )
    if problem:
        raise ParamError(
            f"{where}: parameter {name!r} {problem} (YAML reads unquoted text such as 2024-01-01 so); "
            f"quote it ('...') or give numbers, strings, booleans, lists and mappings"
        )


def lifted_bounds() -> set[str]:
    """The keys whose upper bound ``$CALIB_LIFT_BOUNDS`` lifts (``02_train.epochs``, or ``epochs``: every phase)."""
    return {key.strip() for key in os.environ.get(LIFT_BOUNDS_ENV, "").split(",") if key.strip()}


def check_upper_bounds(phase_id: str, params: dict, bounds: Iterable[tuple[str, int]], origin: dict) -> None:
    """Each bounded parameter (a list: each of its entries) is at most its bound unless the key is lifted.

    ``bounds`` are the phase's declared ``(name, upper bound)`` pairs (``PhaseSpec.bounds``), ``origin``
    which layer set each value (``resolve``'s sources of this phase). A bound catches a typo
    (``epochs=1000000000``) before any work starts; ``$CALIB_LIFT_BOUNDS`` lets a deliberate value through.
    """
    lifted = lifted_bounds()
    for name, bound in bounds:
        key, value = f"{phase_id}.{name}", params[name]
        if key in lifted or name in lifted:
            continue
        values = value if isinstance(value, list) else [value]  # other types than numbers: the precheck's
        over = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v > bound]
        if not over:
            continue
        what = (
            f"{key} holds {over[0]}, above its upper bound {bound} for each entry"
            if isinstance(value, list)
            else f"{key}={value} is above its upper bound {bound}"
        )
        raise ParamError(
            f"{what}{f' (set by {origin[name]})' if name in origin else ''}; the bound catches a typo before "
            f"any work starts. If you mean it, lift it: {LIFT_BOUNDS_ENV}={key} calib ... (comma-separate "
            "several keys; `calib params` lists every bound)"
        )


def resolve(
    defaults: dict[str, dict[str, Any]], layers: list[tuple[str, dict]], sources: dict | None = None
) -> dict[str, dict[str, Any]]:
    """Resolved parameters per phase from notebook ``defaults`` and named ``layers`` (lowest first).

    One precedence: a later layer wins; within one layer a phase-scoped key (``02_train: {epochs: 3}``,
    ``-p 02_train.epochs=3``) beats a shared one (``epochs: 5``). Dict values are deep-merged in
    that order. ``sources``, when given, is filled with ``{phase: {name: "<layer> (<key>)"}}`` for
    every value that differs from its notebook default: which layer set it, through which key.
    """
    shared_names = {name for params in defaults.values() for name in params if name != RUN_DIR_PARAM}
    for layer_name, layer in layers:
        unknown = sorted(k for k in layer if k not in defaults and k not in shared_names)
        if unknown:
            raise ParamError(
                f"unknown parameter(s) {', '.join(unknown)} in {layer_name}"
                f"{did_you_mean(unknown, [*shared_names, *defaults])}; valid shared keys: "
                f"{', '.join(sorted(shared_names))}; phase sections: {', '.join(defaults)}"
            )
    resolved = {}
    for phase_id, phase_defaults in defaults.items():
        valid = sorted(set(phase_defaults) - {RUN_DIR_PARAM})
        params = {name: copy.deepcopy(phase_defaults[name]) for name in valid}
        origin: dict[str, str] = {}
        for layer_name, layer in layers:
            section = layer.get(phase_id, {})
            if not isinstance(section, dict):
                raise ParamError(f"section {phase_id!r} in {layer_name} must be a mapping of that phase's parameters")
            bad = sorted(set(section) - set(valid))
            if bad:
                hints = [key for name in bad if (key := near_phase_key(name, phase_id, defaults))]
                raise ParamError(
                    f"unknown parameter(s) {', '.join(bad)} for phase {phase_id} in {layer_name}"
                    f"{hint_text(hints)}; valid: {', '.join(valid)}"
                )
            for name in valid:
                for key, scope in ((name, layer), (f"{phase_id}.{name}", section)):  # shared first: the phase key wins
                    if name in scope:
                        value = scope[name]
                        both_dicts = isinstance(value, dict) and isinstance(params[name], dict)
                        params[name] = deep_merge(params[name], value) if both_dicts else copy.deepcopy(value)
                        origin[name] = f"{layer_name} ({key})"
        for name in valid:
            check_value(
                name,
                phase_defaults[name],
                params[name],
                phase_id if name not in origin else f"{phase_id} (set by {origin[name]})",
            )
        resolved[phase_id] = params
        if sources is not None:
            changed = {name: origin[name] for name in origin if params[name] != phase_defaults[name]}
            if changed:
                sources[phase_id] = changed
    return resolved


def typed_config(cls: type[T], params: dict[str, Any]) -> T:
    """The frozen dataclass ``cls`` built from a phase's ``params``: the one mapping of parameters to a phase's typed
    config. Each field takes the parameter its metadata names (``field(metadata=param("adaptation"))``), else the
    one of its own name; a field without a parameter keeps its default; lists become tuples (a frozen config holds
    no mutable value). The dataclass validates itself (``__post_init__``), so a precheck is
    ``return typed_config(Config, params)``."""
    values = {}
    for f in dataclasses.fields(cls):
        name = f.metadata.get("param", f.name)
        if name in params:
            values[f.name] = tuple(params[name]) if isinstance(params[name], list) else params[name]
    return cls(**values)


def param(name: str) -> dict[str, str]:
    """A config field's metadata naming the parameter it comes from, where the names differ (see typed_config)."""
    return {"param": name}


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def config_hash(resolved: dict) -> str:
    return hashlib.sha256(canonical_json(resolved)).hexdigest()
