"""``calib sweep``: many isolated runs over a grid of parameters, executed on Dask.

calib sweep SWEEP.yaml [-f F.yaml] [-y YAML] [-p KEY VALUE] [--phases 04] [--runs-root DIR]
            [--scheduler tcp://host:8786 | --workers N] [--cell-timeout S] [--retries N] [--no-progress]
calib sweep --resume <runs root>/sweeps/<id> [--scheduler ADDRESS | --workers N]

The parameter and execution options are ``calib run``'s own (``options.execution_options``): they apply
to every member.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from helpers.run.params import ParamError


def add_parser(sub, shared: argparse.ArgumentParser) -> None:
    """``calib sweep``'s parser: ``shared`` (the options of ``calib run``, for every member) and its own."""
    from helpers.cli.options import sweep_epilog

    sweep = sub.add_parser(
        "sweep",
        help="a grid of isolated runs executed on Dask (a LocalCluster or --scheduler)",
        description="Validate every point of the sweep file, create one run per member, execute them on Dask.",
        epilog=sweep_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[shared],
    )
    sweep.add_argument("sweep_file", nargs="?", metavar="SWEEP.yaml", help="grid / points / seeds (docs/SWEEPS.md)")
    engine = sweep.add_mutually_exclusive_group()
    engine.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    engine.add_argument("--workers", type=int, help="LocalCluster worker processes (default: the machine's cores)")
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="complete the unfinished members of a sweep")
    sweep.add_argument("--retries", type=int, default=2, help="Dask retries of a member task that raised (default 2)")
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from helpers.cli.options import p_overrides, yaml_layers
    from helpers.sweep import driver

    if args.workers is not None and args.workers < 1:
        raise ParamError(f"--workers must be at least 1, got {args.workers}")
    if args.retries < 0:
        raise ParamError(f"--retries must be 0 or more, got {args.retries}")
    if args.resume:
        given = [
            name
            for name, value in (
                ("SWEEP.yaml", args.sweep_file),
                ("-f/--params", args.params),
                ("-y", args.params_yaml),
                ("-p", args.p),
                ("--phases", args.phases),
                ("--runs-root", args.runs_root),
            )
            if value
        ]
        if given:
            raise ParamError(f"--resume re-uses the sweep's own plan and runs; drop {', '.join(given)}")
        _, doc = driver.resume(args.resume, args.scheduler, args.workers, progress=not args.no_progress)
    else:
        if not args.sweep_file:
            raise ParamError("give a sweep file (calib sweep SWEEP.yaml) or --resume SWEEP_DIR")
        _, doc = driver.start(
            args.sweep_file,
            args.params or [],
            p_overrides(args.p),
            yaml_layers(args.params_yaml),
            phases=args.phases,
            root=args.runs_root,
            scheduler=args.scheduler,
            workers=args.workers,
            cell_timeout=args.cell_timeout,
            retries=args.retries,
            progress=not args.no_progress,
        )
    return 0 if doc["status"] == "complete" else 1


def sweeps_table(root: Path) -> str:
    """``calib ls``'s sweep section: one line per sweep, then its members and their status."""
    from helpers.sweep import record

    lines = []
    for directory in record.list_sweeps(root):
        doc = record.load(directory)
        tally = ", ".join(f"{n} {s}" for s, n in sorted(record.counts(doc).items()))
        lines.append(f"{doc['sweep_id']}  {doc['created'][:16]}  {doc['status']}  {len(doc['members'])} runs ({tally})")
        lines += [f"    {m['run_id']}  {m['status']}" for m in doc["members"]]
    return "\n".join(["sweeps:", *lines]) if lines else ""
