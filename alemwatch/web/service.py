"""What the pages read and write, through the same store, engine and alert services as the
REST API: every access audited in the request's transaction, every write followed by the
patient's re-assessment so that the alert a result raises is on screen at once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from sqlalchemy import select

from alemwatch.api import routes as api
from alemwatch.core.assess import assess
from alemwatch.core.chart import Chart
from alemwatch.core.patient import Patient, PatientFileError, parse_patient
from alemwatch.registry import alerts as alert_service
from alemwatch.registry.refresh import refresh_patient
from alemwatch.registry.worklist import SEVERITY_ORDER, build_worklist
from alemwatch.store import models as m
from alemwatch.store import repo
from alemwatch.web.context import Ctx

WORKLIST_LIMIT = 500


class AlreadyRecorded(ValueError):
    """Everything the form sent was stored before (same content, same id)."""


@dataclass
class PatientView:
    data: dict[str, Any]  # the stored patient file
    patient: Patient
    result: dict[str, Any]  # the assessment as of today
    chart: Chart


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found")


# --- reads ------------------------------------------------------------------------------------


def worklist(ctx: Ctx) -> dict[str, Any]:
    result = build_worklist(ctx.session, ctx.today, WORKLIST_LIMIT)
    ctx.audit("read", "/", None, patient_ids=result["patient_ids"][:500])
    return result


def patient_view(ctx: Ctx, patient_id: str, resource: str) -> PatientView:
    data = repo.patient_file(ctx.session, patient_id)
    if data is None:
        raise not_found("patient")
    patient = parse_patient(data, ctx.protocol)
    ctx.audit("read", resource, patient_id)
    return PatientView(
        data, patient, assess(patient, ctx.protocol, ctx.today), Chart.build(patient, ctx.protocol, ctx.today)
    )


def patient_exists(ctx: Ctx, patient_id: str) -> None:
    if ctx.session.get(m.Patient, patient_id) is None:
        raise not_found("patient")


def alerts_of(ctx: Ctx, patient_id: str) -> tuple[list[m.Alert], list[m.Alert]]:
    """(unresolved alerts, most urgent first; the latest resolved ones)."""
    query = select(m.Alert).where(m.Alert.patient_id == patient_id)
    current = query.where(m.Alert.status != "resolved").order_by(SEVERITY_ORDER, m.Alert.raised_at)
    resolved = query.where(m.Alert.status == "resolved").order_by(m.Alert.resolved_at.desc()).limit(20)
    return list(ctx.session.execute(current).scalars()), list(ctx.session.execute(resolved).scalars())


def symptom_reports(ctx: Ctx, patient_id: str, limit: int = 20) -> list[m.SymptomReport]:
    query = (
        select(m.SymptomReport)
        .where(m.SymptomReport.patient_id == patient_id)
        .order_by(m.SymptomReport.date.desc(), m.SymptomReport.reported_at.desc())
        .limit(limit)
    )
    return list(ctx.session.execute(query).scalars())


def search(ctx: Ctx, query: str | None, limit: int = 50) -> tuple[list[tuple[m.Patient, m.PatientState | None]], int]:
    rows = list(ctx.session.execute(repo.search_patients(query, limit, 0)).scalars())
    ids = [row.id for row in rows]
    states = {
        s.patient_id: s
        for s in ctx.session.execute(select(m.PatientState).where(m.PatientState.patient_id.in_(ids))).scalars()
    }
    ctx.audit("read", "/patients", None, patient_ids=ids)
    return [(row, states.get(row.id)) for row in rows], repo.count_patients(ctx.session, query)


# --- writes --------------------------------------------------------------------------------------


def _validate(ctx: Ctx, current: dict[str, Any], batches: dict[str, list[dict[str, Any]]]) -> None:
    """Check every record of every batch before anything is written: a form is stored whole or not at all."""
    for kind, items in batches.items():
        parse_patient({**current, kind: items}, ctx.protocol)


def add_records(ctx: Ctx, patient_id: str, batches: dict[str, list[dict[str, Any]]]) -> int:
    """Store a form's records (e.g. an infusion and its vital signs) and re-assess the patient."""
    current = repo.patient_file(ctx.session, patient_id)
    if current is None:
        raise not_found("patient")
    _validate(ctx, current, batches)
    created = 0
    for kind, items in batches.items():
        created += sum(new for _, new in repo.add_records(ctx.session, patient_id, kind, items, ctx.protocol, "web"))
    if not created:
        raise AlreadyRecorded("this was recorded before")
    refresh_patient(ctx.session, patient_id, ctx.protocol, ctx.today, ctx.actor.label)
    ctx.audit("create", f"/patients/{patient_id}/{'+'.join(batches)}", patient_id, created=created)
    return created


def create_patient(ctx: Ctx, raw: dict[str, Any]) -> str:
    parse_patient(raw, ctx.protocol)
    if ctx.session.get(m.Patient, raw["id"]) is not None:
        raise PatientFileError("id", f"a patient {raw['id']!r} exists already")
    patient_id, _, added = repo.save_patient_file(ctx.session, raw, ctx.protocol, source="web")
    refresh_patient(ctx.session, patient_id, ctx.protocol, ctx.today, ctx.actor.label)
    ctx.audit("create", "/patients/new", patient_id, records=added)
    return patient_id


def stop_prophylaxis(ctx: Ctx, patient_id: str, start: str, stop: str) -> None:
    data = repo.patient_file(ctx.session, patient_id)
    if data is None:
        raise not_found("patient")
    for record in data["prophylaxis"]:
        if record["start"] == start and record["stop"] is None:
            record["stop"] = stop
    repo.save_patient_file(ctx.session, data, ctx.protocol, source="web")
    refresh_patient(ctx.session, patient_id, ctx.protocol, ctx.today, ctx.actor.label)
    ctx.audit("update", f"/patients/{patient_id}/prophylaxis", patient_id, stopped=start)


def open_prophylaxis(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in data["prophylaxis"] if r["stop"] is None]


def find_alert(ctx: Ctx, patient_id: str, alert_id: str) -> m.Alert:
    query = select(m.Alert).where(m.Alert.patient_id == patient_id, m.Alert.id == alert_id)
    if ctx.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    alert = ctx.session.execute(query).scalar_one_or_none()
    if alert is None:
        raise not_found("alert")
    return alert


def acknowledge(ctx: Ctx, patient_id: str, alert_id: str) -> m.Alert:
    alert = find_alert(ctx, patient_id, alert_id)
    alert_service.acknowledge(ctx.session, alert, ctx.actor.label, None)
    ctx.audit("acknowledge", f"/patients/{patient_id}/alerts/{alert_id}", patient_id)
    return alert


def resolve(ctx: Ctx, patient_id: str, alert_id: str, reason: str) -> m.Alert:
    alert = find_alert(ctx, patient_id, alert_id)
    alert_service.resolve(ctx.session, alert, ctx.actor.label, reason)
    ctx.audit("resolve", f"/patients/{patient_id}/alerts/{alert_id}", patient_id)
    return alert


def report_symptoms(ctx: Ctx, patient_id: str, text: str, day: dt.date) -> dict[str, Any]:
    """A patient's report, through the API's own path: triaged, stored, raised to the team."""
    report = api.SymptomReportIn(text=text, date=day)
    return api.add_symptom_report(patient_id, report, ctx.session, ctx.protocol, ctx.actor, ctx.request)


def patient_file(ctx: Ctx, patient_id: str, resource: str) -> dict[str, Any]:
    data = repo.patient_file(ctx.session, patient_id)
    if data is None:
        raise not_found("patient")
    ctx.audit("read", resource, patient_id)
    return data
