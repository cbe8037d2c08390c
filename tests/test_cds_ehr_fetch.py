"""The CDS services calling an EHR's FHIR server that misbehaves, and EHR data of the wrong shape.

A real HTTP server on 127.0.0.1 plays the EHR (pages, next links, a slow answer); the service
must keep the EHR's token to the EHR's own server, answer within its deadline, read only what it
may, and turn every bad answer or bad record into a warning card or a precise 400, never a 500."""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from alemwatch.api.app import create_app
from alemwatch.settings import Settings
from tests.conftest import make_user, token_for
from tests.test_cds import call, draft_orders, hook_request, order, patient_file, prefetch_for, summaries

SECRET = "EHR-ACCESS-TOKEN-0123456789"
TODAY_PLUS_30 = dt.date.today() + dt.timedelta(days=30)


class FakeEhr:
    """An EHR's FHIR server: `answer(path)` gives (status, body bytes, seconds between bytes)."""

    def __init__(self, answer: Callable[[str], tuple[int, bytes, float]]) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str]] = []  # (path, Authorization header)
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                ehr.seen.append((self.path, self.headers.get("Authorization", "")))
                status, body, drip = ehr.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if drip:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(drip)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bundle(resources: list[dict[str, Any]], next_url: str | None = None) -> bytes:
    document: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        document["link"] = [{"relation": "next", "url": next_url}]
    return orjson.dumps(document)


@pytest.fixture
def ehr() -> Iterator[list[FakeEhr]]:
    servers: list[FakeEhr] = []
    yield servers
    for server in servers:
        server.close()


def cds_client(settings: Settings, db_url: str, **changes: Any) -> TestClient:
    client = TestClient(create_app(settings.model_copy(update=changes)))
    make_user(db_url, "cds-nurse", "nurse")
    client.headers.update(token_for(client, "cds-nurse"))
    return client


def without(prefetch: dict[str, Any], key: str) -> dict[str, Any]:
    out = dict(prefetch)
    del out[key]
    return out


def with_server(request: dict[str, Any], base: str) -> dict[str, Any]:
    return request | {
        "fhirServer": base,
        "fhirAuthorization": {
            "access_token": SECRET,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
    }


def warnings(body: dict[str, Any]) -> str:
    return " | ".join(c["detail"] for c in body["cards"] if c["indicator"] == "warning")


# --- the EHR's server ---------------------------------------------------------------------------------


def test_a_next_page_on_another_server_is_not_fetched_and_the_token_never_goes_there(
    settings: Settings, db_url: str, ehr: list[FakeEhr]
) -> None:
    other = FakeEhr(lambda path: (200, bundle([]), 0))
    ehr.append(other)
    home = FakeEhr(lambda path: (200, bundle([], next_url=f"{other.base}/page2"), 0))
    ehr.append(home)
    request = hook_request("patient-view", "p-001", without(prefetch_for(patient_file()), "observations"))
    with cds_client(settings, db_url, cds_fhir_servers=[home.base]) as client:
        body = call(client, "alemwatch-patient-view", with_server(request, home.base))
    assert other.seen == [], "the EHR's token went to a server a link named"
    assert home.seen and all(auth == f"Bearer {SECRET}" for _, auth in home.seen)
    assert "a next page on another server was not fetched" in warnings(body)


@pytest.mark.parametrize("suffix", ["EVIL", ".evil.example", ":9/fhir"], ids=["path-prefix", "host-suffix", "port"])
def test_the_fhir_server_allowlist_matches_the_server_not_a_text_prefix(
    settings: Settings, db_url: str, suffix: str
) -> None:
    allowed = "http://127.0.0.1:18501/fhir"
    server = {"EVIL": allowed + "EVIL", ".evil.example": "http://127.0.0.1.evil.example:18501/fhir"}.get(
        suffix, "http://127.0.0.1:9/fhir"
    )
    request = hook_request("patient-view", "p-001", None)
    with cds_client(settings, db_url, cds_fhir_servers=[allowed]) as client:
        body = call(client, "alemwatch-patient-view", with_server(request, server), status=403)
    assert "fhirServer" in body["detail"]


def test_the_patient_id_cannot_add_parameters_to_the_ehr_search(
    settings: Settings, db_url: str, ehr: list[FakeEhr]
) -> None:
    home = FakeEhr(lambda path: (200, bundle([]), 0))
    ehr.append(home)
    request = hook_request("patient-view", "x&_count=1&_elements=id", None)
    with cds_client(settings, db_url) as client:
        call(client, "alemwatch-patient-view", with_server(request, home.base))
    observation_searches = [path for path, _ in home.seen if path.startswith("/fhir/Observation?")]
    assert observation_searches and all("&_count=1" not in path for path in observation_searches), home.seen
    assert any("patient=x%26_count%3D1%26_elements%3Did" in path for path in observation_searches), home.seen


def test_an_answer_that_trickles_in_is_given_up_at_the_deadline(
    settings: Settings, db_url: str, ehr: list[FakeEhr]
) -> None:
    slow = FakeEhr(lambda path: (200, bundle([]), 0.5))  # 0.5 s a byte: every read within its timeout
    ehr.append(slow)
    request = hook_request("patient-view", "p-001", without(prefetch_for(patient_file()), "observations"))
    with cds_client(settings, db_url, cds_fetch_timeout_seconds=2.0) as client:
        started = time.monotonic()
        body = call(client, "alemwatch-patient-view", with_server(request, slow.base))
        took = time.monotonic() - started
    assert took < 6, f"the call took {took:.1f} s with a 2 s deadline"
    assert "did not answer in time" in warnings(body)


def test_pages_that_link_on_and_on_stop_at_the_page_limit_and_say_so(
    settings: Settings, db_url: str, ehr: list[FakeEhr]
) -> None:
    looping: list[FakeEhr] = []
    looping.append(FakeEhr(lambda path: (200, bundle([], next_url=f"{looping[0].base}/Observation?page=again"), 0)))
    ehr.append(looping[0])
    request = hook_request("patient-view", "p-001", without(prefetch_for(patient_file()), "observations"))
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", with_server(request, looping[0].base))
    assert "more than 20 pages" in warnings(body)


@pytest.mark.parametrize(
    "answer",
    [b'{"resourceType":"Bundle","entry":5}', b"[1, 2, 3]", b'{"resourceType":"OperationOutcome","issue":[]}'],
    ids=["entry-not-a-list", "not-a-bundle", "operation-outcome"],
)
def test_an_ehr_answer_of_the_wrong_shape_is_a_warning_card(
    settings: Settings, db_url: str, ehr: list[FakeEhr], answer: bytes
) -> None:
    odd = FakeEhr(lambda path: (200, answer, 0))
    ehr.append(odd)
    request = hook_request("patient-view", "p-001", without(prefetch_for(patient_file()), "observations"))
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", with_server(request, odd.base))
    assert "observations" in warnings(body), summaries(body)


def test_an_ehr_bundle_with_links_of_the_wrong_shape_is_read_as_one_page(
    settings: Settings, db_url: str, ehr: list[FakeEhr]
) -> None:
    odd = FakeEhr(lambda path: (200, b'{"resourceType":"Bundle","type":"searchset","link":5}', 0))
    ehr.append(odd)
    request = hook_request("patient-view", "p-001", without(prefetch_for(patient_file()), "observations"))
    with cds_client(settings, db_url) as client:
        call(client, "alemwatch-patient-view", with_server(request, odd.base))
    assert len([path for path, _ in odd.seen if path.startswith("/fhir/Observation")]) == 1


def test_a_fhir_server_address_that_is_not_a_url_is_a_warning_card(settings: Settings, db_url: str) -> None:
    request = hook_request("patient-view", "p-001", without(prefetch_for(patient_file()), "observations"))
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", with_server(request, "http://[::1"))
    assert "could not be reached" in warnings(body)


# --- EHR data of the wrong shape -------------------------------------------------------------------------


def _first(prefetch: dict[str, Any], key: str) -> dict[str, Any]:
    resource: dict[str, Any] = prefetch[key]["entry"][0]["resource"]
    return resource


SHAPES: dict[str, Callable[[dict[str, Any]], None]] = {
    "subject-a-string": lambda p: _first(p, "observations").update(subject="Patient/p-001"),
    "subject-reference-a-number": lambda p: _first(p, "observations").update(subject={"reference": 5}),
    "id-a-number": lambda p: _first(p, "observations").update(id=12345),
    "reference-range-an-object": lambda p: _first(p, "observations").update(referenceRange={"low": {"value": 1}}),
    "patient-extension-strings": lambda p: p["patient"].update(extension=["x"]),
    "patient-id-a-list": lambda p: p["patient"].update(id=["p-001"]),
    "deeply-nested": lambda p: p["patient"].update(nested=_deep(600)),
}


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"x": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.mark.parametrize("change", list(SHAPES.values()), ids=list(SHAPES))
def test_an_ehr_record_of_an_odd_shape_is_a_warning_card_never_a_500(
    settings: Settings, db_url: str, change: Callable[[dict[str, Any]], None]
) -> None:
    prefetch = copy.deepcopy(prefetch_for(patient_file()))
    change(prefetch)
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch))
    assert any(c["indicator"] == "warning" and "could not be read" in c["summary"] for c in body["cards"]), summaries(
        body
    )


def test_a_prefetch_bundle_whose_entry_is_not_a_list_is_fetched_instead_or_refused(
    settings: Settings, db_url: str
) -> None:
    prefetch = prefetch_for(patient_file())
    prefetch["observations"]["entry"] = 5
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch), status=412)
    assert "observations" in body["detail"]


def test_resources_about_another_patient_are_said_not_silently_dropped(settings: Settings, db_url: str) -> None:
    prefetch = prefetch_for(patient_file())
    for entry in prefetch["observations"]["entry"]:
        entry["resource"]["subject"] = {"reference": "Patient/someone-else"}
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch))
    assert "about another patient (someone-else) were not read" in warnings(body), summaries(body)


def test_a_relapse_steroid_on_a_day_without_an_infusion_does_not_stop_the_service(
    settings: Settings, db_url: str
) -> None:
    prefetch = prefetch_for(patient_file())
    steroid = {
        "resourceType": "MedicationAdministration",
        "id": "relapse-steroid",
        "status": "completed",
        "medicationCodeableConcept": {"text": "methylprednisolone 1 g IV (relapse)"},
        "subject": {"reference": "Patient/p-001"},
        "effectiveDateTime": "2025-05-05",
    }
    prefetch["administrations"]["entry"].append({"resource": steroid})
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-patient-view", hook_request("patient-view", "p-001", prefetch))
    assert body["cards"], "the assessment still runs"


# --- draft orders of the wrong shape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o.update(medicationCodeableConcept="alemtuzumab"),
        lambda o: o.update(dosageInstruction=["start tomorrow"]),
        lambda o: o["medicationCodeableConcept"].update(coding="alemtuzumab"),
    ],
    ids=["medication-a-string", "dosage-strings", "coding-a-string"],
)
def test_a_draft_order_of_the_wrong_shape_is_a_400_naming_it(
    settings: Settings, db_url: str, change: Callable[[dict[str, Any]], None]
) -> None:
    drafted = copy.deepcopy(order(TODAY_PLUS_30))  # the medication is a shared constant
    change(drafted)
    request = hook_request("order-sign", "p-001", prefetch_for(patient_file()), draftOrders=draft_orders(drafted))
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-order-sign", request, status=400)
    assert "context.draftOrders.entry[0].resource" in body["detail"]


def test_a_draft_order_whose_start_cannot_be_read_is_assessed_as_today_and_says_so(
    settings: Settings, db_url: str
) -> None:
    drafted = order(TODAY_PLUS_30)
    drafted["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2026-02-30"
    request = hook_request("order-sign", "p-001", prefetch_for(patient_file()), draftOrders=draft_orders(drafted))
    with cds_client(settings, db_url) as client:
        body = call(client, "alemwatch-order-sign", request)
    assert "assessed as starting today" in " ".join(c["detail"] for c in body["cards"]), summaries(body)
