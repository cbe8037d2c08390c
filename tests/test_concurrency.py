"""Concurrency on PostgreSQL: 8 writers adding labs and resolving alerts at once lose nothing
and never raise the same alert twice.

A real server (`alemwatch serve --workers 2` in a subprocess) takes, at once: 8 nurses posting
platelet and TSH results to three shared patients (values crossing the ITP thresholds, so alerts
are raised, escalated, closed and raised again; every 4th round the odd nurses re-post the result
their partner posted the round before, under the same id), and 2 clinicians acknowledging and
resolving the open alerts. Afterwards the database must hold every result once, one unresolved
alert per fingerprint at every moment, an event naming the actor for every change, resolutions
that nothing changed afterwards, and exactly the alerts a fresh assessment wants.

Sharper races have their own tests: the same new result posted by 8 nurses at the same moment,
one alert resolved by 8 clinicians at the same moment, and a write whose commit fails after
the server has answered it."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from alemwatch.core.assess import assess
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.alerts import SYSTEM, reconcile, wanted_alerts
from alemwatch.store import models as m
from alemwatch.store.db import get_engine, session_factory
from alemwatch.store.repo import load_patient
from tests.conftest import PASSWORD, make_user

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "alemwatch"
EXAMPLE = json.loads((ROOT / "examples" / "patient-contract.json").read_text())
SEED = 4242
WRITERS = 8  # nurses posting lab results
HANDLERS = 2  # clinicians acknowledging and resolving alerts
REQUESTS = 40  # per thread
SERVER_WORKERS = 2  # server processes: requests race across processes as well as threads
DUPLICATE_EVERY = 4  # every 4th round: a burst (all writers at once), odd writers re-post their partner's result
PATIENTS = ["cc-001", "cc-002", "cc-003"]
FIRST_LAB_DAY = dt.date(2025, 4, 15)  # after the example's own labs: every result has its own day
PLATELETS = [25, 60, 90, 120, 140, 180, 220, 300]  # below 30 / 100 / 150 (LLN) and normal
TSH = [0.2, 1.5, 2.5, 6.0, 12.0]


# --- the server ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Shut down gracefully: requests under way finish (and commit) before it exits."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "ALEMWATCH_DATABASE_URL": db_url,
        "ALEMWATCH_ENVIRONMENT": "test",
        "ALEMWATCH_SECRET_KEY": "concurrency-test-" + "x" * 32,
        "PYTHONWARNINGS": "ignore",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), "--workers", str(SERVER_WORKERS)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    running = Server(db_url, f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not answer /api/health in 60 s"
            try:
                if httpx.get(f"{running.base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield running
    finally:
        running.stop()


def _client(server: Server, username: str) -> httpx.Client:
    token = httpx.post(f"{server.base}/api/auth/token", json={"username": username, "password": PASSWORD}, timeout=30)
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=server.base, headers=headers, timeout=60)


# --- the plan: which writer posts which result -----------------------------------------------------


def _lab(index: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Result number `index`: its patient and the result (three of four are platelet counts)."""
    patient = PATIENTS[index % len(PATIENTS)]
    day = (FIRST_LAB_DAY + dt.timedelta(days=index)).isoformat()
    if index % 4 == 3:
        return patient, {
            "id": f"cw-{index:04d}",
            "test": "tsh",
            "value": rng.choice(TSH),
            "unit": "m[IU]/L",
            "date": day,
        }
    value = rng.choice(PLATELETS)
    return patient, {"id": f"cw-{index:04d}", "test": "platelets", "value": value, "unit": "10*9/L", "date": day}


def _plan() -> list[list[tuple[str, dict[str, Any]]]]:
    """For each writer, its REQUESTS results in order. Result r*WRITERS+w is writer w's in round r;
    in every DUPLICATE_EVERY-th round the odd writers post their even partner's result of the round
    before instead: the same id from a second writer, amid everyone else's writes."""
    rng = random.Random(SEED)
    labs = [_lab(i, rng) for i in range(REQUESTS * WRITERS)]
    plan: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(WRITERS)]
    for r in range(REQUESTS):
        for w in range(WRITERS):
            duplicate = r > 0 and r % DUPLICATE_EVERY == 0 and w % 2 == 1
            plan[w].append(labs[(r - 1) * WRITERS + w - 1] if duplicate else labs[r * WRITERS + w])
    return plan


# --- what the threads saw --------------------------------------------------------------------------


@dataclass
class Seen:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (kind of request, status)
    server_errors: list[str] = field(default_factory=list)  # 5xx answers and dropped connections
    created: Counter[tuple[str, str]] = field(default_factory=Counter)  # (patient, lab id) -> posts answered "created"
    resolved: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # what each resolver was answered
    errors: list[BaseException] = field(default_factory=list)  # failures of the test's own threads
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            with self.lock:
                self.server_errors.append(f"{kind} {path}: connection failed: {exc!r}")
            return None
        with self.lock:
            self.statuses[(kind, response.status_code)] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{kind} {path}: {response.status_code} {response.text[:200]}")
        return response

    def post_lab(self, client: httpx.Client, patient: str, lab: dict[str, Any]) -> None:
        response = self.call("lab", client, "POST", f"/api/patients/{patient}/labs", json=lab)
        if response is not None and response.status_code in (200, 201):
            with self.lock:
                for record in response.json()["records"]:
                    self.created[(patient, record["id"])] += record["created"]


def _writer(
    server: Server,
    number: int,
    plan: list[tuple[str, dict[str, Any]]],
    barrier: threading.Barrier,
    seen: Seen,
    burst_every: int = DUPLICATE_EVERY,
) -> None:
    try:
        with _client(server, f"nurse{number}") as client:
            for r, (patient, lab) in enumerate(plan):
                if r % burst_every == 0:
                    barrier.wait(timeout=60)  # a burst: every writer posts at once
                seen.post_lab(client, patient, lab)
    except BaseException as exc:
        barrier.abort()
        with seen.lock:
            seen.errors.append(exc)


def _handler(server: Server, number: int, seen: Seen) -> None:
    rng = random.Random(SEED + number)
    try:
        with _client(server, f"clin{number}") as client:
            for _ in range(REQUESTS // 2):  # a look and an action: REQUESTS requests
                patient = rng.choice(PATIENTS)
                listed = seen.call("list", client, "GET", f"/api/patients/{patient}/alerts", params={"status": "all"})
                unresolved = [a for a in listed.json()["alerts"] if a["status"] != "resolved"] if listed else []
                if not unresolved:
                    time.sleep(0.02)
                    continue
                alert = rng.choice(unresolved)
                base = f"/api/patients/{patient}/alerts/{alert['id']}"
                if alert["status"] == "open" and rng.random() < 0.4:
                    seen.call(
                        "acknowledge", client, "POST", f"{base}/acknowledge", json={"reason": "called the patient"}
                    )
                    continue
                resolved = seen.call(
                    "resolve", client, "POST", f"{base}/resolve", json={"reason": f"seen by clin{number}"}
                )
                if resolved is not None and resolved.status_code == 200:
                    with seen.lock:
                        seen.resolved[(patient, alert["id"])] = resolved.json()
    except BaseException as exc:
        with seen.lock:
            seen.errors.append(exc)


def _server_trouble(server: Server, seen: Seen) -> str:
    """The first failures the threads saw, and the server's own words about them."""
    log = server.log.read_text(errors="replace").splitlines()
    causes = [line for line in log if line.startswith(("sqlalchemy.exc.", "psycopg.", "DETAIL:"))]
    return "\n".join(seen.server_errors[:5] + ["server log:"] + causes[:6])


# --- the test --------------------------------------------------------------------------------------


def _setup(server: Server) -> None:
    for w in range(WRITERS):
        make_user(server.url, f"nurse{w}", "nurse")
    for h in range(HANDLERS):
        make_user(server.url, f"clin{h}", "clinician")
    with _client(server, "nurse0") as client:
        for pid in PATIENTS:
            # Without the example's bruising report, the ITP alert's severity follows the platelet count.
            created = client.post("/api/patients", json={**EXAMPLE, "id": pid, "symptoms": []})
            assert created.status_code == 201, created.text


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_eight_writers_and_two_resolvers_at_once_lose_nothing_and_never_raise_an_alert_twice(
    server: Server, db_url: str
) -> None:
    _setup(server)
    plan = _plan()
    seen = Seen()
    barrier = threading.Barrier(WRITERS)
    threads = [
        threading.Thread(target=_writer, args=(server, w, plan[w], barrier, seen), name=f"nurse{w}")
        for w in range(WRITERS)
    ] + [threading.Thread(target=_handler, args=(server, h, seen), name=f"clin{h}") for h in range(HANDLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in 300 s"
    server.stop()  # every request under way has finished before the database is read
    assert not seen.errors, seen.errors

    # No response was a 5xx; every result was accepted (the same id twice is not a conflict).
    assert not seen.server_errors, _server_trouble(server, seen)
    assert {status for kind, status in seen.statuses if kind == "lab"} <= {200, 201}, seen.statuses
    assert sum(n for (kind, _), n in seen.statuses.items() if kind == "lab") == WRITERS * REQUESTS
    assert any(kind == "resolve" and status == 200 for kind, status in seen.statuses), seen.statuses

    # Every distinct result sent is stored exactly once, with its value; exactly one post created it.
    sent = {(patient, lab["id"]): lab for posts in plan for patient, lab in posts}
    assert len(sent) < WRITERS * REQUESTS  # some were sent twice
    with session_factory(db_url)() as session:
        rows = session.execute(select(m.LabResult).where(m.LabResult.id.like("cw-%"))).scalars().all()
        stored = Counter((row.patient_id, row.id) for row in rows)
        assert stored == Counter(sent.keys()), "results lost or duplicated"
        for row in rows:
            lab = sent[(row.patient_id, row.id)]
            assert (row.value, row.test, row.date.isoformat()) == (lab["value"], lab["test"], lab["date"])
        assert seen.created == Counter(sent.keys()), "a result reported created by none or by two posts"

        alerts = session.execute(select(m.Alert).where(m.Alert.patient_id.in_(PATIENTS))).scalars().all()
        events = session.execute(select(m.AlertEvent).where(m.AlertEvent.patient_id.in_(PATIENTS))).scalars().all()

    # At most one unresolved alert per patient and fingerprint, now and at every moment: the
    # alerts of one fingerprint follow each other, each resolved before the next is raised.
    by_fingerprint: dict[tuple[str, str], list[m.Alert]] = defaultdict(list)
    for alert in alerts:
        by_fingerprint[(alert.patient_id, alert.fingerprint)].append(alert)
    for key, group in by_fingerprint.items():
        group.sort(key=lambda a: a.raised_at)
        assert sum(a.status != "resolved" for a in group) <= 1, f"{key}: two unresolved alerts"
        for earlier, later in zip(group, group[1:], strict=False):
            assert earlier.status == "resolved" and earlier.resolved_at is not None, f"{key}: raised while unresolved"
            assert earlier.resolved_at <= later.raised_at, f"{key}: raised again before the earlier one was resolved"
    assert any(len(g) > 1 for g in by_fingerprint.values()), "no alert was raised again after a resolution"

    # Every status change has an event naming the actor; the alert's fields agree with its events.
    users = {f"nurse:nurse{w}" for w in range(WRITERS)} | {f"clinician:clin{h}" for h in range(HANDLERS)} | {SYSTEM}
    events_of: dict[tuple[str, str], list[m.AlertEvent]] = defaultdict(list)
    for event in events:
        assert event.actor in users, f"event {event.action} by an unknown actor {event.actor!r}"
        events_of[(event.patient_id, event.alert_id)].append(event)
    actions = Counter(e.action for e in events)
    assert actions["escalated"] and actions["reraised"] and actions["acknowledged"], actions
    for alert in alerts:
        mine = events_of[(alert.patient_id, alert.id)]
        did = {(e.action, e.actor) for e in mine}
        assert sum(e.action in ("raised", "reraised") for e in mine) == 1, f"alert {alert.id}: {sorted(did)}"
        if alert.acknowledged_by:
            assert ("acknowledged", alert.acknowledged_by) in did, f"alert {alert.id}: acknowledgement without event"
        if alert.status == "resolved":
            assert alert.resolved_by and alert.resolved_at and alert.resolution_reason, f"alert {alert.id}"
            assert ("resolved", alert.resolved_by) in did, f"alert {alert.id}: resolution without its event"
        else:
            assert alert.resolved_by is None and alert.resolved_at is None, (
                f"alert {alert.id} is {alert.status} but was resolved by {alert.resolved_by}: a resolution was lost"
            )

    # A resolution is final: nothing changed an alert after a clinician resolved it.
    final = {(a.patient_id, a.id): a for a in alerts}
    for key, answer in seen.resolved.items():
        alert = final[key]
        assert (alert.status, alert.severity, alert.evidence, alert.resolved_by) == (
            "resolved",
            answer["severity"],
            answer["evidence"],
            answer["resolved_by"],
        ), f"alert {key} changed after its resolution: now {alert.status} {alert.severity} {alert.evidence}"

    # The open alerts are exactly what a fresh assessment calls for: re-assessing raises,
    # updates and closes nothing.
    protocol = load_protocol("us")
    with session_factory(db_url)() as session:
        for pid in PATIENTS:
            patient = load_patient(session, pid, protocol)
            assert patient is not None
            wanted = wanted_alerts(assess(patient, protocol, dt.date.today()), protocol)
            assert reconcile(session, pid, wanted) == {"raised": 0, "updated": 0, "closed": 0}, pid
        session.rollback()


RACE_ROUNDS = 10


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_same_result_posted_by_eight_writers_at_the_same_moment_is_stored_once_without_an_error(
    server: Server, db_url: str
) -> None:
    _setup(server)
    seen = Seen()
    barrier = threading.Barrier(WRITERS)
    rng = random.Random(SEED)
    labs = [
        {
            "id": f"race-{r:02d}",
            "test": "platelets",
            "value": rng.choice(PLATELETS),
            "unit": "10*9/L",
            "date": (FIRST_LAB_DAY + dt.timedelta(days=r)).isoformat(),
        }
        for r in range(RACE_ROUNDS)
    ]
    threads = [
        threading.Thread(target=_writer, args=(server, w, [(PATIENTS[0], lab) for lab in labs], barrier, seen, 1))
        for w in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    server.stop()
    assert not seen.errors, seen.errors
    with session_factory(db_url)() as session:
        stored = Counter(session.execute(select(m.LabResult.id).where(m.LabResult.id.like("race-%"))).scalars().all())
    assert stored == Counter(lab["id"] for lab in labs)
    assert not seen.server_errors, _server_trouble(server, seen)
    assert seen.created == Counter((PATIENTS[0], lab["id"]) for lab in labs)


RESOLVE_ROUNDS = 8


def _open_alert(client: httpx.Client, patient: str, code: str) -> dict[str, Any]:
    """The patient's open alert of that code. Polled: the server answers a write before it commits
    it (see test_a_write_answered_ok_is_committed_before_the_answer), so it may show a moment late."""
    deadline = time.monotonic() + 10
    while True:
        alerts = client.get(f"/api/patients/{patient}/alerts", params={"status": "open"}).json()["alerts"]
        found = [a for a in alerts if a["code"] == code]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, alerts
            return found[0]
        time.sleep(0.05)


def _resolve_at_once(clients: list[httpx.Client], patient: str, alert_id: str) -> list[int]:
    """Every client resolves the same alert at the same moment; the status codes they got."""
    barrier = threading.Barrier(len(clients))
    answers: list[int] = []

    def resolve(client: httpx.Client) -> None:
        barrier.wait(timeout=60)
        path = f"/api/patients/{patient}/alerts/{alert_id}/resolve"
        answers.append(client.post(path, json={"reason": "reviewed"}).status_code)

    threads = [threading.Thread(target=resolve, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == len(clients), f"a resolver did not answer: {answers}"
    return answers


@pytest.mark.parametrize(
    "db_url",
    [
        "sqlite",  # fixed: SQLite transactions begin IMMEDIATE (the write lock) in alemwatch.store.db
        "postgresql",
    ],
    indirect=True,
)
def test_an_alert_resolved_by_eight_clinicians_at_the_same_moment_is_resolved_once(server: Server, db_url: str) -> None:
    make_user(server.url, "nurse0", "nurse")
    for c in range(WRITERS):
        make_user(server.url, f"clin{c}", "clinician")
    patient = PATIENTS[0]
    with _client(server, "nurse0") as nurse:
        assert nurse.post("/api/patients", json={**EXAMPLE, "id": patient, "symptoms": []}).status_code == 201
        clinicians = [_client(server, f"clin{c}") for c in range(WRITERS)]
        try:
            wins: list[int] = []
            for r in range(RESOLVE_ROUNDS):
                # New evidence each round: the ITP alert is raised again (or updated while unresolved).
                day = (FIRST_LAB_DAY + dt.timedelta(days=r)).isoformat()
                lab = {"id": f"rr-{r}", "test": "platelets", "value": 20 + r, "unit": "10*9/L", "date": day}
                assert nurse.post(f"/api/patients/{patient}/labs", json=lab).status_code == 201
                alert = _open_alert(nurse, patient, "itp")
                answers = _resolve_at_once(clinicians, patient, alert["id"])
                assert set(answers) <= {200, 409}, answers
                wins.append(answers.count(200))
        finally:
            for client in clinicians:
                client.close()
    server.stop()
    with session_factory(db_url)() as session:
        resolutions = Counter(
            session.execute(
                select(m.AlertEvent.alert_id).where(
                    m.AlertEvent.patient_id == patient, m.AlertEvent.action == "resolved"
                )
            ).scalars()
        )
    assert wins == [1] * RESOLVE_ROUNDS, f"successful resolutions per round: {wins}"
    assert max(resolutions.values()) == 1, "an alert has more than one 'resolved' event"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_write_answered_ok_is_committed_before_the_answer(server: Server, db_url: str) -> None:
    """Hold a lock the acknowledgement's commit needs, answer or not, then make that commit fail:
    a client must never have been told 200 for an acknowledgement that is not stored."""
    make_user(server.url, "nurse0", "nurse")
    patient = PATIENTS[0]
    with _client(server, "nurse0") as nurse:
        assert nurse.post("/api/patients", json={**EXAMPLE, "id": patient, "symptoms": []}).status_code == 201
        alert = _open_alert(nurse, patient, "itp")
        answer: dict[str, Any] = {}

        def acknowledge() -> None:
            try:
                path = f"/api/patients/{patient}/alerts/{alert['id']}/acknowledge"
                answer["status"] = nurse.post(path, json={"reason": "called"}, timeout=30).status_code
            except httpx.TransportError as exc:
                answer["error"] = repr(exc)

        with get_engine(db_url).connect() as holder:
            holder.execute(text("LOCK TABLE audit_events IN EXCLUSIVE MODE"))  # reads pass, inserts wait
            me = holder.execute(text("select pg_backend_pid()")).scalar_one()
            thread = threading.Thread(target=acknowledge)
            thread.start()
            blocked: list[int] = []
            deadline = time.monotonic() + 30
            while not blocked and time.monotonic() < deadline:
                time.sleep(0.05)
                query = text("select pid from pg_stat_activity where :me = any(pg_blocking_pids(pid))")
                blocked = list(holder.execute(query, {"me": me}).scalars())
            assert blocked, "the acknowledgement never waited for the audit table"
            time.sleep(0.5)  # time to answer, if the server answers before committing
            for pid in blocked:  # only the server connection waiting for this test's lock
                holder.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid})
            holder.rollback()
            thread.join(timeout=60)
    server.stop()
    with session_factory(db_url)() as session:
        stored = session.get(m.Alert, (patient, alert["id"]))
        assert stored is not None
        status = stored.status
    assert not (answer.get("status") == 200 and status != "acknowledged"), (
        f"the client was told 200 but the alert is {status!r}: the acknowledgement was lost after the answer"
    )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_same_new_patient_sent_as_fhir_by_eight_clients_at_once_is_created_once_without_an_error(
    server: Server, db_url: str
) -> None:
    """An EHR that retries a first message (a new patient and a result) from several connections:
    every copy is answered 200 and the registry holds one patient with one result."""
    for w in range(WRITERS):
        make_user(server.url, f"ehr{w}", "clinician")
    clients = [_client(server, f"ehr{w}") for w in range(WRITERS)]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6a1f0c3e-0000-4000-8000-000000000001",
                "request": {"method": "PUT", "url": "Patient/race-new"},
                "resource": {
                    "resourceType": "Patient",
                    "id": "race-new",
                    "gender": "female",
                    "birthDate": "1990-02-03",
                },
            },
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": {
                    "resourceType": "Observation",
                    "id": "race-new-plt",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
                    "subject": {"reference": "Patient/race-new"},
                    "effectiveDateTime": FIRST_LAB_DAY.isoformat(),
                    "valueQuantity": {
                        "value": 140,
                        "unit": "10*9/L",
                        "system": "http://unitsofmeasure.org",
                        "code": "10*9/L",
                    },
                },
            },
        ],
    }
    barrier = threading.Barrier(WRITERS)
    answers: list[tuple[int, str]] = []

    def send(client: httpx.Client) -> None:
        barrier.wait(timeout=60)
        answer = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
        answers.append((answer.status_code, answer.text[:300]))

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for client in clients:
        client.close()
    server.stop()
    assert [status for status, _ in answers] == [200] * WRITERS, answers
    with session_factory(db_url)() as session:
        assert session.execute(select(m.Patient.id).where(m.Patient.id == "race-new")).scalars().all() == ["race-new"]
        labs = session.execute(select(m.LabResult.value).where(m.LabResult.patient_id == "race-new")).scalars().all()
    assert labs == [140.0]
