"""The stateless clinical tools of the API answer with the same documents as the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_user, token_for

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())


@pytest.fixture
def nurse(app_client: TestClient, db_url: str) -> dict[str, str]:
    make_user(db_url, "nurse", "nurse")
    return token_for(app_client, "nurse")


def test_assess_returns_the_contract_document(app_client: TestClient, nurse: dict[str, str]) -> None:
    response = app_client.post("/api/assess", params={"as_of": "2026-03-01"}, json=EXAMPLE, headers=nurse)
    assert response.status_code == 200
    body = response.json()
    assert body["patient"] == "p-001" and body["monitoring"]["until"] == "2029-01-10"
    assert any(f["condition"] == "itp" for f in body["findings"])


def test_invalid_patient_is_a_422_naming_the_field(app_client: TestClient, nurse: dict[str, str]) -> None:
    bad = {**EXAMPLE, "labs": [{**EXAMPLE["labs"][0], "unit": "furlongs"}]}
    response = app_client.post("/api/assess", json=bad, headers=nurse)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "labs[0].unit"


def test_triage_red_flag_is_an_emergency(app_client: TestClient, nurse: dict[str, str]) -> None:
    body = {"text": "my face is drooping and I can't speak", "days_since_infusion": 2}
    response = app_client.post("/api/triage", json=body, headers=nurse)
    assert response.status_code == 200
    assert response.json()["urgency"] == "emergency"


def test_triage_rejects_unknown_fields_and_empty_text(app_client: TestClient, nurse: dict[str, str]) -> None:
    assert app_client.post("/api/triage", json={"text": "rash", "colour": "red"}, headers=nurse).status_code == 422
    assert app_client.post("/api/triage", json={"text": ""}, headers=nurse).status_code == 422


def test_tools_need_a_signed_in_user(app_client: TestClient) -> None:
    assert app_client.post("/api/triage", json={"text": "rash"}).status_code == 401
