"""The packed charts the bulk sweep reads are exactly the stored records."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from alemwatch.core.columnar import Cohort
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.sweep import sweep
from alemwatch.store import charts
from alemwatch.store.db import session_factory, transaction
from alemwatch.store.repo import add_records, load_patient, save_patient_file

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
PROTOCOL = load_protocol("us")


def _assert_same(a: Cohort, b: Cohort) -> None:
    for f in fields(Cohort):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), f.name
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
        else:
            assert x == y, f.name


def test_charts_decode_to_the_stored_records_once_assessed(db_url: str) -> None:
    other = {
        **EXAMPLE,
        "id": "p-002",
        "sex": "male",
        "symptoms": [{"date": "2025-02-01", "text": "no fever, tired"}],
        "vaccinations": [],
        "exams": [{"type": "dermatology", "date": "2025-06-01"}, {"type": "eye", "date": "2025-06-02"}],
    }
    with transaction(db_url) as session:
        save_patient_file(session, EXAMPLE, PROTOCOL)
        save_patient_file(session, other, PROTOCOL)
        add_records(
            session,
            "p-001",
            "labs",
            [{"id": "x", "test": "platelets", "value": 99, "unit": "10*3/uL", "date": "2025-05-01", "ref_low": 140}],
            PROTOCOL,
        )
    # Queued patients are assessed one by one, which writes their chart; only then may the
    # bulk sweep read it (the sweep sends changed patients one by one).
    assert sweep(db_url, PROTOCOL, dt.date(2025, 6, 1)).rewritten == 2
    with session_factory(db_url)() as session:
        stored = [load_patient(session, pid, PROTOCOL) for pid in ("p-001", "p-002")]
        decoded = charts.load(session, None, PROTOCOL)
        subset = charts.load(session, ["p-002"], PROTOCOL)
    _assert_same(decoded, Cohort.from_patients([p for p in stored if p], PROTOCOL))
    _assert_same(subset, Cohort.from_patients([stored[1]], PROTOCOL))  # type: ignore[list-item]
    assert decoded.texts == ["bruises on my legs", "no fever, tired"]
