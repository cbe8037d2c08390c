"""REST routes of the registry. Thin: validate, call the store and the engine, audit, answer.
Access rules live in `alemwatch.api.policy` (applied by `authorize` before any route)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from alemwatch import __version__
from alemwatch.api.deps import SESSION_COOKIE, ActorDep, ProtocolDep, SessionDep, SettingsDep, client_ip
from alemwatch.core.assess import assess
from alemwatch.core.findings import triage_engine
from alemwatch.core.patient import EARLIEST, LATEST, PatientFileError, parse_patient
from alemwatch.registry import alerts as alert_service
from alemwatch.registry.refresh import refresh_patient
from alemwatch.registry.worklist import build_worklist
from alemwatch.security import AuthError, authenticate, end_session, issue_token, start_session
from alemwatch.store import audit, repo
from alemwatch.store import models as m

router = APIRouter(prefix="/api")
RecordKind = Literal["labs", "infusions", "exams", "vaccinations", "prophylaxis"]
PatientFile = Annotated[dict[str, Any], Body(description="A contract patient file (see `alemwatch schema patient`).")]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=5000, description="What the patient reports, in their own words.")
    days_since_infusion: int | None = Field(default=None, ge=0, le=100000)
    patient_id: str | None = Field(
        default=None, max_length=200, description="Store the report on this record and raise an alert."
    )
    date: dt.date | None = Field(default=None, description="When the symptoms were reported; default today.")


class SymptomReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=5000)
    date: dt.date | None = None


class AlertAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000, description="Why the alert is resolved (required).")


def _today(value: dt.date | None, field: str = "date", where: str = "query") -> dt.date:
    day = value or dt.date.today()
    if not EARLIEST <= day <= LATEST:
        raise RequestValidationError(
            [{"loc": (where, field), "msg": f"must be between {EARLIEST} and {LATEST}", "type": "value_error"}]
        )
    return day


def _not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found")


# --- session and identity -------------------------------------------------------------


@router.get("/health", name="health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.post("/auth/login", name="login")
def login(
    credentials: Credentials, request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Start a browser session (cookie); answer the CSRF token to send with every change."""
    user = _authenticate(session, credentials, request, settings)
    value, csrf = start_session(session, user, settings)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        max_age=settings.session_hours * 3600,
    )
    return {"username": user.username, "role": user.role, "patient_id": user.patient_id, "csrf_token": csrf}


@router.post("/auth/token", name="issue_token")
def token(credentials: Credentials, request: Request, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """A bearer token for API clients (`Authorization: Bearer ...`)."""
    user = _authenticate(session, credentials, request, settings)
    return {"access_token": issue_token(session, user, settings), "token_type": "bearer", "role": user.role}


def _authenticate(session: Any, credentials: Credentials, request: Request, settings: Any) -> m.User:
    try:
        return authenticate(session, credentials.username, credentials.password, client_ip(request), settings)
    except AuthError as exc:
        # The attempt itself must be kept, so it is committed even though the request fails.
        session.commit()
        status = 429 if "too many" in str(exc) else 401
        raise HTTPException(status_code=status, detail=str(exc)) from None


@router.post("/auth/logout", name="logout")
def logout(request: Request, response: Response, session: SessionDep) -> dict[str, str]:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        end_session(session, cookie)
    response.delete_cookie(SESSION_COOKIE)
    return {"status": "logged out"}


@router.get("/auth/me", name="me")
def me(actor: ActorDep) -> dict[str, Any]:
    return {"username": actor.username, "role": actor.role, "patient_id": actor.patient_id}


# --- stateless tools ---------------------------------------------------------------------


@router.post("/assess", name="assess_file")
def assess_file(
    patient: PatientFile,
    protocol: ProtocolDep,
    actor: ActorDep,
    session: SessionDep,
    request: Request,
    as_of: Annotated[dt.date | None, Query(description="Default today.")] = None,
) -> dict[str, Any]:
    """Assess a patient file without storing it."""
    result = assess(parse_patient(patient, protocol), protocol, _today(as_of, "as_of"))
    audit.record(session, actor, "assess", "/api/assess", str(patient.get("id")), ip=client_ip(request), stored=False)
    return result


@router.post("/triage", name="triage")
def triage(
    body: TriageRequest, protocol: ProtocolDep, actor: ActorDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    """Triage what a patient reports. With a patient (or for a patient user), the report is
    stored on the record and raises an alert for the team."""
    patient_id = actor.patient_id if actor.role == "patient" else body.patient_id
    if actor.role == "patient" and body.patient_id not in (None, actor.patient_id):
        raise HTTPException(status_code=403, detail="a patient may only report on their own record")
    if patient_id is None:
        return triage_engine(protocol).triage(body.text, body.days_since_infusion).to_json()
    report = SymptomReportIn(text=body.text, date=body.date)
    return _store_report(session, protocol, actor, patient_id, report, request)


# --- patients ----------------------------------------------------------------------------


def _patient_public(row: m.Patient, state: m.PatientState | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "sex": row.sex,
        "birth_date": row.birth_date.isoformat() if row.birth_date else None,
        "planned_course_start": row.planned_course_start.isoformat() if row.planned_course_start else None,
        "version": row.version,
        "summary": state.summary if state else {},
        "assessed_on": state.assessed_on.isoformat() if state and state.assessed_on else None,
    }


@router.get("/patients", name="list_patients")
def list_patients(
    session: SessionDep,
    actor: ActorDep,
    request: Request,
    q: Annotated[str | None, Query(max_length=100, description="Search in patient ids.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    rows = list(session.execute(repo.search_patients(q, limit, offset)).scalars())
    states = {
        s.patient_id: s
        for s in session.execute(
            select(m.PatientState).where(m.PatientState.patient_id.in_([r.id for r in rows]))
        ).scalars()
    }
    audit.record(session, actor, "read", "/api/patients", None, ip=client_ip(request), patient_ids=[r.id for r in rows])
    return {
        "total": repo.count_patients(session, q),
        "limit": limit,
        "offset": offset,
        "items": [_patient_public(r, states.get(r.id)) for r in rows],
    }


@router.post("/patients", name="create_patient", status_code=201)
def create_patient(
    patient: PatientFile, session: SessionDep, protocol: ProtocolDep, actor: ActorDep, request: Request
) -> dict[str, Any]:
    """Create a patient from a contract patient file (its records included)."""
    parse_patient(patient, protocol)
    if session.get(m.Patient, patient["id"]) is not None:
        raise HTTPException(status_code=409, detail=f"patient {patient['id']!r} exists; use PUT to update")
    patient_id, _, added = repo.save_patient_file(session, patient, protocol)
    refresh_patient(session, patient_id, protocol, dt.date.today(), actor.label)
    audit.record(session, actor, "create", "/api/patients", patient_id, ip=client_ip(request), records=added)
    return {"id": patient_id, "records": added}


@router.get("/patients/{patient_id}", name="read_patient")
def read_patient(patient_id: str, session: SessionDep, actor: ActorDep, request: Request) -> dict[str, Any]:
    data = repo.patient_file(session, patient_id)
    if data is None:
        raise _not_found("patient")
    audit.record(session, actor, "read", f"/api/patients/{patient_id}", patient_id, ip=client_ip(request))
    state = session.get(m.PatientState, patient_id)
    return {"patient": data, "summary": state.summary if state else {}}


@router.put("/patients/{patient_id}", name="update_patient")
def update_patient(
    patient_id: str, patient: PatientFile, session: SessionDep, protocol: ProtocolDep, actor: ActorDep, request: Request
) -> dict[str, Any]:
    """Replace the patient's attributes and merge the records of the file."""
    if patient.get("id") != patient_id:
        raise PatientFileError("id", f"must be {patient_id!r}, the patient in the path")
    if session.get(m.Patient, patient_id) is None:
        raise _not_found("patient")
    _, _, added = repo.save_patient_file(session, patient, protocol)
    refresh_patient(session, patient_id, protocol, dt.date.today(), actor.label)
    audit.record(
        session, actor, "update", f"/api/patients/{patient_id}", patient_id, ip=client_ip(request), records=added
    )
    return {"id": patient_id, "records": added}


@router.get("/patients/{patient_id}/assessment", name="read_assessment")
def read_assessment(
    patient_id: str,
    session: SessionDep,
    protocol: ProtocolDep,
    actor: ActorDep,
    request: Request,
    as_of: Annotated[dt.date | None, Query(description="Default today; nothing after it counts.")] = None,
) -> dict[str, Any]:
    """The contract's `assess` document for a stored patient."""
    patient = repo.load_patient(session, patient_id, protocol)
    if patient is None:
        raise _not_found("patient")
    audit.record(session, actor, "read", f"/api/patients/{patient_id}/assessment", patient_id, ip=client_ip(request))
    return assess(patient, protocol, _today(as_of, "as_of"))


@router.post("/patients/{patient_id}/symptoms", name="add_symptom_report", status_code=201)
def add_symptom_report(
    patient_id: str,
    report: SymptomReportIn,
    session: SessionDep,
    protocol: ProtocolDep,
    actor: ActorDep,
    request: Request,
) -> dict[str, Any]:
    """A symptom report in the patient's words: triaged, stored, and raised to the team."""
    return _store_report(session, protocol, actor, patient_id, report, request)


def _store_report(
    session: Any, protocol: Any, actor: Any, patient_id: str, report: SymptomReportIn, request: Request
) -> dict[str, Any]:
    day = _today(report.date, "date", "body")
    patient = repo.load_patient(session, patient_id, protocol)
    if patient is None:
        raise _not_found("patient")
    last = max((i.date for i in patient.infusions if i.date <= day), default=None)
    days = (day - last).days if last else None
    result = triage_engine(protocol).triage(report.text, days)
    item = {"date": day.isoformat(), "text": report.text}
    stored = repo.add_records(session, patient_id, "symptoms", [item], protocol)
    report_id = stored[0][0]
    row = session.get(m.SymptomReport, (patient_id, report_id))
    if row is not None:
        row.urgency, row.reported_by = result.urgency, actor.user_id
    refresh_patient(session, patient_id, protocol, max(day, dt.date.today()), actor.label)
    audit.record(
        session,
        actor,
        "create",
        f"/api/patients/{patient_id}/symptoms",
        patient_id,
        ip=client_ip(request),
        report=report_id,
        urgency=result.urgency,
    )
    return {
        **result.to_json(),
        "patient_id": patient_id,
        "report_id": report_id,
        "alerts": _open_alerts(session, patient_id),
    }


# --- alerts and worklist -------------------------------------------------------------------


def _alert_json(alert: m.Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "patient_id": alert.patient_id,
        "kind": alert.kind,
        "code": alert.code,
        "severity": alert.severity,
        "status": alert.status,
        "rule": alert.rule,
        "message": alert.message,
        "action": alert.action,
        "evidence": alert.evidence,
        "raised_at": alert.raised_at.isoformat(),
        "acknowledged_by": alert.acknowledged_by,
        "resolved_by": alert.resolved_by,
        "resolution_reason": alert.resolution_reason,
    }


def _open_alerts(session: Any, patient_id: str) -> list[dict[str, Any]]:
    query = select(m.Alert).where(m.Alert.patient_id == patient_id, m.Alert.status != "resolved")
    return [_alert_json(a) for a in session.execute(query).scalars()]


@router.get("/patients/{patient_id}/alerts", name="patient_alerts")
def patient_alerts(
    patient_id: str,
    session: SessionDep,
    actor: ActorDep,
    request: Request,
    status: Annotated[Literal["open", "acknowledged", "resolved", "all"], Query()] = "all",
) -> dict[str, Any]:
    if session.get(m.Patient, patient_id) is None:
        raise _not_found("patient")
    query = select(m.Alert).where(m.Alert.patient_id == patient_id).order_by(m.Alert.raised_at)
    if status != "all":
        query = query.where(m.Alert.status == status)
    audit.record(session, actor, "read", f"/api/patients/{patient_id}/alerts", patient_id, ip=client_ip(request))
    return {"patient_id": patient_id, "alerts": [_alert_json(a) for a in session.execute(query).scalars()]}


def _alert(session: Session, patient_id: str, alert_id: str) -> m.Alert:
    repo.lock_patient(session, patient_id)  # same lock order as every other writer to this patient
    query = select(m.Alert).where(m.Alert.patient_id == patient_id, m.Alert.id == alert_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    alert = session.execute(query).scalar_one_or_none()
    if alert is None:
        raise _not_found("alert")
    return alert


@router.post("/patients/{patient_id}/alerts/{alert_id}/acknowledge", name="acknowledge_alert")
def acknowledge_alert(
    patient_id: str,
    alert_id: str,
    session: SessionDep,
    actor: ActorDep,
    request: Request,
    body: Annotated[AlertAction | None, Body()] = None,
) -> dict[str, Any]:
    alert = _alert(session, patient_id, alert_id)
    alert_service.acknowledge(session, alert, actor.label, body.reason if body else None)
    audit.record(
        session,
        actor,
        "acknowledge",
        f"/api/patients/{patient_id}/alerts/{alert_id}",
        patient_id,
        ip=client_ip(request),
    )
    return _alert_json(alert)


@router.post("/patients/{patient_id}/alerts/{alert_id}/resolve", name="resolve_alert")
def resolve_alert(
    patient_id: str, alert_id: str, body: Resolution, session: SessionDep, actor: ActorDep, request: Request
) -> dict[str, Any]:
    alert = _alert(session, patient_id, alert_id)
    alert_service.resolve(session, alert, actor.label, body.reason)
    audit.record(
        session, actor, "resolve", f"/api/patients/{patient_id}/alerts/{alert_id}", patient_id, ip=client_ip(request)
    )
    return _alert_json(alert)


@router.get("/worklist", name="worklist")
def worklist(
    session: SessionDep,
    actor: ActorDep,
    request: Request,
    date: Annotated[dt.date | None, Query(description="The day to plan; default today.")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> dict[str, Any]:
    """Who to call first: emergencies and urgent findings, then overdue tests, tests due this
    week, prophylaxis decisions and upcoming courses."""
    result = build_worklist(session, _today(date), limit)
    audit.record(
        session, actor, "read", "/api/worklist", None, ip=client_ip(request), patient_ids=result["patient_ids"][:500]
    )
    return result


@router.get("/users", name="list_users")
def list_users(session: SessionDep) -> list[dict[str, Any]]:
    users = session.execute(select(m.User).order_by(m.User.id)).scalars()
    return [
        {"id": u.id, "username": u.username, "role": u.role, "patient_id": u.patient_id, "disabled": u.disabled}
        for u in users
    ]


# Generic record routes last: their {kind} segment would shadow the specific paths above.
@router.get("/patients/{patient_id}/{kind}", name="list_records")
def list_records(
    patient_id: str, kind: RecordKind | Literal["symptoms"], session: SessionDep, actor: ActorDep, request: Request
) -> dict[str, Any]:
    data = repo.patient_file(session, patient_id)
    if data is None:
        raise _not_found("patient")
    audit.record(session, actor, "read", f"/api/patients/{patient_id}/{kind}", patient_id, ip=client_ip(request))
    return {"patient_id": patient_id, kind: data[kind]}


@router.post("/patients/{patient_id}/{kind}", name="add_records")
def add_records(
    patient_id: str,
    kind: RecordKind,
    response: Response,
    session: SessionDep,
    protocol: ProtocolDep,
    actor: ActorDep,
    request: Request,
    items: Annotated[dict[str, Any] | list[dict[str, Any]], Body(description="One record or a list.")],
) -> dict[str, Any]:
    """Add records (idempotent: a lab result with an id already stored is stored once).
    The patient is re-assessed in the same transaction, so alerts appear at once."""
    records = items if isinstance(items, list) else [items]
    if not records:
        raise PatientFileError(kind, "send at least one record")
    if len(records) > 5000:
        raise PatientFileError(kind, "at most 5000 records per request")
    try:
        stored = repo.add_records(session, patient_id, kind, records, protocol)
    except LookupError:
        raise _not_found("patient") from None
    created = [record_id for record_id, new in stored if new]
    result = refresh_patient(session, patient_id, protocol, dt.date.today(), actor.label) if created else None
    audit.record(
        session,
        actor,
        "create",
        f"/api/patients/{patient_id}/{kind}",
        patient_id,
        ip=client_ip(request),
        created=len(created),
        existing=len(stored) - len(created),
    )
    response.status_code = 201 if created else 200
    alerts = _open_alerts(session, patient_id) if result is not None else None
    return {"patient_id": patient_id, "records": [{"id": i, "created": new} for i, new in stored], "alerts": alerts}
