"""The FHIR R4 endpoint end to end, on SQLite and PostgreSQL: a hospital's transaction round
trips through an export into an empty registry with the same assessment; everything emitted
is valid R4 with the codes we rely on; the engine's conclusions come out as CarePlan,
DetectedIssue and Flag; search; all-or-nothing writes; precise OperationOutcomes for bad
input; idempotency; access and audit; a real FHIR client against the live server; and
`alemwatch import-fhir` through the installed entry point."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from alemwatch.api.app import create_app
from alemwatch.core.assess import assess
from alemwatch.core.patient import parse_patient
from alemwatch.fhir import outbound
from alemwatch.protocol.load import load_protocol
from alemwatch.settings import Settings
from alemwatch.store import models as m
from alemwatch.store.db import session_factory
from tests.conftest import PASSWORD, TABLES, count, make_user, token_for
from tests.fhir_helpers import (
    ALEMTUZUMAB,
    COURSE,
    LOINC,
    METHYLPREDNISOLONE,
    RECORD_TYPES,
    administration,
    assert_r4,
    bundle,
    empty_database,
    entry,
    expressions,
    hospital_bundle,
    immunization,
    infusion,
    lab,
    live_server,
    outcome,
    patient,
    planned_course,
    prophylaxis,
    put_all,
    r4_problems,
    run_cli,
)

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
PROTOCOL = load_protocol("us")
AS_OF = ("2025-01-08", "2025-03-15", "2026-03-01")
PATIENT_TABLES = (m.Patient, m.LabResult, m.Infusion, m.Exam, m.Vaccination, m.Prophylaxis, m.SymptomReport)
GROWING = {"audit_events", "login_attempts"}  # a refused request may be recorded there


def care_team(client: TestClient, url: str) -> dict[str, str]:
    """A nurse's bearer token (the clinician is made too, for the tests that need one)."""
    make_user(url, "nurse", "nurse")
    make_user(url, "clin", "clinician")
    return token_for(client, "nurse")


def post(client: TestClient, body: Any, headers: dict[str, str], path: str = "/fhir") -> Any:
    return client.post(path, content=json.dumps(body), headers={**headers, "content-type": "application/fhir+json"})


def stored(url: str) -> dict[str, int]:
    """Row counts of every table but those a refusal may write to."""
    tables = m.Base.metadata.tables
    with session_factory(url)() as session:
        return {
            t: session.execute(select(func.count()).select_from(tables[t])).scalar_one()
            for t in TABLES
            if t not in GROWING
        }


def everything(client: TestClient, pid: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/Patient/{pid}/$everything", headers=headers)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json()["entry"]]


def records(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The record resources of an export (what can be written back), in a stable order."""
    kept = [r for r in resources if r["resourceType"] in RECORD_TYPES]
    return sorted(kept, key=lambda r: (r["resourceType"], r["id"]))


def contract_resources(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The contract's patient file as FHIR resources (the registry's own mapping; records get ids)."""
    data = copy.deepcopy(data)
    for kind in ("infusions", "labs", "exams", "vaccinations", "prophylaxis", "symptoms"):
        for n, item in enumerate(data.get(kind) or []):
            item["id"] = f"{kind[:3]}-{n}"
    return outbound.record_resources(data, PROTOCOL)


def import_contract(client: TestClient, headers: dict[str, str]) -> None:
    response = post(client, bundle([entry(r) for r in contract_resources(EXAMPLE)]), headers)
    assert response.status_code == 200, response.text
    assert all(e["response"]["status"].startswith("201") for e in response.json()["entry"]), response.text


def import_hospital(client: TestClient, headers: dict[str, str]) -> str:
    response = post(client, hospital_bundle(), headers)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    assert location.startswith("Patient/")
    return str(location.removeprefix("Patient/"))


# --- 1. round trips ------------------------------------------------------------------------------


def test_a_hospital_transaction_exported_into_an_empty_registry_is_assessed_the_same(
    app_client: TestClient, db_url: str, settings: Settings, tmp_path: Path, sqlite_template: Path
) -> None:
    headers = care_team(app_client, db_url)
    sent = hospital_bundle()
    response = post(app_client, sent, headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response" and len(answer["entry"]) == len(sent["entry"])
    pid = answer["entry"][0]["response"]["location"].removeprefix("Patient/")
    for n, (item, reply) in enumerate(zip(sent["entry"], answer["entry"], strict=True)):
        resource = item["resource"]
        skipped = resource.get("status") == "cancelled" or resource.get("medicationCodeableConcept", {}).get(
            "coding"
        ) == [METHYLPREDNISOLONE]
        assert reply["response"]["status"] == ("200 OK" if skipped else "201 Created"), (n, reply)
    # Every location the transaction answers can be read back.
    for reply in answer["entry"]:
        if "location" in reply["response"]:
            assert app_client.get(f"/fhir/{reply['response']['location']}", headers=headers).status_code == 200, reply

    file = app_client.get(f"/api/patients/{pid}", headers=headers).json()["patient"]
    assert [(i["date"], i.get("premedication")) for i in file["infusions"]] == [
        (day, True if n < 3 else None) for n, day in enumerate(COURSE)
    ]
    creatinine = sorted((lab["date"], lab["value"], lab["unit"]) for lab in file["labs"] if lab["test"] == "creatinine")
    assert creatinine == [("2025-01-02", 0.8, "mg/dL"), ("2025-03-10", 1.3, "mg/dL")]
    assert len(file["labs"]) == 8  # the cancelled haemoglobin is not stored
    assert file["vaccinations"] == [{"vaccine": "varicella", "live": True, "date": "2024-10-01"}]
    assert [(p["drug"], p["start"], p["stop"]) for p in file["prophylaxis"]] == [("aciclovir", COURSE[0], None)]
    assert file["planned_course_start"] == "2026-01-12"
    first = {
        day: app_client.get(f"/api/patients/{pid}/assessment?as_of={day}", headers=headers).json() for day in AS_OF
    }
    # mg/dL was converted: 0.8 -> 1.3 mg/dL is a rise from 70.7 to 115 umol/L.
    assert {f["condition"] for f in first["2025-03-15"]["findings"]} == {"itp", "anti_gbm"}

    exported = records(everything(app_client, pid, headers))
    before = stored(db_url)
    again = post(app_client, bundle([entry(r, "PUT") for r in exported]), headers)
    assert again.status_code == 200, again.text
    assert stored(db_url) == before, "the registry's own export written back stores nothing new"

    with (
        empty_database(db_url, tmp_path, sqlite_template) as second_url,
        TestClient(create_app(settings.model_copy(update={"database_url": second_url}))) as second,
    ):
        second_headers = care_team(second, second_url)
        assert count(second_url, m.Patient) == 0
        copied = post(second, bundle([entry(r, "PUT") for r in exported]), second_headers)
        assert copied.status_code == 200, copied.text
        for day in AS_OF:
            got = second.get(f"/api/patients/{pid}/assessment?as_of={day}", headers=second_headers).json()
            assert got == first[day], day
        assert second.get(f"/api/patients/{pid}", headers=second_headers).json()["patient"] == file
        assert records(everything(second, pid, second_headers)) == exported


def test_the_contract_file_through_fhir_is_assessed_as_the_engine_assesses_the_file(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    import_contract(app_client, headers)
    for day in (*AS_OF, "2029-06-01"):
        got = app_client.get(f"/api/patients/p-001/assessment?as_of={day}", headers=headers).json()
        assert got == assess(parse_patient(EXAMPLE, PROTOCOL), PROTOCOL, dt.date.fromisoformat(day)), day


# --- 2. everything emitted is valid R4 -----------------------------------------------------------


def test_every_resource_the_server_emits_is_valid_r4_with_the_codes_we_rely_on(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    emitted: list[dict[str, Any]] = []

    def keep(response: Any, status: int) -> dict[str, Any]:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.headers["content-type"].startswith("application/fhir+json")
        body: dict[str, Any] = response.json()
        emitted.append(body)
        return body

    keep(app_client.get("/fhir/metadata"), 200)
    keep(post(app_client, bundle([entry(r) for r in contract_resources(EXAMPLE)]), headers), 200)
    transaction = keep(post(app_client, hospital_bundle(), headers), 200)
    hospital = transaction["entry"][0]["response"]["location"].removeprefix("Patient/")
    good, bad = "p-batch-good", "p-batch-bad"
    batch = put_all(
        [
            patient(good),
            lab(good, "777-3", 180, "10*9/L", "2025-05-01"),
            patient(bad),
            lab(bad, "777-3", 180, "kg", "2025-05-01"),
        ],
        "batch",
    )
    keep(post(app_client, batch, headers), 200)
    for pid in ("p-001", hospital):
        whole = keep(app_client.get(f"/fhir/Patient/{pid}/$everything", headers=headers), 200)
        for item in whole["entry"]:
            resource = item["resource"]
            assert item["fullUrl"].endswith(f"/{resource['resourceType']}/{resource['id']}")
            read = keep(app_client.get(f"/fhir/{resource['resourceType']}/{resource['id']}", headers=headers), 200)
            assert read == resource
        for kind in (*RECORD_TYPES[1:], "CarePlan", "DetectedIssue", "Flag"):
            keep(app_client.get(f"/fhir/{kind}", params={"patient": pid}, headers=headers), 200)
    keep(app_client.get("/fhir/Patient", params={"_count": 2}, headers=headers), 200)
    keep(app_client.get("/fhir/Patient", params={"_id": "p-001"}, headers=headers), 200)
    # ... and the refusals, each an OperationOutcome.
    keep(app_client.get("/fhir/Patient"), 401)
    keep(app_client.get("/fhir/Observation/p-001.nothing", headers=headers), 404)
    keep(app_client.get("/fhir/Observation", headers=headers), 400)
    keep(post(app_client, put_all([patient("p-x"), lab("p-x", "777-3", 1, "kg", "2025-01-01")]), headers), 422)
    changed = lab("p-001", "777-3", 999, "10*9/L", EXAMPLE["labs"][0]["date"], id="p-001.lab-0")
    keep(post(app_client, put_all([changed]), headers), 409)
    keep(app_client.delete("/fhir/Patient/p-001", headers=headers), 405)
    other_drug = administration(
        "p-001", {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "161"}, "2025-01-06"
    )
    keep(post(app_client, other_drug, headers, "/fhir/MedicationAdministration"), 200)

    assert_r4(*emitted)
    seen = set()
    for body in emitted:
        seen.add(body["resourceType"] + (f":{body['type']}" if body["resourceType"] == "Bundle" else ""))
        seen |= {e["resource"]["resourceType"] for e in body.get("entry") or [] if "resource" in e}
    wanted = {
        "CapabilityStatement",
        "Patient",
        "Observation",
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
        "Immunization",
        "Procedure",
        "CarePlan",
        "DetectedIssue",
        "Flag",
        "OperationOutcome",
        "Bundle:searchset",
        "Bundle:transaction-response",
        "Bundle:batch-response",
    }
    assert wanted <= seen, wanted - seen


def test_the_validator_of_these_tests_finds_wrong_codes_and_wrong_structure() -> None:
    """The check above can fail: a wrong code value, an unknown element, a missing status."""
    good = lab("p-1", "777-3", 1, "10*9/L", "2025-01-01")
    assert r4_problems(good) == []
    assert r4_problems({**good, "status": "done"})  # not an R4 ObservationStatus
    assert r4_problems({**good, "colour": "red"})
    assert r4_problems({k: v for k, v in good.items() if k != "status"})
    flag = {"resourceType": "Flag", "status": "open", "code": {"text": "x"}, "subject": {"reference": "Patient/p"}}
    assert r4_problems(flag)
    issue = {"resourceType": "DetectedIssue", "status": "final", "severity": "urgent"}
    assert r4_problems(issue)


# --- 3. what the engine concludes ------------------------------------------------------------------

TASK_STATUS = {"done": "completed", "due": "scheduled", "overdue": "scheduled", "upcoming": "not-started"}
SEVERITY = {"emergency": "high", "urgent": "high", "soon": "moderate", "routine": "low"}


def test_the_care_plan_has_one_activity_per_monitoring_task_and_an_issue_per_finding_and_a_flag_per_alert(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    import_contract(app_client, headers)
    expected = assess(parse_patient(EXAMPLE, PROTOCOL), PROTOCOL, dt.date.today())
    plans = app_client.get("/fhir/CarePlan", params={"patient": "p-001"}, headers=headers).json()
    assert plans["total"] == 1
    plan = plans["entry"][0]["resource"]
    tasks = expected["monitoring"]["tasks"]
    assert len(tasks) > 10 and len(plan["activity"]) == len(tasks)
    for activity, task in zip(plan["activity"], tasks, strict=True):
        detail = activity["detail"]
        assert detail["code"]["coding"][0]["code"] == task["task"]
        assert activity["extension"] == [
            {
                "url": "https://alemwatch.org/fhir/StructureDefinition/monitoring-task-status",
                "valueCode": task["status"],
            }
        ]
        assert detail["status"] == TASK_STATUS[task["status"]], task
        window = task.get("window") or [task["due"], task["due"]]
        assert detail["scheduledPeriod"] == {"start": window[0], "end": window[1]}
    assert plan["period"]["end"] == expected["monitoring"]["until"]

    issues = [
        e["resource"] for e in app_client.get("/fhir/DetectedIssue?patient=p-001", headers=headers).json()["entry"]
    ]
    want = [(f["condition"], SEVERITY[f["severity"]]) for f in expected["findings"]]
    want += [(d["code"], "moderate") for d in expected["deviations"]]
    assert [(i["code"]["coding"][0]["code"], i["severity"]) for i in issues] == want
    assert want, "the contract patient has findings and deviations"

    alerts = app_client.get("/api/patients/p-001/alerts", headers=headers).json()["alerts"]
    open_codes = sorted(a["code"] for a in alerts if a["status"] != "resolved")
    flags = [e["resource"] for e in app_client.get("/fhir/Flag?patient=p-001", headers=headers).json()["entry"]]
    assert sorted(f["code"]["coding"][0]["code"] for f in flags) == open_codes
    assert open_codes


def test_a_platelet_count_of_18_raises_an_itp_finding_and_a_flag(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    today = dt.date.today()
    course = [today - dt.timedelta(days=120 - n) for n in range(5)]
    resources = [
        patient("p-itp"),
        lab("p-itp", "777-3", 230, "10*9/L", (course[0] - dt.timedelta(days=7)).isoformat()),
        *(infusion("p-itp", day.isoformat()) for day in course),
        lab("p-itp", "777-3", 18, "10*9/L", today.isoformat()),
    ]
    assert post(app_client, put_all(resources), headers).status_code == 200
    flags = [e["resource"] for e in app_client.get("/fhir/Flag?patient=p-itp", headers=headers).json()["entry"]]
    itp = [f for f in flags if f["code"]["coding"][0]["code"] == "itp"]
    assert len(itp) == 1 and itp[0]["status"] == "active"
    assert itp[0]["extension"][0]["valueCode"] in ("urgent", "emergency")
    assert app_client.get(f"/fhir/Flag/{itp[0]['id']}", headers=headers).json() == itp[0]
    issues = [
        e["resource"] for e in app_client.get("/fhir/DetectedIssue?patient=p-itp", headers=headers).json()["entry"]
    ]
    found = [i for i in issues if i["code"]["coding"][0]["code"] == "itp"]
    assert len(found) == 1 and found[0]["severity"] == "high"
    assert "18" in found[0]["detail"] and found[0]["identifiedDateTime"] == today.isoformat()
    assert_r4(*flags, *issues)


# --- 4. search -------------------------------------------------------------------------------------


def _search_patients(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
    """p-s1's Observations by date; p-s2 has a platelet count in 2025 too (another patient)."""
    when = {
        "before": "2024-12-31",
        "first": "2025-01-01",
        "mid": "2025-06-15T23:30:00-05:00",  # its own day is 15 June
        "last": "2025-12-31",
        "after": "2026-01-01",
    }
    resources = [patient("p-s1"), patient("p-s2")]
    resources += [
        lab("p-s1", "777-3", 200 + n, "10*9/L", day, id=f"plt-{name}") for n, (name, day) in enumerate(when.items())
    ]
    resources += [
        lab("p-s1", "718-7", 13.2, "g/dL", "2025-05-01", id="hb-1"),
        lab("p-s2", "777-3", 199, "10*9/L", "2025-03-01"),
    ]
    assert post(client, put_all(resources), headers).status_code == 200
    return when


def test_observation_search_by_patient_code_and_date_range_returns_exactly_the_matches(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    _search_patients(app_client, headers)

    def ids(query: str) -> list[str]:
        response = app_client.get(f"/fhir/Observation?{query}", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["entry"])
        return sorted(e["resource"]["id"] for e in body["entry"])

    year = ["p-s1.plt-first", "p-s1.plt-last", "p-s1.plt-mid"]
    assert ids("patient=p-s1&code=http://loinc.org|777-3&date=ge2025-01-01&date=le2025-12-31") == year
    assert ids("patient=Patient/p-s1&code=777-3&date=ge2025-01-01&date=le2025-12-31") == year
    assert ids("patient=p-s1&code=http://loinc.org|777-3&date=gt2025-01-01&date=lt2025-12-31") == ["p-s1.plt-mid"]
    assert ids("patient=p-s1&date=2025-06") == ["p-s1.plt-mid"]
    assert ids("patient=p-s1&date=2025") == sorted([*year, "p-s1.hb-1"])
    assert ids("patient=p-s1&code=http://loinc.org|718-7") == ["p-s1.hb-1"]
    assert ids("patient=p-s1&code=http://snomed.info/sct|777-3") == []
    assert len(ids("patient=p-s1")) == 6 and len(ids("patient=p-s2")) == 1


def test_search_pages_with_count_and_next_links(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    _search_patients(app_client, headers)
    everything_at_once = app_client.get("/fhir/Observation?patient=p-s1", headers=headers).json()
    assert everything_at_once["total"] == 6 and [lk["relation"] for lk in everything_at_once["link"]] == ["self"]
    url: str | None = "/fhir/Observation?patient=p-s1&_count=4"
    pages = []
    while url:
        body = app_client.get(url, headers=headers).json()
        assert body["total"] == 6
        pages.append([e["resource"]["id"] for e in body["entry"]])
        url = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        assert len(pages) < 10, "the next links do not end"
    assert [len(p) for p in pages] == [4, 2]
    assert [i for p in pages for i in p] == [e["resource"]["id"] for e in everything_at_once["entry"]]
    empty = app_client.get("/fhir/Observation?patient=p-s1&_count=0", headers=headers).json()
    assert empty["total"] == 6 and empty["entry"] == []
    assert [lk["relation"] for lk in empty["link"]] == ["self"], "a _count=0 page has no next page"


@pytest.mark.parametrize(
    ("query", "code", "where"),
    [
        ("", "required", "patient"),
        ("code=http://loinc.org|777-3", "required", "patient"),
        ("patient=p-s1&colour=red", "not-supported", "colour"),
        ("patient=p-s1&date=June", "value", "date"),
        ("patient=p-s1&_count=-1", "value", "_count"),
        ("patient=p-s1&_count=5001", "value", "_count"),
    ],
)
def test_a_search_that_cannot_be_answered_is_a_400_operation_outcome(
    app_client: TestClient, db_url: str, query: str, code: str, where: str
) -> None:
    headers = care_team(app_client, db_url)
    response = app_client.get(f"/fhir/Observation?{query}", headers=headers)
    assert response.status_code == 400
    body = outcome(response)
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [(code, [where])]


# --- 5. writes are transactional ---------------------------------------------------------------------


def test_a_transaction_with_one_bad_entry_stores_nothing_and_names_the_entry_and_field(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    import_contract(app_client, headers)
    file_before = app_client.get("/api/patients/p-001", headers=headers).json()["patient"]
    before = stored(db_url)
    resources = [
        patient("p-tx"),
        lab("p-tx", "777-3", 210, "10*9/L", "2025-02-01"),
        lab("p-tx", "777-3", 210, "kg", "2025-02-02"),
        infusion("p-tx", "2025-01-06"),
        lab("p-001", "2160-0", 0.9, "mg/dL", "2025-06-01"),  # a good result for a stored patient
    ]
    response = post(app_client, put_all(resources), headers)
    assert response.status_code == 422
    body = outcome(response)
    assert expressions(body) == ["Bundle.entry[2].resource.valueQuantity.code"]
    assert "kg" in body["issue"][0]["diagnostics"]
    assert stored(db_url) == before
    assert count(db_url, m.LabResult) == len(EXAMPLE["labs"]) and count(db_url, m.Infusion) == len(EXAMPLE["infusions"])
    assert app_client.get("/api/patients/p-001", headers=headers).json()["patient"] == file_before

    resources[4] = lab("p-001", "2160-0", "high", "mg/dL", "2025-06-01")
    both = outcome(post(app_client, put_all(resources), headers))
    assert sorted(expressions(both)) == [
        "Bundle.entry[2].resource.valueQuantity.code",
        "Bundle.entry[4].resource.valueQuantity.value",
    ], "every bad entry is named at once"
    assert stored(db_url) == before


def test_a_patient_named_twice_in_one_bundle_is_refused_naming_both_entries(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    before = stored(db_url)
    twice = put_all([patient("p-two", gender="female"), lab("p-two", "777-3", 210, "10*9/L", "2025-02-01")])
    twice["entry"].append(put_all([patient("p-two", gender="male")])["entry"][0])
    response = post(app_client, twice, headers)
    assert response.status_code == 422
    body = outcome(response)
    assert expressions(body) == ["Bundle.entry[2].resource.id"]
    assert "Bundle.entry[0]" in body["issue"][0]["diagnostics"]
    assert stored(db_url) == before


def test_a_subject_on_this_server_may_be_absolute_one_on_another_server_may_not(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    assert post(app_client, put_all([patient("p-abs")]), headers).status_code == 200
    own = lab("p-abs", "777-3", 210, "10*9/L", "2025-02-01")
    own["subject"]["reference"] = "http://testserver/fhir/Patient/p-abs"
    assert post(app_client, put_all([own]), headers).status_code == 200
    assert stored(db_url)["lab_results"] == 1
    other = lab("p-abs", "777-3", 90, "10*9/L", "2025-02-02")
    other["subject"]["reference"] = "https://ehr.example.org/fhir/Patient/p-abs"
    response = post(app_client, put_all([other]), headers)
    assert response.status_code == 422
    assert expressions(outcome(response)) == ["Bundle.entry[0].resource.subject.reference"]
    assert stored(db_url)["lab_results"] == 1


def test_a_batch_stores_the_good_patient_and_nothing_of_the_bad_one(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    resources = [
        patient("p-good"),
        lab("p-good", "777-3", 210, "10*9/L", "2025-02-01"),
        patient("p-bad"),
        lab("p-bad", "777-3", 190, "10*9/L", "2025-02-01"),
        lab("p-bad", "777-3", 210, "kg", "2025-02-02"),
    ]
    response = post(app_client, put_all(resources, "batch"), headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses[:2] == ["201 Created", "201 Created"]
    assert all(s.startswith("4") for s in statuses[2:]), statuses
    assert expressions(answer["entry"][4]["response"]["outcome"]) == ["Bundle.entry[4].resource.valueQuantity.code"]
    with session_factory(db_url)() as session:
        assert session.get(m.Patient, "p-good") is not None
        assert session.get(m.Patient, "p-bad") is None, "the bad patient's entries are stored together or not at all"
        labs = session.execute(select(m.LabResult.patient_id)).scalars().all()
    assert labs == ["p-good"]
    assert_r4(answer)


def test_a_batch_keeps_out_a_bad_patient_known_only_by_its_urn(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    urn = "urn:uuid:5f0c3a4e-0000-4000-8000-000000000001"
    entries = [
        entry(patient("p-good")),
        entry(lab("p-good", "777-3", 210, "10*9/L", "2025-02-01")),
        entry(patient(), full_url=urn),
        entry(lab(urn, "777-3", 210, "kg", "2025-02-02")),
    ]
    response = post(app_client, bundle(entries, "batch"), headers)
    assert response.status_code == 200, response.text
    assert count(db_url, m.Patient) == 1 and count(db_url, m.LabResult) == 1


# --- 6. bad input ------------------------------------------------------------------------------------


def _bad_cases() -> list[tuple[str, str, str, Any, int, str, str]]:
    """(name, method, path, body, status, issue code, issue expression); the body is JSON or raw bytes.
    p-stored is stored with one infusion, on 2025-01-06."""
    good = lab("p-stored", "777-3", 212, "10*9/L", "2025-03-01")
    quantity = good["valueQuantity"]
    rxnorm_mp = administration("p-stored", METHYLPREDNISOLONE, "2025-01-07T08:00:00+01:00")

    def tx(*resources: dict[str, Any]) -> dict[str, Any]:
        return put_all([patient("p-new"), *resources])

    return [
        (
            "malformed JSON",
            "POST",
            "/fhir",
            b'{"resourceType": "Bundle", "type": "transaction", "entry": [',
            400,
            "structure",
            "Bundle",
        ),
        ("a Patient POSTed to /fhir", "POST", "/fhir", patient("p-new"), 422, "structure", "Bundle.resourceType"),
        ("resourceType Banana", "POST", "/fhir", {"resourceType": "Banana"}, 422, "structure", "Bundle.resourceType"),
        ("a JSON list", "POST", "/fhir", [good], 422, "structure", "Bundle.resourceType"),
        ("Bundle of type collection", "POST", "/fhir", {**tx(good), "type": "collection"}, 422, "value", "Bundle.type"),
        (
            "an entry that is a string",
            "POST",
            "/fhir",
            {**tx(), "entry": ["Patient/p-new"]},
            422,
            "structure",
            "Bundle.entry[0]",
        ),
        (
            "a Banana entry",
            "POST",
            "/fhir",
            tx({"resourceType": "Banana", "id": "b"}),
            422,
            "not-supported",
            "Bundle.entry[1].resource.resourceType",
        ),
        (
            "a GET entry",
            "POST",
            "/fhir",
            {**tx(), "entry": [{"request": {"method": "GET", "url": "Patient/p-stored"}}]},
            422,
            "not-supported",
            "Bundle.entry[0].request.method",
        ),
        (
            "an unknown LOINC code",
            "POST",
            "/fhir",
            tx({**good, "code": {"coding": [{"system": LOINC, "code": "99999-9"}]}}),
            422,
            "code-invalid",
            "Bundle.entry[1].resource.code",
        ),
        (
            "kg for platelets",
            "POST",
            "/fhir",
            tx({**good, "valueQuantity": {**quantity, "unit": "kg", "code": "kg"}}),
            422,
            "value",
            "Bundle.entry[1].resource.valueQuantity.code",
        ),
        (
            "a unit outside UCUM",
            "POST",
            "/fhir",
            tx({**good, "valueQuantity": {**quantity, "system": "http://example.org/units"}}),
            422,
            "value",
            "Bundle.entry[1].resource.valueQuantity.system",
        ),
        (
            "a non-numeric value",
            "POST",
            "/fhir",
            tx({**good, "valueQuantity": {**quantity, "value": "many"}}),
            422,
            "value",
            "Bundle.entry[1].resource.valueQuantity.value",
        ),
        (
            "an impossible platelet count",
            "POST",
            "/fhir",
            tx({**good, "valueQuantity": {**quantity, "value": 90000}}),
            422,
            "value",
            "Bundle.entry[1].resource.valueQuantity.value",
        ),
        (
            "no value",
            "POST",
            "/fhir",
            tx({k: v for k, v in good.items() if k != "valueQuantity"}),
            422,
            "required",
            "Bundle.entry[1].resource.valueQuantity",
        ),
        (
            "an unknown element",
            "POST",
            "/fhir",
            tx({**good, "valueQuantity": {**quantity, "colour": "red"}}),
            422,
            "structure",
            "Bundle.entry[1].resource.valueQuantity.colour",
        ),
        (
            "a month for a day",
            "POST",
            "/fhir",
            tx({**good, "effectiveDateTime": "2025-03"}),
            422,
            "value",
            "Bundle.entry[1].resource.effectiveDateTime",
        ),
        (
            "no subject",
            "POST",
            "/fhir",
            tx({k: v for k, v in good.items() if k != "subject"}),
            422,
            "required",
            "Bundle.entry[1].resource.subject",
        ),
        (
            "a missing patient",
            "POST",
            "/fhir",
            put_all([{**good, "subject": {"reference": "Patient/nobody"}}]),
            404,
            "not-found",
            "Bundle.entry[0].resource.subject",
        ),
        (
            "an unresolved urn",
            "POST",
            "/fhir",
            put_all([{**good, "subject": {"reference": "urn:uuid:0e7d4f65-1a05-4b27-a4f7-3c1d0f1b9e21"}}]),
            404,
            "not-found",
            "Bundle.entry[0].resource.subject",
        ),
        (
            "a PUT entry with another id",
            "POST",
            "/fhir",
            {**tx(), "entry": [{"resource": patient("p-1"), "request": {"method": "PUT", "url": "Patient/p-2"}}]},
            422,
            "value",
            "Bundle.entry[0].request.url",
        ),
        (
            "a premedication with no infusion that day",
            "POST",
            "/fhir",
            put_all([rxnorm_mp]),
            422,
            "business-rule",
            "Bundle.entry[0].resource",
        ),
        ("PUT with a mismatched id", "PUT", "/fhir/Patient/p-stored", patient("p-other"), 400, "invalid", "Patient.id"),
        (
            "an Observation PUT to Patient",
            "PUT",
            "/fhir/Patient/p-stored",
            good,
            422,
            "invalid",
            "Resource.resourceType",
        ),
        ("an Observation POSTed to Patient", "POST", "/fhir/Patient", good, 422, "invalid", "Resource.resourceType"),
        ("a Banana POSTed", "POST", "/fhir/Banana", {"resourceType": "Banana"}, 404, "not-supported", "Banana"),
        (
            "create with kg",
            "POST",
            "/fhir/Observation",
            {**good, "valueQuantity": {**quantity, "code": "kg", "unit": "kg"}},
            422,
            "value",
            "Observation.valueQuantity.code",
        ),
        (
            "create of a premedication with no infusion",
            "POST",
            "/fhir/MedicationAdministration",
            rxnorm_mp,
            422,
            "business-rule",
            "MedicationAdministration",
        ),
        (
            "create for a missing patient",
            "POST",
            "/fhir/Observation",
            {**good, "subject": {"reference": "Patient/nobody"}},
            404,
            "not-found",
            "Observation.subject",
        ),
    ]


def test_bad_input_is_a_precise_operation_outcome_and_stores_nothing(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    assert (
        post(app_client, put_all([patient("p-stored"), infusion("p-stored", "2025-01-06")]), headers).status_code == 200
    )
    before = stored(db_url)
    wrong = []
    for name, method, path, body, status, code, where in _bad_cases():
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = app_client.request(
            method, path, content=content, headers={**headers, "content-type": "application/fhir+json"}
        )
        try:
            got = outcome(response)
            issues = [(i["severity"], i["code"], i["expression"]) for i in got["issue"]]
            if response.status_code != status or issues != [("error", code, [where])]:
                wrong.append(
                    f"{name}: {response.status_code} {issues}, wanted {status} [('error', {code!r}, [{where!r}])]"
                )
        except (AssertionError, ValueError) as exc:
            wrong.append(f"{name}: {response.status_code} {response.text[:300]} ({exc})")
        if stored(db_url) != before:
            wrong.append(f"{name}: stored something")
            before = stored(db_url)
    assert not wrong, "\n".join(wrong)


def _big_bundle(entries: int) -> bytes:
    one = entry(lab("p-big", "777-3", 200, "10*9/L", "2025-01-01"))
    return json.dumps(bundle([entry(patient("p-big"), "PUT"), *[one] * (entries - 1)])).encode()


def test_a_bundle_of_10000_entries_is_too_costly_by_its_entries_and_by_its_size(settings: Settings) -> None:
    url = settings.database_url
    body = _big_bundle(10_000)
    for limit, where in ((len(body) * 2, "Bundle.entry"), (len(body) // 4, "Bundle")):
        with TestClient(create_app(settings.model_copy(update={"max_body_bytes": limit}))) as client:
            if count(url, m.User) == 0:
                make_user(url, "nurse", "nurse")
            headers = {**token_for(client, "nurse"), "content-type": "application/fhir+json"}
            response = client.post("/fhir", content=body, headers=headers)
            assert response.status_code == 413, (limit, response.text[:300])
            got = outcome(response)
            assert [(i["code"], i["expression"]) for i in got["issue"]] == [("too-costly", [where])]
            assert count(url, m.Patient) == 0 and count(url, m.LabResult) == 0


# --- 7. idempotency --------------------------------------------------------------------------------


def _idempotent_resources() -> list[dict[str, Any]]:
    pid = "p-idem"
    out = [
        patient(pid),
        lab(pid, "777-3", 212, "10*9/L", "2025-01-02", ref=(150, 400), id="obs-plt-1"),
        lab(pid, "2160-0", 0.8, "mg/dL", "2025-01-02"),
        immunization(pid, "21", "varicella", "2024-10-01"),
        prophylaxis(pid, COURSE[0]),
        planned_course(pid, "2026-01-12"),
    ]
    for day in COURSE[:3]:
        out += [infusion(pid, day), administration(pid, METHYLPREDNISOLONE, day)]
    return out


def test_the_same_transaction_posted_twice_stores_each_result_once(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    sent = put_all(_idempotent_resources())
    first = post(app_client, sent, headers)
    assert first.status_code == 200, first.text
    once = stored(db_url)
    file = app_client.get("/api/patients/p-idem", headers=headers).json()["patient"]
    assessment = app_client.get("/api/patients/p-idem/assessment?as_of=2025-06-01", headers=headers).json()
    again = post(app_client, sent, headers)
    assert again.status_code == 200, again.text
    assert stored(db_url) == once
    assert once["lab_results"] == 2 and once["infusions"] == 3
    # Created the first time; found as stored the second (FHIR: 201 for a creation, 200 otherwise).
    statuses = [(e["response"]["status"], e["response"].get("location")) for e in first.json()["entry"]]
    assert [s for s, where in statuses if where] == ["201 Created"] * len([w for _, w in statuses if w])
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200 OK"] * len(sent["entry"])
    assert app_client.get("/api/patients/p-idem", headers=headers).json()["patient"] == file
    assert app_client.get("/api/patients/p-idem/assessment?as_of=2025-06-01", headers=headers).json() == assessment


def test_a_result_created_twice_is_201_then_200_and_stored_once(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    assert post(app_client, put_all([patient("p-twice")]), headers).status_code == 200
    result = lab("p-twice", "777-3", 180, "10*9/L", "2025-03-01")
    fhir_headers = {**headers, "Content-Type": "application/fhir+json"}
    created = app_client.post("/fhir/Observation", content=json.dumps(result), headers=fhir_headers)
    assert created.status_code == 201, created.text
    again = app_client.post("/fhir/Observation", content=json.dumps(result), headers=fhir_headers)
    assert again.status_code == 200, again.text
    assert again.headers["Location"] == created.headers["Location"]
    assert stored(db_url)["lab_results"] == 1


def test_an_infusion_sent_again_without_its_premedication_keeps_it(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    assert post(app_client, put_all(_idempotent_resources()), headers).status_code == 200
    # The EHR sends the alemtuzumab administrations once more (a retry of part of the message).
    assert post(app_client, put_all([infusion("p-idem", day) for day in COURSE[:3]]), headers).status_code == 200
    infusions = app_client.get("/api/patients/p-idem", headers=headers).json()["patient"]["infusions"]
    assert [i.get("premedication") for i in infusions] == [True, True, True]


def test_a_changed_value_under_the_same_observation_id_is_a_409_conflict(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    assert post(app_client, put_all(_idempotent_resources()), headers).status_code == 200
    before = stored(db_url)
    first = lab("p-idem", "777-3", 212, "10*9/L", "2025-01-02", ref=(150, 400), id="obs-plt-1")
    variants = {
        "value": {**first, "valueQuantity": {**first["valueQuantity"], "value": 21}},
        "date": {**first, "effectiveDateTime": "2025-01-03"},
        "our own id": {**first, "id": "p-idem.obs-plt-1", "valueQuantity": {**first["valueQuantity"], "value": 21}},
        "reference range": lab("p-idem", "777-3", 212, "10*9/L", "2025-01-02", ref=(100, 300), id="obs-plt-1"),
    }
    for name, changed in variants.items():
        response = post(app_client, put_all([changed]), headers)
        assert response.status_code == 409, (name, response.text)
        body = outcome(response)
        assert body["issue"][0]["code"] == "conflict" and expressions(body)[0].startswith("Bundle.entry[0].resource")
    assert stored(db_url) == before
    labs = app_client.get("/api/patients/p-idem", headers=headers).json()["patient"]["labs"]
    assert [(lab["id"], lab["value"], lab.get("ref_low")) for lab in labs if lab["id"] == "obs-plt-1"] == [
        ("obs-plt-1", 212, 150)
    ]
    # Two different values under one id in the same Bundle: the second is a conflict, not dropped.
    twice = put_all(
        [
            lab("p-idem", "718-7", 13, "g/dL", "2025-02-01", id="hb-9"),
            lab("p-idem", "718-7", 9, "g/dL", "2025-02-01", id="hb-9"),
        ]
    )
    response = post(app_client, twice, headers)
    assert response.status_code == 409, response.text
    assert expressions(outcome(response)) == ["Bundle.entry[1].resource"]
    assert stored(db_url) == before


# --- 8. access and audit ------------------------------------------------------------------------------


def test_without_a_token_the_fhir_endpoint_answers_401_operation_outcomes_but_metadata_is_public(
    app_client: TestClient, db_url: str
) -> None:
    headers = care_team(app_client, db_url)
    import_contract(app_client, headers)
    before = stored(db_url)
    for method, path in (
        ("GET", "/fhir/Patient"),
        ("GET", "/fhir/Patient/p-001"),
        ("GET", "/fhir/Observation?patient=p-001"),
        ("GET", "/fhir/Patient/p-001/$everything"),
        ("POST", "/fhir"),
        ("PUT", "/fhir/Patient/p-001"),
    ):
        body = json.dumps(put_all([patient("p-anon")])) if method != "GET" else None
        response = app_client.request(method, path, content=body, headers={"content-type": "application/fhir+json"})
        assert response.status_code == 401, (path, response.text)
        assert [i["code"] for i in outcome(response)["issue"]] == ["login"]
    assert stored(db_url) == before
    make_user(db_url, "pat", "patient", "p-001")
    refused = app_client.get("/fhir/Patient/p-001", headers=token_for(app_client, "pat"))
    assert refused.status_code == 403 and [i["code"] for i in outcome(refused)["issue"]] == ["forbidden"]
    metadata = app_client.get("/fhir/metadata")
    assert metadata.status_code == 200 and metadata.headers["content-type"].startswith("application/fhir+json")
    statement = metadata.json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    assert_r4(statement)


def test_every_fhir_read_is_audited_with_the_patient(app_client: TestClient, db_url: str) -> None:
    headers = care_team(app_client, db_url)
    pid = import_hospital(app_client, headers)
    resources = everything(app_client, pid, headers)
    one = {r["resourceType"]: r for r in resources}
    reads = [
        f"/fhir/Patient/{pid}",
        f"/fhir/Observation/{one['Observation']['id']}",
        f"/fhir/MedicationAdministration/{one['MedicationAdministration']['id']}",
        f"/fhir/CarePlan/{one['CarePlan']['id']}",
        f"/fhir/Flag/{one['Flag']['id']}",
        f"/fhir/Observation?patient={pid}&code=777-3",
        f"/fhir/DetectedIssue?patient={pid}",
        f"/fhir/Patient?_id={pid}",
        f"/fhir/Patient/{pid}/$everything",
    ]
    for path in reads:
        with session_factory(db_url)() as session:
            last = session.execute(select(m.AuditEvent.id).order_by(m.AuditEvent.id.desc())).scalars().first() or 0
        response = app_client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        with session_factory(db_url)() as session:
            events = session.execute(select(m.AuditEvent).where(m.AuditEvent.id > last)).scalars().all()
        assert len(events) == 1, (path, events)
        event = events[0]
        assert (event.action, event.username, event.outcome) == ("read", "nurse", "ok"), path
        assert event.patient_id == pid or pid in (event.detail.get("patient_ids") or []), (path, event.detail)


# --- 9. a real FHIR client against the live server ------------------------------------------------


def test_fhirclient_creates_searches_and_reads_on_the_live_server(db_url: str, tmp_path: Path) -> None:
    from fhirclient.client import FHIRClient
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    make_user(db_url, "nurse", "nurse")
    with live_server(db_url, tmp_path / "server.log") as base:
        token = requests.post(f"{base}/api/auth/token", json={"username": "nurse", "password": PASSWORD}, timeout=30)
        assert token.status_code == 200, token.text
        client = FHIRClient(settings={"app_id": "alemwatch-tests", "api_base": f"{base}/fhir"})
        server = client.server
        server.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        assert server.capabilityStatement.fhirVersion == "4.0.1"  # parsed by fhirclient's R4 models

        created = Patient(patient()).create(server)
        assert created is not None and created["resourceType"] == "Patient"
        pid = created["id"]
        today = dt.date.today().isoformat()
        sent = Observation(lab(pid, "777-3", 18, "10*9/L", today))
        observation = sent.create(server)
        assert observation is not None and observation["valueQuantity"]["value"] == 18
        for value in (150, 160, 170):
            Observation(lab(pid, "777-3", value, "10*9/L", "2025-05-01")).create(server)
        Observation(lab(pid, "718-7", 12.5, "g/dL", "2025-05-01")).create(server)

        search = Observation.where(struct={"patient": pid, "code": f"{LOINC}|777-3", "date": f"ge{today}"})
        found = list(search.perform_resources_iter(server))
        assert [(o.id, o.valueQuantity.value) for o in found] == [(observation["id"], 18)]
        paged = Observation.where(struct={"patient": pid, "_count": "2"})
        pages = [len(page.entry or []) for page in paged.perform_iter(server)]
        assert pages == [2, 2, 1]
        read = Observation.read(observation["id"], server)
        assert read.valueQuantity.value == 18 and read.valueQuantity.code == "10*9/L"
        assert read.subject.reference == f"Patient/{pid}"
        assert Patient.read(pid, server).gender == "female"

        refused = requests.post(
            f"{base}/fhir/Observation",
            data=json.dumps(lab(pid, "777-3", 18, "kg", today)),
            headers={**server.session.headers, "content-type": "application/fhir+json"},
            timeout=30,
        )
        assert refused.status_code == 422
        assert refused.json()["issue"][0]["expression"] == ["Observation.valueQuantity.code"]
    assert count(db_url, m.LabResult) == 5


# --- 10. alemwatch import-fhir ----------------------------------------------------------------------


def test_import_fhir_reports_a_bad_line_with_file_line_and_element_and_imports_the_rest_once(
    db_url: str, tmp_path: Path
) -> None:
    lines = [
        json.dumps(lab("p-nd1", "777-3", 212, "10*9/L", "2025-02-03")),
        json.dumps(patient("p-nd1")),
        json.dumps(infusion("p-nd1", "2025-01-06")),
        json.dumps(lab("p-nd1", "777-3", 212, "kg", "2025-02-04")),
        json.dumps(patient("p-nd2")),
        '{"resourceType": "Observation", ',
        json.dumps(lab("p-nd2", "2160-0", 0.8, "mg/dL", "2025-02-03")),
        json.dumps(administration("p-nd2", ALEMTUZUMAB, "2025-01-06")),
    ]
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n")
    done = run_cli(db_url, "import-fhir", str(path), "--json", "--no-sweep")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["errors"]) == 2, report["errors"]
    bad_unit = next(e for e in report["errors"] if "line 4" in e)
    assert "export.ndjson" in bad_unit and "valueQuantity.code" in bad_unit and "kg" in bad_unit
    assert any("export.ndjson line 6" in e and "JSON" in e for e in report["errors"])
    assert report["patients"] == 2
    counts = stored(db_url)
    assert (counts["patients"], counts["lab_results"], counts["infusions"]) == (2, 2, 2)

    rerun = run_cli(db_url, "import-fhir", str(path), "--json", "--no-sweep")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["patients"] == 0, "no patient is new the second time"
    assert {k: v for k, v in stored(db_url).items() if k != "patient_state"} == {
        k: v for k, v in counts.items() if k != "patient_state"
    }


def test_import_fhir_reads_a_transaction_bundle_file(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(put_all(_idempotent_resources()), indent=2))
    done = run_cli(db_url, "import-fhir", str(path), "--json", "--no-sweep")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == [] and report["patients"] == 1
    assert (count(db_url, m.LabResult), count(db_url, m.Infusion)) == (2, 3)
    with session_factory(db_url)() as session:
        premedicated = session.execute(select(m.Infusion.premedication)).scalars().all()
    assert premedicated == [True, True, True]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("patient=p-s1&_count=%C2%B2", "_count"),  # a superscript two: a digit to str.isdigit, not to int()
        ("patient=p-s1&_offset=%D9%A3", "_offset"),  # an Arabic-Indic three
        ("patient=" + "x" * 201, "patient"),  # longer than any stored patient id
        ("patient=p-s1&patient=p-s2", "patient"),  # one patient per search
        ("patient=p-s1&date=2025garbage", "date"),
        ("patient=p-s1&date=ge2025-13-45", "date"),  # no such month
    ],
    ids=[
        "count-unicode-digit",
        "offset-unicode-digit",
        "patient-too-long",
        "patient-twice",
        "date-junk",
        "date-month-13",
    ],
)
def test_a_search_with_a_bad_parameter_is_a_400_naming_it(
    app_client: TestClient, db_url: str, query: str, field: str
) -> None:
    make_user(db_url, "fhir-nurse", "nurse")
    headers = token_for(app_client, "fhir-nurse")
    for kind in ("Observation", "CarePlan", "Flag"):
        answer = app_client.get(f"/fhir/{kind}?{query}", headers=headers)
        assert answer.status_code == 400, answer.text
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [field], outcome


@pytest.mark.parametrize("patient_id", ["pat.with.dots", "p" * 45], ids=["dotted-id", "long-id"])
def test_a_single_create_for_a_patient_whose_id_cannot_lead_a_fhir_id_answers_the_stored_resource(
    app_client: TestClient, db_url: str, patient_id: str
) -> None:
    """Such a patient's records get hashed FHIR ids (outbound.record_id); the create still answers them."""
    make_user(db_url, "fhir-nurse", "nurse")
    headers = {**token_for(app_client, "fhir-nurse"), "Content-Type": "application/fhir+json"}
    created = app_client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "id": patient_id, "gender": "female"}, headers=headers
    )
    assert created.status_code == 201, created.text
    observation = lab(patient_id, "777-3", 150, "10*9/L", "2025-01-02")
    answer = app_client.post("/fhir/Observation", json=observation, headers=headers)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["resourceType"] == "Observation" and body["valueQuantity"]["value"] == 150
    assert answer.headers["location"].endswith(f"/fhir/Observation/{body['id']}")
    found = app_client.get(f"/fhir/Observation?patient={patient_id}", headers=headers).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [body["id"]]


def test_a_bundle_sent_without_a_json_content_type_is_a_415_that_says_so(app_client: TestClient, db_url: str) -> None:
    make_user(db_url, "fhir-nurse", "nurse")
    headers = {**token_for(app_client, "fhir-nurse"), "Content-Type": "text/plain"}
    answer = app_client.post(
        "/fhir", content=b'{"resourceType": "Bundle", "type": "transaction", "entry": []}', headers=headers
    )
    assert answer.status_code == 415, answer.text
    assert "Content-Type application/fhir+json" in answer.json()["issue"][0]["diagnostics"]


def test_a_single_create_that_stores_nothing_names_the_element_in_the_resource_sent(
    app_client: TestClient, db_url: str
) -> None:
    make_user(db_url, "fhir-nurse", "nurse")
    headers = {**token_for(app_client, "fhir-nurse"), "Content-Type": "application/fhir+json"}
    app_client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "id": "p-skip", "gender": "male"}, headers=headers
    )
    cancelled = {
        "resourceType": "Observation",
        "status": "cancelled",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
        "subject": {"reference": "Patient/p-skip"},
        "effectiveDateTime": "2025-01-02",
    }
    answer = app_client.post("/fhir/Observation", json=cancelled, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["issue"][0]["expression"] == ["Observation.status"]
