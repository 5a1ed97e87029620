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
    with pytest.raises(ValueError, match="are not splits"):
        logits_file.load_splits(tmp_path / "multi.npz")
