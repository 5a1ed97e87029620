"""``calib run``'s parameter options in papermill's spellings, its help epilog, ``--version``.

    -p KEY VALUE   or  -p KEY=VALUE      (papermill's -p, and the original key=value form)
    -f FILE.yaml   (= --params FILE.yaml, repeatable)
    -y 'YAML'      (papermill's --parameters_yaml: a mapping, as a params file would hold)

Layers, later wins: notebook defaults < params/default.yaml < -f files < -y < -p.
"""

from __future__ import annotations

import argparse

import yaml

from helpers.run.graph import PHASES
from helpers.run.params import ParamError


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("calib-lab")
    except PackageNotFoundError:
        return "unknown (not installed; run from a checkout)"


def run_epilog() -> str:
    phases = "\n".join(f"  {spec.id:<20} {spec.title}" for spec in PHASES)
    return f"""examples:
  calib run                                   every phase on the embedded digits data
  calib run --phases 00,01                    these phases (and whatever they read from)
  calib run -p epochs 5 -p 02_train.lr 0.05   a shared key / a key of one phase (papermill's -p)
  calib run -f params/cifar10.yaml -p data_dir .cache/cifar-10-batches-py
  calib run -y '{{epochs: 3, 02_train: {{lr: 0.05}}}}'
  calib run --resume NAME                     finish a run (a name from `calib ls`, or a path)
  calib params 02                             the keys phase 02 takes, with defaults and comments

phases:
{phases}

parameters: notebook defaults < params/default.yaml < -f files < -y < -p (later wins)."""


def add_param_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--params",
        action="append",
        metavar="FILE.yaml",
        dest="params",
        help="a params file (repeatable; papermill's -f)",
    )
    parser.add_argument(
        "-y",
        "--params-yaml",
        action="append",
        metavar="YAML",
        dest="params_yaml",
        help="parameters as a YAML mapping, e.g. '{epochs: 3}' (repeatable)",
    )
    parser.add_argument(
        "-p",
        action="append",
        nargs="+",
        metavar="KEY VALUE",
        help="one parameter: -p KEY VALUE or -p KEY=VALUE; KEY is shared (epochs) or "
        "scoped to one phase (02_train.epochs); VALUE is YAML (repeatable)",
    )


def yaml_layers(texts: list[str] | None) -> list[dict]:
    """The ``-y 'YAML'`` mappings, one parameter layer each (after the ``-f`` files, before ``-p``)."""
    layers = []
    for text in texts or []:
        try:
            layer = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParamError(f"-y {text!r} is not valid YAML: {exc}") from None
        if not isinstance(layer, dict):
            raise ParamError(f"-y expects a YAML mapping like '{{epochs: 3}}', got {text!r}")
        layers.append(layer)
    return layers


def p_overrides(p_items: list[list[str]] | None) -> list[str]:
    """``KEY=VALUE`` items from ``-p`` in both papermill spellings (``-p KEY VALUE`` and ``-p KEY=VALUE``)."""
    out: list[str] = []
    for item in p_items or []:
        if len(item) == 1 and "=" in item[0]:
            out.append(item[0])
        elif len(item) == 2 and "=" not in item[0]:
            out.append(f"{item[0]}={item[1]}")
        else:
            raise ParamError(f"-p expects KEY VALUE or KEY=VALUE, got {' '.join(item)!r}")
    return out
