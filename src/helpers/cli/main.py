"""``calib``: run the pipeline, verify and browse run directories.

    calib run [-f F.yaml] [-y YAML] [-p key value ...] [--phases 00,01] [--resume RUN]
    calib verify RUN
    calib ls [--sort COLUMN] [--json]
    calib show RUN
    calib diff RUN RUN [RUN ...] [--all] [--format table|md|json|csv]
    calib compare RUN RUN [RUN ...] --html OUT
    calib params [PHASE]
    calib sweep SWEEP.yaml [--scheduler ADDRESS | --workers N] | calib sweep --resume SWEEP_DIR
    calib ground-truth {measure,migrate} ...

RUN is a name under the runs root (as ``calib ls`` prints it) or a path. Browsing lives in
``cli/browse.py``, the run console in ``run/console.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from helpers.run.atomic import disk_full
from helpers.run.lock import RunLocked
from helpers.run.params import ParamError


def cmd_run(args) -> int:
    from helpers.cli.browse import resolve_run
    from helpers.cli.options import p_overrides, yaml_layers
    from helpers.run import console
    from helpers.run.runner import DiskFull, PhaseFailed, run

    resume = str(resolve_run(args.resume, args.runs_root)) if args.resume else None
    log = console.console_writer(console.is_tty())
    try:
        run_dir = run(
            args.params or [],
            p_overrides(args.p),
            yaml_layers(args.params_yaml),
            phases=args.phases,
            root=args.runs_root,
            resume=resume,
            run_id=args.run_id,
            progress=console.show_cell_bar(not args.no_progress),
            cell_timeout=args.cell_timeout,
            log=log,
            reuse=args.reuse,
        )
    except PhaseFailed as exc:
        banner = console.failure_banner(exc.phase_id, exc.error, exc.notebook, reported=not exc.disk_full)
        print("\n".join(banner), file=sys.stderr)
        print("\n".join(console.summary_lines(exc.notebook.parent.parent)))
        return 1
    except DiskFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(console.summary_lines(run_dir)))
    return 0


def cmd_verify(args) -> int:
    """Exit 0: complete and intact; 3: incomplete but intact; 1: damaged (helpers.run.integrity)."""
    from helpers.cli.browse import resolve_run
    from helpers.run.integrity import check_run

    check = check_run(resolve_run(args.run_dir, args.runs_root))
    for label, lines in (("damaged", check.damaged), ("incomplete", check.incomplete), ("note", check.notes)):
        for line in lines:
            print(f"{label}: {line}")
    print(f"{check.run_dir}: {check.verdict()}")
    return check.exit_code


def cmd_browse(args) -> int:
    from helpers.cli import browse

    return getattr(browse, f"cmd_{args.command}")(args)


def cmd_ground_truth(args) -> int:
    from helpers.cli.ground_truth import main as ground_truth_main

    return ground_truth_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    from helpers.cli.browse import FORMATS
    from helpers.cli.options import RUNS_ROOT_HELP, execution_options, run_epilog, version

    parser = argparse.ArgumentParser(prog="calib", description="calib-lab: the reproducible calibration pipeline")
    parser.add_argument("--version", action="version", version=f"calib-lab {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    root_opt = {"metavar": "DIR", "help": RUNS_ROOT_HELP}
    a_run = "a run: its name under the runs root (as `calib ls` prints it), a unique prefix of one, or a path"
    shared = execution_options()  # calib run's and calib sweep's parameter and execution options, one definition

    run = sub.add_parser(
        "run",
        help="execute phases into a new run directory (or --resume one)",
        description="Resolve and validate the parameters, then execute the phases (and what they "
        "read from) in a new run directory.",
        epilog=run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[shared],
    )
    run.add_argument("--resume", metavar="RUN", help="complete an existing run, skipping verified phases; " + a_run)
    run.add_argument("--run-id", help="name the run directory (default: <UTC timestamp>-<config hash>)")
    run.add_argument(
        "--reuse",
        action="store_true",
        help="materialize phases whose input key matches a verified "
        "phase of another run in the runs root instead of executing them (the sweep phase cache)",
    )
    run.set_defaults(func=cmd_run)

    verify = sub.add_parser(
        "verify", help="is a run complete and intact? exit 0 complete+intact, 3 incomplete but intact, 1 damaged"
    )
    verify.add_argument("run_dir", metavar="RUN", help=a_run)
    verify.add_argument("--runs-root", **root_opt)
    verify.set_defaults(func=cmd_verify)

    ls = sub.add_parser("ls", help="table of runs: status (verified), headline metrics, parameters that differ")
    ls.add_argument("--runs-root", **root_opt)
    ls.add_argument("--sort", metavar="COLUMN", help="sort by a column, e.g. 'fp32 acc' or 'created'")
    ls.add_argument("--reverse", action="store_true", help="descending order")
    ls.add_argument("--all", action="store_true", help="every parameter column, unchanged ones too")
    ls.add_argument("--json", action="store_true", help="the rows as JSON (raw values)")
    ls.add_argument("--no-verify", action="store_true", help="skip checking each run's files (faster)")
    ls.set_defaults(func=cmd_browse)

    show = sub.add_parser("show", help="phase table, headline and key results of a run")
    show.add_argument("run", metavar="RUN", help=a_run)
    show.add_argument("--runs-root", **root_opt)
    show.set_defaults(func=cmd_browse)

    diff = sub.add_parser("diff", help="what differs between runs: parameters, phase status, results (latency too)")
    diff.add_argument("runs", nargs="+", metavar="RUN", help=a_run + " (two or more)")
    diff.add_argument("--all", action="store_true", help="every key, unchanged ones too")
    diff.add_argument("--sort", metavar="METRIC", help="order the runs by a metric, e.g. int8_speedup")
    diff.add_argument("--reverse", action="store_true", help="descending order")
    diff.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    diff.add_argument("--runs-root", **root_opt)
    diff.set_defaults(func=cmd_browse)

    from helpers.cli.compare import cmd_compare

    compare = sub.add_parser("compare", help="one self-contained HTML page: headline, differing params, key plots")
    compare.add_argument("runs", nargs="+", metavar="RUN", help=a_run + " (two or more)")
    compare.add_argument("--html", required=True, metavar="OUT", help="the page to write (its directory must exist)")
    compare.add_argument("--runs-root", **root_opt)
    compare.set_defaults(func=cmd_compare)

    params = sub.add_parser("params", help="every parameter: type, default, comment, the phases sharing it")
    params.add_argument("phase", nargs="?", help="only this phase's parameters (an id or its number, e.g. 02)")
    params.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    params.set_defaults(func=cmd_browse)

    from helpers.cli.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub, shared)

    truth = sub.add_parser("ground-truth", add_help=False, help="latency ground truth: measure, migrate (see --help)")
    truth.add_argument("rest", nargs=argparse.REMAINDER)
    truth.set_defaults(func=cmd_ground_truth)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ground-truth"]:  # its own parser, options included (argparse's REMAINDER drops them)
        return cmd_ground_truth(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamError, ValueError, FileNotFoundError, RunLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`calib show RUN | head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 1
    except OSError as exc:
        where = getattr(args, "resume", None) or getattr(args, "run_dir", None)  # None: no run to continue
        print(f"error: {disk_full(exc, where)}", file=sys.stderr)  # anything but a full disk is re-raised
        return 1
