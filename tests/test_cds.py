"""CDS Hooks 2.0: requests and responses checked against JSON Schemas written from the
specification (tests/schemas/cds-hooks/), the cards the services answer, prefetch and the
fetch from the request's fhirServer (our own FHIR endpoint, live on 127.0.0.1), and the
feedback endpoint's audit trail."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from alemwatch.core.assess import assess
from alemwatch.core.patient import parse_patient
from alemwatch.fhir import outbound
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.refresh import refresh_patient
from alemwatch.store import models as m
from alemwatch.store.db import session_factory, transaction
from alemwatch.store.repo import save_patient_file, with_record_ids
from tests.conftest import PASSWORD, make_user, token_for
from tests.fhir_helpers import live_server

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "schemas" / "cds-hooks"
EXAMPLE = json.loads((ROOT / "examples" / "patient-contract.json").read_text())
PROTOCOL = load_protocol("us")
TODAY = dt.date.today()
PREFETCH_TYPES = {
    "observations": "Observation",
    "administrations": "MedicationAdministration",
    "requests": "MedicationRequest",
    "statements": "MedicationStatement",
    "immunizations": "Immunization",
    "procedures": "Procedure",
}
ALEMTUZUMAB = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1594660"}]}


def schema(name: str) -> jsonschema.Draft202012Validator:
    document = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


def valid(name: str, document: Any) -> None:
    errors = sorted(schema(name).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


# --- patients as an EHR would hold them ------------------------------------------------------------


def patient_file(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data.update(changes)
    return data


def prefetch_for(data: dict[str, Any], drop_planned: bool = False) -> dict[str, Any]:
    resources = outbound.record_resources(with_record_ids(data), PROTOCOL)
    if drop_planned:
        resources = [r for r in resources if r["resourceType"] != "MedicationRequest"]
    out: dict[str, Any] = {"patient": next(r for r in resources if r["resourceType"] == "Patient")}
    for key, kind in PREFETCH_TYPES.items():
        entries = [{"resource": r} for r in resources if r["resourceType"] == kind]
        out[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return out


def hook_request(hook: str, patient_id: str, prefetch: dict[str, Any] | None, **context: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id, **context},
    }
    if prefetch is not None:
        request["prefetch"] = prefetch
    return request


def order(start: dt.date, order_id: str = "draft-1", medication: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": medication or ALEMTUZUMAB,
        "subject": {"reference": "Patient/p-001"},
        "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": start.isoformat()}}}}],
    }


def draft_orders(*orders: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}


def ready_patient(start: dt.date) -> dict[str, Any]:
    """A patient whose second course may start on `start` (within 30 days): every baseline result 5 days ago."""
    assert (start - TODAY).days < 25
    day = (TODAY - dt.timedelta(days=5)).isoformat()
    baseline = [
        ("platelets", 240, "10*9/L"),
        ("creatinine", 70, "umol/L"),
        ("urine_blood", 0, "{presence}"),
        ("upcr", 5, "mg/mmol"),
        ("tsh", 1.5, "m[IU]/L"),
        ("alt", 20, "U/L"),
        ("bilirubin", 8, "umol/L"),
    ]
    labs = [{"test": t, "value": v, "unit": u, "date": day} for t, v, u in baseline]
    return patient_file(labs=labs, symptoms=[], planned_course_start=None)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def client(app_client: TestClient, db_url: str) -> TestClient:
    make_user(db_url, "cds-nurse", "nurse")
    app_client.headers.update(token_for(app_client, "cds-nurse"))
    return app_client


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The real server on the test database holding the example patient: (base URL, bearer token)."""
    with transaction(db_url) as session:
        save_patient_file(session, patient_file(), PROTOCOL)
        refresh_patient(session, "p-001", PROTOCOL, TODAY)
    make_user(db_url, "ehr-service", "clinician")
    with live_server(db_url, tmp_path / "server.log") as base:
        answer = httpx.post(f"{base}/api/auth/token", json={"username": "ehr-service", "password": PASSWORD})
        yield base, answer.json()["access_token"]


def call(client: TestClient, service: str, request: dict[str, Any], status: int = 200) -> dict[str, Any]:
    valid("request.json", request)
    response = client.post(f"/cds-services/{service}", json=request)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    if status == 200:
        valid("response.json", body)
    return body


def summaries(body: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((card["indicator"], card["summary"]) for card in body["cards"])


# --- the schemas themselves --------------------------------------------------------------------------


def test_the_schemas_accept_the_specification_examples_and_refuse_bad_cards() -> None:
    pairs = {
        "spec-discovery.json": "discovery-response.json",
        "spec-patient-view-request.json": "request.json",
        "spec-card-response.json": "response.json",
        "spec-feedback.json": "feedback.json",
    }
    for example, name in pairs.items():
        valid(name, json.loads((SCHEMAS / "examples" / example).read_text()))
    card = json.loads((SCHEMAS / "examples" / "spec-card-response.json").read_text())["cards"][0]
    for bad in ({**card, "indicator": "danger"}, {k: v for k, v in card.items() if k != "source"}):
        assert list(schema("response.json").iter_errors({"cards": [bad]})), bad


# --- discovery ---------------------------------------------------------------------------------------


def test_discovery_lists_the_three_services_with_prefetch_templates(app_client: TestClient) -> None:
    response = app_client.get("/cds-services")  # no token: discovery is open
    assert response.status_code == 200
    body = response.json()
    valid("discovery-response.json", body)
    hooks = {service["id"]: service["hook"] for service in body["services"]}
    assert sorted(hooks.values()) == ["order-select", "order-sign", "patient-view"]
    for service in body["services"]:
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert service["prefetch"]["observations"] == "Observation?patient={{context.patientId}}"


# --- patient-view --------------------------------------------------------------------------------------


def test_patient_view_cards_follow_the_assessment(client: TestClient) -> None:
    data = patient_file()
    request = hook_request("patient-view", "p-001", prefetch_for(data))
    valid("context-patient-view.json", request["context"])
    body = call(client, "alemwatch-patient-view", request)
    result = assess(parse_patient(data, PROTOCOL), PROTOCOL, TODAY)
    overdue = [t for t in result["monitoring"]["tasks"] if t["status"] == "overdue"]
    by_summary = {card["summary"]: card for card in body["cards"]}
    itp = [card for card in body["cards"] if "itp" in card["summary"]]
    assert itp and itp[0]["indicator"] == "critical", summaries(body)  # platelets 85: urgent ITP
    assert by_summary[f"{len(overdue)} alemtuzumab monitoring test(s) overdue"]["indicator"] == "warning"
    assert len(
        [c for c in body["cards"] if c["summary"].startswith(("URGENT", "SOON", "EMERGENCY", "ROUTINE"))]
    ) == len(result["findings"])
    assert all(card["source"]["label"].startswith("alemwatch") for card in body["cards"])


def test_a_platelet_count_of_18_is_a_critical_card(client: TestClient) -> None:
    day = (TODAY - dt.timedelta(days=2)).isoformat()
    data = patient_file(labs=[*EXAMPLE["labs"], {"test": "platelets", "value": 18, "unit": "10*9/L", "date": day}])
    body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch_for(data)))
    first = body["cards"][0]
    assert first["indicator"] == "critical" and "itp" in first["summary"], summaries(body)
    assert "18" in first["detail"]


def test_prophylaxis_decision_may_stop_is_an_info_card(client: TestClient) -> None:
    last = TODAY - dt.timedelta(days=120)
    infusions = [
        {"date": (last - dt.timedelta(days=n)).isoformat(), "premedication": True, "observation_minutes": 130}
        for n in range(4, -1, -1)
    ]
    labs = [{"test": "cd4", "value": 320, "unit": "/uL", "date": (TODAY - dt.timedelta(days=3)).isoformat()}]
    prophylaxis = [{"kind": "herpes", "drug": "aciclovir", "start": infusions[0]["date"], "stop": None}]
    data = patient_file(infusions=infusions, labs=labs, prophylaxis=prophylaxis, symptoms=[], planned_course_start=None)
    body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch_for(data)))
    cards = [c for c in body["cards"] if c["summary"].startswith("Herpes prophylaxis may stop")]
    assert cards and cards[0]["indicator"] == "info", summaries(body)


def test_an_unreadable_ehr_record_is_said_in_a_warning_card(client: TestClient) -> None:
    prefetch = prefetch_for(patient_file())
    bad = {
        "resourceType": "Observation",
        "id": "weird",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
        "subject": {"reference": "Patient/p-001"},
        "effectiveDateTime": TODAY.isoformat(),
        "valueQuantity": {"value": "lots", "code": "10*9/L"},
    }
    prefetch["observations"]["entry"].append({"resource": bad})
    body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch))
    warning = [c for c in body["cards"] if "could not be read" in c["summary"]]
    assert warning and warning[0]["indicator"] == "warning"
    assert "Observation/weird" in warning[0]["detail"]


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("Patient/p-001.birthDate", lambda p: p["patient"].update(birthDate="1985-13-45")),
        ("Observation/tsh-bad.effectiveDateTime", lambda p: _add_tsh(p, effectiveDateTime="2026-02-30")),
        ("Observation/tsh-bad", lambda p: _add_tsh(p, valueQuantity="1.2 mIU/L")),
        ("Observation/tsh-bad", lambda p: _add_tsh(p, code=["3016-3"])),
    ],
    ids=["impossible-birth-date", "impossible-result-date", "quantity-as-text", "code-as-list"],
)
def test_an_ehr_record_of_the_wrong_shape_is_a_warning_card_not_an_error(
    client: TestClient, where: str, change: Any
) -> None:
    """The prefetch is read without full validation: a bad element is still named, never a 500."""
    prefetch = prefetch_for(patient_file())
    change(prefetch)
    body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch))
    warning = [c for c in body["cards"] if "could not be read" in c["summary"]]
    assert warning and warning[0]["indicator"] == "warning", summaries(body)
    assert where in warning[0]["detail"]


def _add_tsh(prefetch: dict[str, Any], **changes: Any) -> None:
    resource = {
        "resourceType": "Observation",
        "id": "tsh-bad",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "3016-3"}]},
        "subject": {"reference": "Patient/p-001"},
        "effectiveDateTime": TODAY.isoformat(),
        "valueQuantity": {"value": 1.2, "unit": "mIU/L", "system": "http://unitsofmeasure.org", "code": "m[IU]/L"},
    }
    prefetch["observations"]["entry"].append({"resource": {**resource, **changes}})


def test_without_prefetch_or_fhir_server_the_service_answers_412(client: TestClient) -> None:
    call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", None), status=412)


def test_a_wrong_hook_or_missing_context_is_a_400(client: TestClient) -> None:
    request = hook_request("order-select", "p-001", prefetch_for(patient_file()))
    assert client.post("/cds-services/alemwatch-patient-view", json=request).status_code == 400
    request = hook_request("patient-view", "p-001", prefetch_for(patient_file()))
    del request["context"]["patientId"]
    response = client.post("/cds-services/alemwatch-patient-view", json=request)
    assert response.status_code == 400 and "patientId" in response.text
    assert client.post("/cds-services/no-such-service", json=request).status_code == 404


def test_the_service_needs_a_care_team_token(app_client: TestClient) -> None:
    request = hook_request("patient-view", "p-001", prefetch_for(patient_file()))
    assert app_client.post("/cds-services/alemwatch-patient-view", json=request).status_code == 401


# --- fetching from the EHR's FHIR server (our own endpoint, live) ---------------------------------------


def test_without_prefetch_the_service_fetches_from_the_fhir_server(live: tuple[str, str]) -> None:
    base, token = live
    headers = {"Authorization": f"Bearer {token}"}
    with_prefetch = hook_request("patient-view", "p-001", prefetch_for(patient_file(), drop_planned=False))
    expected = httpx.post(f"{base}/cds-services/alemwatch-patient-view", json=with_prefetch, headers=headers)
    assert expected.status_code == 200, expected.text
    authorization = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read"}
    request = hook_request("patient-view", "p-001", None) | {
        "fhirServer": f"{base}/fhir",
        "fhirAuthorization": {**authorization, "subject": "alemwatch-cds"},
    }
    valid("request.json", request)
    fetched = httpx.post(f"{base}/cds-services/alemwatch-patient-view", json=request, headers=headers, timeout=30)
    assert fetched.status_code == 200, fetched.text
    valid("response.json", fetched.json())
    assert summaries(fetched.json()) == summaries(expected.json())
    # An OperationOutcome in place of one prefetch: that one is fetched, the rest are used as sent.
    partial = copy.deepcopy(with_prefetch) | {
        "fhirServer": f"{base}/fhir",
        "fhirAuthorization": request["fhirAuthorization"],
    }
    partial["prefetch"]["observations"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search took too long"}],
    }
    answer = httpx.post(f"{base}/cds-services/alemwatch-patient-view", json=partial, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert summaries(answer.json()) == summaries(expected.json())


def test_a_fhir_server_that_refuses_is_said_in_a_card_not_taken_for_all_well(live: tuple[str, str]) -> None:
    base, token = live
    request = hook_request("patient-view", "p-001", None) | {"fhirServer": f"{base}/fhir"}  # no authorization
    answer = httpx.post(
        f"{base}/cds-services/alemwatch-patient-view", json=request, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    assert any(c["indicator"] == "warning" and "could not be read" in c["summary"] for c in cards), cards
    assert any("answered 401" in c["detail"] for c in cards)


# --- order-select and order-sign ------------------------------------------------------------------------


def test_a_contraindicated_course_is_critical(client: TestClient) -> None:
    data = patient_file(screening={**EXAMPLE["screening"], "hiv": "positive"})
    start = TODAY + dt.timedelta(days=14)
    context = {"selections": ["MedicationRequest/draft-1"], "draftOrders": draft_orders(order(start))}
    request = hook_request("order-select", "p-001", prefetch_for(data, drop_planned=True), **context)
    valid("context-order-select.json", request["context"])
    body = call(client, "alemwatch-order-select", request)
    assert body["cards"][0]["indicator"] == "critical", summaries(body)
    assert "contraindicated" in body["cards"][0]["summary"] and "HIV" in body["cards"][0]["detail"]


def test_a_course_not_ready_is_a_warning_with_orders_for_the_missing_baseline(client: TestClient) -> None:
    data = patient_file()
    start = TODAY + dt.timedelta(days=14)
    context = {"selections": ["MedicationRequest/draft-1"], "draftOrders": draft_orders(order(start))}
    body = call(
        client, "alemwatch-order-select", hook_request("order-select", "p-001", prefetch_for(data, True), **context)
    )
    planned = parse_patient(patient_file(planned_course_start=start.isoformat()), PROTOCOL)
    plan = assess(planned, PROTOCOL, TODAY)["eligibility"]
    missing = [b for b in plan["baseline"] if b["status"] in ("missing", "too_old")]
    assert plan["status"] == "not_ready" and missing
    card = next(c for c in body["cards"] if c["indicator"] == "warning" and c["summary"].startswith("Not ready"))
    assert "30 days" in card["detail"]
    actions = card["suggestions"][0]["actions"]
    assert [a["resource"]["code"]["text"] for a in actions] == [b["name"] for b in missing]
    assert all(a["type"] == "create" and a["resource"]["resourceType"] == "ServiceRequest" for a in actions)
    platelets = next(a for a in actions if a["resource"]["code"]["text"].startswith("CBC"))
    assert platelets["resource"]["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "777-3",
        "display": "Platelet count",
    }


def test_a_ready_course_is_an_info_card_with_the_rems_validity(client: TestClient) -> None:
    start = TODAY + dt.timedelta(days=14)
    data = ready_patient(start)
    context = {"draftOrders": draft_orders(order(start))}
    request = hook_request("order-sign", "p-001", prefetch_for(data), **context)
    valid("context-order-sign.json", request["context"])
    body = call(client, "alemwatch-order-sign", request)
    expected = assess(parse_patient({**data, "planned_course_start": start.isoformat()}, PROTOCOL), PROTOCOL, TODAY)
    assert expected["eligibility"]["status"] == "eligible", expected["eligibility"]["reasons"]
    valid_until = min(b["valid_until"] for b in expected["eligibility"]["baseline"] if b.get("valid_until"))
    assert [c["indicator"] for c in body["cards"]] == ["info"], summaries(body)
    assert valid_until in body["cards"][0]["summary"]


def test_an_order_that_is_not_alemtuzumab_gets_no_card(client: TestClient) -> None:
    other = order(TODAY, medication={"text": "interferon beta-1a"})
    context = {"selections": ["MedicationRequest/draft-1"], "draftOrders": draft_orders(other)}
    body = call(
        client, "alemwatch-order-select", hook_request("order-select", "p-001", prefetch_for(patient_file()), **context)
    )
    assert body == {"cards": []}
    # ...and an alemtuzumab order that is not among the selections is not checked either.
    context = {"selections": ["MedicationRequest/other"], "draftOrders": draft_orders(order(TODAY))}
    body = call(
        client, "alemwatch-order-select", hook_request("order-select", "p-001", prefetch_for(patient_file()), **context)
    )
    assert body == {"cards": []}


# --- feedback ---------------------------------------------------------------------------------------------


def test_feedback_is_recorded_in_the_audit_trail(client: TestClient, db_url: str) -> None:
    body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch_for(patient_file())))
    card = body["cards"][0]["uuid"]
    reason = {
        "code": "clinical-judgement",
        "system": "https://alemwatch.org/fhir/CodeSystem/cds-override",
        "display": "Clinical judgement",
    }
    feedback = {
        "feedback": [
            {
                "card": card,
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": "platelets rechecked this morning"},
                "outcomeTimestamp": "2026-12-01T10:00:00Z",
            }
        ]
    }
    valid("feedback.json", feedback)
    response = client.post("/cds-services/alemwatch-patient-view/feedback", json=feedback)
    assert response.status_code == 200, response.text
    with session_factory(db_url)() as session:
        events = list(session.execute(select(m.AuditEvent).where(m.AuditEvent.action.like("cds%"))).scalars())
    call_event = next(e for e in events if e.action == "cds")
    assert call_event.patient_id == "p-001" and card in call_event.detail["cards"]
    override = next(e for e in events if e.action == "cds_overridden")
    assert override.detail["card"] == card
    assert override.detail["override_reason"]["code"] == "clinical-judgement"
    assert override.detail["override_comment"] == "platelets rechecked this morning"
    bad = {"feedback": [{"card": card, "outcome": "ignored", "outcomeTimestamp": "2026-12-01T10:00:00Z"}]}
    assert client.post("/cds-services/alemwatch-patient-view/feedback", json=bad).status_code == 422


def test_a_red_flag_the_patient_told_alemwatch_reaches_the_ehr(client: TestClient) -> None:
    """The EHR's data has no symptom report; the registry has the patient's emergency report."""
    created = client.post("/api/patients", json=patient_file(symptoms=[]))
    assert created.status_code == 201, created.text
    text = "sudden worst headache of my life and my arm is weak"
    report = client.post("/api/patients/p-001/symptoms", json={"text": text, "date": TODAY.isoformat()})
    assert report.status_code == 201 and report.json()["urgency"] == "emergency", report.text
    body = call(
        client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch_for(patient_file(symptoms=[])))
    )
    registry = [c for c in body["cards"] if "(alemwatch registry)" in c["summary"]]
    assert registry and registry[0]["indicator"] == "critical", summaries(body)
    assert registry[0]["summary"].startswith("EMERGENCY")
    # A finding the EHR's own data shows is not repeated from the registry.
    assert not any("itp" in c["summary"].lower() for c in registry)
