from __future__ import annotations

import numpy as np
import pytest

from helpers.models import logits_file


def test_round_trip_keeps_models_splits_and_values(tmp_path):
    rng = np.random.default_rng(0)
    logits = {
        "fp32": {"val": rng.normal(size=(4, 3)), "test": rng.normal(size=(5, 3))},
        "pt2e_x": {"val": rng.normal(size=(4, 3)), "test": rng.normal(size=(5, 3))},
    }
    logits_file.save(tmp_path / "l.npz", logits)
    back = logits_file.load(tmp_path / "l.npz")
    assert set(back) == {"fp32", "pt2e_x"} and set(back["pt2e_x"]) == {"val", "test"}
    np.testing.assert_array_equal(back["fp32"]["test"], logits["fp32"]["test"].astype(np.float32))
    assert back["fp32"]["val"].dtype == np.float32


def test_bytes_are_deterministic(tmp_path):
    logits = {"m": {"val": np.ones((2, 2)), "test": np.zeros((2, 2))}}
    logits_file.save(tmp_path / "a.npz", logits)
    logits_file.save(tmp_path / "b.npz", logits)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_unknown_split_and_foreign_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        logits_file.key("fp32", "train")
    np.savez(tmp_path / "foreign.npz", val=np.ones(2))
    with pytest.raises(ValueError, match="is not <model>_<split>"):
        logits_file.load(tmp_path / "foreign.npz")


def test_a_single_model_file_reads_as_splits_and_a_multi_model_file_does_not(tmp_path):
    np.savez(tmp_path / "single.npz", val=np.ones((2, 3), np.float32), test=np.zeros((1, 3), np.float32))
    splits = logits_file.load_splits(tmp_path / "single.npz")
    assert set(splits) == {"val", "test"} and splits["test"].shape == (1, 3)
    logits_file.save(tmp_path / "multi.npz", {"fp32": {"val": np.ones((2, 3)), "test": np.ones((1, 3))}})
    with pytest.raises(ValueError, match=r"key 'fp32_test' is not <split> \(split in \('val', 'test'\)\)"):
        logits_file.load_splits(tmp_path / "multi.npz")


def test_runtime_logits_keep_their_keys_and_read_back_nested(tmp_path):
    rng = np.random.default_rng(1)
    logits = {
        runtime: {
            model: {split: rng.normal(size=(3, 2)).astype(np.float32) for split in ("val", "test")}
            for model in ("fp32", "int8_x")
        }
        for runtime in ("onnxruntime", "openvino")
    }
    logits_file.save_runtimes(tmp_path / "runtime_logits.npz", logits)
    with np.load(tmp_path / "runtime_logits.npz") as npz:
        assert "openvino__int8_x__val" in npz.files and len(npz.files) == 8
        assert logits_file.runtime_key("openvino", "int8_x", "val") == "openvino__int8_x__val"
    back = logits_file.load_runtimes(tmp_path / "runtime_logits.npz")
    for runtime, by_model in logits.items():
        for model, by_split in by_model.items():
            for split, x in by_split.items():
                np.testing.assert_array_equal(back[runtime][model][split], x)
    with pytest.raises(ValueError, match="holds '__'"):
        logits_file.runtime_key("onnxruntime", "a__b", "test")


def test_shift_logits_keep_labels_as_integers(tmp_path):
    logits = {
        domain: {
            split: {"before": np.ones((2, 3)), "after": np.zeros((2, 3)), "labels": np.array([0, 2])}
            for split in ("val", "test")
        }
        for domain in ("source", "target")
    }
    logits_file.save_shift(tmp_path / "shift.npz", logits)
    with np.load(tmp_path / "shift.npz") as npz:
        assert "target.val.after" in npz.files
    back = logits_file.load_shift(tmp_path / "shift.npz")
    assert back["target"]["test"]["labels"].dtype == np.int64 and back["source"]["val"]["before"].dtype == np.float64
    np.testing.assert_array_equal(back["target"]["test"]["labels"], [0, 2])
    with pytest.raises(ValueError, match="array must be one of"):
        logits_file.BY_DOMAIN.key("target", "val", "probs")


def test_a_file_of_another_kind_is_refused_naming_the_file_and_its_grammar(tmp_path):
    logits_file.save(tmp_path / "int8_logits.npz", {"minmax": {"val": np.ones((1, 2)), "test": np.ones((1, 2))}})
    with pytest.raises(ValueError, match=r"int8_logits\.npz: key 'minmax_test' is not <runtime>__<model>__<split>"):
        logits_file.load_runtimes(tmp_path / "int8_logits.npz")
