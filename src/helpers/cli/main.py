"""``calib``: run the pipeline, verify and browse run directories.

    calib run [--params F.yaml] [-p key=value ...] [--phases 00,01] [--resume RUN_DIR]
    calib verify RUN_DIR
    calib ls [--runs-root DIR]
    calib show RUN_DIR
    calib diff RUN_A RUN_B
    calib sweep SWEEP.yaml [--scheduler ADDRESS | --workers N] | calib sweep --resume SWEEP_DIR
    calib ground-truth {measure,migrate} ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.run import manifest, run_record
from helpers.run.params import ParamError
from helpers.run.project import runs_root


def cmd_run(args) -> int:
    from helpers.run.runner import PhaseFailed, run

    try:
        run_dir = run(args.params or [], args.p or [], phases=args.phases, root=args.runs_root, resume=args.resume,
                      run_id=args.run_id, progress=not args.no_progress, cell_timeout=args.cell_timeout,
                      reuse=args.reuse)
    except PhaseFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"run complete: {run_dir}")
    return 0


def cmd_verify(args) -> int:
    run_dir = Path(args.run_dir)
    record = run_record.load(run_dir)
    problems = []
    for phase_id, row in record["phases"].items():
        if row.get("status") == "complete" or manifest.manifest_path(run_dir, phase_id).exists():
            problems += manifest.verify(run_dir, phase_id)
    for line in problems:
        print(line)
    print(f"{run_dir}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'all manifests verify'}")
    return 1 if problems else 0


def list_runs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if (p / run_record.FILENAME).exists()), key=lambda p: p.name) \
        if root.is_dir() else []


def cmd_ls(args) -> int:
    import pandas as pd

    rows = []
    for run_dir in list_runs(runs_root(args.runs_root)):
        record = run_record.load(run_dir)
        phases = record["phases"]
        done = [pid[:2] for pid, row in phases.items() if row.get("status") == "complete"]
        summary = {pid: row.get("summary") or {} for pid, row in phases.items()}
        accuracy = summary.get("02_train", {}).get("test_accuracy")
        ece = summary.get("06_confidence", {}).get("ece_post", {}).get("fp32")
        rows.append({"run": run_dir.name, "created": record["created"][:16],
                     "dataset": summary.get("01_data", {}).get("dataset", "-"),
                     "model": summary.get("02_train", {}).get("architecture", "-"),
                     "phases done": ",".join(done) or "-",
                     "test acc": f"{accuracy:.4f}" if accuracy is not None else "-",
                     "ECE post": f"{ece:.4f}" if ece is not None else "-", "status": record["status"]})
    print(pd.DataFrame(rows).to_string(index=False) if rows else f"no runs under {runs_root(args.runs_root)}")
    from helpers.cli.sweep import sweeps_table

    if sweeps := sweeps_table(runs_root(args.runs_root)):
        print(f"\n{sweeps}")
    return 0


def cmd_show(args) -> int:
    import pandas as pd

    run_dir = Path(args.run_dir)
    record = run_record.load(run_dir)
    print(f"run {record['run_id']}  status {record['status']}  created {record['created']}  "
          f"git {str(record['git']['sha'])[:10]}{' (dirty)' if record['git']['dirty'] else ''}")
    table = pd.DataFrame([{"phase": pid, "status": row.get("status"), "seconds": row.get("duration_s"),
                           "error": row.get("error") or ""} for pid, row in record["phases"].items()])
    print(table.to_string(index=False))
    for label, rel in (("report", "results/09_report/report.html"), ("bundle", "results/08_bundle/bundle")):
        if (run_dir / rel).exists():
            print(f"{label}: {(run_dir / rel).resolve()}")
    for pid, row in record["phases"].items():
        if row.get("summary"):
            print(f"\n{pid}:")
            for key, value in row["summary"].items():
                print(f"  {key}: {value}")
    return 0


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def cmd_diff(args) -> int:
    import pandas as pd

    from helpers.run.runner import load_run_config

    runs = [Path(args.run_a), Path(args.run_b)]
    configs = [flatten(load_run_config(r)) for r in runs]
    records = [run_record.load(r) for r in runs]
    summaries = [flatten({pid: row.get("summary", {}) for pid, row in rec["phases"].items()}) for rec in records]
    names = [r.name for r in runs]

    def table(a: dict, b: dict, only_changed: bool):
        rows = [{"key": k, names[0]: a.get(k, "-"), names[1]: b.get(k, "-")} for k in sorted(set(a) | set(b))
                if not only_changed or a.get(k) != b.get(k)]
        for row in rows:
            x, y = row[names[0]], row[names[1]]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
            row["delta"] = y - x if numeric else ""
        return pd.DataFrame(rows)

    params = table(*configs, only_changed=True)
    print("parameters that differ:" if len(params) else "parameters: identical")
    if len(params):
        print(params.drop(columns="delta").to_string(index=False))
    print("\nkey results:")
    print(table(*summaries, only_changed=False).to_string(index=False))
    return 0


def cmd_ground_truth(args) -> int:
    from helpers.cli.ground_truth import main as ground_truth_main

    return ground_truth_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calib", description="calib-lab: the reproducible calibration pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute phases into a new run directory (or --resume one)")
    run.add_argument("--params", action="append", metavar="FILE.yaml", help="a params file (repeatable)")
    run.add_argument("-p", action="append", metavar="KEY=VALUE", help="override one parameter (repeatable)")
    run.add_argument("--phases", help="comma-separated phase ids or numbers, e.g. 00,01 (upstream added)")
    run.add_argument("--resume", metavar="RUN_DIR", help="complete an existing run, skipping verified phases")
    run.add_argument("--runs-root", help="where run directories go (default: runs/ or $CALIB_RUNS_ROOT)")
    run.add_argument("--run-id", help="name the run directory (default: <UTC timestamp>-<config hash>)")
    run.add_argument("--cell-timeout", type=int, default=3600, help="seconds per notebook cell (default 3600)")
    run.add_argument("--no-progress", action="store_true", help="no papermill progress bars")
    run.add_argument("--reuse", action="store_true", help="materialize phases whose input key matches a verified "
                     "phase of another run in the runs root instead of executing them (the sweep phase cache)")
    run.set_defaults(func=cmd_run)

    verify = sub.add_parser("verify", help="check every manifest of a run against its files")
    verify.add_argument("run_dir")
    verify.set_defaults(func=cmd_verify)

    ls = sub.add_parser("ls", help="table of runs")
    ls.add_argument("--runs-root")
    ls.set_defaults(func=cmd_ls)

    show = sub.add_parser("show", help="phase table and key results of a run")
    show.add_argument("run_dir")
    show.set_defaults(func=cmd_show)

    diff = sub.add_parser("diff", help="parameter differences and metric-by-metric comparison of two runs")
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    diff.set_defaults(func=cmd_diff)

    from helpers.cli.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)

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
    except (ParamError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

