"""The ground-truth store's documented API, importable from the package as its design names it."""

from __future__ import annotations

import pytest


def test_loader_and_schema_types_import_from_the_package():
    from helpers.ground_truth import GroundTruthLoader, MeasurementRecord, ModelSummary, SystemState, records, store

    assert GroundTruthLoader is store.GroundTruthLoader
    assert (MeasurementRecord, ModelSummary, SystemState) == (
        records.MeasurementRecord,
        records.ModelSummary,
        records.SystemState,
    )


def test_an_unknown_name_is_an_attribute_error():
    import helpers.ground_truth as ground_truth

    with pytest.raises(AttributeError, match="no attribute 'Loader'"):
        ground_truth.Loader  # noqa: B018
