"""The HTTP API answers with the same documents as the commands."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from alemwatch.api.app import app

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
client = TestClient(app)


def test_assess_returns_the_contract_document() -> None:
    response = client.post("/api/assess", params={"as_of": "2026-03-01"}, json=EXAMPLE)
    assert response.status_code == 200
    body = response.json()
    assert body["patient"] == "p-001" and body["monitoring"]["until"] == "2029-01-10"
    assert any(f["condition"] == "itp" for f in body["findings"])


def test_invalid_patient_is_a_422_naming_the_field() -> None:
    bad = {**EXAMPLE, "labs": [{**EXAMPLE["labs"][0], "unit": "furlongs"}]}
    response = client.post("/api/assess", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "labs[0].unit"


def test_triage_red_flag_is_an_emergency() -> None:
    response = client.post(
        "/api/triage",
        json={"text": "my face is drooping and I can't speak", "days_since_infusion": 2},
    )
    assert response.status_code == 200
    assert response.json()["urgency"] == "emergency"


def test_triage_rejects_unknown_fields_and_empty_text() -> None:
    assert client.post("/api/triage", json={"text": "rash", "colour": "red"}).status_code == 422
    assert client.post("/api/triage", json={"text": ""}).status_code == 422
