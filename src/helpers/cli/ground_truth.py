"""``calib ground-truth ...``: migrate old measurement files, run the measurement sweep.

    calib ground-truth migrate SRC... --dest DIR [--dry-run]
    calib ground-truth measure [--params params/ground_truth.yaml] [--store DIR] [--models ...]
                               [--precisions ...] [--batch-sizes ...] [--repeats N]
                               [--scheduler tcp://host:8786 --hardware NAME]   (on that hardware's Dask worker)

``measure`` reads the sweep profile (default ``params/ground_truth.yaml`` at the project root);
the options narrow it (``--models``, ``--precisions``, ``--batch-sizes``) or override it
(``--store``, ``--repeats``). Afterwards it refreshes the machine's efficiency curves. ``main(argv)`` returns the exit status: 0, or 1 when a migration
had failures.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

from helpers.ground_truth.records import PRECISIONS
from helpers.ground_truth.store import migrate
from helpers.run.project import project_root


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calib ground-truth", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mig = commands.add_parser("migrate", help="copy v1.0/v2.0 files into the v2.0 layout and rebuild manifests")
    mig.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="files or directories to migrate from")
    mig.add_argument("--dest", type=Path, required=True, help="store root to write into")
    mig.add_argument("--dry-run", action="store_true", help="report what would happen; write nothing")
    meas = commands.add_parser("measure", help="measure models x variants x batch sizes into the store")
    meas.add_argument("--params", type=Path, default=None, help="sweep profile (YAML; default: params/ground_truth.yaml)")
    meas.add_argument("--store", type=Path, help="store root (default: the profile's, else calibration_data/)")
    meas.add_argument("--models", nargs="+", help="only these model names of the profile")
    meas.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="only these precisions")
    meas.add_argument("--batch-sizes", nargs="+", type=int, help="these batch sizes instead of the profile's")
    meas.add_argument("--repeats", type=int, help="timed calls per measurement instead of the profile's")
    meas.add_argument("--no-progress", action="store_true")
    meas.add_argument("--scheduler", metavar="ADDRESS", help="measure on a Dask worker of this scheduler (+ --hardware)")
    meas.add_argument("--hardware", metavar="NAME", help="the worker started with --resources \"hw-NAME=1\"")
    return parser


def narrowed_config(args: argparse.Namespace):
    """The sweep profile with the command line's selections applied (errors name what is unknown)."""
    from helpers.ground_truth.latency import SweepConfig

    config = SweepConfig.from_yaml(args.params or project_root() / "params" / "ground_truth.yaml")
    changes = {}
    if args.models:
        known = {m.name: m for m in config.models}
        unknown = [m for m in args.models if m not in known]
        if unknown:
            raise SystemExit(f"unknown models {unknown}; the profile {args.params} has {sorted(known)}")
        changes["models"] = tuple(known[m] for m in args.models)
    if args.precisions:
        changes["variants"] = tuple(v for v in config.variants if v[0] in args.precisions)
        if not changes["variants"]:
            raise SystemExit(f"the profile measures no variant at {args.precisions}: {config.variants}")
    if args.batch_sizes:
        changes["batch_sizes"] = tuple(args.batch_sizes)
    if args.repeats is not None:
        changes["settings"] = dataclasses.replace(config.settings, repeats=args.repeats)
    if args.store is not None:
        changes["store"] = str(args.store)
    return dataclasses.replace(config, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "migrate":
        report = migrate(args.sources, args.dest, dry_run=args.dry_run)
        print(report.summary())
        return 1 if report.failed else 0
    from helpers.ground_truth.estimator import write_efficiency_curves
    from helpers.ground_truth.latency import run_sweep

    if bool(args.scheduler) != bool(args.hardware):
        raise SystemExit("--scheduler and --hardware go together: the scheduler, and the name of the hardware whose "
                         "worker advertises --resources \"hw-NAME=1\"")
    if args.scheduler:
        from helpers.run.params import ParamError
        from helpers.sweep.remote import measure_on

        try:
            result = measure_on(args.scheduler, args.hardware, narrowed_config(args), args.store)
        except ParamError as exc:
            raise SystemExit(f"error: {exc}") from None
    else:
        result = run_sweep(narrowed_config(args), progress=not args.no_progress)
        write_efficiency_curves(result.store, result.records[0].hardware_id)
    print(result.table().to_string(index=False))
    for line in result.skipped + result.warnings:
        print(f"note: {line}")
    for name, reason in result.unknown_state.items():
        print(f"note: system state {name} unknown: {reason}")
    print(f"stored {len(result.paths)} measurements under {result.store} (run {result.run_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
