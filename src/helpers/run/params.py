"""Phase parameters: notebook defaults, YAML layers, command-line overrides, validation.

Layers, later wins, deep-merged::

    notebook defaults  <  params/default.yaml  <  --params FILE.yaml  <  -p key=value

A layer is a mapping. Top-level keys are *shared* parameters: they apply to every phase whose
notebook declares them (``seed``, ``dataset`` ...). A top-level key naming a phase
(``02_train: {epochs: 3}``) holds parameters for that phase only. On the command line
``-p epochs=3`` sets a shared key and ``-p 02_train.epochs=3`` a phase key; values are YAML
(``-p roles=[trained,init]``).

Everything is validated before any kernel starts: an unknown key is an error listing the valid
keys, a value whose type does not match the notebook default is an error, and a notebook without
a cell tagged ``parameters`` is an error.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from helpers.run.notebook_file import code_cells

RUN_DIR_PARAM = "run_dir"  # injected by the runner, never part of the configuration


class ParamError(ValueError):
    """A parameter problem found before any work started."""


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Defaults of the cell tagged ``parameters``: ``name = <literal>`` lines, in order."""
    cells = [cell for cell in code_cells(path) if "parameters" in cell.tags]
    if not cells:
        raise ParamError(f"{path.name} has no cell tagged 'parameters'; tag the cell holding its defaults "
                         "(JupyterLab: property inspector > cell tags)")
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParamError(f"{path.name}: the parameters cell may only hold `name = literal` lines, "
                             f"found: {ast.unparse(node)}")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ParamError(f"{path.name}: parameter {node.targets[0].id} must be a literal, "
                             f"found {ast.unparse(node.value)}") from None
    return params


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"params file {path} does not exist")
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
        raise ParamError(f"{where}: parameter {name!r} must be {type(default).__name__} like its default "
                         f"{default!r}, got {type(value).__name__} {value!r}")


def resolve(defaults: dict[str, dict[str, Any]], layers: list[tuple[str, dict]]) -> dict[str, dict[str, Any]]:
    """Resolved parameters per phase from notebook ``defaults`` and named ``layers`` (lowest first)."""
    merged: dict = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    shared = {k: v for k, v in merged.items() if k not in defaults}
    known_shared = {name for params in defaults.values() for name in params if name != RUN_DIR_PARAM}
    unknown = sorted(set(shared) - known_shared)
    if unknown:
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)}; valid shared keys: "
                         f"{', '.join(sorted(known_shared))}; phase sections: {', '.join(defaults)}")
    resolved = {}
    for phase_id, phase_defaults in defaults.items():
        section = merged.get(phase_id, {})
        if not isinstance(section, dict):
            raise ParamError(f"section {phase_id!r} must be a mapping of that phase's parameters")
        bad = sorted(set(section) - set(phase_defaults) | ({RUN_DIR_PARAM} & set(section)))
        if bad:
            valid = sorted(set(phase_defaults) - {RUN_DIR_PARAM})
            raise ParamError(f"unknown parameter(s) {', '.join(bad)} for phase {phase_id}; valid: {', '.join(valid)}")
        params = {}
        for name, default in phase_defaults.items():
            if name == RUN_DIR_PARAM:
                continue
            value = section.get(name, shared.get(name, default))
            if isinstance(default, dict) and isinstance(value, dict):
                value = deep_merge(default, value)
            check_type(name, default, value, phase_id)
            params[name] = value
        resolved[phase_id] = params
    return resolved


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def config_hash(resolved: dict) -> str:
    return hashlib.sha256(canonical_json(resolved)).hexdigest()
