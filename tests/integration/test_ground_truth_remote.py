"""``calib ground-truth measure --scheduler ADDRESS --hardware NAME``: the measurement runs on the real
`dask worker` that advertises ``hw-NAME`` (here one on 127.0.0.1) and lands in the central store."""

from __future__ import annotations

import json

import pytest
import yaml

from cli_runner import calib
from dask_cluster import dask_cluster
from helpers.ground_truth.store import manifest_problems, read_measurement

pytestmark = pytest.mark.integration


@pytest.mark.slow  # a scheduler and a worker with a hardware resource: about 2 min
def test_measurements_run_on_the_worker_carrying_the_hardware_and_land_in_the_central_store(tmp_path):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "mlp_digits", "arch": "mlp", "input_shape": [8, 8, 1]}],
                "variants": ["fp32/onnxruntime"],
                "batch_sizes": [1, 4],
                "repeats": 5,
                "warmup": 2,
                "threads": 1,
            }
        )
    )
    store = tmp_path / "central"
    with dask_cluster(tmp_path, 1, resources="hw-board=1") as (address, _, client):
        (worker,) = client.scheduler_info(n_workers=-1)["workers"].values()
        measure = ("ground-truth", "measure", "--params", str(profile), "--store", str(store), "--scheduler", address)
        proc = calib(*measure, "--hardware", "board", "--no-progress")
        missing = calib(*measure, "--hardware", "other", "--no-progress", check=False)
    assert "stored 2 measurements" in proc.stdout
    (hardware_dir,) = [p for p in store.iterdir() if p.is_dir()]
    records = [read_measurement(p) for p in sorted(hardware_dir.glob("measurements/*/*.json"))]
    assert sorted(r.batch_size for r in records) == [1, 4] and {r.model for r in records} == {"mlp_digits"}
    assert {r.hardware_id for r in records} == {hardware_dir.name}
    assert manifest_problems(store, hardware_dir.name) == []
    assert json.loads((hardware_dir / "manifest.json").read_text())["summary"]["total_measurements"] == 2
    assert worker["resources"] == {"hw-board": 1}
    assert missing.returncode != 0 and '--resources "hw-other=1"' in missing.stderr
