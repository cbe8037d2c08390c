"""Patients in and out of the store, in the contract's patient-file shape.

Every child record has an id: the client's (labs) or one derived from its content, so the
same record stored twice is stored once — re-running an import, or retrying a request after
a crash, never duplicates a result. Writes mark the patient for re-assessment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Boolean, Date, DateTime, Float, Integer, Select, String, Table, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from alemwatch.core.patient import Patient, parse_patient
from alemwatch.protocol.model import Protocol
from alemwatch.store import models as m

CHILD_LISTS: dict[str, type[m.Base]] = {
    "infusions": m.Infusion,
    "labs": m.LabResult,
    "exams": m.Exam,
    "vaccinations": m.Vaccination,
    "prophylaxis": m.Prophylaxis,
    "symptoms": m.SymptomReport,
}


class Conflict(ValueError):
    """The same id was sent before with different content."""


def content_id(kind: str, item: dict[str, Any]) -> str:
    """A stable id for a record without one: the hash of its content."""
    body = json.dumps({k: v for k, v in item.items() if k != "id"}, sort_keys=True, default=str)
    return f"{kind[:3]}-" + hashlib.sha256(body.encode()).hexdigest()[:32]


def record_id(kind: str, raw: dict[str, Any]) -> str:
    """The id a record of a patient file is stored under (see `child_rows`)."""
    if kind == "labs":
        return str(raw.get("id") or content_id("lab", raw))
    if kind == "infusions":
        return content_id("inf", {"date": raw["date"]})
    if kind == "prophylaxis":
        return content_id("pro", {"kind": raw["kind"], "start": raw["start"]})
    return content_id(kind[:3], raw)


def with_record_ids(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a patient file whose every record carries the id it is stored under, as
    `patient_file(ids=True)` gives it back (for exports of a file that was never stored)."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for kind in CHILD_LISTS:
        for record in out.get(kind) or []:
            record["id"] = record_id(kind, record)
    return out


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _lab_row(patient_id: str, lab: Any, raw: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "id": raw.get("id") or content_id("lab", raw),
        "date": lab.date,
        "test": lab.test,
        "value": float(lab.value),
        "unit": lab.unit,
        "ref_low": lab.ref_low,
        "ref_high": lab.ref_high,
        "analyte": lab.analyte,
        "canonical_value": lab.canonical,
        "canonical_ref_low": lab.canonical_ref_low,
        "canonical_ref_high": lab.canonical_ref_high,
        "source": source,
    }


def child_rows(patient: Patient, raw: dict[str, Any], source: str = "api") -> dict[type[m.Base], list[dict[str, Any]]]:
    """The rows of every child table for a validated patient file (ids derived when absent)."""
    pid = patient.id
    rows: dict[type[m.Base], list[dict[str, Any]]] = {}
    raw_lists = {key: raw.get(key) or [] for key in CHILD_LISTS}
    rows[m.LabResult] = [_lab_row(pid, lab, r, source) for lab, r in zip(patient.labs, raw_lists["labs"], strict=True)]
    rows[m.Infusion] = [
        {
            "patient_id": pid,
            "id": content_id("inf", {"date": i.date.isoformat()}),
            "date": i.date,
            "premedication": i.premedication,
            "observation_minutes": i.observation_minutes,
            "dose_mg": i.dose_mg,
            "reactions": [r.model_dump(mode="json", exclude_none=True) for r in i.reactions],
        }
        for i in patient.infusions
    ]
    rows[m.Exam] = [
        {"patient_id": pid, "id": content_id("exa", r), "type": e.type, "date": e.date, "result": e.result}
        for e, r in zip(patient.exams, raw_lists["exams"], strict=True)
    ]
    rows[m.Vaccination] = [
        {"patient_id": pid, "id": content_id("vac", r), "vaccine": v.vaccine, "live": v.live, "date": v.date}
        for v, r in zip(patient.vaccinations, raw_lists["vaccinations"], strict=True)
    ]
    rows[m.Prophylaxis] = [
        {
            "patient_id": pid,
            "id": content_id("pro", {"kind": p.kind, "start": p.start.isoformat()}),
            "kind": p.kind,
            "drug": p.drug,
            "start": p.start,
            "stop": p.stop,
        }
        for p in patient.prophylaxis
    ]
    rows[m.SymptomReport] = [
        {"patient_id": pid, "id": content_id("sym", r), "date": s.date, "text": s.text}
        for s, r in zip(patient.symptoms, raw_lists["symptoms"], strict=True)
    ]
    return rows


def dialect_insert(session: Session, model: type[m.Base]) -> Any:
    """INSERT into the model's table in the session's dialect (PostgreSQL or SQLite: both
    have ON CONFLICT and RETURNING)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(model.__table__)  # type: ignore[arg-type]


def insert_ignore(session: Session, model: type[m.Base], rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows whose key is new; rows already stored are left as they are."""
    if not rows:
        return 0
    statement = dialect_insert(session, model).on_conflict_do_nothing()
    result = session.execute(statement, list(rows))
    return int(getattr(result, "rowcount", 0) or 0)


COPY_TYPES = (String, Date, Float, Integer, Boolean, DateTime)  # what COPY's text format takes as psycopg writes it


def insert_new(session: Session, model: type[m.Base], rows: Sequence[dict[str, Any]]) -> None:
    """Insert the records of a patient whose row this transaction created: none of them can be
    stored already (every record references its patient, and no other transaction sees the new
    patient row before this one commits), so on PostgreSQL they go in by one COPY instead of a
    statement a record. A record given twice is stored once, the first (as `insert_ignore`)."""
    table = cast(Table, model.__table__)
    if session.get_bind().dialect.name != "postgresql" or not all(isinstance(c.type, COPY_TYPES) for c in table.c):
        insert_ignore(session, model, rows)
        return
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row["id"], row)
    if not first:
        return
    # The columns given, and those with a default that the ORM would fill in (as an insert does).
    columns = [c for c in table.c if c.name in rows[0] or c.default is not None]
    fill = {c.name: _default(c) for c in columns if c.default is not None}
    names = ", ".join(f'"{c.name}"' for c in columns)
    session.flush()  # anything the ORM holds goes first (the COPY is not the ORM's)
    driver = session.connection().connection.driver_connection  # psycopg's own connection
    assert driver is not None
    cursor = driver.cursor()
    with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in first.values():
            copy.write_row([row[c.name] if c.name in row else fill.get(c.name) for c in columns])


def _default(column: Any) -> Any:
    """A column's Python-side default, as the ORM computes it for an insert."""
    default = column.default
    return default.arg(None) if default.is_callable else default.arg


def upsert_child(
    session: Session, model: type[m.Base], rows: Sequence[dict[str, Any]], update_cols: Sequence[str]
) -> None:
    """Insert rows, replacing the listed columns of rows already stored (records that can change)."""
    if not rows:
        return
    statement = dialect_insert(session, model)
    statement = statement.on_conflict_do_update(
        index_elements=["patient_id", "id"], set_={c: statement.excluded[c] for c in update_cols}
    )
    session.execute(statement, list(rows))


def _stored_ids(session: Session, model: Any, patient_id: str) -> set[str]:
    return set(session.execute(select(model.id).where(model.patient_id == patient_id)).scalars())


def lock_patient(session: Session, patient_id: str) -> m.Patient | None:
    """The patient row, locked for this transaction on PostgreSQL (writes to one patient queue)."""
    query = select(m.Patient).where(m.Patient.id == patient_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def mark_changed(session: Session, patient_id: str) -> None:
    """After any change to a patient's record: queue re-assessment. (The packed chart is
    rewritten by the re-assessment; the bulk sweep never reads a patient queued here.)"""
    state = session.get(m.PatientState, patient_id)
    if state is None:
        session.add(m.PatientState(patient_id=patient_id, data_version=1, assessed_version=0))
    else:
        session.execute(
            update(m.PatientState)
            .where(m.PatientState.patient_id == patient_id)
            .values(data_version=m.PatientState.data_version + 1)
        )


def save_patient_file(
    session: Session, raw: dict[str, Any], protocol: Protocol, source: str = "api"
) -> tuple[str, bool, int]:
    """Store a validated patient file: the patient's attributes are replaced, records merged
    (new ones added, known ones kept). Returns (patient id, created, new records)."""
    patient = parse_patient(raw, protocol)
    row = lock_patient(session, patient.id)
    created = row is None
    attributes = {
        "birth_date": patient.birth_date,
        "sex": patient.sex,
        "screening": patient.screening.model_dump(),
        "planned_course_start": patient.planned_course_start,
    }
    if row is None and session.get_bind().dialect.name == "postgresql":
        # Two first messages about one new patient at once (an EHR's retry): the second insert
        # waits for the first transaction, then finds the row and updates it like any writer.
        inserted = session.execute(
            dialect_insert(session, m.Patient)
            .values(id=patient.id, **attributes)
            .on_conflict_do_nothing(index_elements=["id"])
            .execution_options(preserve_rowcount=True)  # (SQLAlchemy keeps an INSERT's rowcount only when asked)
        )
        created = getattr(inserted, "rowcount", 0) == 1
        row = lock_patient(session, patient.id)
        if row is None:  # pragma: no cover - the row exists once the insert returns
            raise LookupError(patient.id)
        if not created:
            for key, value in attributes.items():
                setattr(row, key, value)
            row.version += 1
    elif row is None:
        session.add(m.Patient(id=patient.id, **attributes))
        session.flush()
    else:
        for key, value in attributes.items():
            setattr(row, key, value)
        row.version += 1
    added = 0
    for model, rows in child_rows(patient, raw, source).items():
        known = _stored_ids(session, model, patient.id) if not created else set()
        added += len({r["id"] for r in rows} - known)
        if model is m.Infusion or model is m.Prophylaxis:
            columns = [c for c in rows[0] if c not in ("patient_id", "id")] if rows else []
            upsert_child(session, model, rows, columns)  # these records can change (a stop date)
        elif created:
            insert_new(session, model, rows)
        else:
            insert_ignore(session, model, [r for r in rows if r["id"] not in known])
    mark_changed(session, patient.id)
    return patient.id, created, added


def patient_file(session: Session, patient_id: str, ids: bool = False) -> dict[str, Any] | None:
    """The stored record as a contract patient file (with the labs' ids; with `ids`, every
    record carries its id, which the contract's file does not accept: for exports)."""
    row = session.get(m.Patient, patient_id)
    if row is None:
        return None

    def rows(model: Any) -> list[Any]:
        # Same-day records in id order: deterministic, so every reader sees the same "latest".
        # Read as rows of columns, not ORM objects: a patient has hundreds of results, read
        # back on every re-assessment, and nothing here changes them.
        table = model.__table__
        order = table.c.date if "date" in table.c else table.c.start
        query = select(*table.c).where(table.c.patient_id == patient_id).order_by(order, table.c.id)
        return list(session.execute(query))

    data: dict[str, Any] = {"id": row.id, "sex": row.sex, "screening": row.screening}
    if row.birth_date:
        data["birth_date"] = row.birth_date.isoformat()
    if row.planned_course_start:
        data["planned_course_start"] = row.planned_course_start.isoformat()
    data["infusions"] = [_infusion_json(i) for i in rows(m.Infusion)]
    data["labs"] = [_lab_json(lab) for lab in rows(m.LabResult)]
    data["exams"] = [
        {"type": e.type, "date": e.date.isoformat(), **({"result": e.result} if e.result else {})} for e in rows(m.Exam)
    ]
    data["vaccinations"] = [
        {"vaccine": v.vaccine, "live": v.live, "date": v.date.isoformat()} for v in rows(m.Vaccination)
    ]
    data["prophylaxis"] = [
        {"kind": p.kind, "drug": p.drug, "start": p.start.isoformat(), "stop": _iso(p.stop)}
        for p in rows(m.Prophylaxis)
    ]
    data["symptoms"] = [{"date": s.date.isoformat(), "text": s.text} for s in rows(m.SymptomReport)]
    if ids:
        for kind, model in CHILD_LISTS.items():
            if kind != "labs":
                for item, stored in zip(data[kind], rows(model), strict=True):
                    item["id"] = stored.id
    return data


def _infusion_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"date": row.date.isoformat()}
    if row.premedication is not None:
        out["premedication"] = row.premedication
    if row.observation_minutes is not None:
        out["observation_minutes"] = _number(row.observation_minutes)
    if row.dose_mg is not None:
        out["dose_mg"] = _number(row.dose_mg)
    if row.reactions:
        out["reactions"] = row.reactions
    return out


def _lab_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "test": row.test,
        "value": _number(row.value),
        "unit": row.unit,
        "date": row.date.isoformat(),
    }
    if row.ref_low is not None:
        out["ref_low"] = _number(row.ref_low)
    if row.ref_high is not None:
        out["ref_high"] = _number(row.ref_high)
    return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def load_patient(session: Session, patient_id: str, protocol: Protocol) -> Patient | None:
    data = patient_file(session, patient_id)
    return None if data is None else parse_patient(data, protocol)


def add_records(
    session: Session,
    patient_id: str,
    kind: str,
    items: Iterable[dict[str, Any]],
    protocol: Protocol,
    source: str = "api",
) -> list[tuple[str, bool]]:
    """Add records of one kind (`labs`, `exams`, ...) to a stored patient, idempotently.

    The items are validated inside the patient's whole record (so a bad one is rejected with
    its field) and stored all together or not at all. Returns (id, created) per item; an id
    that exists with other content is a Conflict."""
    # Lock the patient before anything else: every writer to one patient queues here, and
    # no insert takes a share lock on the patient row first (which deadlocks on PostgreSQL).
    if lock_patient(session, patient_id) is None:
        raise LookupError(patient_id)
    current = patient_file(session, patient_id)
    if current is None:
        raise LookupError(patient_id)
    items = list(items)
    probe = {**current, kind: items}
    validated = parse_patient(probe, protocol)  # raises PatientFileError naming e.g. labs[0].unit
    model = CHILD_LISTS[kind]
    rows = child_rows(validated, probe, source)[model]
    out: list[tuple[str, bool]] = []
    for row in rows:
        existing = session.get(model, (patient_id, row["id"]))
        if existing is not None:
            if isinstance(existing, m.LabResult) and not _same_lab(existing, row):
                raise Conflict(f"{kind} id {row['id']!r} was stored before with different content")
            out.append((row["id"], False))
            continue
        session.add(model(**row))
        session.flush()
        out.append((row["id"], True))
    if any(created for _, created in out):
        mark_changed(session, patient_id)
    return out


def _same_lab(existing: m.LabResult, row: dict[str, Any]) -> bool:
    keys = ("date", "test", "value", "unit", "ref_low", "ref_high")
    return all(getattr(existing, k) == row[k] for k in keys)


def search_patients(query: str | None, limit: int, offset: int) -> Select[m.Patient]:
    statement = select(m.Patient).order_by(m.Patient.id)
    if query:
        statement = statement.where(or_(m.Patient.id.ilike(f"%{query}%")))
    return statement.limit(limit).offset(offset)


def count_patients(session: Session, query: str | None) -> int:
    statement = select(func.count()).select_from(m.Patient)
    if query:
        statement = statement.where(m.Patient.id.ilike(f"%{query}%"))
    return int(session.execute(statement).scalar_one())
