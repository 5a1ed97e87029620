"""Progress during a long step (issue 30): training and adaptation log ``progress`` events as their batches go,
and ``calib run``'s console turns them into a bar under papermill's cell bar in a terminal, and into nothing
when piped (no ``\\r`` in piped output)."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from tqdm import tqdm

from helpers import data
from helpers.adaptation import domain, methods
from helpers.adaptation.methods import AdaptConfig
from helpers.models import training
from helpers.models.architectures import build_model
from helpers.run import console


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def progress_events(caplog) -> list[dict]:
    """The ``progress`` events the helpers logged, as ``phase.log`` (PhaseLogHandler) would append them."""
    return [
        {"phase": "02_train", "event": r.getMessage(), "source": r.name, **r.fields}
        for r in caplog.records
        if r.getMessage() == "progress"
    ]


def train_small(digits, epochs=2):
    torch.manual_seed(0)
    x, y = digits.train_images[:256], digits.train_labels[:256]
    return training.train(
        build_model("digits_cnn", digits.num_classes),
        x,
        y,
        digits.test_images[:64],
        digits.test_labels[:64],
        epochs=epochs,
        batch_size=32,
        lr=0.1,
        seed=0,
        num_threads=1,
        progress=False,
    )


def test_training_logs_its_batches_as_it_goes_with_or_without_a_bar(digits, caplog):
    caplog.set_level(logging.INFO, logger="helpers")
    train_small(digits)
    events = progress_events(caplog)
    assert {(e["step"], e["epochs"], e["steps"], e["source"]) for e in events} == {
        ("training", 2, 8, "helpers.models.training")
    }
    where = [(e["epoch"], e["batch"]) for e in events]
    assert where == sorted(where) and where[0] == (1, 1), where  # the first batch at once, then in order
    assert (1, 8) in where and where[-1] == (2, 8), where  # every epoch's end
    assert all(np.isfinite(e["loss"]) and e["loss"] > 0 for e in events)


def test_between_an_epochs_first_and_last_batch_it_reports_only_every_few_seconds(caplog):
    caplog.set_level(logging.INFO, logger="helpers")
    for every in (0.0, 3600.0):  # every batch is "a few seconds later"; none is
        report = training.BatchProgress(f"every {every}", epochs=2, steps=5, every=every)
        for epoch in (1, 2):
            for batch in range(1, 6):
                report(epoch, batch, 1.0 / batch)
    events = progress_events(caplog)
    assert [(e["epoch"], e["batch"]) for e in events if e["step"] == "every 0.0"] == [
        (epoch, batch) for epoch in (1, 2) for batch in range(1, 6)
    ]
    assert [(e["epoch"], e["batch"]) for e in events if e["step"] == "every 3600.0"] == [(1, 1), (1, 5), (2, 5)]


def test_lora_adaptation_logs_its_batches(digits, caplog):
    caplog.set_level(logging.INFO, logger="helpers")
    model, _ = train_small(digits, epochs=1)
    splits = data.make_splits(digits, val_fraction=0.1, samples_per_class=5, seed=0)
    arrays = domain.target_domain(digits, splits, seed=0, with_train=True).arrays
    x, y = arrays["target_train_images.npz"][:192], arrays["target_train_labels.npz"][:192]
    config = AdaptConfig("lora", epochs=2, batch_size=64, lr=0.01, rank=2, alpha=4.0, target_modules=("fc",))
    methods.adapt(model, config, x, y, seed=0, num_threads=1, progress=False)
    events = [e for e in progress_events(caplog) if e["step"] != "training"]
    assert {(e["step"], e["epochs"], e["steps"]) for e in events} == {("lora supervised", 2, 3)}
    assert [(e["epoch"], e["batch"]) for e in events][0] == (1, 1) and events[-1]["batch"] == 3


def write_log(path, events):
    with open(path, "a") as f:
        for event in events:
            f.write(json.dumps({"time": "t", **event}) + "\n")


def test_the_terminal_console_draws_a_bar_under_the_cell_bar_and_takes_it_off_at_the_end(
    digits, caplog, capsys, tmp_path
):
    caplog.set_level(logging.INFO, logger="helpers")
    train_small(digits)
    events = progress_events(caplog)
    log = tmp_path / "02_train.jsonl"
    log.touch()
    lines = console.console_writer(tty=True)
    cell_bar = tqdm(total=12, desc="Executing", unit="cell", file=io.StringIO())  # papermill's, as calib run opens it
    try:
        with console.EventTail(log, lines) as tail:
            write_log(log, events[:1])
            tail.poll()
            assert lines.bar is not None and (lines.bar.n, lines.bar.total) == (1, 16)
            assert lines.bar.desc == "02_train training"
            write_log(log, events[1:])
            tail.poll()
            assert lines.bar is None  # the last batch of the last epoch: the step is done
    finally:
        cell_bar.close()
    err = capsys.readouterr().err
    assert "02_train training" in err and "1/16" in err and "epoch 1/2, loss" in err, err


def test_no_bar_without_a_cell_bar_and_no_line_when_piped(digits, caplog, capsys, tmp_path):
    caplog.set_level(logging.INFO, logger="helpers")
    train_small(digits, epochs=1)
    log = tmp_path / "02_train.jsonl"
    log.touch()
    quiet = console.console_writer(tty=True)  # a terminal with --no-progress: papermill opens no cell bar
    seen = []
    with console.EventTail(log, quiet) as a, console.EventTail(log, seen.append) as b:
        write_log(log, [*progress_events(caplog), {"phase": "02_train", "event": "timing", "name": "x", "seconds": 1}])
        a.poll()
        b.poll()
        assert quiet.bar is None
    assert "\r" not in capsys.readouterr().err
    assert seen == ["02_train x 1.0 s"]  # piped: the progress events print nothing
