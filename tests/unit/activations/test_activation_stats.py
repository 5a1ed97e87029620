"""helpers.activations.stats: streaming moments vs numpy, clamp, NaN naming, rates, inference-only, determinism."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from helpers.activations import stats as activation_stats
from helpers.activations.stats import (
    MODEL_ROLES,
    STATS_FILE,
    TARGETS_FILE,
    Batch,
    _spike_threshold,
    check_params,
    collect_activation_stats,
    default_layers,
    image_activation_stats,
    init_model,
    plot_rates,
    plot_sigma,
    plot_sigma_by_role,
    resolve_role,
    role_models,
    save_stats,
    stats_table,
)
from helpers.data.datasets import load_dataset, preprocess, slice_hash
from helpers.run import atomic

UNEVEN = (7, 1, 13, 5, 2)


def call_model(model, x):
    return model(x)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.train_images, np.arange(3, 3 + sum(UNEVEN) * 4, 2)  # 116 samples, a strided slice


def captured_outputs(model, layers, inputs_per_batch):
    """Reference: every declared layer's outputs, batch by batch, from a plain forward with our own hooks."""
    model.eval()
    modules = dict(model.named_modules())
    seen = {name: [] for name in layers}
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: seen[n].append(o.detach().clone())) for n in layers
    ]
    with torch.no_grad():
        for x in inputs_per_batch:
            model(x)
    for h in handles:
        h.remove()
    return seen


def as_rows(outputs, valids=None):
    """Concatenate batch outputs into float64 [observations, units] (channels of 4-D outputs)."""
    rows = []
    for i, o in enumerate(outputs):
        o = o.movedim(1, -1) if o.ndim == 4 else o
        o = o if valids is None else o[valids[i]]
        rows.append(o.reshape(-1, o.shape[-1]).double().numpy())
    return np.concatenate(rows)


def reference_rates(rows, theta, eps=1e-6):
    mu, sd = rows.mean(0), np.maximum(rows.std(0), eps)
    return {"zscore": float(((rows - mu) / sd > theta).mean()), "positive": float((rows > 0).mean())}


def test_streaming_moments_match_numpy_conv_and_linear(digits):
    images, idx = digits
    torch.manual_seed(0)
    model = init_model("digits_cnn", 10, seed=0)
    layers = ["features.2", "features.6", "features.9", "fc"]  # conv-block ReLUs [N,C,H,W] and the logits [N,10]
    stats = image_activation_stats(model, layers, images, idx, role="init", batch_size=37)  # 116 = 37+37+37+5
    batches = [torch.from_numpy(preprocess(images[idx[s : s + 37]])) for s in range(0, len(idx), 37)]
    seen = captured_outputs(model, layers, batches)
    for l, name in enumerate(layers):
        rows = as_rows(seen[name])
        w = stats.widths[l]
        assert w == rows.shape[1] and stats.sample_counts[l] == rows.shape[0]
        np.testing.assert_allclose(stats.mu[l, :w], rows.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stats.sigma[l, :w], np.maximum(rows.std(0), stats.eps), rtol=1e-10, atol=1e-12)
        assert not stats.mask[l, w:].any() and stats.mask[l, :w].all()
        assert (stats.mu[l, w:] == 0).all() and (stats.sigma[l, w:] == 0).all()
        expected = reference_rates(rows, stats.theta)
        assert stats.r_star["positive"][l] == pytest.approx(expected["positive"], abs=1e-12)
        assert stats.r_star["zscore"][l] == pytest.approx(expected["zscore"], abs=2 / rows.size)
    assert stats.slice_sha256 == slice_hash(idx, images)
    assert stats.mu.dtype == stats.sigma.dtype == np.float64


@pytest.mark.parametrize("chunk_elements", [None, 50])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_conv_outputs_in_either_memory_format(memory_format, chunk_elements, monkeypatch):
    """Channels-last and NCHW conv outputs, reduced whole or in many small pieces, give numpy's statistics."""
    if chunk_elements:
        monkeypatch.setattr(activation_stats, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU()).to(memory_format=memory_format).eval()
    inputs = [torch.randn(n, 3, 6, 7).contiguous(memory_format=memory_format) for n in UNEVEN]
    seen = captured_outputs(model, ["1", "2"], inputs)
    assert seen["1"][0].is_contiguous(memory_format=memory_format)
    stats = collect_activation_stats(
        model, ["1", "2"], [Batch(x) for x in inputs], call_model, role="t", slice_sha256="x"
    )
    for l, name in enumerate(["1", "2"]):
        rows = as_rows(seen[name])
        np.testing.assert_allclose(stats.mu[l], rows.mean(0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(stats.sigma[l], rows.std(0), rtol=1e-10)
        expected = reference_rates(rows, stats.theta)
        assert stats.r_star["positive"][l] == expected["positive"]
        assert stats.r_star["zscore"][l] == pytest.approx(expected["zscore"], abs=2 / rows.size)


class Offset(nn.Module):
    """A linear layer whose outputs sit near 1e4 with unit spread: float32 sum-of-squares would lose them."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.lin(x) + 1e4)


def test_streaming_moments_are_stable_far_from_zero_with_uneven_batches():
    torch.manual_seed(1)
    model = Offset().eval()
    inputs = [torch.randn(n, 4) for n in UNEVEN]
    stats = collect_activation_stats(
        model, ["act"], [Batch(x) for x in inputs], call_model, role="test", slice_sha256="x"
    )
    rows = as_rows(captured_outputs(model, ["act"], inputs)["act"])
    np.testing.assert_allclose(stats.mu[0], rows.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.sigma[0], rows.std(0), rtol=1e-9)


def test_float64_activations_are_not_modified_by_the_hooks():
    """Layer "1" sees layer "0"'s output tensor itself: an in-place reduction on it would show in "1"."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Identity()).double().eval()
    inputs = [torch.randn(n, 3, dtype=torch.float64) for n in UNEVEN]
    stats = collect_activation_stats(
        model, ["0", "1"], [Batch(x) for x in inputs], call_model, role="t", slice_sha256="x"
    )
    rows = as_rows(captured_outputs(model, ["0"], inputs)["0"])
    np.testing.assert_allclose(stats.mu, [rows.mean(0)] * 2, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, [rows.std(0)] * 2, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_zscore_threshold_in_the_activation_dtype_is_exact(dtype):
    """a > round_down(mu + theta*sigma) in a's dtype agrees with (a - mu)/sigma > theta in float64, at the edge."""
    rng = np.random.default_rng(0)
    mu = torch.from_numpy(rng.normal(size=2000) * 10)
    sigma = torch.from_numpy(rng.uniform(1e-3, 5, size=2000))
    nearest = (mu + 0.7 * sigma).to(dtype)
    edge = torch.stack([nearest, torch.nextafter(nearest, nearest + 1), torch.nextafter(nearest, nearest - 1)])
    expected = (edge.double() - mu) / sigma > 0.7
    assert torch.equal(edge > _spike_threshold(mu, sigma, 0.7, dtype), expected)
    assert 0 < int(expected.sum()) < expected.numel()


class Tokens(nn.Module):
    """[N, T, 3] token features -> MLP hidden units [N, T, 5], like a transformer's intermediate layer."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(3, 5)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.up(x))


def test_mask_excludes_padding_positions():
    torch.manual_seed(2)
    model = Tokens().eval()
    lengths = [[3, 7, 1], [5, 5], [2, 6, 4, 7]]
    inputs, valids = [], []
    for batch in lengths:
        x = torch.randn(len(batch), 7, 3)
        valid = torch.arange(7)[None, :] < torch.tensor(batch)[:, None]
        x[~valid] = 50.0  # padding positions carry huge values that would dominate if counted
        inputs.append(x)
        valids.append(valid)
    stats = collect_activation_stats(
        model, ["act"], [Batch(x, v) for x, v in zip(inputs, valids)], call_model, role="test", slice_sha256="x"
    )
    rows = as_rows(captured_outputs(model, ["act"], inputs)["act"], valids)
    assert stats.sample_counts[0] == sum(map(sum, lengths)) == rows.shape[0]
    np.testing.assert_allclose(stats.mu[0], rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma[0], rows.std(0), rtol=1e-10)
    assert stats.r_star["zscore"][0] == pytest.approx(reference_rates(rows, 1.0)["zscore"])


def test_mask_with_wrong_shape_is_rejected():
    model = Tokens().eval()
    with pytest.raises(ValueError, match="mask shape"):
        collect_activation_stats(
            model,
            ["act"],
            [Batch(torch.randn(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))],
            call_model,
            role="test",
            slice_sha256="x",
        )


def test_clamp_raises_sigma_to_eps_and_counts_units():
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight[:2] = 0.0  # units 0 and 1 are constant (their bias)
    model = nn.Sequential(lin).eval()
    x = [torch.randn(n, 3) for n in UNEVEN]
    stats = collect_activation_stats(
        model, ["0"], [Batch(v) for v in x], call_model, role="t", slice_sha256="x", eps=1e-3
    )
    assert stats.clamp_counts.tolist() == [2]
    np.testing.assert_array_equal(stats.sigma[0, :2], [1e-3, 1e-3])
    np.testing.assert_allclose(stats.mu[0, :2], lin.bias[:2].detach().double().numpy(), rtol=1e-6)
    assert (stats.sigma[0, 2:] > 1e-3).all()


def test_nan_and_inf_fail_naming_the_layer():
    class LogAfter(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Identity()
            self.b = nn.Identity()

        def forward(self, x):
            return self.b(torch.log(self.a(x)))

    x = torch.rand(6, 4) + 0.5
    x[1, 2], x[4, 0], x[5, 3] = -1.0, -2.0, 0.0  # two NaN, one -Inf after log
    with pytest.raises(ValueError, match=r"'b': 2 NaN, 1 Inf") as err:
        collect_activation_stats(
            LogAfter(), ["a", "b"], [Batch(x[:4]), Batch(x[4:])], call_model, role="t", slice_sha256="x"
        )
    assert "'a'" not in str(err.value)


def test_rates_on_hand_built_activations():
    unit0 = [0, 0, 0, 0, 0, 0, 0, 4]  # mu 0.5, sigma sqrt(14/8): only the 4 has z > 1; one value > 0
    unit1 = [-1, 1, -1, 1, -1, 1, -1, 1]  # mu 0, sigma 1: z = +-1, never > 1 (strict); four values > 0
    acts = torch.tensor([unit0, unit1], dtype=torch.float32).T
    batches = [Batch(acts[:3]), Batch(acts[3:4]), Batch(acts[4:])]
    model = nn.Sequential(nn.Identity())
    stats = collect_activation_stats(model, ["0"], batches, call_model, role="t", slice_sha256="x")
    assert stats.r_star["zscore"][0] == 1 / 16
    assert stats.r_star["positive"][0] == 5 / 16
    np.testing.assert_allclose(stats.sigma[0, :2], [np.sqrt(14 / 8), 1.0], rtol=1e-15)
    half = collect_activation_stats(model, ["0"], batches, call_model, role="t", slice_sha256="x", theta=0.5)
    assert half.r_star["zscore"][0] == 5 / 16  # now unit1's four +1 values count too


class SelfTraining(nn.Module):
    """A forward that forces its BatchNorm into train mode: running stats change during inference."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        self.bn.train()
        return self.bn(self.conv(x))


def test_model_in_train_mode_is_run_in_eval_and_left_unchanged():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [Batch(torch.randn(4, 2, 3, 3) + 5.0) for _ in range(3)]
    collect_activation_stats(model, ["1", "2"], batches, call_model, role="t", slice_sha256="x")
    assert model.training  # the caller's mode is restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        model(batches[0].inputs)  # the same forward in train mode does move the running stats
    assert not torch.equal(model.state_dict()["1.running_mean"], before["1.running_mean"])


def test_forward_that_mutates_state_fails():
    batches = [Batch(torch.randn(4, 2, 3, 3) + 5.0)]
    with pytest.raises(RuntimeError, match=r"bn\.running_mean"):
        collect_activation_stats(SelfTraining(), ["bn"], batches, call_model, role="t", slice_sha256="x")


def test_outputs_are_deterministic_and_complete(digits, tmp_path):
    images, idx = digits
    paths = []
    for run in ("a", "b"):
        model = init_model("digits_cnn", 10, seed=3)
        stats = image_activation_stats(model, ["features.2", "fc"], images, idx, role="init", batch_size=50)
        paths.append(save_stats(stats, tmp_path / run))
    (npz_path, json_path), (npz_again, json_again) = paths
    assert atomic.sha256_file(npz_path) == atomic.sha256_file(npz_again)
    assert atomic.sha256_file(json_path) == atomic.sha256_file(json_again)
    assert npz_path.name == STATS_FILE and json_path.name == TARGETS_FILE
    arrays = np.load(npz_path)
    assert sorted(arrays.files) == sorted(
        ["mu", "sigma", "mask", "widths", "layer_names", "sample_counts", "eps", "clamp_counts"]
    )
    np.testing.assert_array_equal(arrays["mu"], stats.mu)
    assert arrays["layer_names"].tolist() == ["features.2", "fc"]
    targets = json.loads(json_path.read_text())
    assert targets["role"] == "init" and targets["slice_sha256"] == slice_hash(idx, images)
    assert targets["r_star"]["zscore"] == stats.r_star["zscore"].tolist()
    assert targets["theta"] == 1.0 and targets["eps"] == 1e-6


def test_init_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = (init_model("digits_cnn", 10, seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.rand(1), expected_next)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.state_dict()["fc.weight"], c.state_dict()["fc.weight"])
    assert not a.training


def test_bad_input_is_rejected_before_work(digits):
    images, idx = digits
    model = init_model("digits_cnn", 10, seed=0)
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['nope'\].*features\.2"):
        image_activation_stats(model, ["nope"], images, idx, role="init")
    with pytest.raises(ValueError, match="empty calibration slice: use"):
        image_activation_stats(model, ["fc"], images, idx[:0], role="init")
    with pytest.raises(ValueError, match=r"calibration slice: indices must be a 1-D integer array, got int64 \(\)"):
        image_activation_stats(model, ["fc"], images, idx[0], role="init")
    with pytest.raises(ValueError, match="empty calibration slice"):
        collect_activation_stats(model, ["fc"], [], call_model, role="init", slice_sha256="x")
    with pytest.raises(ValueError, match="uint8"):
        image_activation_stats(model, ["fc"], images.astype(np.float32), idx, role="init")
    with pytest.raises(ValueError, match="eps"):
        image_activation_stats(model, ["fc"], images, idx, role="init", eps=0.0)
    with pytest.raises(ValueError, match="model missing"):
        image_activation_stats(None, ["fc"], images, idx, role="init")
    with pytest.raises(ValueError, match="unknown role 'best'; declared roles: init, trained"):
        resolve_role({"trained": model, "init": model}, "best")
    with pytest.raises(ValueError, match="model missing for role 'trained'"):
        resolve_role({"trained": None, "init": model}, "trained")
    assert resolve_role({"init": model}, "init") is model


def test_figures_show_both_definitions_and_roles(digits):
    images, idx = digits
    by_role = {
        role: image_activation_stats(init_model("digits_cnn", 10, seed=s), ["features.2", "fc"], images, idx, role=role)
        for role, s in (("trained", 1), ("init", 2))
    }
    fig = plot_rates(by_role)
    assert len(fig.axes) == 2 and all(len(ax.patches) == 4 for ax in fig.axes)  # 2 layers x 2 roles each
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["trained", "init"]
    sigma_fig = plot_sigma(by_role["init"])
    assert [t.get_text() for t in sigma_fig.axes[0].get_xticklabels()] == ["features.2", "fc"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("digits_cnn", ["features.1", "features.4", "features.8"]),
        (
            "resnet8",
            ["bn", "stacks.0.bn1", "stacks.0.bn2", "stacks.1.bn1", "stacks.1.bn2", "stacks.2.bn1", "stacks.2.bn2"],
        ),
        ("mlp", ["layers.1", "layers.3"]),
    ],
)
def test_default_layers_are_the_pre_activations(name, expected):
    model = init_model(name, 10, seed=0)
    assert default_layers(model) == expected
    modules = dict(model.named_modules())
    assert all(type(modules[n]) in (nn.BatchNorm2d, nn.Linear) for n in expected)
    with pytest.raises(ValueError, match="declare the layers to hook"):
        default_layers(nn.Sequential(nn.Linear(3, 2)))


def test_role_models_pair_base_and_adapted_and_rebuild_the_spec_untrained_and_seeded():
    from helpers.models import artifact as model_artifact

    spec = model_artifact.spec("resnet8", 10, (32, 32, 3), widths=[8, 16, 32], input_scale=1.0)
    base, adapted = model_artifact.build(spec), model_artifact.build(spec)
    models = role_models(base, adapted, spec, seed=4)
    assert list(models) == list(MODEL_ROLES) == ["base", "adapted", "init"]
    assert models["base"] is base and models["adapted"] is adapted
    init = models["init"]
    assert init.stacks[2].conv2.out_channels == 32 and float(init.input_scale.factor) == 1.0
    again = role_models(base, adapted, spec, seed=4)["init"]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in init.state_dict().items())
    assert not torch.equal(init.fc.weight, role_models(base, adapted, spec, seed=5)["init"].fc.weight)


PHASE_PARAMS = {
    "model_roles": ["base", "adapted"],
    "layers": [],
    "eps": 1e-6,
    "theta": 1.0,
    "stats_batch_size": 256,
    "transformer_sentences": 0,
}


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"model_roles": ["base", "best"]},
            r"unknown model role\(s\) \['best'\]; declared roles: 'base', 'adapted', 'init'",
        ),
        ({"model_roles": []}, "non-empty list of distinct roles"),
        ({"model_roles": ["init", "init"]}, "non-empty list of distinct roles"),
        ({"layers": "fc"}, "list of module names"),
        ({"eps": 0.0}, "eps must be a finite float > 0"),
        ({"theta": float("nan")}, "theta must be a finite float"),
        ({"stats_batch_size": 0}, "stats_batch_size >= 1"),
        ({"transformer_sentences": -1}, "transformer_sentences >= 0"),
    ],
)
def test_phase_params_are_validated(override, message):
    check_params(PHASE_PARAMS)
    with pytest.raises(ValueError, match=message):
        check_params({**PHASE_PARAMS, **override})


def test_sigma_panels_and_table_per_role(digits):
    images, idx = digits
    by_role = {
        role: image_activation_stats(init_model("digits_cnn", 10, seed=s), ["features.1", "fc"], images, idx, role=role)
        for role, s in (("trained", 1), ("init", 2))
    }
    fig = plot_sigma_by_role(by_role)
    assert [ax.get_title() for ax in fig.axes] == ["sigma per layer (trained)", "sigma per layer (init)"]
    table = stats_table(by_role)
    assert table["layer"].tolist() == ["features.1", "fc"] and table["width"].tolist() == [16, 10]
    np.testing.assert_array_equal(table["r* positive (init)"], by_role["init"].r_star["positive"])
    np.testing.assert_array_equal(table["clamped (trained)"], by_role["trained"].clamp_counts)
    with pytest.raises(ValueError, match="same layers"):
        stats_table(
            {
                "a": by_role["init"],
                "b": image_activation_stats(init_model("digits_cnn", 10, seed=0), ["fc"], images, idx, role="b"),
            }
        )
