"""Every route x every role gets the allow or deny that `alemwatch.api.policy.POLICY` says.

The cases are generated from the application's route table (the REST API and the web pages),
so a new route without an access rule, or without a request recipe here, fails. The expected
decision is derived from the rule (public, roles, own_record), never written per route; every
refusal of a signed-in user must leave a "denied" audit event.

The matrix runs on SQLite and PostgreSQL. To keep it fast one registry is built per backend
(module scope, the same fresh-database recipe as the `db_url` fixture) and every case sends one
request to it, with a bearer token: the decision depends on the role and the record, not on
what earlier cases stored.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from alemwatch.api.app import create_app
from alemwatch.api.policy import POLICY, Rule
from alemwatch.settings import Settings
from alemwatch.store import models as m
from alemwatch.store.db import get_engine, session_factory
from alemwatch.web import exports
from tests.conftest import PASSWORD, TABLES, make_user, token_for

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
OWN, OTHER = "p-001", "p-002"  # the patient user's own record, and another patient's
ROLES = ("anonymous", "admin", "clinician", "nurse", "patient-own-record", "patient-other-record")
USERS = {"admin": "admin", "clinician": "clin", "nurse": "nurse", "patient": "pat"}


# --- the route table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str  # the route's name, its key in POLICY
    method: str
    path: str  # e.g. /api/patients/{patient_id}
    path_params: tuple[str, ...]


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every route the application serves (API and pages, not the docs), one per method.

    Recent FastAPI keeps an included router as one lazy entry in `app.routes`, so filtering
    `app.routes` for APIRoute finds nothing; `iter_route_contexts` flattens it."""
    found = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            for method in sorted(context.methods or ()):
                found.append(Endpoint(context.name, method, context.path_format, tuple(context.param_convertors)))
    return found


def _route_table() -> list[Endpoint]:
    # Building the app touches no database; the URL only has to parse.
    return endpoints(create_app(Settings(database_url="sqlite://", environment="test")))


ENDPOINTS = _route_table()


# --- one valid request per route ----------------------------------------------------------------


def _patient_file(patient_id: str) -> dict[str, Any]:
    return {**json.loads(json.dumps(EXAMPLE)), "id": patient_id}


class Form(dict[str, str]):
    """A body sent as an HTML form (the web pages), not as JSON."""


RECENT = (dt.date.today() - dt.timedelta(days=30)).isoformat()  # forms refuse dates in the future
Body = Callable[[dict[str, str]], Any] | None  # path params -> JSON body or Form; None: the route takes no body

# A minimal valid body for every route name (None when it takes none). A route missing here fails.
BODIES: dict[str, Body] = {
    "health": None,
    "login": lambda p: {"username": "nurse", "password": PASSWORD},
    "issue_token": lambda p: {"username": "nurse", "password": PASSWORD},
    "logout": None,
    "me": None,
    "assess_file": lambda p: _patient_file("p-assess"),
    "triage": lambda p: {"text": "a mild headache since yesterday", "days_since_infusion": 3},
    "list_patients": None,
    "create_patient": lambda p: _patient_file("p-matrix-new"),
    "read_patient": None,
    "update_patient": lambda p: _patient_file(p["patient_id"]),
    "read_assessment": None,
    "list_records": None,
    "add_records": lambda p: {
        "id": "lab-matrix",
        "test": "tsh",
        "value": 2.0,
        "unit": "m[IU]/L",
        "date": "2026-01-05",
    },
    "add_symptom_report": lambda p: {"text": "tired today"},
    "patient_alerts": None,
    "acknowledge_alert": lambda p: {"reason": "called the patient"},
    "resolve_alert": lambda p: {"reason": "seen by haematology"},
    "worklist": None,
    "list_users": None,
    # web pages
    "web_login_form": None,
    "web_login": lambda p: Form(username="nurse", password=PASSWORD),
    "web_logout": None,
    "web_today": None,
    "web_patients": None,
    "web_new_patient": None,
    "web_create_patient": lambda p: Form(id="p-web-new", sex="female", hiv="negative", tuberculosis="negative"),
    "web_patient": None,
    "web_lab_form": None,
    "web_add_lab": lambda p: Form(test="tsh", value="2.0", unit="m[IU]/L", date=RECENT),
    "web_infusion_form": None,
    "web_add_infusion": lambda p: Form(date=RECENT, premedication="yes", infusion_end="10:00", observation_end="12:30"),
    "web_exam_form": None,
    "web_add_exam": lambda p: Form(type="skin", date=RECENT),
    "web_vaccination_form": None,
    "web_add_vaccination": lambda p: Form(vaccine="influenza", live="no", date=RECENT),
    "web_prophylaxis_form": None,
    "web_change_prophylaxis": lambda p: Form(drug="aciclovir", start=RECENT),
    "web_acknowledge": lambda p: Form(reason="called the patient"),
    "web_resolve": lambda p: Form(reason="seen by haematology"),
    "web_schedule_ics": None,
    "web_card_pdf": None,
    "web_portal": None,
    "web_portal_report": lambda p: Form(text="tired today", date=RECENT),
    "web_knowledge": None,
    "web_smart_launch": None,
    "web_smart_callback": None,
    # FHIR (path: resource_type Patient, resource_id the record)
    "fhir_metadata": None,
    "fhir_transaction": lambda p: {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _tsh_observation(OWN), "request": {"method": "POST", "url": "Observation"}}],
    },
    "fhir_create": lambda p: {"resourceType": "Patient", "id": "p-fhir-new", "gender": "female"},
    "fhir_update": lambda p: {"resourceType": "Patient", "id": p["resource_id"], "gender": "female"},
    "fhir_everything": None,
    "fhir_read": None,
    "fhir_search": None,
    # CDS Hooks (path: service_id the patient-view service)
    "cds_discovery": None,
    "cds_service": lambda p: {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": OWN},
        "prefetch": {
            key: {"resourceType": "Bundle", "type": "searchset", "entry": []}
            for key in ("observations", "administrations", "requests", "statements", "immunizations", "procedures")
        }
        | {"patient": {"resourceType": "Patient", "id": OWN}},
    },
    "cds_feedback": lambda p: {
        "feedback": [{"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-05T10:00:00Z"}]
    },
}


def _tsh_observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "3016-3"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-01-05",
        "valueQuantity": {"value": 2.0, "unit": "m[IU]/L", "system": "http://unitsofmeasure.org", "code": "m[IU]/L"},
    }


# --- the registry the requests go to -----------------------------------------------------------


@dataclass
class Registry:
    url: str
    client: TestClient
    headers: dict[str, dict[str, str]]  # user role -> bearer header
    alert_ids: dict[str, str]  # patient id -> one of its alerts


def fresh_database(request: pytest.FixtureRequest, directory: Path, sqlite_template: Path) -> str:
    """A migrated, empty registry on the backend of `request.param` (as the db_url fixture)."""
    if request.param == "sqlite":
        path = directory / "registry.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_schema_url")
    with get_engine(url).begin() as connection:
        connection.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Registry]:
    url = fresh_database(request, tmp_path_factory.mktemp("matrix"), sqlite_template)
    settings = Settings(database_url=url, environment="test", secret_key="test-secret-" + "x" * 32)
    with (
        pytest.MonkeyPatch.context() as patch,
        TestClient(create_app(settings), raise_server_exceptions=False) as client,
    ):
        # Who may download the alert card is under test here, not the PDF: skip the seconds of rendering.
        patch.setattr(exports, "pdf_from_html", lambda html, base_url: b"%PDF-1.4 (not rendered)", raising=False)
        for role in ("admin", "clinician", "nurse"):
            make_user(url, USERS[role], role)
        headers = {role: token_for(client, USERS[role]) for role in ("admin", "clinician", "nurse")}
        for patient_id in (OWN, OTHER):
            created = client.post("/api/patients", json=_patient_file(patient_id), headers=headers["nurse"])
            assert created.status_code == 201, created.text
        make_user(url, USERS["patient"], "patient", OWN)
        headers["patient"] = token_for(client, USERS["patient"])
        alert_ids = {}
        for patient_id in (OWN, OTHER):
            alerts = client.get(f"/api/patients/{patient_id}/alerts", headers=headers["nurse"]).json()["alerts"]
            assert alerts, f"the example file raises no alert for {patient_id}"
            alert_ids[patient_id] = alerts[0]["id"]
        yield Registry(url, client, headers, alert_ids)
    if request.param == "sqlite":
        get_engine(url).dispose()


# --- the expected decision ------------------------------------------------------------------------


def user_role(role: str) -> str | None:
    return None if role == "anonymous" else role.split("-")[0]


def expected_denial(rule: Rule, role: str, path_patient: str | None) -> int | None:
    """The status of the refusal POLICY calls for (401 or 403), or None when the request is allowed."""
    if rule.public:
        return None
    actor = user_role(role)
    if actor is None:
        return 401
    if actor not in rule.roles:
        return 403
    if actor == "patient" and rule.own_record and path_patient != OWN:
        return 403
    return None


@dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]
    body: Any  # JSON, a Form, or None
    patient_id: str | None  # the record named in the path


def send(registry: Registry, endpoint: Endpoint, call: Call, headers: dict[str, str]) -> Any:
    """Send the call with these credentials only (the cookie a login route sets is dropped); the
    answer itself, not where a redirect leads."""
    body = {"data": call.body} if isinstance(call.body, Form) else {"json": call.body}
    registry.client.cookies.clear()
    response = registry.client.request(endpoint.method, call.path, headers=headers, follow_redirects=False, **body)
    registry.client.cookies.clear()
    return response


def build_request(registry: Registry, endpoint: Endpoint, role: str) -> Call:
    """A valid request for the endpoint, sent as this role."""
    patient = OTHER if role == "patient-other-record" else OWN
    values = {
        "patient_id": patient,
        "alert_id": registry.alert_ids[patient],
        "kind": "labs",
        "resource_type": "Patient",
        "resource_id": patient,
        "service_id": "alemwatch-patient-view",
    }
    unknown = [name for name in endpoint.path_params if name not in values]
    if unknown:
        pytest.fail(f"{endpoint.name}: no test value for path parameter(s) {unknown}; add one to build_request")
    if endpoint.name not in BODIES:
        pytest.fail(f"{endpoint.name}: no body recipe; add the route to BODIES in {__name__}")
    params = {name: values[name] for name in endpoint.path_params}
    recipe = BODIES[endpoint.name]
    actor = user_role(role)
    headers = registry.headers[actor] if actor else {}
    body = recipe(params) if recipe else None
    return Call(endpoint.path.format(**params), headers, body, params.get("patient_id"))


def denied_events(url: str) -> tuple[int, m.AuditEvent | None]:
    with session_factory(url)() as session:
        denied = select(m.AuditEvent).where(m.AuditEvent.outcome == "denied")
        total = session.execute(select(func.count()).select_from(denied.subquery())).scalar_one()
        last = session.execute(denied.order_by(m.AuditEvent.id.desc()).limit(1)).scalar_one_or_none()
        return total, last


# --- the tests -------------------------------------------------------------------------------------------


def test_the_route_table_is_found_and_every_route_has_an_access_rule() -> None:
    names = {endpoint.name for endpoint in ENDPOINTS}
    assert "health" in names, "the route walk found no API route"
    missing = sorted(names - POLICY.keys())
    assert not missing, f"routes without an access rule in alemwatch.api.policy.POLICY: {missing}"
    stale = sorted(POLICY.keys() - names)
    assert not stale, f"access rules for routes that do not exist: {stale}"


def test_every_route_has_a_request_recipe() -> None:
    missing = sorted({endpoint.name for endpoint in ENDPOINTS} - BODIES.keys())
    assert not missing, f"routes without a body recipe in BODIES: {missing}"


@pytest.mark.parametrize(
    ("endpoint", "role"),
    [pytest.param(endpoint, role, id=f"{endpoint.name}-{role}") for endpoint in ENDPOINTS for role in ROLES],
)
def test_role_matrix(registry: Registry, endpoint: Endpoint, role: str) -> None:
    rule = POLICY.get(endpoint.name)
    assert rule is not None, f"{endpoint.name} has no access rule"
    call = build_request(registry, endpoint, role)
    denial = expected_denial(rule, role, call.patient_id)
    audited = denial is not None and role != "anonymous"  # anonymous: test_anonymous_refusals_are_audited
    before = denied_events(registry.url)[0] if audited else 0

    response = send(registry, endpoint, call, call.headers)

    said = f"{endpoint.method} {call.path} as {role}: {response.status_code} {response.text[:300]}"
    if denial is None:
        assert response.status_code not in (401, 403), f"refused but POLICY allows it: {said}"
        assert response.status_code < 500, f"allowed, then failed: {said}"
        return
    assert response.status_code == denial, f"expected {denial}: {said}"
    if not audited:
        return
    after, event = denied_events(registry.url)
    assert after == before + 1, f"no 'denied' audit event for {said}"
    assert event is not None, said
    assert (event.resource, event.role, event.patient_id) == (call.path, user_role(role), call.patient_id)


def test_anonymous_refusals_are_audited(registry: Registry) -> None:
    unaudited = []
    for endpoint in ENDPOINTS:
        if POLICY[endpoint.name].public:
            continue
        call = build_request(registry, endpoint, "anonymous")
        before, _ = denied_events(registry.url)
        response = send(registry, endpoint, call, {})
        assert response.status_code == 401
        if denied_events(registry.url)[0] != before + 1:
            unaudited.append(f"{endpoint.method} {call.path}")
    assert not unaudited, f"anonymous refusals without a 'denied' audit event: {unaudited}"
