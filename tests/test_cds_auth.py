"""CDS Hooks 2.0 client authentication: the EHR signs a JWT for each call (ES384 or RS384),
alemwatch verifies it against the JWK Set of a trusted issuer (a real HTTP server on
127.0.0.1 here) and acts as the care-team account configured for that issuer."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import select

from alemwatch.api.app import create_app
from alemwatch.settings import CdsClient, Settings
from alemwatch.store import models as m
from alemwatch.store.db import session_factory, transaction
from tests.conftest import make_user
from tests.test_cds import hook_request, patient_file, prefetch_for

ISSUER = "https://ehr.example.org"
SERVICE = "alemwatch-patient-view"
AUDIENCE = f"http://testserver/cds-services/{SERVICE}"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    public: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig"}


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """The EHR's JWK Set, served over HTTP on a free 127.0.0.1 port."""
    body = json.dumps({"keys": [_jwk(RSA_KEY, "rsa-1"), _jwk(EC_KEY, "ec-1")]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def trusting(db_url: str, jwks_url: str) -> Settings:
    """Settings that trust ISSUER as the account `ehr-cds` (a clinician, made here)."""
    make_user(db_url, "ehr-cds", "clinician")
    return Settings(
        database_url=db_url,
        environment="test",
        secret_key="test-secret-" + "x" * 32,
        cds_clients={ISSUER: CdsClient(jwks_url=jwks_url, account="ehr-cds")},
    )


@pytest.fixture
def ehr(db_url: str, jwks_url: str) -> Iterator[TestClient]:
    """The app trusting ISSUER as the account `ehr-cds` (a clinician)."""
    settings = trusting(db_url, jwks_url)
    with TestClient(create_app(settings)) as client:
        yield client


def token(key: Any = RSA_KEY, kid: str = "rsa-1", algorithm: str = "RS384", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "ehr-client", "aud": AUDIENCE, "iat": now, "exp": now + 240}
    payload["jti"] = str(uuid.uuid4())
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def post(client: TestClient, bearer: str, path: str = f"/cds-services/{SERVICE}", body: Any = None) -> Any:
    request = body if body is not None else hook_request("patient-view", "p-001", prefetch_for(patient_file()))
    return client.post(path, json=request, headers={"Authorization": f"Bearer {bearer}"})


@pytest.mark.parametrize(("key", "kid", "algorithm"), [(RSA_KEY, "rsa-1", "RS384"), (EC_KEY, "ec-1", "ES384")])
def test_a_signed_jwt_of_a_trusted_ehr_is_accepted_as_its_account(
    ehr: TestClient, db_url: str, key: Any, kid: str, algorithm: str
) -> None:
    response = post(ehr, token(key, kid, algorithm))
    assert response.status_code == 200, response.text
    assert response.json()["cards"]
    with session_factory(db_url)() as session:
        event = session.execute(select(m.AuditEvent).where(m.AuditEvent.action == "cds")).scalars().one()
        user = session.get(m.User, event.user_id)
    assert user is not None and user.username == "ehr-cds"


@pytest.mark.parametrize(
    ("bearer", "said"),
    [
        (lambda: token(aud="https://elsewhere.example.org/cds-services/x"), "aud must be"),
        (lambda: token(iss="https://stranger.example.org"), "not a CDS client this service trusts"),
        (lambda: token(key=OTHER_KEY), "does not verify"),
        (lambda: token(kid="unknown-kid"), "signing key"),
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(exp=int(time.time()) + 3600), "five minutes"),
        (lambda: token(jti=None), "jti"),
        (lambda: token(algorithm="HS256", key="a shared secret that is not a key pair"), "does not verify"),
        (lambda: "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.", "not a CDS client"),
    ],
    ids=["wrong-aud", "unknown-iss", "other-key", "unknown-kid", "expired", "too-long", "no-jti", "hs256", "alg-none"],
)
def test_a_jwt_that_does_not_verify_is_a_401_saying_why(ehr: TestClient, bearer: Any, said: str) -> None:
    response = post(ehr, bearer())
    assert response.status_code == 401, response.text
    assert said in response.json()["detail"]


def test_a_jwt_is_good_for_one_call(ehr: TestClient) -> None:
    bearer = token()
    assert post(ehr, bearer).status_code == 200
    again = post(ehr, bearer)
    assert again.status_code == 401 and "jti was used before" in again.json()["detail"]


def test_feedback_takes_the_service_endpoint_as_audience(ehr: TestClient) -> None:
    feedback = {"feedback": [{"card": "c-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-05T10:00:00Z"}]}
    response = post(ehr, token(), path=f"/cds-services/{SERVICE}/feedback", body=feedback)
    assert response.status_code == 200, response.text


def test_a_disabled_account_stops_the_ehr(ehr: TestClient, db_url: str) -> None:
    with transaction(db_url) as session:
        user = session.execute(select(m.User).where(m.User.username == "ehr-cds")).scalar_one()
        user.disabled = True
    response = post(ehr, token())
    assert response.status_code == 401 and "missing or disabled" in response.json()["detail"]


def test_a_jwt_is_only_taken_on_the_cds_services(ehr: TestClient) -> None:
    response = ehr.get("/fhir/Patient/p-001", headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 401


def test_a_replay_is_refused_by_another_worker_too(db_url: str, jwks_url: str) -> None:
    """Two apps on one database stand for two worker processes: the second refuses the first's JWT."""
    settings = trusting(db_url, jwks_url)
    bearer = token()
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert post(first, bearer).status_code == 200
        again = post(second, bearer)
    assert again.status_code == 401 and "jti was used before" in again.json()["detail"]
    with session_factory(db_url)() as session:
        refused = session.execute(select(m.AuditEvent).where(m.AuditEvent.outcome == "denied")).scalars().all()
    assert any(e.resource == f"/cds-services/{SERVICE}" and e.detail.get("status") == 401 for e in refused)
