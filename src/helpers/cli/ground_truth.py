"""``calib ground-truth ...``: read, migrate, list, validate and measure latency ground truth.

    calib ground-truth list [--store DIR | --runs-root DIR] [--hardware ID ...] [--all]
    calib ground-truth hardware [--store DIR | --runs-root DIR] [--tolerance 0.01]
    calib ground-truth alias ALIAS CANONICAL [--store DIR | --runs-root DIR]
    calib ground-truth migrate SRC... --dest DIR [--dry-run]
    calib ground-truth pack HARDWARE_ID --dest FILE.tar.xz [--store DIR | --runs-root DIR]
                               (one machine's records, portable: see data/ground_truth/README.md)
    calib ground-truth validate [--store DIR | --runs-root DIR] [--with-store DIR ...] [--hardware ID ...]
                               [--calibration K] [--shared-roofline] [--csv FILE]
                               (leave one model, batch size, precision out; across machines from the others
                               plus the target's peaks and K calibration records: APE, within +-10%, Spearman)
    calib ground-truth curves [--store DIR | --runs-root DIR] [--hardware ID ...]
    calib ground-truth measure [--params params/ground_truth.yaml] [--store DIR] [--models ...]
                               [--precisions ...] [--batch-sizes ...] [--repeats N]
                               [--scheduler tcp://host:8786 --hardware NAME]   (on that hardware's Dask worker)

``--store`` defaults to the one default store, ``calibration_data/`` in the runs root (``--runs-root``, else
``$CALIB_RUNS_ROOT``, else ``runs/``), where phase 05 stores; each command prints the store it reads first.
Every command but ``migrate``,
``alias``, ``pack``, ``curves`` and ``measure`` only reads (``pack`` rebuilds the manifest it packs). ``measure`` reads the sweep profile (default
``params/ground_truth.yaml``); the options narrow it (``--models``, ``--precisions``,
``--batch-sizes``) or override it (``--store``, ``--repeats``), and afterwards it refreshes the
machine's efficiency curves. ``main(argv)`` returns the exit status: 0; 1 when a migration had
failures; 2 for a bad argument (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from helpers.ground_truth.records import PRECISIONS
from helpers.run.project import project_root

STORE_HELP = (
    "store root (default: calibration_data/ in the runs root -- --runs-root, $CALIB_RUNS_ROOT or runs/ -- "
    "where phase 05 stores)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calib ground-truth", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def with_store(command: argparse.ArgumentParser, hardware: bool = False) -> argparse.ArgumentParser:
        command.add_argument("--store", type=Path, help=STORE_HELP)
        command.add_argument(
            "--runs-root", metavar="DIR", help="the runs root whose calibration_data/ is the default store"
        )
        if hardware:
            command.add_argument("--hardware", nargs="+", metavar="ID", help="only these hardware ids (default: all)")
        return command

    listing = with_store(commands.add_parser("list", help="every record per hardware id, read in place"), True)
    listing.add_argument("--all", action="store_true", help="also the files not used by default (repeats, duplicates)")
    hardware = with_store(commands.add_parser("hardware", help="hardware ids, their peaks, and likely duplicates"))
    hardware.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="median relative latency difference under which two ids look like one machine",
    )
    alias = with_store(commands.add_parser("alias", help="record that ALIAS is the machine CANONICAL"))
    alias.add_argument("alias")
    alias.add_argument("canonical")
    mig = commands.add_parser("migrate", help="copy v1.0/v2.0 files of any layout into the store's layout")
    mig.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="files or directories to migrate from")
    mig.add_argument("--dest", type=Path, required=True, help="store root to write into")
    mig.add_argument("--dry-run", action="store_true", help="report what would happen; write nothing")
    packing = with_store(
        commands.add_parser("pack", help="one machine's profile, manifest and records as a .tar.xz to commit")
    )
    packing.add_argument("hardware_id")
    packing.add_argument("--dest", type=Path, required=True, help="the archive to write (.tar.xz)")
    validate = with_store(
        commands.add_parser(
            "validate",
            help="latency estimator, leave one model / batch size / precision out, per hardware and precision, "
            "against the roofline and FLOPs / peak",
        ),
        True,
    )
    validate.add_argument(
        "--with-store",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="more stores whose machines join (e.g. an unpacked data/ground_truth archive): each machine is "
        "also predicted from all the others",
    )
    validate.add_argument(
        "--calibration",
        type=int,
        default=10,
        metavar="K",
        help="measured records per group the across-machines protocol takes from the target (besides k=0: "
        "its peaks only; default 10, as HELP)",
    )
    validate.add_argument(
        "--shared-roofline",
        action="store_true",
        help="the roofline baseline with one roofline per precision instead of one per operation type",
    )
    validate.add_argument("--csv", type=Path, help="also write the per-record validation table here")
    with_store(commands.add_parser("curves", help="write efficiency_curves/<precision>/curves.json and .png"), True)
    meas = commands.add_parser("measure", help="measure models x variants x batch sizes into the store")
    meas.add_argument(
        "--params", type=Path, default=None, help="sweep profile (YAML; default params/ground_truth.yaml)"
    )
    meas.add_argument("--store", type=Path, help="store root (default: the profile's, else the default store)")
    meas.add_argument("--models", nargs="+", help="only these model names of the profile")
    meas.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="only these precisions")
    meas.add_argument("--batch-sizes", nargs="+", type=int, help="these batch sizes instead of the profile's")
    meas.add_argument("--repeats", type=int, help="timed calls per measurement instead of the profile's")
    meas.add_argument("--no-progress", action="store_true")
    meas.add_argument(
        "--scheduler", metavar="ADDRESS", help="measure on a Dask worker of this scheduler (+ --hardware)"
    )
    meas.add_argument("--hardware", metavar="NAME", help='the worker started with --resources "hw-NAME=1"')
    return parser


def narrowed_config(args: argparse.Namespace):
    """The sweep profile with the command line's selections applied (errors name what is unknown)."""
    from helpers.ground_truth.campaign import SweepConfig

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


def _loader(args: argparse.Namespace):
    """The loader of the store a command reads (``--store``, else the default store), announced on one line."""
    from helpers.ground_truth.layout import default_data_dir
    from helpers.ground_truth.store import GroundTruthLoader

    loader = GroundTruthLoader(args.store or default_data_dir(args.runs_root))
    print(f"store: {loader.root}" + ("" if args.store else " (the default: calibration_data/ in the runs root)"))
    if not loader.root.is_dir():
        raise FileNotFoundError(f"store {loader.root} does not exist; give --store DIR")
    return loader


def _hardware_ids(loader, args: argparse.Namespace) -> list[str]:
    ids = args.hardware or loader.list_hardware()
    for hardware_id in ids:
        loader.directories(hardware_id)  # an unknown id is a clear error naming the known ones
    if not ids:
        raise FileNotFoundError(f"no measurements under {loader.root}")
    return ids


def cmd_list(args: argparse.Namespace) -> int:
    loader = _loader(args)
    columns = [
        "model",
        "runtime",
        "precision",
        "batch_size",
        "num_subgraphs",
        "total_latency_ms",
        "measurement_date",
        "repeat",
        "date_zone_known",
        "layout",
        "schema_as_written",
        "file",
    ]
    for hardware_id in _hardware_ids(loader, args):
        table = loader.summary(hardware_id)
        used = table[table["used"]]
        print(
            f"{hardware_id}: {len(used)} configurations from {len(table)} record files "
            f"({len(table) - len(used)} other repeats or duplicates), directories "
            f"{', '.join(d.name for d in loader.directories(hardware_id))}"
        )
        for directory, problems in sorted(loader.manifest_status.items()):
            if directory in table["directory"].values:
                state = "agrees with the files" if not problems else f"not used ({problems[0]}; rebuilt in memory)"
                print(f"  manifest of {directory}: {state}")
        shown = table if args.all else used
        print(shown[columns + (["note"] if args.all else [])].to_string(index=False), end="\n\n")
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    from helpers.ground_truth.layout import ALIASES
    from helpers.ground_truth.store import hardware_table, likely_duplicates

    loader = _loader(args)
    print(hardware_table(loader).to_string(index=False))
    duplicates = likely_duplicates(loader, args.tolerance)
    if duplicates.empty:
        print(f"\nno likely duplicates (same device, peak, and median latency difference <= {args.tolerance:.1%})")
        return 0
    print("\nlikely the same machine (same device and peak, near-identical latencies):")
    print(duplicates.to_string(index=False))
    for a, b in duplicates[["hardware_id", "same_as"]].values:
        print(f"  to merge: calib ground-truth alias {b} {a} --store {loader.root}   (writes {ALIASES})")
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    loader = _loader(args)
    path = loader.aliases.with_alias(args.alias, args.canonical).save(loader.root)
    print(f"{args.alias} -> {loader.aliases.canonical(args.canonical)} recorded in {path}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from helpers.ground_truth.migration import migrate

    report = migrate(args.sources, args.dest, dry_run=args.dry_run)
    print(report.summary())
    return 1 if report.failed else 0


def cmd_pack(args: argparse.Namespace) -> int:
    from helpers.ground_truth.migration import pack

    loader = _loader(args)
    path = pack(loader.root, args.hardware_id, args.dest)
    print(f"{args.hardware_id}: {len(loader.load_all(args.hardware_id))} records packed into {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from helpers.ground_truth import estimator as le
    from helpers.ground_truth.store import GroundTruthLoader
    from helpers.ground_truth.validation import Machines, every_protocol

    loaders = [_loader(args)]
    for root in args.with_store:
        loaders.append(GroundTruthLoader(root))
        print(f"with store: {loaders[-1].root}")
        if not loaders[-1].root.is_dir():
            raise FileNotFoundError(f"store {root} does not exist")
    machines = Machines.load(loaders)
    targets = _hardware_ids(loaders[0], args) if args.hardware or len(loaders) == 1 else list(machines.records)
    summary, validation, notes = every_protocol(machines, targets, not args.shared_roofline, args.calibration)
    for note in notes:
        print(note)
    if summary.empty:
        return 0
    roofline = "one per precision" if args.shared_roofline else "one per operation type"
    print(
        "latency estimator (per-type and per-node overheads, bandwidth, efficiency curve over arithmetic intensity; "
        "docs/ground_truth.md), leave-one-out within each machine: held_out model, batch_size or precision (a "
        "left-out precision is predicted from the nearest fitted one, by the transfer rule fitted on the others); "
        f"roofline_* = the roofline estimator ({roofline}); naive = total FLOPs / theoretical peak."
    )
    print(
        "across machines (held_out machine, k=K): the machine predicted from the other machines' estimators, taking "
        "from it only its theoretical peaks and, with k > 0, the measured latencies of k random calibration records "
        "per runtime/precision (20 seeded draws, each predicting the rest; the rows pool the draws); roofline_* "
        "there = the roofline fitted on the k calibration records alone (k=0: the chosen source's, moved to the "
        "target's peak)."
    )
    print(
        f"within_10_pct: predictions within +-{le.WITHIN_PCT:.0f}% of the measurement (%); spearman: rank "
        "correlation of predicted with measured latency over the row's predictions."
    )
    print(
        "target subgraph_sum = the sum of the subgraphs' mean latencies, what v1.0 and other tools' files "
        "measure (not the model's end-to-end latency)."
    )
    print(
        "a configuration measured more than once counts as the median of its repeats; median_repeat_spread_pct "
        "((max - min) / median across repeats) is the noise floor of the APE (NaN: no repeats)."
    )
    rank = {name: "{:.2f}".format for name in ("spearman", "roofline_spearman", "naive_spearman")}
    shown = summary.drop(columns=["seconds"])
    print(shown.to_string(index=False, formatters=rank, float_format=lambda v: f"{v:.1f}"))
    if args.csv:
        from helpers.run import atomic

        atomic.write_text(args.csv, validation.to_csv(index=False))
        print(f"per-record table: {args.csv}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from helpers.ground_truth.curves import write_efficiency_curves

    loader = _loader(args)
    for hardware_id in _hardware_ids(loader, args):
        for path in write_efficiency_curves(loader.root, hardware_id):
            print(path)
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from helpers.ground_truth.campaign import run_sweep
    from helpers.ground_truth.curves import write_efficiency_curves

    if bool(args.scheduler) != bool(args.hardware):
        raise SystemExit(
            "--scheduler and --hardware go together: the scheduler, and the name of the hardware whose "
            'worker advertises --resources "hw-NAME=1"'
        )
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


COMMANDS = {
    "list": cmd_list,
    "hardware": cmd_hardware,
    "alias": cmd_alias,
    "migrate": cmd_migrate,
    "pack": cmd_pack,
    "validate": cmd_validate,
    "curves": cmd_curves,
    "measure": cmd_measure,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            if args.command != "measure":
                warnings.simplefilter("ignore", UserWarning)  # `list` prints the manifest state itself
            return COMMANDS[args.command](args)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"calib ground-truth {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
