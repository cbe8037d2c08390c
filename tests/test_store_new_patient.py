"""A new patient's records are stored as an existing patient's are: each once, with the same
columns, whichever way they go in (PostgreSQL copies a new patient's records in one COPY;
records of a patient already stored go in by INSERT ... ON CONFLICT DO NOTHING)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from alemwatch.protocol.load import load_protocol
from alemwatch.store import models as m
from alemwatch.store.db import transaction
from alemwatch.store.repo import patient_file, save_patient_file

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
PROTOCOL = load_protocol("us")
RECORDS = ("labs", "infusions", "exams", "vaccinations", "prophylaxis", "symptoms")
TABLES = (m.LabResult, m.Exam, m.Vaccination, m.SymptomReport, m.Infusion, m.Prophylaxis)
ARRIVAL = ("patient_id", "received_at", "reported_at")  # whose and when: not what was stored


def _file(patient_id: str) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["id"] = patient_id
    data["labs"].append(dict(data["labs"][0]))  # one result sent twice in the same message
    data["symptoms"].append(dict(data["symptoms"][0]))
    return data


def _rows(url: str, patient_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every stored record row of a patient, without its patient id or the times it arrived."""
    out = {}
    with transaction(url) as session:
        for model in TABLES:
            rows = session.execute(select(model).where(model.patient_id == patient_id).order_by(model.id)).scalars()
            out[model.__tablename__] = [
                {c.name: getattr(r, c.name) for c in model.__table__.c if c.name not in ARRIVAL} for r in rows
            ]
    return out


def test_a_new_patient_is_reported_created_and_each_record_stored_once(db_url: str) -> None:
    with transaction(db_url) as session:
        patient_id, created, added = save_patient_file(session, _file("p-new"), PROTOCOL, source="fhir")
    assert (patient_id, created) == ("p-new", True)
    distinct = sum(len({json.dumps(r, sort_keys=True) for r in EXAMPLE[kind]}) for kind in RECORDS)
    assert added == distinct
    with transaction(db_url) as session:
        _, created, added = save_patient_file(session, _file("p-new"), PROTOCOL, source="fhir")
        stored = patient_file(session, "p-new")
        received = session.execute(select(m.LabResult.received_at, m.LabResult.source)).all()
        reported = session.execute(select(m.SymptomReport.reported_at)).scalars().all()
    assert (created, added) == (False, 0)
    assert stored is not None
    for kind in RECORDS:
        assert len(stored[kind]) == len(EXAMPLE[kind]), kind  # the repeated lab and symptom once
    assert received and all(at is not None and source == "fhir" for at, source in received)
    assert reported and all(at is not None for at in reported)


def test_new_and_known_patients_store_the_same_rows(db_url: str) -> None:
    """p-a is new when its records come; p-b is stored first without records, then they come."""
    with transaction(db_url) as session:
        save_patient_file(session, _file("p-a"), PROTOCOL, source="fhir")
        bare = {**_file("p-b"), **{kind: [] for kind in RECORDS}}
        save_patient_file(session, bare, PROTOCOL, source="fhir")
    with transaction(db_url) as session:
        _, created, _ = save_patient_file(session, _file("p-b"), PROTOCOL, source="fhir")
    assert not created
    assert _rows(db_url, "p-a") == _rows(db_url, "p-b")
    with transaction(db_url) as session:
        a, b = patient_file(session, "p-a"), patient_file(session, "p-b")
    assert a is not None and b is not None
    assert {**a, "id": "p-b"} == b
