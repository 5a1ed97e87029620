"""Issue 30.2: ``calib run`` and ``calib sweep`` take their shared options from one definition -- the same
spellings, the same help -- and ``calib sweep`` accepts every papermill spelling ``calib run`` does."""

from __future__ import annotations

import argparse

from cli_runner import calib
from helpers.cli.main import build_parser
from helpers.cli.options import execution_options

SHARED = ("-f", "--params", "-y", "--params-yaml", "-p", "--phases", "--runs-root", "--cell-timeout", "--no-progress")


def subcommand(name: str) -> argparse.ArgumentParser:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def shared_options(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    """dest -> (option strings, nargs, metavar, default, help) of every shared option the parser defines."""
    return {
        a.dest: (tuple(a.option_strings), a.nargs, a.metavar, a.default, a.help)
        for a in parser._actions
        if set(a.option_strings) & set(SHARED)
    }


def test_run_and_sweep_define_the_shared_options_alike():
    run, sweep = shared_options(subcommand("run")), shared_options(subcommand("sweep"))
    assert run == sweep == shared_options(execution_options())
    assert {s for strings, *_ in run.values() for s in strings} == set(SHARED)


def test_sweep_parses_the_papermill_spellings_as_run_does():
    argv = ["-f", "a.yaml", "-y", "{epochs: 3}", "-p", "epochs", "5", "-p", "02_train.lr=0.05", "--phases", "4"]
    run = build_parser().parse_args(["run", *argv])
    sweep = build_parser().parse_args(["sweep", "sweep.yaml", *argv])
    for dest in ("params", "params_yaml", "p", "phases"):
        assert getattr(run, dest) == getattr(sweep, dest), dest
    assert sweep.p == [["epochs", "5"], ["02_train.lr=0.05"]]


def test_both_helps_print_the_shared_options_alike():
    """Through the real CLI: the help text of each shared option is the same in both commands."""
    run, sweep = calib("run", "--help").stdout, calib("sweep", "--help").stdout

    def block(text: str) -> str:
        start = text.index("  -f FILE.yaml")
        return text[start : text.index("  --no-progress", start)]

    assert block(run) == block(sweep)
    assert "-y YAML, --params-yaml YAML" in sweep and "-p KEY VALUE" in sweep
