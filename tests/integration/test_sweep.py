"""``calib sweep`` end to end: real papermill kernels on real Dask workers (LocalCluster, or a real
``dask scheduler`` + ``dask worker`` processes on 127.0.0.1), the phase cache, a killed worker, a
killed client and ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli_runner import calib
from dask_cluster import dask_cluster, signal_group
from helpers.run.project import project_root

pytestmark = pytest.mark.integration


def write_sweep(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def the_sweep(root: Path) -> tuple[Path, dict]:
    (directory,) = sorted((root / "sweeps").iterdir())
    return directory, json.loads((directory / "sweep.json").read_text())


def records(root: Path, doc: dict) -> dict[str, dict]:
    return {m["run_id"]: json.loads((root / m["run_id"] / "run_record.json").read_text()) for m in doc["members"]}


def assert_all_verify(root: Path, doc: dict) -> None:
    for member in doc["members"]:
        calib("verify", str(root / member["run_id"]))


def test_invalid_points_are_refused_before_any_run_is_created(tmp_path):
    root = tmp_path / "runs"
    sweep = write_sweep(tmp_path, {"grid": {"02_train.lr": [0.1, "fast"], "02_train.epochs": [1]}})
    proc = calib("sweep", str(sweep), "--phases", "02", "--runs-root", str(root), check=False)
    assert proc.returncode == 2 and "1 of 2 sweep point(s) are invalid; nothing was started" in proc.stderr
    assert "point 1 (02_train.lr=fast, 02_train.epochs=1)" in proc.stderr
    assert not root.exists() or not any(root.iterdir())


def test_every_parameter_option_of_calib_run_reaches_the_points_and_a_near_miss_is_suggested(tmp_path):
    """Issue 30.2: calib sweep took neither -f nor -y; its layers are calib run's, checked with every point."""
    root = tmp_path / "runs"
    sweep = write_sweep(tmp_path, {"seeds": [0, 1]})
    params = project_root() / "params"
    proc = calib("sweep", str(sweep), "-f", str(params / "cifar.yaml"), "--runs-root", str(root), check=False)
    assert proc.returncode == 2 and f"does not exist (did you mean {params / 'cifar10.yaml'}?)" in proc.stderr
    args = ["-y", "{02_train: {adapt_epochs: 2}}", "-p", "epochs", "1"]
    proc = calib("sweep", str(sweep), "--phases", "2", *args, "--runs-root", str(root), check=False)
    assert proc.returncode == 2 and "2 of 2 sweep point(s) are invalid" in proc.stderr, proc.stderr
    assert "phase 02_train in -y (did you mean 02b_adapt.adapt_epochs?)" in proc.stderr
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("field", ["run_id", "sweep_id"])
def test_a_member_id_or_sweep_id_that_escapes_the_runs_root_is_refused_on_resume(tmp_path, field):
    """Issue 29.2 for sweeps: sweep.json names the member runs; an edited one must not send a worker elsewhere."""
    from helpers.sweep import driver

    root = tmp_path / "a" / "runs"
    sweep = write_sweep(tmp_path, {"name": "names", "seeds": [0]})
    directory, doc = driver.create(str(sweep), [], [], "00", root, {"cell_timeout": None, "retries": 0}, log=print)
    target = doc["members"][0] if field == "run_id" else doc
    target[field] = "../../escape"
    (directory / "sweep.json").write_text(json.dumps(doc))
    before = sorted(tmp_path.rglob("*"))
    proc = calib("sweep", "--resume", str(directory), "--workers", "1", "--no-progress", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "'../../escape' is not a valid name: use 1-200 letters, digits" in proc.stderr, proc.stderr
    assert sorted(tmp_path.rglob("*")) == before, "nothing was created or changed"


def test_two_by_two_sweep_on_a_local_cluster_trains_on_one_data_phase(tmp_path):
    """2 x 2 over training params, 2 workers: 01 is executed once and hardlinked into the other three. The
    parameter options are calib run's (issue 30.2): -f, -y and -p in both spellings reach every member."""
    root = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path, {"name": "lr-batch", "grid": {"02_train.lr": [0.05, 0.1], "02_train.batch_size": [64, 128]}}
    )
    base = tmp_path / "base.yaml"
    base.write_text("01_data: {val_fraction: 0.2}\n")
    proc = calib(
        "sweep",
        str(sweep),
        "--phases",
        "2",
        "-f",
        str(base),
        "-y",
        "{02_train: {label_smoothing: 0.05}}",
        "-p",
        "02_train.epochs",
        "1",
        "--workers",
        "2",
        "--runs-root",
        str(root),
        "--no-progress",
    )
    assert "4 run(s) (grid 2 x 2 (02_train.lr, 02_train.batch_size))" in proc.stdout
    directory, doc = the_sweep(root)
    assert doc["status"] == "complete" and doc["engine"] == {"kind": "LocalCluster", "workers": 2}
    assert [m["status"] for m in doc["members"]] == ["complete"] * 4
    assert len({m["worker"] for m in doc["members"]}) == 2  # both workers took members
    budget = max(1, len(os.sched_getaffinity(0)) // 2)  # cores // workers: N workers on N cores, 1 thread each
    assert {m["threads"] for m in doc["members"]} == {budget}
    cpus = {m["worker"]: tuple(m["cpus"]) for m in doc["members"]}
    assert len(set(cpus.values())) == 2 and not set(cpus[min(cpus)]) & set(cpus[max(cpus)])  # pinned apart
    recs = records(root, doc)
    assert doc["param_files"] == [str(base)] and doc["yaml_layers"] == [{"02_train": {"label_smoothing": 0.05}}]
    for r in recs.values():
        assert r["config"]["01_data"]["val_fraction"] == 0.2
        assert (r["config"]["02_train"]["label_smoothing"], r["config"]["02_train"]["epochs"]) == (0.05, 1)
    data_rows = {rid: r["phases"]["01_data"] for rid, r in recs.items()}
    computed = [rid for rid, row in data_rows.items() if "reused_from" not in row]
    assert len(computed) == 1  # the shared upstream phase ran once ...
    for rid, row in data_rows.items():  # ... and the others carry its verified files, hardlinked
        if rid != computed[0]:
            assert row["reused_from"]["run"] in set(recs) - {rid} and row["reused_from"]["linked"] == 4
            assert (root / rid / "results/01_data/splits.npz").stat().st_ino == (
                root / computed[0] / "results/01_data/splits.npz"
            ).stat().st_ino
    assert all("reused_from" not in r["phases"]["02_train"] for r in recs.values())  # distinct params: trained
    assert len({r["phases"]["02_train"]["input_key"] for r in recs.values()}) == 4
    assert_all_verify(root, doc)

    csv = (directory / "sweep_results.csv").read_text().splitlines()
    assert csv[0].startswith("run,status,02_train.lr,02_train.batch_size,reused,")
    assert "02_train.test_accuracy" in csv[0] and len(csv) == 5
    page = (directory / "sweep_report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "02_train.test_accuracy vs 02_train.lr" in page
    assert "http://" not in page and "https://" not in page  # self-contained

    listing = calib("ls", "--runs-root", str(root)).stdout
    assert doc["sweep_id"] in listing and listing.count(doc["sweep_id"]) >= 5  # the sweep line and its members


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow  # a real scheduler + 2 workers, one killed: about 3 min of CI on 2 cores
def test_sweep_on_a_real_scheduler_survives_a_killed_worker(tmp_path):
    """2 x 2 on `dask scheduler` + 2 `dask worker`s; one worker is killed while a member is inside its
    second phase: Dask re-submits that member on the other worker, which resumes it from its manifests."""
    with dask_cluster(tmp_path, 2) as (address, workers, client):
        root = tmp_path / "runs"
        sweep = write_sweep(tmp_path, {"name": "remote", "grid": {"samples_per_class": [5, 10]}, "seeds": [0, 1]})
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "helpers.cli",
                "sweep",
                str(sweep),
                "--phases",
                "00,01",
                "--scheduler",
                address,
                "--runs-root",
                str(root),
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def member_in_second_phase():
            for rec_path in root.glob("remote-*/run_record.json"):
                rec = json.loads(rec_path.read_text())
                if rec["phases"]["01_data"].get("status") == "running":
                    return rec_path.parent.name
            return None

        victim_run = wait_for(member_in_second_phase, 300, "a member to be inside phase 01")
        processing = client.processing()
        victim_address = next(a for a, keys in processing.items() if f"calib-{victim_run}" in keys)
        victim_name = client.scheduler_info(n_workers=-1)["workers"][victim_address]["name"]
        victim = workers[int(victim_name[1:])]
        kill_time = time.time()
        signal_group(victim, signal.SIGKILL)  # the whole `dask worker` (nanny, worker, its kernel)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        directory, doc = the_sweep(root)
        assert doc["status"] == "complete" and doc["engine"]["kind"] == "external"
        assert all(m["status"] == "complete" for m in doc["members"])
        member = next(m for m in doc["members"] if m["run_id"] == victim_run)
        assert member["worker"] != victim_address
        # issue 29.7: the lost worker and the re-run are reported -- console, sweep.json, report
        assert f"worker {victim_address} lost while running {victim_run}" in out, out
        assert f"{victim_run}: complete" in out and f"after 1 retry (worker lost on {victim_address})" in out, out
        assert [(w["worker"], w["running"]) for w in doc["lost_workers"]] == [(victim_address, [victim_run])]
        assert [(r["reason"], r["worker"]) for r in member["retries"]] == [("worker lost", victim_address)]
        assert all(not m["retries"] for m in doc["members"] if m["run_id"] != victim_run)
        page = (directory / "sweep_report.html").read_text()
        assert f"lost workers: {victim_address} (running {victim_run})" in page
        assert member["phases"]["00_environment"] == "skipped"  # resumed from its manifests, not from zero
        assert member["phases"]["01_data"] == "ran"
        rec = json.loads((root / victim_run / "run_record.json").read_text())
        killed_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(kill_time))
        assert rec["phases"]["00_environment"]["finished"][:19] <= killed_at  # finished before the kill
        assert_all_verify(root, doc)
        budget = str(max(1, len(os.sched_getaffinity(0)) // 2))  # 2 workers on this host
        for m in doc["members"]:  # the kernels saw their thread budget (no CPU pinning on an external worker)
            env = json.loads((root / m["run_id"] / "results/00_environment/environment.json").read_text())
            assert env["threads"]["OMP_NUM_THREADS"] == budget and env["threads"]["torch_num_threads"] == int(budget)
            assert m["cpus"] is None


def test_a_member_that_raises_is_retried_and_every_retry_is_reported(tmp_path):
    """Issue 29.7: retries were silent. A member whose run another process executes raises RunLocked on every
    attempt: Dask retries it (--retries 1), the console, sweep.json and the report say so, and it fails."""
    from helpers.run.lock import run_lock

    root = tmp_path / "runs"
    sweep = write_sweep(tmp_path, {"name": "locked", "seeds": [0]})
    args = ["--workers", "1", "--no-progress"]
    calib("sweep", str(sweep), "--phases", "00", "--retries", "1", "--runs-root", str(root), *args)
    directory, doc = the_sweep(root)
    run_id = doc["members"][0]["run_id"]
    (root / run_id / "manifests/00_environment.json").unlink()  # incomplete again: --resume executes it
    with run_lock(root / run_id):  # another process executes this run
        proc = calib("sweep", "--resume", str(directory), *args, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{run_id} raised on tcp://" in proc.stdout and "RunLocked" in proc.stdout, proc.stdout
    assert "Dask retries it (retry 1 of 1)" in proc.stdout and "no retries left" in proc.stdout, proc.stdout
    assert f"{run_id}: failed after 1 retry (raised on tcp://" in proc.stdout, proc.stdout
    _, doc = the_sweep(root)
    (member,) = doc["members"]
    assert member["status"] == "failed" and "RunLocked" in member["error"]
    assert [r["reason"] for r in member["retries"]] == ["raised"] and "RunLocked" in member["retries"][0]["error"]
    page = (directory / "sweep_report.html").read_text()
    assert f"retried members: {run_id} (raised on tcp://" in page
    assert (directory / "sweep_results.csv").read_text().splitlines()[0].startswith("run,status,reused,retries")


@pytest.mark.slow  # kills the client mid-sweep, then resumes: about 2 min
def test_resume_after_the_client_is_killed_completes_only_unfinished_members(tmp_path):
    root = tmp_path / "runs"
    sweep = write_sweep(tmp_path, {"name": "seeds", "seeds": [0, 1, 2]})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "helpers.cli",
            "sweep",
            str(sweep),
            "--phases",
            "01",
            "--workers",
            "2",
            "--runs-root",
            str(root),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def one_complete():
        path = next(iter(root.glob("sweeps/*/sweep.json")), None)
        doc = json.loads(path.read_text()) if path else None
        return doc if doc and any(m["status"] == "complete" for m in doc["members"]) else None

    doc = wait_for(one_complete, 300, "a first member to complete")
    os.kill(proc.pid, signal.SIGKILL)  # the client only: its LocalCluster and kernels go down with it
    proc.wait()
    done_before = {m["run_id"] for m in doc["members"] if m["status"] == "complete"}
    assert len(done_before) < 3
    before = {rid: (root / rid / "run_record.json").read_bytes() for rid in done_before}
    directory, _ = the_sweep(root)
    out = calib("sweep", "--resume", str(directory), "--workers", "2", "--no-progress").stdout
    assert f"{3 - len(done_before)} of 3 run(s) to do" in out
    _, doc = the_sweep(root)
    assert doc["status"] == "complete" and all(m["status"] == "complete" for m in doc["members"])
    for rid, data in before.items():  # finished members were left alone
        assert (root / rid / "run_record.json").read_bytes() == data
    assert_all_verify(root, doc)
    again = calib("sweep", "--resume", str(directory), "--no-progress").stdout
    assert "every member is complete" in again
