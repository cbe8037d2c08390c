"""The registry's REST API end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from alemwatch.core.assess import assess
from alemwatch.core.patient import parse_patient
from alemwatch.protocol.load import load_protocol
from alemwatch.store import models as m
from tests.conftest import PASSWORD, count, make_user, token_for

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())


def _patient(pid: str = "p-001", **changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(EXAMPLE)), "id": pid, **changes}


def _setup(client: TestClient, url: str) -> dict[str, dict[str, str]]:
    make_user(url, "clin", "clinician")
    make_user(url, "nurse", "nurse")
    make_user(url, "admin", "admin")
    headers = {name: token_for(client, name) for name in ("clin", "nurse", "admin")}
    assert client.post("/api/patients", json=_patient(), headers=headers["nurse"]).status_code == 201
    make_user(url, "pat", "patient", "p-001")
    headers["pat"] = token_for(client, "pat")
    return headers


def test_a_stored_patient_comes_back_as_the_same_patient_file(app_client: TestClient, db_url: str) -> None:
    headers = _setup(app_client, db_url)
    stored = app_client.get("/api/patients/p-001", headers=headers["clin"]).json()["patient"]
    for lab in stored["labs"]:
        lab.pop("id")
    for key in ("infusions", "labs", "exams", "vaccinations", "prophylaxis", "symptoms"):
        assert sorted(map(json.dumps, stored[key])) == sorted(map(json.dumps, EXAMPLE[key])), key


def test_the_stored_assessment_is_the_commands_document(app_client: TestClient, db_url: str) -> None:
    headers = _setup(app_client, db_url)
    got = app_client.get(
        "/api/patients/p-001/assessment", params={"as_of": "2026-03-01"}, headers=headers["clin"]
    ).json()
    protocol = load_protocol("us")
    assert got == assess(parse_patient(_patient(), protocol), protocol, dt.date(2026, 3, 1))


def test_the_same_lab_result_posted_twice_is_stored_once(app_client: TestClient, db_url: str) -> None:
    headers = _setup(app_client, db_url)
    lab = {"id": "lab-42", "test": "platelets", "value": 18, "unit": "10*9/L", "date": "2026-11-20"}
    first = app_client.post("/api/patients/p-001/labs", json=lab, headers=headers["nurse"])
    second = app_client.post("/api/patients/p-001/labs", json=lab, headers=headers["nurse"])
    assert (first.status_code, second.status_code) == (201, 200)
    assert count(db_url, m.LabResult) == len(EXAMPLE["labs"]) + 1
    conflict = app_client.post("/api/patients/p-001/labs", json={**lab, "value": 180}, headers=headers["nurse"])
    assert conflict.status_code == 409


def test_a_platelet_count_of_18_raises_one_urgent_itp_alert_at_once(app_client: TestClient, db_url: str) -> None:
    headers = _setup(app_client, db_url)
    lab = {"id": "lab-18", "test": "platelets", "value": 18, "unit": "10*9/L", "date": dt.date.today().isoformat()}
    body = app_client.post("/api/patients/p-001/labs", json=lab, headers=headers["nurse"]).json()
    itp = [a for a in body["alerts"] if a["code"] == "itp"]
    assert len(itp) == 1 and itp[0]["severity"] in {"urgent", "emergency"}
    worklist = app_client.get("/api/worklist", headers=headers["nurse"]).json()
    assert any(a["code"] == "itp" and a["patient_id"] == "p-001" for a in worklist["urgent_alerts"])
    again = app_client.post(
        "/api/patients/p-001/labs", json={**lab, "id": "lab-19", "value": 17}, headers=headers["nurse"]
    ).json()
    assert len([a for a in again["alerts"] if a["code"] == "itp"]) == 1  # still one open ITP alert


def test_alert_life_acknowledge_then_resolve_with_a_reason_by_a_clinician_only(
    app_client: TestClient, db_url: str
) -> None:
    headers = _setup(app_client, db_url)
    alerts = app_client.get("/api/patients/p-001/alerts", params={"status": "open"}, headers=headers["nurse"]).json()[
        "alerts"
    ]
    alert = next(a for a in alerts if a["code"] == "itp")
    base = f"/api/patients/p-001/alerts/{alert['id']}"
    assert (
        app_client.post(f"{base}/acknowledge", json={"reason": "called patient"}, headers=headers["nurse"]).status_code
        == 200
    )
    assert (
        app_client.post(f"{base}/resolve", json={"reason": "haematology seen"}, headers=headers["nurse"]).status_code
        == 403
    )
    assert app_client.post(f"{base}/resolve", json={"reason": ""}, headers=headers["clin"]).status_code == 422
    done = app_client.post(
        f"{base}/resolve", json={"reason": "haematology seen, platelets recovering"}, headers=headers["clin"]
    )
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    # Same evidence again: not re-raised. New evidence: raised again.
    app_client.put("/api/patients/p-001", json=_patient(), headers=headers["clin"])
    open_itp = [
        a
        for a in app_client.get(
            "/api/patients/p-001/alerts", params={"status": "open"}, headers=headers["clin"]
        ).json()["alerts"]
        if a["code"] == "itp"
    ]
    assert open_itp == []
    lab = {"id": "lab-new", "test": "platelets", "value": 40, "unit": "10*9/L", "date": dt.date.today().isoformat()}
    app_client.post("/api/patients/p-001/labs", json=lab, headers=headers["nurse"])
    open_itp = [
        a
        for a in app_client.get(
            "/api/patients/p-001/alerts", params={"status": "open"}, headers=headers["clin"]
        ).json()["alerts"]
        if a["code"] == "itp"
    ]
    assert len(open_itp) == 1


def test_a_patient_sees_only_their_own_record_and_reports_on_it(app_client: TestClient, db_url: str) -> None:
    headers = _setup(app_client, db_url)
    app_client.post("/api/patients", json=_patient("p-002"), headers=headers["nurse"])
    assert app_client.get("/api/patients/p-001", headers=headers["pat"]).status_code == 200
    assert app_client.get("/api/patients/p-002", headers=headers["pat"]).status_code == 403
    assert app_client.get("/api/patients", headers=headers["pat"]).status_code == 403
    assert app_client.get("/api/worklist", headers=headers["pat"]).status_code == 403
    report = app_client.post(
        "/api/triage",
        json={"text": "sudden worst headache and my arm is weak", "days_since_infusion": 1},
        headers=headers["pat"],
    )
    assert report.status_code == 200 and report.json()["urgency"] == "emergency"
    assert any(a["code"] == "stroke_dissection" for a in report.json()["alerts"])
    other = app_client.post("/api/triage", json={"text": "rash", "patient_id": "p-002"}, headers=headers["pat"])
    assert other.status_code == 403
    worklist = app_client.get("/api/worklist", headers=headers["nurse"]).json()
    assert worklist["urgent_alerts"][0]["severity"] == "emergency"


def test_browser_sessions_need_the_csrf_token_for_changes(app_client: TestClient, db_url: str) -> None:
    _setup(app_client, db_url)
    login = app_client.post("/api/auth/login", json={"username": "nurse", "password": PASSWORD})
    csrf = login.json()["csrf_token"]
    assert app_client.get("/api/patients").status_code == 200  # the cookie is enough to read
    lab = {"id": "lab-c", "test": "tsh", "value": 2.0, "unit": "m[IU]/L", "date": "2026-11-01"}
    assert app_client.post("/api/patients/p-001/labs", json=lab).status_code == 403
    assert app_client.post("/api/patients/p-001/labs", json=lab, headers={"X-CSRF-Token": csrf}).status_code == 201
    app_client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert app_client.get("/api/patients").status_code == 401


def test_failed_logins_are_rate_limited(app_client: TestClient, db_url: str) -> None:
    make_user(db_url, "clin", "clinician")
    codes = [
        app_client.post("/api/auth/token", json={"username": "clin", "password": "wrong password!"}).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    assert app_client.post("/api/auth/token", json={"username": "clin", "password": PASSWORD}).status_code == 429


def test_every_access_to_patient_data_is_audited(app_client: TestClient, db_url: str) -> None:
    headers = _setup(app_client, db_url)
    before = count(db_url, m.AuditEvent)
    app_client.get("/api/patients/p-001", headers=headers["clin"])
    app_client.get("/api/patients/p-001/assessment", headers=headers["clin"])
    app_client.get("/api/patients/p-002", headers=headers["pat"])  # denied, and recorded
    assert count(db_url, m.AuditEvent) == before + 3


def test_the_app_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    from alemwatch.api.app import create_app
    from alemwatch.settings import Settings
    from alemwatch.store.db import NotMigrated

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", environment="test")
    try:
        with TestClient(create_app(settings)):
            raise AssertionError("started on an unmigrated database")
    except NotMigrated as exc:
        assert "alemwatch db upgrade" in str(exc)


def test_the_request_log_names_the_route_template_never_the_patient(
    app_client: TestClient, db_url: str, caplog: Any
) -> None:
    make_user(db_url, "log-nurse", "nurse")
    headers = token_for(app_client, "log-nurse")
    assert app_client.post("/api/patients", json=_patient("p-log-4711"), headers=headers).status_code == 201
    with caplog.at_level("INFO", logger="alemwatch"):
        assert app_client.get("/api/patients/p-log-4711", headers=headers).status_code == 200
        assert app_client.get("/api/patients/p-log-0815", headers=headers).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "alemwatch"]
    assert any(line.startswith("GET /api/patients/{patient_id} 200 ") for line in lines), lines
    assert any(line.startswith("GET /api/patients/{patient_id} 404 ") for line in lines), lines
    assert not [line for line in caplog.text.splitlines() if "p-log-" in line]
