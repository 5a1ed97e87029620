import pickle
import subprocess
import sys

import numpy as np
import pytest

from helpers import data


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def test_digits_adapter_gives_uint8_nhwc_and_a_fixed_test_split(digits):
    assert digits.train_images.dtype == np.uint8 and digits.train_images.shape[1:] == (8, 8, 1)
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0
    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    np.testing.assert_array_equal(data.load_dataset("digits").test_labels, digits.test_labels)


def test_preprocess_is_raw_float32_nhwc_and_refuses_scaled_input():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    out = data.preprocess(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, x.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        data.preprocess(out / 255)
    with pytest.raises(ValueError, match="NHWC"):
        data.preprocess(np.zeros((2, 3, 8, 8), np.uint8))


def test_splits_are_disjoint_stratified_and_slice_comes_from_train_only(digits):
    splits = data.make_splits(digits, 0.1, 15, seed=0)
    assert not set(splits["train"]) & set(splits["val"])
    assert set(splits["calibration"]) <= set(splits["train"])
    counts = data.verify_distribution(digits.train_labels[splits["calibration"]], digits.class_names)
    assert set(counts.values()) == {15}
    val_share = np.bincount(digits.train_labels[splits["val"]]) / np.bincount(digits.train_labels)
    assert np.all(np.abs(val_share - 0.1) < 0.05)


def test_val_from_the_test_split_keeps_test_and_val_disjoint(digits):
    splits = data.make_splits(digits, 0.5, 15, seed=0, val_source="test")
    assert not set(splits["val"]) & set(splits["test"])
    assert len(splits["val"]) + len(splits["test"]) == len(digits.test_labels)
    assert len(splits["train"]) == len(digits.train_labels)
    val_x, val_y = data.split_data(digits, splits, "val")
    np.testing.assert_array_equal(val_x, digits.test_images[splits["val"]])
    np.testing.assert_array_equal(val_y, digits.test_labels[splits["val"]])
    with pytest.raises(ValueError, match="val_source must be one of train, test"):
        data.make_splits(digits, 0.5, 15, seed=0, val_source="holdout")


def test_slice_is_deterministic_and_hash_tracks_indices_and_pixels(digits):
    a = data.make_splits(digits, 0.1, 10, seed=0)["calibration"]
    b = data.make_splits(digits, 0.1, 10, seed=0)["calibration"]
    c = data.make_splits(digits, 0.1, 10, seed=1)["calibration"]
    np.testing.assert_array_equal(a, b)
    assert data.slice_hash(a, digits.train_images) == data.slice_hash(b, digits.train_images)
    assert data.slice_hash(a, digits.train_images) != data.slice_hash(c, digits.train_images)
    altered = digits.train_images.copy()
    altered[a[0], 0, 0, 0] ^= 1
    assert data.slice_hash(a, altered) != data.slice_hash(a, digits.train_images)


def test_too_many_samples_per_class_says_how_many_exist(digits):
    with pytest.raises(ValueError, match=r"class '\d' has only \d+ training samples; lower samples_per_class"):
        data.make_splits(digits, 0.1, 1000, seed=0)


def write_fake_cifar(root, n=20, corrupt=None):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in data.CIFAR_FILES[:-1]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        if corrupt == "shape" and name == "data_batch_2":
            batch["data"] = batch["data"][:, :100]
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    return root


def test_cifar_adapter_reads_channel_planar_batches(tmp_path):
    root = write_fake_cifar(tmp_path / "cifar")
    raw = pickle.loads((root / "data_batch_1").read_bytes())["data"]
    ds = data.load_dataset("cifar10", root)
    assert ds.train_images.shape == (100, 32, 32, 3) and ds.test_images.shape == (20, 32, 32, 3)
    assert ds.train_images[0, 0, 0, 0] == raw[0, 0] and ds.train_images[0, 0, 0, 1] == raw[0, 1024]
    assert ds.class_names[3] == "c3"


def test_cifar_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*make_cifar10_batches"):
        data.load_dataset("cifar10", tmp_path / "nope")
    root = write_fake_cifar(tmp_path / "missing")
    (root / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        data.load_dataset("cifar10", root)
    root = write_fake_cifar(tmp_path / "truncated")
    (root / "test_batch").write_bytes((root / "test_batch").read_bytes()[:500])
    with pytest.raises(ValueError, match="test_batch is not a readable CIFAR-10 batch"):
        data.load_dataset("cifar10", root)
    root = write_fake_cifar(tmp_path / "shape", corrupt="shape")
    with pytest.raises(ValueError, match=r"data_batch_2: data must be uint8 \(N, 3072\)"):
        data.load_dataset("cifar10", root)
    with pytest.raises(ValueError, match="needs data_dir"):
        data.load_dataset("cifar10")


def test_cifar_unpickler_refuses_anything_but_arrays(tmp_path):
    root = write_fake_cifar(tmp_path / "evil")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        data.load_dataset("cifar10", root)


def test_real_cifar10_batches(cifar10_dir):
    ds = data.load_dataset("cifar10", cifar10_dir)
    assert ds.train_images.shape == (50000, 32, 32, 3) and ds.test_images.shape == (10000, 32, 32, 3)
    assert ds.class_names[0] == "airplane" and np.bincount(ds.test_labels).tolist() == [1000] * 10
    idx = data.make_splits(ds, 0.1, 100, seed=0)["calibration"]
    assert len(idx) == 1000


def test_data_cli_prints_the_slice_summary(cifar10_dir):
    out = subprocess.run(
        [sys.executable, "-m", "helpers.data", "--data-dir", str(cifar10_dir), "--samples-per-class", "100"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Loaded 1000 calibration samples" in out and "NHWC format confirmed" in out
    assert "airplane" in out and "shape: (1000, 32, 32, 3)" in out and "pixel range: [0, 255]" in out


def test_indices_out_of_range_or_not_integers_are_named_with_the_fix():
    assert data.check_indices(np.array([0, 4]), 5, "x", "fix").tolist() == [0, 4]
    with pytest.raises(ValueError, match=r"^s\.npz \(val\): indices span 2\.\.5 but there are 5 images; rerun$"):
        data.check_indices(np.array([2, 5]), 5, "s.npz (val)", "rerun")
    with pytest.raises(ValueError, match=r"span -1\.\.0"):
        data.check_indices(np.array([-1, 0]), 5, "x", "fix")
    with pytest.raises(ValueError, match=r"1-D integer array, got float64 \(2,\); fix"):
        data.check_indices(np.array([0.0, 1.0]), 5, "x", "fix")


def test_splits_of_another_dataset_are_refused(tmp_path):
    ds = data.load_dataset("digits")
    path = tmp_path / "splits.npz"
    np.savez(path, train=np.array([0, 10_000]), val=np.array([1]), test=np.array([2]))
    with pytest.raises(ValueError, match=r"\(train\): indices span 0\.\.10000 .*another dataset than digits"):
        data.load_splits(path, ds)


def test_verify_distribution_prints_the_per_class_table_and_names_an_empty_class(digits, capsys):
    labels = digits.train_labels[digits.train_labels != 3]  # no sample of class "3"
    counts = data.verify_distribution(labels, digits.class_names)
    out = capsys.readouterr().out
    assert counts == {name: int((labels == i).sum()) for i, name in enumerate(digits.class_names)}
    assert out.splitlines()[0].split() == ["class", "count", "share"] and len(out.splitlines()) == 12
    assert "no sample of: 3" in out


def test_load_calibration_data_is_the_stratified_training_slice_as_the_model_sees_it(cifar10_dir):
    images, labels, class_names = data.load_calibration_data(cifar10_dir, samples_per_class=10)
    ds = data.load_dataset("cifar10", cifar10_dir)
    chosen = data.stratified_slice(ds.train_labels, 10, 0, ds.class_names)
    assert images.dtype == np.float32 and images.shape == (100, 32, 32, 3) and images.max() <= 255
    np.testing.assert_array_equal(images, data.preprocess(ds.train_images[chosen]))
    assert np.bincount(labels).tolist() == [10] * 10 and class_names == ds.class_names
