import json
import zipfile

import numpy as np
import pytest

from helpers.run import atomic


def test_npz_is_byte_deterministic_and_round_trips(tmp_path):
    arrays = {"b": np.arange(10, dtype=np.int64), "a": np.eye(3, dtype=np.float32)}
    atomic.save_npz(tmp_path / "one.npz", **arrays)
    atomic.save_npz(tmp_path / "two.npz", **dict(reversed(list(arrays.items()))))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    loaded = np.load(tmp_path / "one.npz")
    for name, arr in arrays.items():
        np.testing.assert_array_equal(loaded[name], arr)
        assert loaded[name].dtype == arr.dtype


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="dtype=object"):
        atomic.save_npz(tmp_path / "x.npz", bad=np.array([{"a": 1}], dtype=object))
    assert not list(tmp_path.iterdir())


def test_failed_writer_leaves_destination_untouched_and_no_temp_file(tmp_path):
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"old")

    def crashing_writer(path):
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.save_with(dest, crashing_writer)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_json_is_canonical(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"b": np.float64(1.5), "a": [np.int64(2)]})
    text = (tmp_path / "a.json").read_text()
    assert text == '{\n  "a": [\n    2\n  ],\n  "b": 1.5\n}\n'
    with pytest.raises(ValueError):
        atomic.write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert json.loads(text) == {"a": [2], "b": 1.5}


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    atomic.write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    assert os.stat(tmp_path / "a.txt").st_mode == os.stat(tmp_path / "b.txt").st_mode


def test_read_json_returns_what_write_json_wrote(tmp_path):
    doc = {"b": [1, 2.5, None], "a": {"nested": "é"}}
    atomic.write_json(tmp_path / "doc.json", doc)
    assert atomic.read_json(tmp_path / "doc.json", "re-run 01_data") == doc


def test_read_json_names_the_file_and_the_fix_when_missing_or_broken(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gone\.json is missing: re-run 01_data$"):
        atomic.read_json(tmp_path / "gone.json", "re-run 01_data")
    (tmp_path / "broken.json").write_text('{"a": ')
    with pytest.raises(
        atomic.InvalidJSON, match=r"broken\.json is not valid JSON \(Expecting value.*\); re-run 01_data$"
    ) as caught:
        atomic.read_json(tmp_path / "broken.json", "re-run 01_data")
    assert caught.value.path == tmp_path / "broken.json" and caught.value.reason.startswith("Expecting value")
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match=r"latin1\.json is not valid JSON \('utf-8' codec can't decode"):
        atomic.read_json(tmp_path / "latin1.json", "re-run 01_data")


def test_readers_with_their_own_verdict_on_broken_json_keep_it(tmp_path):
    from helpers.run import manifest, notebook_file, run_record

    (tmp_path / run_record.FILENAME).write_text("{")
    with pytest.raises(
        run_record.RecordDamaged, match=r"run_record\.json is damaged \(Expecting .*\); `calib run --resume"
    ):
        run_record.parse(tmp_path)
    manifest.manifest_path(tmp_path, "01_data").parent.mkdir(parents=True)
    manifest.manifest_path(tmp_path, "01_data").write_text("{")
    assert manifest.read_manifest(tmp_path, "01_data")["corrupt"] is True
    (tmp_path / "nb.ipynb").write_text("{")
    with pytest.raises(ValueError, match=r"nb\.ipynb is not a Jupyter notebook \(nbformat 4\): Expecting"):
        notebook_file.code_cells(tmp_path / "nb.ipynb")
