"""helpers.data.deployment: the deployment domain's sets, read from the files phases 01 and 02a write.

Real digits, real splits, the real target domain of phase 02a (``helpers.adaptation.domain``) written
through its own writer into a folder laid out as a run's results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.adaptation import domain
from helpers.data import deployment
from helpers.data.datasets import load_dataset, make_splits, slice_hash, split_data, stratified_slice
from helpers.data.deployment import load_calibration_slice, open_deployment
from helpers.run import atomic


class Results:
    """What a phase reads: ``input(phase_id, name)`` and ``upstream_summary(phase_id)``, over a results folder."""

    def __init__(self, root: Path, summaries: dict):
        self.root, self.summaries = root, summaries

    def input(self, phase_id: str, name: str) -> Path:
        return self.root / phase_id / name

    def upstream_summary(self, phase_id: str) -> dict:
        return self.summaries[phase_id]


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds, make_splits(ds, val_fraction=0.3, samples_per_class=5, seed=0)


def write_run(tmp_path: Path, ds, splits, with_train: bool) -> Results:
    atomic.save_npz(tmp_path / "01_data/splits.npz", **{k: v for k, v in splits.items() if k != "calibration"})
    calibration = splits["calibration"]
    atomic.save_npz(
        tmp_path / "01_data/calibration_slice.npz", indices=calibration, labels=ds.train_labels[calibration]
    )
    target = domain.target_domain(ds, splits, seed=0, with_train=with_train)
    domain.save(target, lambda name: tmp_path / "02a_target" / name)
    return Results(
        tmp_path,
        {"01_data": {"slice_hash": slice_hash(calibration, ds.train_images)}, "02a_target": target.record},
    )


def test_an_adapting_run_deploys_to_the_target_sets_carried_image_by_image(digits, tmp_path):
    ds, splits = digits
    deployed = open_deployment(write_run(tmp_path, ds, splits, with_train=True), ds)
    assert deployed.domain == "target" and "Gaussian noise" in deployed.headline()
    clean_slice, slice_labels = split_data(ds, splits, "calibration")
    target_train = deployment.load_array(tmp_path / "02a_target/target_train_images.npz")
    images, labels = deployed.split("calibration")
    positions = np.searchsorted(splits["train"], splits["calibration"])
    np.testing.assert_array_equal(images, target_train[positions])  # the slice's own images, in the target domain
    np.testing.assert_array_equal(labels, slice_labels)
    assert np.abs(images.astype(float) - clean_slice).mean() > 20 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [5] * 10  # phase 01's stratification
    (val, test), (val_labels, test_labels) = deployed.eval_splits()[0].values(), deployed.eval_splits()[1].values()
    clean_val, clean_val_labels = split_data(ds, splits, "val")
    assert len(val) == len(clean_val) == 378 and np.array_equal(val_labels, clean_val_labels)
    assert np.abs(val.astype(float) - clean_val).mean() > 20
    assert len(test) == len(test_labels) == 540
    with pytest.raises(ValueError, match="sets calibration, val, test"):
        deployed.split("train")


class LabelsOnly(Results):
    """A reader that refuses every image file: what a phase needing only labels (06, 07) may read."""

    def input(self, phase_id: str, name: str) -> Path:
        assert not name.endswith("_images.npz"), f"{name} read, but only labels were asked for"
        return super().input(phase_id, name)


@pytest.mark.parametrize("with_train", [True, False])
def test_eval_labels_are_the_eval_splits_labels_without_reading_an_image_file(digits, tmp_path, with_train):
    ds, splits = digits
    run = write_run(tmp_path, ds, splits, with_train=with_train)
    labels = open_deployment(LabelsOnly(run.root, run.summaries), ds).eval_labels()
    _, expected = open_deployment(run, ds).eval_splits()
    assert list(labels) == ["val", "test"]
    for split in labels:
        np.testing.assert_array_equal(labels[split], expected[split])
        assert labels[split].dtype == np.int64


@pytest.mark.parametrize("with_train", [True, False])
def test_deployment_images_are_the_evaluation_sets_of_the_deployed_domain(digits, tmp_path, with_train):
    """Phase 02b reads the domains' val/test files once: the deployment's images come from those sets."""
    ds, splits = digits
    run = write_run(tmp_path, ds, splits, with_train=with_train)
    deployed = open_deployment(run, ds)
    sets = domain.evaluation_sets(lambda name: run.input("02a_target", name), run.summaries["02a_target"]["sets"])
    images = domain.deployment_images(sets, deployed)
    for split, array in deployed.eval_splits()[0].items():
        np.testing.assert_array_equal(images[split], array)


def test_a_run_without_adaptation_deploys_to_phase_01s_source_sets(digits, tmp_path):
    ds, splits = digits
    deployed = open_deployment(write_run(tmp_path, ds, splits, with_train=False), ds)
    assert deployed.domain == "source" and not (tmp_path / "02a_target/target_calibration_images.npz").exists()
    images, labels = deployed.split("calibration")
    np.testing.assert_array_equal(images, ds.train_images[splits["calibration"]])
    val, val_labels = deployed.split("val")
    np.testing.assert_array_equal(val, split_data(ds, splits, "val")[0])
    older = Results(tmp_path, {"01_data": {}, "02a_target": {"sets": ["target"]}})
    with pytest.raises(ValueError, match="recorded no deployment domain.*re-run it"):
        open_deployment(older, ds)


def test_target_val_noise_is_its_own_and_the_slice_must_come_from_train(digits):
    ds, splits = digits
    arrays = domain.target_domain(ds, splits, seed=0, with_train=True).arrays
    assert {deployment.FILE.format(domain="source", split="val", kind="images")} <= arrays.keys()
    noise_val = arrays["target_val_images.npz"].astype(float) - split_data(ds, splits, "val")[0]
    noise_test = arrays["target_test_images.npz"].astype(float) - split_data(ds, splits, "test")[0]
    assert not np.array_equal(noise_val[:5], noise_test[:5])  # seeded per split
    bad = dict(splits, calibration=splits["val"][:5])
    with pytest.raises(ValueError, match="not drawn from the train split"):
        domain.target_domain(ds, bad, seed=0, with_train=True)


def test_load_calibration_slice_as_phase_01_writes_it(tmp_path):
    ds = load_dataset("digits")
    indices = stratified_slice(ds.train_labels, 5, seed=0)
    path = atomic.save_npz(tmp_path / "calibration_slice.npz", indices=indices, labels=ds.train_labels[indices])
    images, labels = load_calibration_slice(
        path, ds.train_images, ds.train_labels, expected_hash=slice_hash(indices, ds.train_images)
    )
    np.testing.assert_array_equal(images, ds.train_images[indices])
    assert labels.dtype == np.int64 and np.array_equal(labels, ds.train_labels[indices])


def test_load_calibration_slice_refuses_wrong_files(tmp_path):
    ds = load_dataset("digits")
    indices = stratified_slice(ds.train_labels, 5, seed=0)
    with pytest.raises(FileNotFoundError, match="run phase 01_data"):
        load_calibration_slice(tmp_path / "missing.npz", ds.train_images, ds.train_labels)
    atomic.save_npz(tmp_path / "no_labels.npz", indices=indices)
    with pytest.raises(ValueError, match="lacks labels"):
        load_calibration_slice(tmp_path / "no_labels.npz", ds.train_images, ds.train_labels)
    atomic.save_npz(tmp_path / "shifted.npz", indices=indices + 1, labels=ds.train_labels[indices])
    with pytest.raises(ValueError, match="differ from the dataset's labels"):
        load_calibration_slice(tmp_path / "shifted.npz", ds.train_images, ds.train_labels)
    atomic.save_npz(tmp_path / "big.npz", indices=indices + len(ds.train_images), labels=ds.train_labels[indices])
    with pytest.raises(ValueError, match="another dataset"):
        load_calibration_slice(tmp_path / "big.npz", ds.train_images, ds.train_labels)
    good = atomic.save_npz(tmp_path / "good.npz", indices=indices, labels=ds.train_labels[indices])
    with pytest.raises(ValueError, match="slice hash differs"):
        load_calibration_slice(
            good,
            255 - ds.train_images,
            ds.train_labels,  # same labels, other pixels
            expected_hash=slice_hash(indices, ds.train_images),
        )
