"""Sweep files: expansion (grid x points x seeds), validation of every point before anything starts, names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.run.params import ParamError
from helpers.run.project import project_root
from helpers.sweep import plan


def sweep_file(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_grid_points_and_seeds_expand_in_order(tmp_path):
    doc = {
        "grid": {"02_train.lr": [0.05, 0.1], "samples_per_class": [5, 10]},
        "points": [{"02_train.epochs": 2}],
        "seeds": [0, 1],
    }
    p = plan.plan(sweep_file(tmp_path, doc), phases="02")
    assert len(p.members) == (2 * 2 + 1) * 2
    first, last = p.members[0], p.members[-1]
    assert first.point == {"02_train.lr": 0.05, "samples_per_class": 5, "seed": 0}
    assert last.point == {"02_train.epochs": 2, "seed": 1}
    assert first.resolved["02_train"]["lr"] == 0.05 and first.resolved["01_data"]["samples_per_class"] == 5
    assert last.resolved["02_train"]["epochs"] == 2 and last.resolved["01_data"]["seed"] == 1
    assert p.varying == ["02_train.lr", "samples_per_class", "seed", "02_train.epochs"]
    ids = [m.run_id for m in p.members]
    assert len(set(ids)) == len(ids) and all(i.startswith(p.sweep_id) for i in ids)
    assert ids[0].endswith("-00-lr=0.05_samples_per_class=5_seed=0_epochs=None")


def test_command_line_layers_apply_to_every_member_and_the_point_wins(tmp_path):
    p = plan.plan(
        sweep_file(tmp_path, {"grid": {"02_train.lr": [0.05, 0.2]}}),
        overrides=["02_train.lr=0.3", "epochs=1"],
        phases="02",
        yaml_layers=[{"epochs": 4, "02_train": {"batch_size": 32}}],  # -y: below -p, above the files
    )
    assert [m.resolved["02_train"]["lr"] for m in p.members] == [0.05, 0.2]
    assert {m.resolved["02_train"]["epochs"] for m in p.members} == {1}
    assert {m.resolved["02_train"]["batch_size"] for m in p.members} == {32}
    # each member says which layer set what (its config_sources.yaml, read by `calib run --resume M --phases`)
    assert [m.sources["02_train"]["lr"] for m in p.members] == ["sweep point (02_train.lr)"] * 2
    assert {m.sources["02_train"]["epochs"] for m in p.members} == {"-p (epochs)"}


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"grid": {"02_train.lr": [0.1]}, "seeds": [0], "extra": 1}, "unknown key(s) extra"),
        ({"grid": {"seed": [0, 1]}}, "under `seeds:`"),
        ({"grid": {"02_train.lr": []}}, "non-empty list"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"seeds": ["a"]}, "distinct integers"),
        ({"points": [{}]}, "non-empty mappings"),
        ({}, "nothing to sweep"),
    ],
)
def test_malformed_sweep_files_are_refused_with_the_fix(tmp_path, doc, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan.plan(sweep_file(tmp_path, doc))


def test_every_bad_point_is_named_before_anything_starts(tmp_path):
    doc = {"points": [{"02_train.lrr": 0.1}, {"02_train.lr": "fast"}, {"02_train.lr": 0.1}, {"dataset": "cifar10"}]}
    with pytest.raises(ParamError) as err:
        plan.plan(sweep_file(tmp_path, doc), phases="02")
    text = str(err.value)
    assert "3 of 4 sweep point(s) are invalid; nothing was started" in text
    assert "point 0 (02_train.lrr=0.1)" in text and "lrr" in text
    assert "point 1 (02_train.lr=fast)" in text and "must be float" in text
    assert "point 3 (dataset=cifar10)" in text and "data_dir" in text  # the data phase's precheck
    assert "point 2" not in text


def test_a_key_that_does_not_reach_the_selected_phases_is_refused(tmp_path):
    with pytest.raises(ParamError, match="give the same configuration of phases 01_data"):
        plan.plan(sweep_file(tmp_path, {"grid": {"02_train.lr": [0.05, 0.1]}}), phases="01")


def test_slugs_are_file_name_safe_and_bounded():
    point = {"04_quantize.calibration_methods": ["minmax", "entropy"], "data_dir": "/a b/c", "seed": 3}
    text = plan.slug(point, list(point))
    assert text == "calibration_methods=minmax+entropy_data_dir=-a-b-c_seed=3"
    assert len(plan.slug({"k": "x" * 500}, ["k"])) == 80


def test_the_shipped_example_sweep_is_valid():
    p = plan.plan(project_root() / "params" / "sweeps" / "quant_methods.yaml", phases="04")
    assert len(p.members) == 12 and p.varying == ["04_quantize.calibration_methods", "04_quantize.num_bins", "seed"]
