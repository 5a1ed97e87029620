"""``calib verify`` and ``run_record.json``: every field that can be checked is checked, on copies of the
committed reference run (real files, no kernel; runs/reference itself is only read).

The record carries a sha256 over its own content (``run_record.SCHEMA``); a record written before that is
a legacy record (neither ``schema`` nor ``sha256``). Both are tested: a sealed record must report every
change of its content, a legacy record every change of a field that can be checked (its config against
its hash, each registry entry against its file, each phase row against its manifest and executed notebook).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.run import atomic, integrity, run_record
from helpers.run.integrity import COMPLETE, DAMAGED
from helpers.run.project import project_root

REFERENCE = project_root() / "runs" / "reference"
RECORD = run_record.FILENAME


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    """A copy of the reference run, its record as a calib-lab before the self-hash wrote it (no schema, no sha256)."""
    dest = tmp_path_factory.mktemp("legacy") / REFERENCE.name
    shutil.copytree(REFERENCE, dest)
    record = json.loads((dest / RECORD).read_text())
    record.pop("schema", None), record.pop("sha256", None)
    (dest / RECORD).write_text(atomic.dumps_json(record))
    return dest


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> Path:
    """A copy of the reference run whose record is re-saved as this version writes it (with its self-hash)."""
    dest = tmp_path_factory.mktemp("sealed") / REFERENCE.name
    shutil.copytree(REFERENCE, dest)
    run_record.save(dest, json.loads((dest / RECORD).read_text()))
    return dest


def verify(run_dir: Path) -> integrity.RunCheck:
    return integrity.check_run(run_dir)


def flipped(run_dir: Path, at: int, mask: int = 0x01):
    """Context: run_record.json with byte ``at`` XOR ``mask``, restored afterwards."""

    class Flip:
        def __enter__(self):
            self.original = (run_dir / RECORD).read_bytes()
            blob = bytearray(self.original)
            blob[at] ^= mask
            (run_dir / RECORD).write_bytes(bytes(blob))
            return bytes(blob)

        def __exit__(self, *exc):
            (run_dir / RECORD).write_bytes(self.original)

    return Flip()


def position(text: bytes, *anchors: str, then: str, offset: int = 0) -> int:
    """The byte position ``offset`` after ``then``, found after each anchor in turn."""
    at = 0
    for anchor in anchors:
        at = text.index(anchor.encode(), at) + len(anchor)
    return text.index(then.encode(), at) + len(then) + offset


# The campaign's six flips that verify passed, as (anchors, then, offset): a byte inside each field.
CAMPAIGN = {
    "registry sha256 of manifests/07_selective.json": (
        ('"artifacts"', '"manifests/07_selective.json"'),
        '"sha256": "',
        5,
    ),
    "registry sha256 of results/02_train/history.json": (
        ('"artifacts"', '"results/02_train/history.json"'),
        '"sha256": "',
        9,
    ),
    "registry sha256 of results/02b_adapt/shift_logits.npz": (
        ('"artifacts"', '"results/02b_adapt/shift_logits.npz"'),
        '"sha256": "',
        0,
    ),
    "a renamed size key": (('"artifacts"', '"results/01_data/splits.npz"'), '"siz', 0),  # "size" -> "sizd"
    "a renamed config key (adapt_images -> adapt^images)": (('"config"', '"02b_adapt"'), '"adapt', 0),
    "a phase row's input_key": (('"phases"', '"04_quantize"'), '"input_key": "', 20),
}


@pytest.mark.parametrize("case", sorted(CAMPAIGN))
@pytest.mark.parametrize("variant", ["legacy", "sealed"])
def test_the_campaigns_record_flips_are_damage(case, variant, request):
    run_dir = request.getfixturevalue(variant)
    assert verify(run_dir).exit_code == COMPLETE
    anchors, then, offset = CAMPAIGN[case]
    at = position((run_dir / RECORD).read_bytes(), *anchors, then=then, offset=offset)
    with flipped(run_dir, at) as blob:
        json.loads(blob)  # still valid JSON: only the checks can tell
        check = verify(run_dir)
        assert check.exit_code == DAMAGED, (case, check.damaged, check.incomplete)
        if variant == "sealed":
            assert any("run_record.json is damaged (its content hash does not match" in p for p in check.damaged)
    assert verify(run_dir).exit_code == COMPLETE


def test_the_field_checks_name_what_disagrees(legacy):
    """Without a self-hash (legacy record) each field check must say which field disagrees with what."""
    text = (legacy / RECORD).read_bytes()
    expected = {
        "registry sha256 of manifests/07_selective.json": "manifests/07_selective.json: differs from run_record.json's artifact registry",
        "registry sha256 of results/02_train/history.json": "results/02_train/history.json: differs from run_record.json's artifact registry",
        "a renamed size key": "results/01_data/splits.npz: run_record.json's artifact registry entry has no size",
        "a renamed config key (adapt_images -> adapt^images)": "its config does not hash to its config_hash",
        "a phase row's input_key": "04_quantize: run_record.json and manifests/04_quantize.json disagree on the input key",
    }
    for case, message in expected.items():
        anchors, then, offset = CAMPAIGN[case]
        with flipped(legacy, position(text, *anchors, then=then, offset=offset)):
            check = verify(legacy)
            assert any(message in p for p in check.damaged), (case, check.damaged)


def test_a_legacy_record_verifies_with_a_note_and_a_sealed_one_without(legacy, sealed):
    old, new = verify(legacy), verify(sealed)
    assert old.exit_code == new.exit_code == COMPLETE
    assert any("legacy" in n and "not self-checked" in n for n in old.notes), old.notes
    assert not any("legacy" in n for n in new.notes)
    record = json.loads((sealed / RECORD).read_text())
    assert record["schema"] == run_record.SCHEMA and len(record["sha256"]) == 64
    assert "schema" not in json.loads((legacy / RECORD).read_text())


def test_removing_the_self_hash_of_a_sealed_record_is_damage(sealed):
    """A sealed record cannot pass for a legacy one: it says its schema, and the schema wants the hash."""
    original = (sealed / RECORD).read_bytes()
    try:
        record = json.loads(original)
        del record["sha256"]
        (sealed / RECORD).write_text(json.dumps(record))
        check = verify(sealed)
        assert check.exit_code == DAMAGED and any("no sha256" in p for p in check.damaged), check.damaged
    finally:
        (sealed / RECORD).write_bytes(original)


def test_rows_must_cover_the_config_and_an_unknown_status_is_damage(legacy):
    original = (legacy / RECORD).read_bytes()
    try:
        for edit, message in [
            (lambda r: r["phases"].pop("06_confidence"), "no row for phase 06_confidence"),
            (lambda r: r.update(status="complfte"), "unknown run status 'complfte'"),
            (lambda r: r["phases"]["01_data"].update(status="complftd"), "01_data: unknown status 'complftd'"),
            (lambda r: r.pop("artifacts"), "no 'artifacts'"),
        ]:
            record = json.loads(original)
            edit(record)
            (legacy / RECORD).write_text(json.dumps(record, indent=2))
            check = verify(legacy)
            assert check.exit_code == DAMAGED and any(message in p for p in check.damaged), (message, check.damaged)
            (legacy / RECORD).write_bytes(original)
    finally:
        (legacy / RECORD).write_bytes(original)


# ------------------------------------------------------------------------------------------ the property test
#
# Every byte position of run_record.json gets a class: (the field it belongs to, with the names of runs'
# artifacts, phases and parameters, list indices and what a phase's summary holds generalized, and the
# token it is part of). Within each class the first,
# middle and last positions are flipped with each of the 8 single-bit masks. A flip that leaves invalid
# JSON is not a question for verify (the reader reports it). Every other flip must be reported DAMAGED,
# or provably change nothing verify checks: the parsed record is equal (sealed and legacy), or -- legacy
# only, which has no self-hash -- every difference lies in a field the record keeps for information
# (run_record.INFORMATIONAL: times, hosts, versions, git states, why a phase ran) or is an unknown key
# added beside the record's fixed fields.

DATA_KEYED = {("artifacts",), ("phases",), ("config",)}  # maps whose keys are data (a path, a phase id)


def _general(path: tuple) -> tuple:
    out = []
    for i, key in enumerate(path):
        parent = tuple(path[:i])
        data_keyed = tuple(out) in DATA_KEYED or (len(parent) == 2 and parent[0] == "config")
        in_summary = len(parent) >= 3 and parent[0] == "phases" and parent[2] == "summary"
        out.append("#" if isinstance(key, int) else "*" if data_keyed or in_summary else key)
    return tuple(out)


class _Scanner:
    """Byte position -> (generalized field path, token kind) for canonical JSON (ASCII, indent 2)."""

    def __init__(self, text: bytes):
        self.text, self.at, self.kinds = text, 0, [None] * len(text)

    def mark(self, start: int, end: int, path: tuple, kind: str) -> None:
        for i in range(start, end):
            self.kinds[i] = (_general(path), kind)

    def space(self, path: tuple) -> None:
        start = self.at
        while self.at < len(self.text) and self.text[self.at] in b" \n\t\r":
            self.at += 1
        self.mark(start, self.at, path, "whitespace")

    def string(self) -> tuple[str, int, int]:
        start = self.at
        self.at += 1
        while self.text[self.at] != ord('"'):
            self.at += 2 if self.text[self.at] == ord("\\") else 1
        self.at += 1
        return json.loads(self.text[start : self.at]), start, self.at

    def value(self, path: tuple) -> None:
        self.space(path)
        c = self.text[self.at : self.at + 1]
        if c in (b"{", b"["):
            close = b"}" if c == b"{" else b"]"
            self.mark(self.at, self.at + 1, path, "structure")
            self.at += 1
            index = 0
            while True:
                self.space(path)
                if self.text[self.at : self.at + 1] == close:
                    self.mark(self.at, self.at + 1, path, "structure")
                    self.at += 1
                    return
                if c == b"{":
                    key, start, end = self.string()
                    self.mark(start, start + 1, path + (key,), "key quote")
                    self.mark(start + 1, end - 1, path + (key,), "key")
                    self.mark(end - 1, end, path + (key,), "key quote")
                    self.space(path + (key,))
                    self.mark(self.at, self.at + 1, path + (key,), "structure")  # ':'
                    self.at += 1
                    child = path + (key,)
                else:
                    child = path + (index,)
                self.value(child)
                index += 1
                self.space(path)
                if self.text[self.at : self.at + 1] == b",":
                    self.mark(self.at, self.at + 1, path, "structure")
                    self.at += 1
        elif c == b'"':
            _, start, end = self.string()
            self.mark(start, start + 1, path, "string quote")
            self.mark(start + 1, end - 1, path, "string")
            self.mark(end - 1, end, path, "string quote")
        else:
            start = self.at
            while self.at < len(self.text) and self.text[self.at] not in b",}] \n":
                self.at += 1
            self.mark(start, self.at, path, "literal" if c in b"tfn" else "number")


def byte_classes(text: bytes) -> dict[tuple, list[int]]:
    scanner = _Scanner(text)
    scanner.value(())
    scanner.space(())
    classes: dict[tuple, list[int]] = {}
    for i, kind in enumerate(scanner.kinds):
        classes.setdefault(kind, []).append(i)
    assert None not in classes, "every byte has a class"
    return classes


def differences(a, b, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(path, how) for every difference between two parsed documents: 'changed', 'removed', 'added'."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in a.keys() | b.keys():
            if key not in b:
                out.append((path + (key,), "removed"))
            elif key not in a:
                out.append((path + (key,), "added"))
            else:
                out += differences(a[key], b[key], path + (key,))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, path + (i,))]
    return [] if a == b and type(a) is type(b) else [(path, "changed")]


def informational(path: tuple) -> bool:
    """Whether a field is kept for information only (never checked): run_record.INFORMATIONAL."""
    if path[0] in run_record.INFORMATIONAL:
        return True
    return len(path) >= 3 and path[0] == "phases" and path[2] in run_record.INFORMATIONAL_ROW


def inert(original: dict, changed: dict) -> bool:
    """Provably nothing verify checks changed (see above; legacy records)."""
    for path, how in differences(original, changed):
        fixed_schema = _general(path[:-1]) not in DATA_KEYED and not (len(path) == 3 and path[0] == "config")
        if how == "added" and fixed_schema:
            continue  # an unknown key beside the fixed fields: nothing reads it
        if not informational(path):
            return False
    return True


def samples(positions: list[int]) -> list[int]:
    return sorted({positions[0], positions[len(positions) // 2], positions[-1]})


# every flip of a legacy record is slow-marked (~40 s): CI keeps the sealed record (what every run now
# writes) and the legacy record's field checks above
@pytest.mark.parametrize("variant", ["sealed", pytest.param("legacy", marks=pytest.mark.slow)])
def test_every_json_preserving_flip_of_the_record_is_damage_or_provably_inert(variant, request):
    run_dir = request.getfixturevalue(variant)
    text = (run_dir / RECORD).read_bytes()
    original = json.loads(text)
    classes = byte_classes(text)
    figures = {"classes": len(classes), "flips": 0, "invalid JSON": 0, "damaged": 0, "inert": 0}
    escaped = []
    for kind, positions in sorted(classes.items(), key=str):
        for at in samples(positions):
            for bit in range(8):
                figures["flips"] += 1
                with flipped(run_dir, at, 1 << bit) as blob:
                    try:
                        changed = json.loads(blob)
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        figures["invalid JSON"] += 1
                        continue
                    exit_code = verify(run_dir).exit_code
                if exit_code == DAMAGED:
                    figures["damaged"] += 1
                elif changed == original or (variant == "legacy" and inert(original, changed)):
                    figures["inert"] += 1
                else:
                    escaped.append((kind, at, 1 << bit, blob[max(0, at - 30) : at + 30], exit_code))
    print(f"{variant}: {figures}")
    assert not escaped, f"{len(escaped)} flip(s) passed verify: {escaped[:5]}"
    assert figures["classes"] > 200 and figures["damaged"] > 500  # the flips reached every class
    assert verify(run_dir).exit_code == COMPLETE
