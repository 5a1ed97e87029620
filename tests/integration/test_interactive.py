"""A notebook opened by hand (run_dir left empty) finds or creates its upstream phases in a scratch run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import papermill as pm

from helpers.run import manifest
from helpers.run.project import project_root


def execute_as_a_user(notebook: str, runs_root, out):
    """papermill with no parameters injected: exactly the notebook's own defaults, cwd notebooks/."""
    os.environ["CALIB_RUNS_ROOT"] = str(runs_root)
    try:
        pm.execute_notebook(
            str(project_root() / "notebooks" / notebook),
            str(out),
            kernel_name="python3",
            cwd=str(project_root() / "notebooks"),
            progress_bar=False,
        )
    finally:
        os.environ.pop("CALIB_RUNS_ROOT")


def test_notebook_with_defaults_builds_and_then_reuses_its_scratch_upstream(tmp_path):
    execute_as_a_user("02_train.ipynb", tmp_path / "runs", tmp_path / "first.ipynb")
    (scratch,) = (tmp_path / "runs").glob("scratch-*")
    record = json.loads((scratch / "run_record.json").read_text())
    assert {pid: row["status"] for pid, row in record["phases"].items()} == {
        "01_data": "complete",
        "02_train": "complete",
    }
    assert manifest.verify(scratch, "01_data") == [] and manifest.verify(scratch, "02_train") == []
    data_manifest = (scratch / "manifests/01_data.json").read_bytes()

    execute_as_a_user("02_train.ipynb", tmp_path / "runs", tmp_path / "second.ipynb")
    assert list((tmp_path / "runs").glob("scratch-*")) == [scratch]
    started = [json.loads(line) for line in (scratch / "logs/01_data.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "phase_started" for e in started) == 1, "the verified upstream phase is reused"
    assert (scratch / "manifests/01_data.json").read_bytes() == data_manifest

    # then 03 by hand: its scratch run is found by its upstream phases (01, 02), not by its own params
    train_manifest = (scratch / "manifests/02_train.json").read_bytes()
    execute_as_a_user("03_activation_stats.ipynb", tmp_path / "runs", tmp_path / "03.ipynb")
    assert list((tmp_path / "runs").glob("scratch-*")) == [scratch], "one scratch run for 02 and 03"
    for phase_id in ("02_train", "03_activation_stats"):  # where JupyterLab's saves of these notebooks go
        assert (tmp_path / "runs" / ".hand-run" / phase_id).read_text() == str(scratch)
    assert (scratch / "manifests/02_train.json").read_bytes() == train_manifest, "02 was reused, not re-run"
    record = json.loads((scratch / "run_record.json").read_text())
    assert {pid: row["status"] for pid, row in record["phases"].items()} == dict.fromkeys(
        ["01_data", "02_train", "02a_target", "02b_adapt", "03_activation_stats"], "complete"
    )
    assert record["status"] == "complete", "a scratch run whose phases all completed is not left running"
    assert "03_activation_stats" in (scratch / "config_resolved.yaml").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_save_of_a_hand_run_notebook_lands_in_its_scratch_run(tmp_path, monkeypatch):
    """A real Jupyter server with the hook `make install` configured: saving 00 (run by hand) copies it, outputs
    and all, into 00's scratch run; saving 01 (never run by hand) copies nothing."""
    from helpers.run import hand_run

    assert json.loads(hand_run.config_path().read_text())["FileContentsManager"]["post_save_hook"] == hand_run.HOOK, (
        "the Jupyter server hook is not configured: run `make install`"
    )
    project = tmp_path / "project"  # the server saves over source notebooks: a copy of the checkout's
    for name in ("notebooks", "params"):
        shutil.copytree(project_root() / name, project / name)
    shutil.copy(project_root() / "pyproject.toml", project)
    monkeypatch.setenv("CALIB_PROJECT_ROOT", str(project))
    execute_as_a_user("00_environment.ipynb", tmp_path / "runs", tmp_path / "executed.ipynb")
    (scratch,) = (tmp_path / "runs").glob("scratch-*")
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    assert any(cell.get("outputs") for cell in executed["cells"])

    port, token = free_port(), "calib-test"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}"]
        + [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={project}"],
        env={**os.environ, "CALIB_RUNS_ROOT": str(tmp_path / "runs")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def api(method: str, path: str, body: dict | None = None) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                api("GET", "status")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.5)
        notebook = {"type": "notebook", "format": "json", "content": executed}
        assert api("PUT", "contents/notebooks/00_environment.ipynb", notebook) == 200
        assert api("PUT", "contents/notebooks/01_data.ipynb", notebook) == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    copy = json.loads((scratch / "notebooks/00_environment.ipynb").read_text())
    assert [c.get("outputs") for c in copy["cells"]] == [c.get("outputs") for c in executed["cells"]]
    assert not (scratch / "notebooks/01_data.ipynb").exists()
