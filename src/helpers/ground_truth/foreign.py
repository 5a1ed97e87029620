"""Reading any writer's record file: v1.0 and foreign v2.0 documents normalized into this project's v2.0 record.

Owns what a file written by another tool (or an older version of this one) is read as:
:func:`normalize` turns a v1.0 or v2.0 document of any writer into a v2.0 document, appending every
change it makes to the document's ``normalization`` list (docs/ground_truth.md); :func:`infer_runtime`
says which runtime measured a file that does not name one, from what the file says, and ``unknown``
rather than a guess. :func:`read_record` reads a file, normalizes it, and checks its name against
its content (the file-name rule is ``layout.stem_parts``); :func:`read_measurement` is its record.
Where files lie is ``layout``'s; storing them is ``store``'s; copying them into a store is ``migration``'s.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from pathlib import Path

from helpers.ground_truth.layout import split_batch_suffix, stem_parts
from helpers.ground_truth.records import (
    RUNTIMES,
    SCHEMA_VERSION,
    UNKNOWN_RUNTIME,
    MeasurementRecord,
    ModelSummary,
    SchemaError,
    SubgraphMeasurement,
    read_json_document,
    read_value,
)

V1_FIELDS = (
    "schema_version",
    "measurement_type",
    "model",
    "hardware_id",
    "device",
    "precision",
    "thermal_profile",
    "theoretical_peak_flops",
    "measurement_date",
    "tool_version",
    "subgraphs",
)
DERIVED_RUN_ID = "run_id: absent, derived from hardware, precision, model, date and batch (uuid5)"
_V1_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "calib-lab/ground-truth/v1.0")


def is_record_document(data: dict) -> bool:
    """Whether a JSON document is a measurement (of any version and writer), not some other JSON file."""
    return "subgraphs" in data or "measurement_type" in data


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


GRAPHS_TOOL = "measure_efficiency.py"  # the graphs tool's measurement script: PyTorch, torch.fx, on cuda or cpu
GRAPHS_TOOL_DEVICES = ("cuda", "cpu")
_OWN_TOOL_VERSION = re.compile(r"calib-lab [^;]*; (\S+) \S+")  # helpers.ground_truth.measurement's tool_version


def infer_runtime(data: dict) -> tuple[str, str]:
    """(runtime, normalization note) of a document that does not name its runtime, from what it says.

    The project's own writer names the runtime in ``tool_version`` (``calib-lab 0.1; onnxruntime 1.17``);
    the graphs tool's ``measure_efficiency.py`` (any version, migrated or not) runs every subgraph with
    PyTorch -- a torch.fx interpreter -- on its ``device``, ``cuda`` or ``cpu``. Anything else is
    ``unknown``: a file is never labelled with a runtime nothing in it names.
    """
    tool, device = data.get("tool_version"), data.get("device")
    if isinstance(tool, str):
        own = _OWN_TOOL_VERSION.fullmatch(tool)
        if own and own.group(1) in RUNTIMES:
            return own.group(1), f"runtime: absent, read as {own.group(1)!r}, which tool_version {tool!r} names"
        if tool.split(" ", 1)[0] == GRAPHS_TOOL and device in GRAPHS_TOOL_DEVICES:
            return "torch", (
                f"runtime: absent, read as 'torch': tool_version {tool!r} is the graphs tool's {GRAPHS_TOOL}, "
                f"which runs the subgraphs with PyTorch (a torch.fx interpreter) on device {device!r}"
            )
    return UNKNOWN_RUNTIME, (
        f"runtime: absent, read as {UNKNOWN_RUNTIME!r}: neither tool_version {tool!r} nor device {device!r} "
        "says which runtime measured it"
    )


def name_key(data: dict, model: str) -> str:
    """The model key a document's file name starts with: the record's key (:attr:`MeasurementRecord.key`) when
    the document names its runtime, else the bare model (a writer without runtimes names files by model)."""
    runtime = data.get("runtime", "onnxruntime")
    return model if runtime == "onnxruntime" else f"{model}-{runtime}"


def normalize(data: dict, stem: str) -> tuple[dict, str]:
    """A v1.0 or v2.0 document (any writer) as a v2.0 document, and the schema version as written.

    Every change is appended to the document's ``normalization`` list (docs/ground_truth.md):
    precision case-folded, integer subgraph ids as strings, a naive date kept with its zone
    flagged unknown, and the fields older writers lack -- batch size (from the file name),
    model summary (computed from the subgraphs), input shape and system state (null), run id
    (derived, so reading twice gives the same record), run index 0, runtime (:func:`infer_runtime`).
    Types are not coerced otherwise: a wrong type stays an error naming the field.
    """
    version = data.get("schema_version")
    if version not in ("1.0", SCHEMA_VERSION):
        raise SchemaError("schema_version", f"is {version!r}; readable versions: '1.0', {SCHEMA_VERSION!r}")
    missing = [name for name in V1_FIELDS if name not in data]
    if missing:
        raise SchemaError(", ".join(missing), "is missing" if len(missing) == 1 else "are missing")
    doc = dict(data)
    notes = list(read_value(list[str], doc.get("normalization", []), "normalization"))
    precision = doc["precision"]
    if isinstance(precision, str) and precision != precision.lower():
        doc["precision"] = precision.lower()
        _note(notes, f"precision: {precision!r} case-folded to {precision.lower()!r}")
    if isinstance(doc["subgraphs"], list):
        integer = [
            i for i, s in enumerate(doc["subgraphs"]) if isinstance(s, dict) and type(s.get("subgraph_id")) is int
        ]
        if integer:
            doc["subgraphs"] = [
                {**s, "subgraph_id": str(s["subgraph_id"])} if i in set(integer) else s
                for i, s in enumerate(doc["subgraphs"])
            ]
            _note(notes, f"subgraph_id: {len(integer)} integer ids read as strings")
    date = doc["measurement_date"]
    try:
        naive = isinstance(date, str) and datetime.fromisoformat(date).tzinfo is None
    except ValueError:
        naive = False  # the record's validation names the field
    if naive:
        _note(
            notes,
            "measurement_date: no time zone in the file (local time of the measuring machine); "
            "kept as written, zone unknown",
        )
    if "runtime" not in doc:
        doc["runtime"], note = infer_runtime(doc)
        _note(notes, note)
    if version == "1.0":
        doc["schema_version"] = SCHEMA_VERSION
        _note(notes, f"schema_version: '1.0' read as {SCHEMA_VERSION!r}")
    if "batch_size" not in doc:
        named = split_batch_suffix(stem, name_key(data, read_value(str, doc["model"], "model")))
        doc["batch_size"] = named or 1
        _note(
            notes,
            f"batch_size: {doc['batch_size']} from the file name"
            if named
            else "batch_size: 1, the file has none and its name no _b<N> (v1.0 predates batching)",
        )
    if "model_summary" not in doc:
        subgraphs = read_value(list[SubgraphMeasurement], doc["subgraphs"], "subgraphs")
        if not subgraphs:
            raise SchemaError("subgraphs", "is empty; a measurement needs at least one subgraph")
        batch = read_value(int, doc["batch_size"], "batch_size")
        doc["model_summary"] = ModelSummary.from_subgraphs(subgraphs, batch).to_dict()
        _note(
            notes,
            "model_summary: computed from the subgraphs (total_latency_ms = sum of subgraph means); "
            "no end-to-end latency",
        )
    for name in ("input_shape", "system_state"):
        if name not in doc:
            doc[name] = None
            _note(notes, f"{name}: absent, null")
    if "run_id" not in doc:
        identity = "/".join(str(doc[k]) for k in ("hardware_id", "precision", "model", "measurement_date"))
        doc["run_id"] = str(uuid.uuid5(_V1_RUN_NAMESPACE, f"{identity}/b{doc['batch_size']}"))
        _note(notes, DERIVED_RUN_ID)
    if "run_index" not in doc:
        doc["run_index"] = 0
        _note(notes, "run_index: absent, 0")
    doc["normalization"] = notes
    return doc, version


def read_record(path: Path) -> tuple[MeasurementRecord, str]:
    """(record, schema version as written) of a record file; errors name the file and the field."""
    data = read_json_document(path)
    try:
        doc, version = normalize(data, path.stem)
        record = MeasurementRecord.from_dict(doc)
        named_batch, named_run = stem_parts(path.stem, name_key(data, record.model))
    except SchemaError as error:
        raise error.in_file(path) from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if named_batch not in (None, record.batch_size):
        raise ValueError(
            f"{path}: the name says batch {named_batch} but batch_size is {record.batch_size}; "
            "rename the file or fix its batch_size"
        )
    if named_run is not None and not record.run_id.replace("-", "").startswith(named_run):
        raise ValueError(
            f"{path}: the name says run {named_run} but run_id is {record.run_id}; rename the file or fix its run_id"
        )
    return record, version


def read_measurement(path: str | Path) -> MeasurementRecord:
    """A v1.0 or v2.0 record file, from any writer, as a normalized v2.0 record (:func:`normalize`)."""
    return read_record(Path(path))[0]
