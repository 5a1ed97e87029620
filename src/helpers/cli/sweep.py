"""``calib sweep``: many isolated runs over a grid of parameters, executed on Dask.

calib sweep SWEEP.yaml [--params F.yaml] [-p key=value] [--phases 04] [--runs-root DIR]
            [--scheduler tcp://host:8786 | --workers N] [--cell-timeout S] [--retries N] [--no-progress]
calib sweep --resume <runs root>/sweeps/<id> [--scheduler ADDRESS | --workers N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from helpers.run.params import ParamError


def add_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="a grid of isolated runs executed on Dask (a LocalCluster or --scheduler)")
    sweep.add_argument("sweep_file", nargs="?", metavar="SWEEP.yaml", help="grid / points / seeds (docs/SWEEPS.md)")
    sweep.add_argument("--params", action="append", metavar="FILE.yaml", help="a params file for every member")
    sweep.add_argument("-p", action="append", metavar="KEY=VALUE", help="override one parameter for every member")
    sweep.add_argument("--phases", help="phases of every member, e.g. 04 (upstream added)")
    sweep.add_argument("--runs-root", help="where member runs and sweeps/ go (default: runs/ or $CALIB_RUNS_ROOT)")
    engine = sweep.add_mutually_exclusive_group()
    engine.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    engine.add_argument("--workers", type=int, help="LocalCluster worker processes (default: the machine's cores)")
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="complete the unfinished members of a sweep")
    sweep.add_argument("--cell-timeout", type=int, default=3600, help="seconds per notebook cell (default 3600)")
    sweep.add_argument("--retries", type=int, default=2, help="Dask retries of a member task that raised (default 2)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar over the members")
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
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
                ("--params", args.params),
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
            args.p or [],
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
