"""A sweep file and the runs it makes: grid and explicit points, seeds as an axis, all validated first.

A sweep file (YAML)::

    name: quant-slice            # optional: names the sweep (default: the file's stem)
    grid:                        # every combination of these values (dotted keys as in `-p`)
      04_quantize.calibration_methods: [[minmax], [entropy]]
      samples_per_class: [10, 50, 100]
    points:                      # and/or explicit points
      - {02_train.epochs: 5, 02_train.lr: 0.05}
    seeds: [0, 1, 2]             # an axis over the shared `seed` parameter

Members are (grid combinations + points) x seeds. Each member's parameters are resolved like
``calib run``'s -- notebook defaults < params/default.yaml < ``-f`` files < ``-y`` < ``-p`` < the point --
and validated (unknown keys, types, the phase prechecks) before anything starts; two members
that resolve to the same configuration of the selected phases are an error.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.run.graph import PhaseSpec, select
from helpers.run.params import ParamError, check_name, config_hash, load_yaml
from helpers.run.runner import resolve_config

SWEEP_KEYS = ("name", "grid", "points", "seeds")
SEED = "seed"
MAX_SWEEP_NAME = 41  # + "-<UTC time>-<index>-<slug>": a member id stays a valid run name (params.MAX_NAME)


@dataclass(frozen=True)
class Member:
    run_id: str
    point: dict[str, Any]  # dotted key -> value: what this member sets
    resolved: dict[str, dict] = field(repr=False)  # resolved params of every phase
    sources: dict[str, dict] = field(repr=False, default_factory=dict)  # which layer set each value (config_sources)


@dataclass(frozen=True)
class Plan:
    sweep_id: str
    spec: dict  # the sweep file's content
    specs: list[PhaseSpec]
    varying: list[str]  # keys whose value differs between members, in file order
    members: list[Member]


def load_sweep_file(path: str | Path) -> dict:
    """The sweep file, its structure checked (types of grid/points/seeds, no unknown keys)."""
    doc = load_yaml(path)
    where = f"sweep file {path}"
    unknown = sorted(set(doc) - set(SWEEP_KEYS))
    if unknown:
        raise ParamError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a sweep file holds {', '.join(SWEEP_KEYS)} "
            "(put base parameters in a --params file)"
        )
    grid, points, seeds = doc.get("grid", {}), doc.get("points", []), doc.get("seeds", [])
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ParamError(
            f"{where}: grid must map each key to a non-empty list of values, e.g. grid: {{samples_per_class: [10, 50]}}"
        )
    if SEED in grid:
        raise ParamError(f"{where}: list seeds under `seeds:`, not in the grid")
    if not isinstance(points, list) or any(not isinstance(p, dict) or not p or SEED in p for p in points):
        raise ParamError(
            f"{where}: points must be a list of non-empty mappings of key: value (seeds go under "
            "`seeds:`), e.g. points: [{02_train.epochs: 5}]"
        )
    if (
        not isinstance(seeds, list)
        or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ParamError(f"{where}: seeds must be a list of distinct integers, e.g. seeds: [0, 1, 2]")
    if not (grid or points or seeds):
        raise ParamError(f"{where}: nothing to sweep; give a grid, points and/or seeds")
    name = check_name(str(doc.get("name") or Path(path).stem), f"{where}: name", MAX_SWEEP_NAME)
    return {"name": name, "grid": grid, "points": points, "seeds": seeds}


def expand(doc: dict) -> list[dict[str, Any]]:
    """Every point: grid combinations (first key slowest), then the explicit points, each times the seeds."""
    keys = list(doc["grid"])
    bases = [dict(zip(keys, values)) for values in itertools.product(*doc["grid"].values())] if keys else []
    bases += [dict(p) for p in doc["points"]]
    bases = bases or [{}]
    return [{**b, SEED: s} for b in bases for s in doc["seeds"]] if doc["seeds"] else bases


def nest(point: dict[str, Any]) -> dict:
    """``{"02_train.epochs": 3, "seed": 1}`` -> ``{"02_train": {"epochs": 3}, "seed": 1}`` (a params layer)."""
    layer: dict = {}
    for key, value in point.items():
        *scopes, name = str(key).split(".")
        target = layer
        for scope in scopes:
            target = target.setdefault(scope, {})
            if not isinstance(target, dict):
                raise ParamError(f"sweep key {key!r} conflicts with another key of the same point")
        target[name] = value
    return layer


def varying_keys(points: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for p in points for k in p))
    return [k for k in keys if len({repr(p.get(k)) for p in points}) > 1]


def value_label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(value_label(v) for v in value) or "none"
    return str(value)


def slug(point: dict[str, Any], keys: list[str], limit: int = 80) -> str:
    """A file-name-safe ``key=value_key=value`` of ``keys`` (last part of a dotted key)."""
    text = "_".join(f"{k.split('.')[-1]}={value_label(point.get(k))}" for k in keys)
    text = re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-")
    return text[:limit] or "point"


def sweep_identifier(name: str, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}"


def plan(
    sweep_file: str | Path,
    param_files: list[str] = (),
    overrides: list[str] = (),
    phases: str | None = None,
    sweep_id: str | None = None,
    yaml_layers: list[dict] = (),
) -> Plan:
    """Expand and validate every point; raises ParamError listing every bad point before anything starts."""
    doc = load_sweep_file(sweep_file)
    points = expand(doc)
    specs = select(phases)
    errors, resolved_points = [], []
    for index, point in enumerate(points):
        label = ", ".join(f"{k}={value_label(v)}" for k, v in point.items()) or "base"
        try:
            resolved = resolve_config(
                list(param_files),
                list(overrides),
                extra=nest(point),
                sources=(sources := {}),
                yaml_layers=list(yaml_layers),
                extra_layer="sweep point",
            )
            missing = [s.id for s in specs if s.id not in resolved]
            if missing:
                raise ParamError(f"no notebook for phase(s) {', '.join(missing)}")
        except (ParamError, ValueError, FileNotFoundError) as exc:
            errors.append(f"point {index} ({label}): {exc}")
            continue
        resolved_points.append((point, resolved, label, sources))
    if errors:
        raise ParamError(
            f"{len(errors)} of {len(points)} sweep point(s) are invalid; nothing was started:\n  " + "\n  ".join(errors)
        )
    seen: dict[str, str] = {}
    for _, resolved, label, _ in resolved_points:
        chash = config_hash({s.id: resolved[s.id] for s in specs})
        if chash in seen:
            raise ParamError(
                f"sweep points ({seen[chash]}) and ({label}) give the same configuration of phases "
                f"{', '.join(s.id for s in specs)}; a key they differ in does not reach these phases "
                "(check --phases and the keys' phase sections)"
            )
        seen[chash] = label
    varying = varying_keys(points)
    sweep_id = sweep_id or sweep_identifier(doc["name"])
    width = max(2, len(str(len(resolved_points) - 1)))
    members = [
        Member(f"{sweep_id}-{i:0{width}d}-{slug(point, varying)}", point, resolved, sources)
        for i, (point, resolved, _, sources) in enumerate(resolved_points)
    ]
    return Plan(sweep_id, doc, specs, varying, members)
