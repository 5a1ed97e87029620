"""The options ``calib run`` and ``calib sweep`` share, defined once (papermill's spellings), the help
epilogs, ``--version``.

    -p KEY VALUE   or  -p KEY=VALUE      (papermill's -p, and the original key=value form)
    -f FILE.yaml   (= --params FILE.yaml, repeatable)
    -y 'YAML'      (papermill's --parameters_yaml: a mapping, as a params file would hold)
    --phases, --runs-root, --cell-timeout, --no-progress

Layers, later wins: notebook defaults < params/default.yaml < -f files < -y < -p (< a sweep point).
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


RUNS_ROOT_HELP = "where run directories are (default: runs/ or $CALIB_RUNS_ROOT)"


def sweep_epilog() -> str:
    return """examples:
  calib sweep params/sweeps/quant_methods.yaml --phases 04 -p 02_train.epochs=5
  calib sweep SWEEP.yaml -f params/cifar10.yaml -p data_dir .cache/cifar-10-batches-py --workers 2
  calib sweep SWEEP.yaml -y '{epochs: 3}' --scheduler tcp://head-node:8786 --runs-root /shared/runs
  calib sweep --resume runs/sweeps/<sweep id>   finish the members that are not done

parameters of every member: notebook defaults < params/default.yaml < -f files < -y < -p < the point."""


def execution_options() -> argparse.ArgumentParser:
    """The options of ``calib run`` and ``calib sweep`` (its every member), one definition for both:
    parameters (``add_param_options``), ``--phases``, ``--runs-root``, ``--cell-timeout``, ``--no-progress``.
    A parent parser (``parents=[...]``): both commands spell and explain them alike."""
    parser = argparse.ArgumentParser(add_help=False)
    add_param_options(parser)
    parser.add_argument(
        "--phases", help="comma-separated phase ids or numbers, e.g. 00,01 or 4 or 02b (upstream phases added)"
    )
    parser.add_argument("--runs-root", metavar="DIR", help=RUNS_ROOT_HELP)
    parser.add_argument("--cell-timeout", type=int, default=3600, help="seconds per notebook cell (default 3600)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (calib run: papermill's cell bar, shown only when stderr is a terminal; "
        "calib sweep: the bar over the members)",
    )
    return parser


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """``-f``/``--params``, ``-y``/``--params-yaml``, ``-p``: the parameter layers, papermill's spellings."""
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
