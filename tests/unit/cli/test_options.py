"""papermill-style parameter options, and the console's event lines and headline (pure functions)."""

from __future__ import annotations

import pytest

from helpers.cli.options import p_overrides, yaml_layers
from helpers.run import console, headline
from helpers.run.params import ParamError, parse_overrides


def test_papermill_spellings_give_the_same_layer():
    assert p_overrides([["epochs", "3"], ["02_train.lr=0.05"]]) == ["epochs=3", "02_train.lr=0.05"]
    assert parse_overrides(p_overrides([["epochs", "3"], ["02_train.lr=0.05"]])) == {
        "epochs": 3,
        "02_train": {"lr": 0.05},
    }
    assert yaml_layers(["{seed: 1, 02_train: {batch_size: 32}}", "{calibration_methods: [minmax, entropy]}"]) == [
        {"seed": 1, "02_train": {"batch_size": 32}},
        {"calibration_methods": ["minmax", "entropy"]},
    ]


def test_y_is_its_own_layer_below_p():
    """-y sits between the files and -p: `-y '{02_train: {epochs: 3}}' -p epochs=5` trains 5 (the later layer)."""
    from helpers.run.runner import resolve_config

    resolved = resolve_config(
        overrides=p_overrides([["epochs", "5"]]), yaml_layers=yaml_layers(["{02_train: {epochs: 3}}"])
    )
    assert resolved["02_train"]["epochs"] == 5
    resolved = resolve_config(yaml_layers=yaml_layers(["{02_train: {epochs: 3}}", "{epochs: 4}"]))
    assert resolved["02_train"]["epochs"] == 4


@pytest.mark.parametrize(
    "p, y, message",
    [
        ([["epochs"]], None, "-p expects KEY VALUE or KEY=VALUE"),
        ([["a", "1", "2"]], None, "-p expects KEY VALUE"),
        (None, ["[1, 2]"], "-y expects a YAML mapping"),
        (None, ["{a: [1"], "is not valid YAML"),
    ],
)
def test_malformed_options_are_param_errors(p, y, message):
    with pytest.raises(ParamError, match=message.replace("[", r"\[")):
        p_overrides(p)
        yaml_layers(y)


def test_event_lines():
    assert (
        console.format_event(
            {
                "phase": "02_train",
                "event": "epoch",
                "epoch": 3,
                "epochs": 15,
                "loss": 0.6123,
                "train_acc": 0.9,
                "val_acc": 0.7891,
            }
        )
        == "02_train epoch 3/15 loss 0.612 train_acc 0.9 val_acc 0.789"
    )
    assert (
        console.format_event(
            {"phase": "04_quantize", "event": "calibration_seconds", "method": "entropy", "seconds": 11.46}
        )
        == "04_quantize entropy calibrated 11.5 s"
    )
    fit = {"phase": "06_confidence", "event": "calibration_fit", "model": "fp32", "method": "dirichlet"}
    assert console.format_event({**fit, "seconds": 0.04}) is None  # 32 of these per digits run: logged, not shown
    assert console.format_event({**fit, "seconds": 7.9}) == "06_confidence fp32 dirichlet fitted in 7.9 s"
    assert (
        console.format_event({"phase": "04_quantize", "event": "timing", "name": "pt2e_eager", "seconds": 2.0})
        == "04_quantize pt2e_eager 2.0 s"
    )
    assert (
        console.format_event(
            {"phase": "05_latency", "event": "measured", "records": 10, "skipped": ["a"], "warnings": [], "store": "S"}
        )
        == "05_latency measured 10 latency records (1 notes) for S (stored when the phase completes)"
    )
    noisy = {"phase": "05_latency", "event": "measured", "records": 4, "warnings": ["m int8 b1: CV 22% exceeds 10%"]}
    assert console.format_event(noisy).splitlines() == [  # issue 24: the warnings reach the console
        "05_latency measured 4 latency records (1 notes)",
        "05_latency warning: m int8 b1: CV 22% exceeds 10%",
    ]
    assert console.format_event({"phase": "01_data", "event": "phase_started", "params": {}}) is None
    assert (
        console.format_event({"phase": "03_x", "event": "custom", "n": 4, "names": ["a"], "time": "t"})
        == "03_x custom n 4"
    )


def test_event_tail_reads_only_complete_new_lines(tmp_path):
    log = tmp_path / "02_train.jsonl"
    log.write_text('{"phase": "02_train", "event": "timing", "name": "old", "seconds": 1}\n')
    seen = []
    tail = console.EventTail(log, seen.append)
    with open(log, "a") as f:
        f.write('{"phase": "02_train", "event": "timing", "name": "new", "seconds": 2}\n{"phase": "02_tr')
    tail.poll()
    assert seen == ["02_train new 2.0 s"]
    with open(log, "a") as f:
        f.write('ain", "event": "timing", "name": "last", "seconds": 3}\nnot json\n')
    tail.poll()
    assert seen == ["02_train new 2.0 s", "02_train last 3.0 s"]


def test_headline_from_summaries():
    head = headline.from_summaries(
        {
            "02_train": {"test_accuracy": 0.9741},
            "04_quantize": {"best_variant": "minmax", "int8_test_accuracy": {"minmax": 0.9722}},
            "06_confidence": {
                "ece_pre": {"fp32": 0.0412},
                "ece_post": {"fp32": 0.0103},
                "chosen": {"fp32": "temperature_scaling"},
            },
            "08_bundle": {"status": "FAIL"},
        },
        {"int8_over_fp32": {"m/ort/b32": 0.5, "m/ort/b1": 0.625}, "measurements": []},
    )
    assert headline.text(head) == (  # the map the ECE after is measured with; where the latency ratio was measured
        "FP32 acc 97.41% | INT8 (minmax) acc 97.22% | ECE 4.12% -> 1.03% (temperature_scaling) | "
        "INT8 1.6x faster than FP32 (ort, batch 1) | bundle FAIL"
    )
    assert headline.speedup_text(0.8) == "1.2x slower"


def test_the_headline_tells_the_story_on_the_deployment_domain():
    summaries = {
        "02a_target": {"deployment": "target"},
        "02b_adapt": {
            "adaptation": "lora",
            "accuracy": {"source": {"before": 0.99, "after": 0.96}, "target": {"before": 0.7648, "after": 0.9019}},
        },
        "04_quantize": {"fp32_test_accuracy": 0.9019, "best_variant": "minmax", "int8_test_accuracy": {"minmax": 0.9}},
        "06_confidence": {
            "ece_pre": {"fp32": 0.05},
            "ece_post": {"fp32": 0.02},
            "chosen": {"fp32": "matrix_scaling"},
            "accuracy_post": {"fp32": 0.9111},
        },
    }
    assert headline.text(headline.from_summaries(summaries)) == (
        "target domain, adaptation (lora) 76.48% -> 90.19% | deployed FP32 acc 91.11% (matrix_scaling) | "
        "INT8 (minmax) acc 90.00% | ECE 5.00% -> 2.00% (matrix_scaling)"
    )
    summaries["02a_target"]["deployment"] = "source"  # adaptation=none: no gain to tell, the source's own figures
    summaries["02b_adapt"] = {"adaptation": "none", "accuracy": summaries["02b_adapt"]["accuracy"]}
    assert headline.text(headline.from_summaries(summaries)).startswith("source domain | deployed FP32 acc 91.11%")


def calls(fastest: float, median: float) -> dict:
    return {"min": fastest, "p50": median}


@pytest.mark.parametrize(
    ("fp32", "int8", "said"),
    [
        (calls(1.60, 1.70), calls(1.00, 1.05), "INT8 1.6x faster than FP32 (onnxruntime, batch 1)"),
        (
            calls(0.0223, 0.0233),
            calls(0.0228, 0.0233),  # the reference run's digits CNN on onnxruntime: the same within noise
            "INT8 vs FP32 latency (onnxruntime, batch 1): no measurable difference, 0.96x to 1.02x",
        ),
        (
            calls(1.0, 2.0),
            calls(1.0, 1.2),  # a loaded machine: one call in two took twice as long
            "INT8 vs FP32 latency (onnxruntime, batch 1): not measurable here, 0.83x to 2.00x "
            "(re-measure on an idle machine)",
        ),
    ],
)
def test_the_headline_prints_a_speed_up_only_where_its_range_makes_it_one(fp32, int8, said):
    rows = [
        {
            "model": "m",
            "runtime": "onnxruntime",
            "batch_size": 1,
            "precision": p,
            "contention_free_ms": c["min"],
            "end_to_end_cpu_time_ms": c,
        }
        for p, c in (("fp32", fp32), ("int8", int8))
    ]
    head = headline.latency_headline(
        {"int8_over_fp32": {"m/onnxruntime/b1": int8["min"] / fp32["min"]}, "measurements": rows}
    )
    assert head["int8_speedup_range"] == [fp32["min"] / int8["p50"], fp32["p50"] / int8["min"]]
    assert headline.speedup_verdict(head) == said
    assert headline.from_summaries({}) == {}


def test_position_counts_the_phases_and_sums_the_history_of_those_left():
    from helpers.run import console

    ids = ["01_data", "02_train", "04_quantize"]
    assert console.position(ids, 1, {}) == "phase 1/3"  # no history: no ETA
    history = {"01_data": 5.0, "02_train": 60.0, "04_quantize": 70.4}
    assert console.position(ids, 2, history) == "phase 2/3, ETA 2 min 10 s"
    assert console.position(ids, 1, {"02_train": 60.0, "04_quantize": 70.4}) == "phase 1/3"  # 01 has none
