"""Text calibration slices: sentences from an offline corpus, sampled deterministically and hashed.

Owns the text counterpart of the image calibration slice:

* **Corpus.** By default the Python documentation that ships with the standard library
  (``pydoc_data.topics``, read in sorted topic order) -- real English prose present on every
  machine with no download. Or a user file: ``.jsonl`` (one JSON object per line with a
  ``"text"`` field, or a JSON string) or any other suffix read as UTF-8 plain text.
* **Sentences.** Text is cut into paragraphs at blank lines, each paragraph's whitespace is
  collapsed, and paragraphs are split after ``.``, ``!`` or ``?``. A sentence is kept when it
  starts with an uppercase letter, ends with ``.``/``!``/``?``, has ``MIN_WORDS``..``MAX_WORDS``
  words and holds no code or table markers (``>>>``, ``::=``, ``...``, ``|``); duplicates keep
  their first occurrence.
* **Slice.** ``n`` sentences drawn without replacement with ``numpy.random.default_rng(seed)``
  and kept in corpus order. Its hash is sha256 over each chosen sentence's UTF-8 bytes followed
  by a NUL byte, in order (a sentence holding a NUL is never kept).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CORPUS = "pydoc_data.topics"
MIN_WORDS, MAX_WORDS = 5, 60
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_REJECTED = (">>>", "::=", "...", "|", "\0")  # code, grammar and table markers; NUL (the hash separator)


@dataclass(frozen=True)
class TextSlice:
    """The chosen sentences (in order), their sha256, and where they came from."""

    sentences: tuple[str, ...]
    sha256: str
    source: str


def split_sentences(text: str) -> list[str]:
    """Prose sentences of ``text`` in order (rules in the module docstring), duplicates included."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            if _is_prose(sentence):
                sentences.append(sentence)
    return sentences


def _is_prose(sentence: str) -> bool:
    words = len(sentence.split())
    return (
        MIN_WORDS <= words <= MAX_WORDS
        and sentence[:1].isupper()
        and sentence[-1] in ".!?"
        and not any(marker in sentence for marker in _REJECTED)
    )


def _read_utf8(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(
            f"text corpus {path} does not exist; pass a UTF-8 .txt or .jsonl file, "
            f"or None for the default corpus ({DEFAULT_CORPUS})"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"text corpus {path} is not UTF-8 (invalid byte at offset {exc.start}); "
            "re-encode it as UTF-8 (e.g. iconv -t UTF-8)"
        ) from None
    if not text.strip():
        raise ValueError(f"text corpus {path} is empty; give a file with at least one sentence of text")
    return text


def _jsonl_texts(path: Path, text: str) -> list[str]:
    texts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}:{number}: not valid JSON ({exc.msg}); each line must be a JSON object "
                'with a "text" field, or a JSON string'
            ) from None
        value = record.get("text") if isinstance(record, dict) else record
        if not isinstance(value, str):
            raise ValueError(
                f'{path}:{number}: expected a JSON string or an object with a string "text" field, '
                f"got {type(record).__name__}{' keys ' + str(sorted(record)) if isinstance(record, dict) else ''}"
            )
        texts.append(value)
    return texts


def corpus_sentences(path: str | Path | None = None) -> list[str]:
    """Unique prose sentences of the default corpus (``path=None``) or of a user .txt/.jsonl file."""
    if path is None:
        from pydoc_data.topics import topics

        texts = [topics[name] for name in sorted(topics)]
    else:
        path = Path(path)
        text = _read_utf8(path)
        texts = _jsonl_texts(path, text) if path.suffix == ".jsonl" else [text]
    sentences = list(dict.fromkeys(s for t in texts for s in split_sentences(t)))
    if not sentences:
        raise ValueError(
            f"no sentences found in {path or DEFAULT_CORPUS}: a sentence starts with an uppercase "
            f"letter, ends with . ! or ?, and has {MIN_WORDS}..{MAX_WORDS} words"
        )
    return sentences


def sentences_sha256(sentences: Sequence[str]) -> str:
    """sha256 over each sentence's UTF-8 bytes plus a NUL terminator, in order."""
    h = hashlib.sha256()
    for sentence in sentences:
        h.update(sentence.encode("utf-8") + b"\0")
    return h.hexdigest()


def text_slice(n: int, seed: int = 0, path: str | Path | None = None) -> TextSlice:
    """``n`` sentences sampled without replacement (seeded), in corpus order, with their hash."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of sentences, got {n!r}")
    sentences = corpus_sentences(path)
    if n > len(sentences):
        raise ValueError(
            f"asked for {n} sentences but {path or DEFAULT_CORPUS} has only {len(sentences)}; "
            f"lower n to at most {len(sentences)} or give a larger corpus"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(sentences), size=int(n), replace=False))
    picked = tuple(sentences[i] for i in chosen)
    return TextSlice(picked, sentences_sha256(picked), str(path) if path is not None else DEFAULT_CORPUS)
