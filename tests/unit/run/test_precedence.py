"""Parameter precedence: a later layer wins; within one layer a phase-scoped key beats a shared one."""

from __future__ import annotations

import itertools

import pytest

from helpers.run.params import load_yaml, parse_overrides, resolve
from helpers.run.project import project_root

DEFAULTS = {"01_data": {"seed": 0, "samples_per_class": 0}, "02_train": {"seed": 0, "epochs": 15, "lr": 0.1}}
LAYERS = ("params/default.yaml", "--params a.yaml", "--params b.yaml", "-p")
SLOTS = [(layer, scope) for layer in range(len(LAYERS)) for scope in ("shared", "phase")]


def expected_winner(chosen):
    """The rule itself: the highest layer; in a layer, the phase key."""
    return max(chosen, key=lambda slot: (slot[0], slot[1] == "phase"))


def test_every_combination_of_layers_and_scopes():
    combinations = [c for n in range(1, len(SLOTS) + 1) for c in itertools.combinations(SLOTS, n)]
    assert len(combinations) == 2 ** len(SLOTS) - 1
    for chosen in combinations:
        check_combination(chosen)


def check_combination(chosen):
    layers = [(name, {}) for name in LAYERS]
    for layer, scope in chosen:
        value = 100 + 10 * layer + (scope == "phase")  # unique per slot
        if scope == "shared":
            layers[layer][1]["epochs"] = value
        else:
            layers[layer][1].setdefault("02_train", {})["epochs"] = value
    sources = {}
    resolved = resolve(DEFAULTS, layers, sources)
    layer, scope = expected_winner(chosen)
    assert resolved["02_train"]["epochs"] == 100 + 10 * layer + (scope == "phase"), chosen
    key = "epochs" if scope == "shared" else "02_train.epochs"
    assert sources["02_train"]["epochs"] == f"{LAYERS[layer]} ({key})", chosen
    assert resolved["02_train"]["lr"] == 0.1 and "lr" not in sources["02_train"]


def test_the_reviewed_cases_on_the_real_cifar10_profile():
    from helpers.run.runner import all_defaults

    defaults = all_defaults()
    cifar = ("params/cifar10.yaml", load_yaml(project_root() / "params/cifar10.yaml"))
    assert cifar[1]["01_data"]["samples_per_class"] == 100 and cifar[1]["02_train"]["epochs"] == 15

    def resolved(*overrides):
        sources = {}
        return resolve(defaults, [cifar, ("-p", parse_overrides(overrides))], sources), sources

    params, sources = resolved("samples_per_class=5000")
    assert params["01_data"]["samples_per_class"] == 5000
    assert sources["01_data"]["samples_per_class"] == "-p (samples_per_class)"
    params, sources = resolved("epochs=5")
    assert params["02_train"]["epochs"] == 5 and sources["02_train"]["epochs"] == "-p (epochs)"
    params, sources = resolved("02_train.epochs=3", "epochs=5")  # one layer: the phase key wins, in any order
    assert params["02_train"]["epochs"] == 3 and sources["02_train"]["epochs"] == "-p (02_train.epochs)"
    assert resolved("epochs=5", "02_train.epochs=3")[0]["02_train"]["epochs"] == 3
    params, sources = resolved()
    assert params["02_train"]["epochs"] == 15 and "epochs" not in sources["02_train"], "a notebook default: unlisted"
    assert sources["02_train"]["batch_size"] == "params/cifar10.yaml (02_train.batch_size)"
    assert sources["01_data"]["dataset"] == "params/cifar10.yaml (dataset)"


def test_dict_values_merge_in_precedence_order():
    defaults = {"04_quantize": {"opts": {"a": 1, "b": 2, "c": 3}}}
    layers = [("low", {"04_quantize": {"opts": {"a": 10}}}), ("high", {"opts": {"a": 20, "b": 20}})]
    assert resolve(defaults, layers)["04_quantize"]["opts"] == {"a": 20, "b": 20, "c": 3}


def test_a_wrong_type_names_the_layer_that_set_it():
    with pytest.raises(ValueError, match=r"02_train \(set by -p \(epochs\)\): parameter 'epochs' must be int"):
        resolve(DEFAULTS, [("-p", {"epochs": "abc"})])


def test_a_manifest_says_which_part_of_its_input_key_changed(tmp_path):
    """Why a phase re-runs on resume: params, its notebook's code, the helper sources, an upstream manifest."""
    from helpers.run import manifest
    from helpers.run.graph import get_phase

    spec = get_phase("02_train")
    (tmp_path / "manifests").mkdir()
    manifest.write_manifest(tmp_path, "01_data", {"phase": "01_data"})
    parts = manifest.key_parts(spec.id, {"epochs": 1}, spec.notebook, list(spec.upstream), tmp_path)
    manifest.write_manifest(tmp_path, spec.id, parts)
    doc = manifest.read_manifest(tmp_path, spec.id)
    assert manifest.changed_key_parts(doc, parts) == [] and manifest.verify(tmp_path, spec.id) == []
    changed = {**parts, "params": "x", "helpers": "y", "upstream": {"01_data": "z"}}
    assert manifest.changed_key_parts(doc, changed) == ["its params", "the helper sources", "upstream phase(s) 01_data"]
    assert manifest.changed_key_parts(doc, {**parts, "notebook": "n"}) == ["its notebook's code"]
