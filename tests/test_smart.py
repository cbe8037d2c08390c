"""SMART on FHIR EHR launch: an EHR (a small authorization server of its own, on 127.0.0.1)
launches alemwatch with `iss` and `launch`; the clinician lands on the patient's page.

The EHR here is a real HTTP server playing the EHR's part of the protocol (SMART App Launch
1.0/2.0: `.well-known/smart-configuration`, the authorize redirect, the token endpoint with
the `patient` launch context); it checks what alemwatch sends it (client, redirect, PKCE)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from alemwatch.api.app import create_app
from alemwatch.protocol.load import load_protocol
from alemwatch.settings import Settings
from alemwatch.store import models as m
from alemwatch.store.db import session_factory, transaction
from alemwatch.store.repo import save_patient_file
from tests.conftest import PASSWORD, make_user

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
HTML = {"accept": "text/html"}


class FakeEhr:
    """What the EHR saw and what it will answer."""

    def __init__(self) -> None:
        self.patient = "p-001"
        self.codes: dict[str, dict[str, str]] = {}  # code -> the authorize request it answers
        self.token_requests: list[dict[str, str]] = []
        self.base = ""


def _handler(ehr: FakeEhr) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path == "/fhir/.well-known/smart-configuration":
                self._json(
                    200,
                    {
                        "authorization_endpoint": f"{ehr.base}/authorize",
                        "token_endpoint": f"{ehr.base}/token",
                        "capabilities": ["launch-ehr", "client-public"],
                        "code_challenge_methods_supported": ["S256"],
                    },
                )
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                code = f"code-{len(ehr.codes)}"
                ehr.codes[code] = query
                back = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
                self.send_response(302)
                self.send_header("Location", back)
                self.end_headers()
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            ehr.token_requests.append(form)
            asked = ehr.codes.get(form.get("code", ""))
            if asked is None:
                self._json(400, {"error": "invalid_grant"})
                return
            challenge = base64.urlsafe_b64encode(hashlib.sha256(form["code_verifier"].encode()).digest()).rstrip(b"=")
            if challenge.decode() != asked["code_challenge"] or form["redirect_uri"] != asked["redirect_uri"]:
                self._json(400, {"error": "invalid_grant", "error_description": "PKCE or redirect mismatch"})
                return
            self._json(200, {"access_token": "ehr-token", "token_type": "Bearer", "patient": ehr.patient})

    return Handler


@pytest.fixture
def ehr() -> Iterator[FakeEhr]:
    state = FakeEhr()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(db_url: str, ehr: FakeEhr) -> Iterator[TestClient]:
    settings = Settings(
        database_url=db_url,
        environment="test",
        secret_key="test-secret-" + "x" * 32,
        smart_issuers=[f"{ehr.base}/fhir"],
    )
    with transaction(db_url) as session:
        save_patient_file(session, EXAMPLE, load_protocol("us"))
    make_user(db_url, "smart-clin", "clinician")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _login(client: TestClient) -> None:
    response = client.post("/login", data={"username": "smart-clin", "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303, response.text


def _launch(client: TestClient, ehr: FakeEhr, iss: str | None = None) -> httpx.Response:
    query = urlencode({"iss": iss or f"{ehr.base}/fhir", "launch": "xyz123"})
    return client.get(f"/smart/launch?{query}", headers=HTML, follow_redirects=False)


def _through_the_ehr(client: TestClient, authorize: str) -> httpx.Response:
    """The browser at the EHR's authorize endpoint, then back at alemwatch's callback."""
    back = httpx.get(authorize, follow_redirects=False)
    assert back.status_code == 302
    callback = urlparse(back.headers["location"])
    return client.get(f"{callback.path}?{callback.query}", headers=HTML, follow_redirects=False)


def test_an_ehr_launch_lands_on_the_patients_page(client: TestClient, ehr: FakeEhr, db_url: str) -> None:
    _login(client)
    started = _launch(client, ehr)
    assert started.status_code == 302, started.text
    authorize = started.headers["location"]
    assert authorize.startswith(f"{ehr.base}/authorize?")
    asked = {k: v[0] for k, v in parse_qs(urlparse(authorize).query).items()}
    assert asked["launch"] == "xyz123" and asked["aud"] == f"{ehr.base}/fhir" and asked["response_type"] == "code"
    assert asked["code_challenge_method"] == "S256" and "launch" in asked["scope"].split()
    landed = _through_the_ehr(client, authorize)
    assert (landed.status_code, landed.headers["location"]) == (303, "/patients/p-001")
    assert ehr.token_requests[-1]["grant_type"] == "authorization_code"
    page = client.get("/patients/p-001", headers=HTML)
    assert page.status_code == 200 and "p-001" in page.text
    with session_factory(db_url)() as session:
        events = session.execute(select(m.AuditEvent).where(m.AuditEvent.action == "smart_launch")).scalars().all()
    assert [e.patient_id for e in events] == [None, "p-001"]


def test_a_launch_without_a_session_goes_through_the_login_page_and_back(client: TestClient, ehr: FakeEhr) -> None:
    started = _launch(client, ehr)
    assert started.status_code == 303
    target = started.headers["location"]
    assert target.startswith("/login?next=")
    login = client.post(
        "/login",
        data={"username": "smart-clin", "password": PASSWORD, "next": parse_qs(urlparse(target).query)["next"][0]},
        follow_redirects=False,
    )
    assert login.status_code == 303 and login.headers["location"].startswith("/smart/launch?iss=")
    again = client.get(login.headers["location"], headers=HTML, follow_redirects=False)
    assert again.status_code == 302 and again.headers["location"].startswith(f"{ehr.base}/authorize?")


def test_an_ehr_not_listed_may_not_launch(client: TestClient, ehr: FakeEhr) -> None:
    _login(client)
    response = _launch(client, ehr, iss="http://127.0.0.1:9/fhir")
    assert response.status_code == 422 and "may not launch" in response.text
    assert not ehr.codes


def test_a_forged_or_replayed_state_is_refused(client: TestClient, ehr: FakeEhr) -> None:
    _login(client)
    authorize = _launch(client, ehr).headers["location"]
    back = httpx.get(authorize, follow_redirects=False)
    callback = urlparse(back.headers["location"])
    forged = {k: v[0] for k, v in parse_qs(callback.query).items()} | {"state": "not-the-state"}
    assert client.get(f"/smart/callback?{urlencode(forged)}", headers=HTML).status_code == 422
    client.cookies.delete("alemwatch_smart")
    assert client.get(f"{callback.path}?{callback.query}", headers=HTML).status_code == 422


def test_a_patient_the_registry_does_not_follow_is_a_404_page(client: TestClient, ehr: FakeEhr, db_url: str) -> None:
    _login(client)
    ehr.patient = "p-unknown"
    landed = _through_the_ehr(client, _launch(client, ehr).headers["location"])
    assert landed.status_code == 404
    assert "not in this registry" in landed.text
    with session_factory(db_url)() as session:  # the refused launch is in the audit log all the same
        events = session.execute(select(m.AuditEvent).where(m.AuditEvent.action == "smart_launch")).scalars().all()
    assert [(e.outcome, e.patient_id, e.detail.get("iss")) for e in events][-1] == (
        "not-found",
        None,
        f"{ehr.base}/fhir",
    )
