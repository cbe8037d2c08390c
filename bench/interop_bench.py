"""Benchmark of the interoperability endpoints on the real server: FHIR transaction ingest and
CDS Hooks patient-view latency, against the issue's targets.

What it measures, all in this one run:

- FHIR ingest, per backend (PostgreSQL in a fresh schema, SQLite in a temp file): `--patients`
  demo patients (`build_cohort(n, SEED, today)`), each sent as ONE transaction Bundle to
  `POST /fhir`: its Patient (PUT Patient/{id}) and every other resource
  `outbound.record_resources` gives for the file with its stored ids (as `with_ids` in
  tests/test_cds.py): Observations (lab results and symptom reports), MedicationAdministrations,
  MedicationRequest (a planned course), Immunizations, MedicationStatements, Procedures, all
  POST. The Bundles are built and encoded before any timing. The server is
  `alemwatch serve --workers N` (on a free 127.0.0.1 port: uvicorn workers with a listening
  socket each, SO_REUSEPORT) in a subprocess; the load comes from a separate
  process (multiprocessing, spawn) with `--connections` concurrent httpx keep-alive
  connections (or a new connection per Bundle with `--close-connections`), each Bundle sent
  once, after `WARMUP_BUNDLES` untimed Bundles of further demo patients. Reported: patients,
  Observations, wall seconds, Observations/s and its ratio to the target (10,000
  Observations/s on PostgreSQL), per-Bundle latency, and the share of responses that were not
  200 (must be 0; the first error is printed). Afterwards the database is read: every lab
  Observation must be one lab_results row of its patient, every symptom Observation one
  symptom_reports row (exactly once: counted per patient).
- CDS Hooks `POST /cds-services/alemwatch-patient-view` on the PostgreSQL server (after its
  ingest), with full prefetch (every resource of the patient, as `prefetch_for` in
  tests/test_cds.py) for the MEDIAN-sized demo patient of the cohort by number of lab results,
  then for the LARGEST: first `SERIAL_CALLS` calls one after another (the unloaded service
  time), then an open loop at each of `--cds-rates` for `--cds-seconds`: request i is sent at
  t0 + i/rate whatever happened to the earlier ones (asyncio in a separate load process, one
  task per request, up to `--cds-connections` requests at the server at once; beyond that a
  request waits in the client's pool, as behind a proxy, so that an overloaded run leaves the
  server a bounded backlog). Latency is from the SCHEDULED send time to the full response, so
  queueing in the client, the network and the server all count. Reported: p50, p90, p99, max
  in ms of the 200 answers, the achieved send rate and answer rate, the client's lag behind
  its schedule, errors (non-200, and timeouts: not answered within `--cds-timeout` s), and the
  ratio of p99 to the 50 ms target, where a request not answered 200 counts as slower than
  any (so with more than 1% errors p99 is "> timeout"). Between runs the server is given time
  to finish its backlog (a request the client gave up on still runs to the end).

For every phase it also prints the CPU seconds each server worker spent (read from /proc: how
evenly the workers shared the load; the ingest's from the end of its warm-up, a CDS run's from
the end of its serial calls) and what the server logged (its log is kept in
artifacts/interop-bench-server-<backend>.log). From the CPU it prints the cost of the work: server
CPU per Observation ingested and per CDS call (over the serial calls), and the most the machine's
cores could do at that cost with nothing else running: the ceiling the targets meet here. The
header times two fixed pieces of work (decoding the median CDS body, a pure-Python loop) as a
measure of how fast the machine is that day: shared machines vary, and figures from two runs
compare only with it. It also times the work itself in this process, with the server's own
functions but no HTTP, authentication, database or audit (`work_costs`): fhir.resources
validating an Observation, a Bundle validated, read and its patient assessed (per Observation),
and a patient-view call's body decoded, read and assessed into cards; with the most the cores
could do at that cost, and, beside each phase's server CPU, the share of it that this work is
(the rest is what serving adds). Beside the server's CPU a unit it prints PostgreSQL's (its
processes on this machine, read from /proc) and the load process's own, which run on the same
cores, and the ceiling all three together set.

Ratios: for latency measured/target (below 1 = met); for throughput measured/target (1 or
more = met). The load process shares the machine's cores with the server, as an EHR on the
same host would not: the header says how many there are. The temporary databases are dropped
and the servers stopped at the end, also on failure. The PostgreSQL server is
127.0.0.1:5432, user postgres, database test (or ALEMWATCH_TEST_PG_URL).

Run from the repository root:

    .venv/bin/python bench/interop_bench.py                  # about 3 minutes
    .venv/bin/python bench/interop_bench.py --patients 100 --cds-seconds 5 --backends postgresql

It always exits 0 unless an exception happens: benchmarks report, they do not fail builds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime as dt
import json
import multiprocessing
import os
import platform
import queue
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from alemwatch.api import cds as cds_api
from alemwatch.core.assess import assess
from alemwatch.core.patient import parse_patient
from alemwatch.demo import build_cohort, build_patient
from alemwatch.fhir import inbound, outbound
from alemwatch.fhir.cds import PATIENT_VIEW, PREFETCH
from alemwatch.fhir.models import model_for
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.fhir_store import read_entries
from alemwatch.security import create_user
from alemwatch.settings import Settings
from alemwatch.store.db import get_engine, transaction, upgrade
from alemwatch.store.repo import content_id

SEED = 20261202
JURISDICTION = "us"
INGEST_TARGET = 10_000.0  # Observations per second (PostgreSQL)
CDS_P99_TARGET_MS = 50.0
WARMUP_BUNDLES = 4  # extra demo patients sent before the timing (both workers import and warm up)
SERIAL_CALLS = 20  # unloaded CDS calls, one after another, before each open loop
WORK_BUNDLES = 8  # Bundles whose work is also timed in this process (no HTTP, no database)
WORK_CALLS = 10  # CDS calls of each size whose work is also timed in this process
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # usable
SETTLE_TIMEOUT_S = 90.0  # how long the server may take to finish a backlog between CDS runs
START_TIMEOUT_S = 60.0
USERNAME = "bench-ehr"
PASSWORD = "interop bench password"
HOOK_PLACEHOLDER = "HOOK-INSTANCE-PLACEHOLDER-0000000000"  # 36 characters, as a uuid4

EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Group)\b")
PG_BASE = os.environ.get("ALEMWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"  # the servers' logs are kept here (not committed)
PREFETCH_TYPES = {  # prefetch key -> resource type (the keys of alemwatch.fhir.cds.PREFETCH)
    "observations": "Observation",
    "administrations": "MedicationAdministration",
    "requests": "MedicationRequest",
    "statements": "MedicationStatement",
    "immunizations": "Immunization",
    "procedures": "Procedure",
}


# --- Patients as FHIR: the Bundles and the prefetch -------------------------------------------


def with_ids(data: dict[str, Any]) -> dict[str, Any]:
    """The file as `repo.patient_file(ids=True)` gives it (as `with_ids` in tests/test_cds.py)."""
    out = copy.deepcopy(data)
    for kind, prefix in (("infusions", "inf"), ("exams", "exa"), ("vaccinations", "vac"), ("symptoms", "sym")):
        for record in out.get(kind) or []:
            record["id"] = content_id(prefix, {"date": record["date"]} if kind == "infusions" else record)
    for record in out.get("prophylaxis") or []:
        record["id"] = content_id("pro", {"kind": record["kind"], "start": record["start"]})
    for record in out.get("labs") or []:
        record.setdefault("id", content_id("lab", record))
    return out


def is_lab(resource: dict[str, Any]) -> bool:
    categories = resource.get("category") or []
    return any(c.get("code") == "laboratory" for cat in categories for c in cat.get("coding") or [])


@dataclass
class Expected:
    """What one patient's Bundle must leave in the database."""

    observations: int = 0  # Observation entries sent
    labs: set[str] = field(default_factory=set)  # distinct lab result ids
    symptoms: set[str] = field(default_factory=set)  # distinct symptom report ids
    entries: int = 0


def transaction_bundle(data: dict[str, Any], protocol: Any) -> tuple[dict[str, Any], Expected]:
    resources = outbound.record_resources(with_ids(data), protocol)
    expected = Expected(entries=len(resources))
    entries = []
    for resource in resources:
        kind = resource["resourceType"]
        if kind == "Patient":
            request = {"method": "PUT", "url": f"Patient/{resource['id']}"}
        else:
            request = {"method": "POST", "url": kind}
        if kind == "Observation":
            expected.observations += 1
            local = outbound.local_id(data["id"], resource["id"]) or ""
            (expected.labs if is_lab(resource) else expected.symptoms).add(local)
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expected


def prefetch_for(data: dict[str, Any], protocol: Any) -> dict[str, Any]:
    """Every resource of the patient, as the service's prefetch templates ask (tests/test_cds.py)."""
    resources = outbound.record_resources(with_ids(data), protocol)
    out: dict[str, Any] = {"patient": next(r for r in resources if r["resourceType"] == "Patient")}
    for key, kind in PREFETCH_TYPES.items():
        entries = [{"resource": r} for r in resources if r["resourceType"] == kind]
        out[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    assert set(out) == set(PREFETCH), "the prefetch keys follow alemwatch.fhir.cds.PREFETCH"
    return out


def hook_body(data: dict[str, Any], protocol: Any) -> tuple[bytes, bytes]:
    """The request body, split where each request's own hookInstance goes."""
    request = {
        "hook": "patient-view",
        "hookInstance": HOOK_PLACEHOLDER,
        "context": {"userId": "Practitioner/bench", "patientId": data["id"]},
        "prefetch": prefetch_for(data, protocol),
    }
    prefix, suffix = json.dumps(request, separators=(",", ":")).encode().split(HOOK_PLACEHOLDER.encode())
    return prefix, suffix


# --- The load processes (spawned: nothing of the parent but what the spec carries) ------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _ingest_load(spec: dict[str, Any], results: Any) -> None:
    """Send every Bundle of the file once, `connections` at a time; put the figures on `results`
    (and a phase message when the warm-up is done)."""
    try:
        results.put(asyncio.run(_ingest({**spec, "phases": results})))
    except BaseException as exc:  # the parent reports it; never hang it
        results.put({"exception": f"{type(exc).__name__}: {exc}"})


async def _ingest(spec: dict[str, Any]) -> dict[str, Any]:
    with open(spec["warmup"], "rb") as handle:
        warmup = [line.rstrip(b"\n") for line in handle]
    with open(spec["bundles"], "rb") as handle:
        bodies = [line.rstrip(b"\n") for line in handle]
    connections = spec["connections"]
    headers = {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/fhir+json"}
    if spec["close"]:  # a new connection for every Bundle: the workers' accept loops share them out
        headers["Connection"] = "close"
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    out: dict[str, Any] = {"sent": 0, "status": {}, "bad_entries": 0, "first_error": None, "latencies": []}
    async with httpx.AsyncClient(
        base_url=spec["base"], headers=headers, timeout=spec["request_timeout"], limits=limits
    ) as client:

        async def send(body: bytes, timed: bool) -> None:
            started = time.perf_counter()
            try:
                answer = await client.post("/fhir", content=body)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
                if out["first_error"] is None:
                    out["first_error"] = f"{key}: {exc}"
            else:
                key = str(answer.status_code)
                if answer.status_code != 200:
                    if out["first_error"] is None:
                        out["first_error"] = f"HTTP {answer.status_code}: {answer.text[:800]}"
                else:
                    entries = answer.json().get("entry") or []
                    bad = [e for e in entries if e.get("response", {}).get("status") != "201 Created"]
                    out["bad_entries"] += len(bad) if timed else 0
                    if bad and out["first_error"] is None:
                        out["first_error"] = f"entry not created: {json.dumps(bad[0])[:800]}"
            if timed:
                out["sent"] += 1
                out["status"][key] = out["status"].get(key, 0) + 1
                out["latencies"].append(time.perf_counter() - started)

        await asyncio.gather(*(send(body, False) for body in warmup))
        out["warmup_error"], out["first_error"] = out["first_error"], None
        spec["phases"].put({"phase": "warmed up"})
        cpu_at = time.process_time()
        todo = iter(bodies)
        deadline = time.monotonic() + spec["deadline"]

        async def worker() -> None:
            for body in todo:  # one shared iterator: each Bundle is sent once
                if time.monotonic() > deadline:
                    return
                await send(body, True)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        out["wall"] = time.perf_counter() - started
    out["load_cpu"] = time.process_time() - cpu_at  # this process's own CPU, after the warm-up
    out["stopped_at_deadline"] = out["sent"] < len(bodies)
    return out


def _cds_load(spec: dict[str, Any], results: Any) -> None:
    """Serial calls, then the open loop at spec['rate'] for spec['seconds']; figures on `results`
    (and a phase message when the serial calls are done)."""
    try:
        results.put(asyncio.run(_cds({**spec, "phases": results})))
    except BaseException as exc:
        results.put({"exception": f"{type(exc).__name__}: {exc}"})


async def _cds(spec: dict[str, Any]) -> dict[str, Any]:
    prefix, suffix = Path(spec["prefix"]).read_bytes(), Path(spec["suffix"]).read_bytes()
    headers = {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=spec["connections"], max_keepalive_connections=spec["connections"])
    timeout = spec["timeout"]
    url = f"/cds-services/{PATIENT_VIEW}"
    out: dict[str, Any] = {"status": {}, "first_error": None}
    async with httpx.AsyncClient(base_url=spec["base"], headers=headers, timeout=timeout, limits=limits) as client:

        def body() -> bytes:
            return prefix + str(uuid.uuid4()).encode() + suffix

        serial = []
        cpu_at = time.process_time()
        for _ in range(spec["serial"]):
            started = time.perf_counter()
            answer = await client.post(url, content=body())
            serial.append(time.perf_counter() - started)
            if answer.status_code != 200:
                out["first_error"] = f"serial call: HTTP {answer.status_code}: {answer.text[:800]}"
                return out
            out["cards"] = [(c["indicator"], c["summary"]) for c in answer.json()["cards"]]
        out["serial"] = serial
        out["serial_load_cpu"] = time.process_time() - cpu_at
        spec["phases"].put({"phase": "serial calls done"})
        cpu_at = time.process_time()

        count = int(spec["rate"] * spec["seconds"])
        latencies: list[float] = []
        lags: list[float] = []
        done_at: list[float] = []

        async def one(index: int, scheduled: float) -> None:
            lags.append(time.perf_counter() - scheduled)
            try:
                answer = await asyncio.wait_for(client.post(url, content=body()), timeout)
                key = str(answer.status_code)
            except (TimeoutError, httpx.HTTPError) as exc:
                key, answer = ("timeout" if isinstance(exc, TimeoutError) else type(exc).__name__), None
                if out["first_error"] is None:
                    detail = f": {exc}" if str(exc) else ""
                    out["first_error"] = f"{key}{detail} (request {index + 1} of {count}, at {scheduled - t0:.1f} s)"
            finished = time.perf_counter()
            out["status"][key] = out["status"].get(key, 0) + 1
            if answer is not None and answer.status_code == 200:
                latencies.append(finished - scheduled)
                done_at.append(finished)
            elif answer is not None and out["first_error"] is None:
                out["first_error"] = f"HTTP {answer.status_code} at {scheduled - t0:.1f} s: {answer.text[:800]}"

        tasks = []
        t0 = time.perf_counter() + 0.05
        for i in range(count):
            scheduled = t0 + i / spec["rate"]
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        last_send = time.perf_counter()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout + 5)  # each task is bounded by `timeout` already
        for task in tasks:
            task.cancel()
    out.update(
        load_cpu=time.process_time() - cpu_at,
        count=count,
        latencies=latencies,
        lags=lags,
        send_seconds=last_send - t0,
        answer_seconds=(max(done_at) - t0) if done_at else None,
    )
    return out


def run_load(
    target: Any, spec: dict[str, Any], budget: float, on_phase: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run one load function in a spawned process; its figures, or an exception if it fails.
    A message {"phase": name} it sends on the way (warm-up done, say) calls `on_phase(name)`."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(spec, results), daemon=True)
    process.start()
    deadline = time.monotonic() + budget
    try:
        while True:
            out: dict[str, Any] = results.get(timeout=max(0.0, deadline - time.monotonic()))
            if "phase" not in out:
                break
            if on_phase is not None:
                on_phase(out["phase"])
    except BaseException as exc:  # no result in time, or stopped: the load process goes at once
        process.terminate()
        process.join(timeout=5)
        if isinstance(exc, queue.Empty):
            raise RuntimeError(f"the load process gave no result within {budget:.0f} s") from None
        raise
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join(timeout=5)
    if "exception" in out:
        raise RuntimeError(f"the load process failed: {out['exception']}")
    return out


# --- Databases and the server -------------------------------------------------------------


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A migrated, empty registry: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'interop.db'}"
        upgrade(url)
        try:
            yield url
        finally:
            get_engine(url).dispose()
        return
    schema = f"aw_interop_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
        try:
            upgrade(url)
            yield url
        finally:
            get_engine(url).dispose()
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) so far of each uvicorn worker (the supervisor's spawned children)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.process.pid and b"spawn_main" in command:
                out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
        return out

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def log_summary(self, since: int) -> str | None:
        """What the server logged after line `since`: its ERROR blocks counted by their last exception line."""
        lines = self.log_lines()[since:]
        if not lines:
            return None
        kinds: dict[str, int] = {}
        block: str | None = None
        for line in [*lines, "ERROR: (end)"]:
            if line.startswith("ERROR:"):
                if block is not None:
                    kinds[block] = kinds.get(block, 0) + 1
                block = line[:160]
            elif block is not None and EXCEPTION_LINE.match(line):
                block = line[:160]
        top = "; ".join(f"{k} x{n:,}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:3])
        return f"{len(lines):,} lines, {sum(kinds.values()):,} ERROR entries" + (f" ({top})" if top else "")


def cpu_split(before: dict[int, float], after: dict[int, float]) -> tuple[str, float | None, float]:
    """CPU seconds each worker spent between two readings, busiest first; the busiest's share;
    the total."""
    spent = sorted((after[pid] - before.get(pid, 0.0) for pid in after), reverse=True)
    total = sum(spent)
    share = spent[0] / total if total > 0 and len(spent) > 1 else None
    return " + ".join(f"{x:.1f}" for x in spent) + " s" + (f" (busiest {share:.0%})" if share else ""), share, total


def database_cpu() -> float | None:
    """CPU seconds (user + system) so far of the PostgreSQL server's processes on this machine
    (None when none can be seen). A backend that exits takes its seconds with it: the server's
    pooled connections stay open through a phase, so theirs count."""
    tick = os.sysconf("SC_CLK_TCK")
    total, seen = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        if name == "postgres":
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / tick
            seen = True
    return total if seen else None


def cpu_marks(server: Server) -> tuple[dict[str, dict[int, float]], dict[str, float | None], Callable[[str], None]]:
    """The workers' CPU and the database's now (as "start"), and a function that reads both
    again under a phase's name."""
    marks = {"start": server.worker_cpu()}
    database = {"start": database_cpu()}

    def mark(phase: str) -> None:
        marks[phase] = server.worker_cpu()
        database[phase] = database_cpu()

    return marks, database, mark


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


@contextmanager
def live_server(url: str, workers: int, log: Path) -> Iterator[Server]:
    """`alemwatch serve` with `workers` processes on a free 127.0.0.1 port, in its own process
    group; stopped (the group we started, by its id) at the end, also on failure."""
    port = free_port()
    env = {
        **os.environ,
        "ALEMWATCH_DATABASE_URL": url,
        "ALEMWATCH_ENVIRONMENT": "test",
        "ALEMWATCH_SECRET_KEY": "interop-bench-secret-" + "x" * 32,
    }
    command = [str(Path(sys.executable).parent / "alemwatch"), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_until_up(process, base, log)
            yield Server(base, process, log)
        finally:
            _stop(process)


def _wait_until_up(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer on {base} within {START_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # workers left behind: the group we started
        os.killpg(process.pid, signal.SIGKILL)


def token_for(base: str) -> str:
    answer = httpx.post(f"{base}/api/auth/token", json={"username": USERNAME, "password": PASSWORD}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def settle(base: str, token: str) -> float:
    """Wait until the server answers at once again (a backlog of abandoned requests done): the
    seconds it took. Health is a sync route too, so it queues behind the same thread pools."""
    started = time.monotonic()
    quick = 0
    while time.monotonic() - started < SETTLE_TIMEOUT_S and quick < 6:
        probe = time.perf_counter()
        try:
            httpx.get(f"{base}/api/health", timeout=SETTLE_TIMEOUT_S)
            quick = quick + 1 if time.perf_counter() - probe < 0.05 else 0
        except httpx.HTTPError:
            quick = 0
        time.sleep(0.05)
    return time.monotonic() - started


def stored_counts(url: str) -> tuple[dict[str, int], dict[str, int], int]:
    """Lab result and symptom report rows per patient, and the number of patients."""
    engine = get_engine(url)
    with engine.connect() as connection:
        labs = dict(connection.execute(text("SELECT patient_id, count(*) FROM lab_results GROUP BY patient_id")).all())
        symptoms = dict(
            connection.execute(text("SELECT patient_id, count(*) FROM symptom_reports GROUP BY patient_id")).all()
        )
        patients = int(connection.execute(text("SELECT count(*) FROM patients")).scalar_one())
    return labs, symptoms, patients


# --- One backend --------------------------------------------------------------------------


@dataclass
class Ingest:
    backend: str
    patients: int
    observations: int
    entries: int
    result: dict[str, Any]
    check: list[str]
    load: float
    work_us: float  # the work itself an Observation, timed in this process (`work_costs`)


@dataclass
class CdsRun:
    label: str
    observations: int
    rate: float
    result: dict[str, Any]
    settle_s: float
    load: float
    body_kib: float
    timeout: float
    work_ms: float  # the work itself a call, timed in this process (`work_costs`)


def run_backend(
    backend: str, args: argparse.Namespace, workdir: Path, cohort: dict[str, Any]
) -> tuple[Ingest, list[CdsRun]]:
    say(f"{backend}: fresh database, user, server with {args.workers} workers ...")
    with fresh_database(backend, workdir) as url:
        with transaction(url) as session:
            create_user(session, USERNAME, PASSWORD, "clinician")
        ARTIFACTS.mkdir(exist_ok=True)
        with live_server(url, args.workers, ARTIFACTS / f"interop-bench-server-{backend}.log") as server:
            token = token_for(server.base)
            spec = {
                "base": server.base,
                "token": token,
                "bundles": str(cohort["bundles"]),
                "warmup": str(cohort["warmup"]),
                "connections": args.connections,
                "request_timeout": args.request_timeout,
                "deadline": args.ingest_timeout,
                "close": args.close_connections,
            }
            say(f"{backend}: ingest of {args.patients:,} Bundles, {args.connections} connections ...")
            log_before = len(server.log_lines())
            marks, database, mark = cpu_marks(server)
            result = run_load(_ingest_load, spec, args.ingest_timeout + args.request_timeout + 120, mark)
            # From the end of the warm-up (the first requests of a worker import and build what it keeps).
            result["worker_cpu"] = cpu_split(marks.get("warmed up", marks["start"]), server.worker_cpu())
            result["database_cpu"] = _spent(database.get("warmed up", database["start"]), database_cpu())
            result["server_log"] = server.log_summary(log_before)
            load = os.getloadavg()[0]
            check = verify(url, cohort["expected"])
            ingest = Ingest(
                backend,
                result["sent"],
                cohort["observations"],
                cohort["entries"],
                result,
                check,
                load,
                cohort["work"]["ingest_us"],
            )
            print_ingest(ingest, args)
            runs: list[CdsRun] = []
            if backend == "postgresql" and args.cds_rates:
                runs = run_cds(server, token, args, cohort)
            if server.log_lines():
                print(f"  the server's log: {server.log.relative_to(REPO)}")
    return ingest, runs


def verify(url: str, expected: dict[str, Expected]) -> list[str]:
    """Every lab Observation one lab_results row of its patient, every symptom one symptom_reports row."""
    labs, symptoms, patients = stored_counts(url)
    problems = []
    want_labs = {pid: len(e.labs) for pid, e in expected.items()}
    want_symptoms = {pid: len(e.symptoms) for pid, e in expected.items() if e.symptoms}
    for name, want, got in (("lab_results", want_labs, labs), ("symptom_reports", want_symptoms, symptoms)):
        wrong = {p for p in set(want) | set(got) if want.get(p, 0) != got.get(p, 0)}
        line = f"{name}: {sum(got.values()):,} rows for {sum(want.values()):,} distinct results sent (with the warm-up)"
        if wrong:
            sample = sorted(wrong)[0]
            line += (
                f"; NOT exactly once for {len(wrong)} patients (e.g. {sample}: "
                f"{got.get(sample, 0)} rows, {want.get(sample, 0)} sent)"
            )
        else:
            line += ", exactly once for every patient"
        problems.append(line)
    problems.append(f"patients: {patients:,} rows for {len(expected):,} sent")
    return problems


def run_cds(server: Server, token: str, args: argparse.Namespace, cohort: dict[str, Any]) -> list[CdsRun]:
    base = server.base
    runs = []
    for label, files in cohort["cds"].items():
        for rate in args.cds_rates:
            settled = settle(base, token)
            spec = {
                "base": base,
                "token": token,
                "prefix": str(files["prefix"]),
                "suffix": str(files["suffix"]),
                "rate": rate,
                "seconds": args.cds_seconds,
                "timeout": args.cds_timeout,
                "serial": SERIAL_CALLS,
                "connections": args.cds_connections,
            }
            say(f"CDS patient-view, {label} patient, {rate:g}/s for {args.cds_seconds:g} s ...")
            budget = SERIAL_CALLS * args.cds_timeout + args.cds_seconds + args.cds_timeout + 120
            log_before = len(server.log_lines())
            marks, database, mark = cpu_marks(server)
            result = run_load(_cds_load, spec, budget, mark)
            result["worker_cpu"] = cpu_split(marks.get("serial calls done", marks["start"]), server.worker_cpu())
            if "serial calls done" in marks:
                result["serial_cpu"] = cpu_split(marks["start"], marks["serial calls done"])[2] / SERIAL_CALLS
                spent = _spent(database["start"], database["serial calls done"])
                result["serial_database_cpu"] = None if spent is None else spent / SERIAL_CALLS
            result["server_log"] = server.log_summary(log_before)
            load = os.getloadavg()[0]
            run = CdsRun(
                label,
                files["observations"],
                rate,
                result,
                settled,
                load,
                files["bytes"] / 1024,
                args.cds_timeout,
                cohort["work"]["cds"][label],
            )
            print_cds(run, args)
            runs.append(run)
    tail = settle(base, token)
    if tail > 1:
        print(f"  (after the last run the server took {tail:.1f} s to finish its backlog)")
    return runs


# --- Report -------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"  .. {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def postgres_version() -> str:
    try:
        engine = create_engine(
            PG_BASE.replace("postgresql://", "postgresql+psycopg://"), connect_args={"connect_timeout": 5}
        )
        with engine.connect() as connection:
            version = str(connection.execute(text("SHOW server_version")).scalar_one())
        engine.dispose()
        return version
    except Exception as exc:  # noqa: BLE001 - reported, and the PostgreSQL run then fails loudly
        return f"not reachable ({str(exc).splitlines()[0]})"


def machine_facts() -> list[str]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        memory = f"{kib / 2**20:.1f} GiB RAM"
    packages = ("uvicorn", "fastapi", "pydantic", "httpx", "sqlalchemy", "psycopg", "fhir.resources")
    versions = ", ".join(f"{p} {_version(p)}" for p in packages)
    return [
        f"cpu {model or platform.processor()}; {os.cpu_count()} cpus ({CORES} usable); {memory}",
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, PostgreSQL {postgres_version()}",
        versions,
        source_state(),
        f"platform {platform.platform()}",
        f"load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min): other processes share "
        "these cores, and so do the server and the load process of this benchmark",
    ]


def source_state() -> str:
    """The commit measured, and whether alemwatch/ had changes not committed."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "alemwatch"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "alemwatch (not a git checkout)"
    changed = f", with uncommitted changes to {len(dirty.splitlines())} files in alemwatch/" if dirty else ""
    return f"alemwatch {_version('alemwatch')} at commit {head or '?'}{changed}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def _ratio(measured: float | None, target: float, higher_is_better: bool) -> str:
    if measured is None:
        return "n/a"
    ratio = measured / target
    met = ratio >= 1 if higher_is_better else ratio < 1
    return f"{ratio:.3f} x target ({'met' if met else 'NOT met'})"


def speed_reference(cohort: dict[str, Any]) -> str:
    """Two fixed pieces of work timed here (best of several): how fast this machine is today,
    to compare runs on other days or machines (shared machines vary)."""
    files = cohort["cds"]["median"]
    body = files["prefix"].read_bytes() + HOOK_PLACEHOLDER.encode() + files["suffix"].read_bytes()
    decode = min(_timed(lambda: orjson.loads(body)) for _ in range(20))
    loop = min(_timed(lambda: sum(range(1_000_000))) for _ in range(5))
    return (
        f"speed of this machine now: orjson decodes the median CDS request body ({len(body) / 1024:,.0f} KiB) "
        f"in {decode * 1000:.2f} ms; a pure-Python loop (sum of range(1,000,000)) takes {loop * 1000:.1f} ms"
    )


def work_costs(cohort: dict[str, Any]) -> dict[str, Any]:
    """The work the server does for a Bundle and for a CDS call, timed here with the server's own
    functions but without HTTP, authentication, the database or the audit log: the part of the
    server's CPU a unit that serving it does not add. fhir.resources' full model validating an
    Observation, and the validation the ingest runs on every resource (`inbound.validate_resource`:
    `alemwatch.fhir.validation`, which checks only the values of a shape fhir.resources accepted
    before; the demo feed, like a laboratory's, repeats a few shapes); a Bundle read
    (`read_entries`: validation and reading) and its patient assessed (`parse_patient`,
    `assess`), per Observation; a patient-view call's body decoded and its data read and assessed
    into cards (`alemwatch.api.cds._gather` and `_cards`), per call (the median of WORK_CALLS)."""
    protocol = load_protocol(JURISDICTION)
    as_of = dt.date.fromisoformat(cohort["as_of"])
    with cohort["bundles"].open("rb") as lines:
        encoded = [line for _, line in zip(range(WORK_BUNDLES), lines, strict=False)]
    observations = [
        e["resource"]
        for line in encoded
        for e in orjson.loads(line)["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]
    for resource in observations[:50]:  # the models are imported and built on first use
        inbound.validate_resource(resource, "bench")
    validate = min(_timed(lambda: [inbound.validate_resource(r, "bench") for r in observations]) for _ in range(3))
    full = min(_timed(lambda: [model_for(r["resourceType"]).model_validate(r) for r in observations]) for _ in range(3))

    def ingest_work() -> None:
        for line in encoded:
            parsed = read_entries(orjson.loads(line)["entry"], protocol)  # decoded again: reading changes it
            for update in parsed.updates.values():
                assess(parse_patient(inbound.merge(None, update), protocol), protocol, as_of)

    ingest_work()
    read_assess = min(_timed(ingest_work) for _ in range(3))
    settings = Settings()
    cds: dict[str, float] = {}
    for label, files in cohort["cds"].items():
        body = files["prefix"].read_bytes() + HOOK_PLACEHOLDER.encode() + files["suffix"].read_bytes()

        def call(body: bytes = body) -> None:
            request = cds_api.HookRequest.model_validate(orjson.loads(body))
            patient_id = str(request.context["patientId"])
            resources, problems = cds_api._gather(request, patient_id, settings)
            cds_api._cards("patient-view", resources, problems, patient_id, protocol, [])

        call()
        cds[label] = statistics.median(_timed(call) for _ in range(WORK_CALLS))
    return {
        "validate_us": validate / len(observations) * 1e6,
        "full_validate_us": full / len(observations) * 1e6,
        "ingest_us": read_assess / len(observations) * 1e6,
        "observations": len(observations),
        "cds": cds,
    }


def print_work(cohort: dict[str, Any]) -> None:
    work = cohort["work"]
    print("  the work itself, timed in this process (no HTTP, no authentication, no database, no audit):")
    print(
        f"    fhir.resources' full model validating an Observation: {work['full_validate_us']:,.0f} us; as the "
        f"ingest validates it (values only, in a shape fhir.resources accepted before): {work['validate_us']:,.1f} us "
        f"(of {work['observations']:,}); "
        f"that alone, on {CORES} cores doing nothing else, allows at most "
        f"{CORES / work['validate_us'] * 1e6:,.0f} Observations/s"
    )
    print(
        f"    a Bundle validated and read and its patient assessed: {work['ingest_us']:,.0f} us an Observation: "
        f"at most {CORES / work['ingest_us'] * 1e6:,.0f} Observations/s"
    )
    for label, cost in work["cds"].items():
        print(
            f"    a patient-view call, {label} patient (body decoded, resources read, patient assessed, cards): "
            f"{cost * 1000:.1f} ms: at most {CORES / cost:,.0f} calls/s"
        )


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def print_header(args: argparse.Namespace, cohort: dict[str, Any]) -> None:
    print("alemwatch interoperability benchmark (FHIR transaction ingest, CDS Hooks patient-view)")
    for line in machine_facts():
        print(f"  {line}")
    kinds = ", ".join(f"{k} {v:,}" for k, v in cohort["kinds"].items())
    print(
        f"  demo cohort seed {SEED}, as of {cohort['as_of']}, protocol {JURISDICTION}: {args.patients:,} patients, "
        f"{cohort['entries']:,} resources ({kinds})"
    )
    print(
        f"  server: alemwatch serve --workers {args.workers} on 127.0.0.1; load: a separate spawned process (httpx), "
        f"{args.connections} {'new connections a Bundle' if args.close_connections else 'keep-alive connections'} "
        "for ingest, an open loop for CDS"
    )
    print(f"  {speed_reference(cohort)}")
    print_work(cohort)
    if cohort["duplicates"]:
        print(
            f"  note: {cohort['duplicates']} Observations repeat another of the same patient exactly (same test, "
            "value, unit and date: the same content id), so they are one stored result each"
        )
    sys.stdout.flush()


def print_ingest(r: Ingest, args: argparse.Namespace) -> None:
    res = r.result
    wall = res["wall"]
    sent_obs = r.observations if not res["stopped_at_deadline"] else None
    print()
    print(f"== FHIR transaction ingest, {r.backend} ==")
    if res["stopped_at_deadline"]:
        print(f"  STOPPED at the {args.ingest_timeout:g} s deadline after {res['sent']:,} of {args.patients:,} Bundles")
    not_200 = sum(n for k, n in res["status"].items() if k != "200")
    statuses = ", ".join(f"{k}: {n:,}" for k, n in sorted(res["status"].items()))
    lat = res["latencies"]
    print(
        f"  {r.patients:,} patients, one transaction Bundle each ({r.entries:,} resources, "
        f"{r.observations:,} Observations), {args.connections} connections, {args.workers} workers"
    )
    if sent_obs is not None:
        obs_s = sent_obs / wall
        target_note = "" if r.backend == "postgresql" else " (the target is set for PostgreSQL)"
        print(
            f"  wall {wall:.1f} s = {obs_s:,.0f} Observations/s: {_ratio(obs_s, INGEST_TARGET, True)}, "
            f"target {INGEST_TARGET:,.0f}/s{target_note}"
        )
        print(f"  {r.entries / wall:,.0f} resources/s, {r.patients / wall:.1f} patients/s (load {r.load:.1f})")
    print(
        f"  per Bundle: p50 {_ms(_percentile(lat, 50))} ms, p99 {_ms(_percentile(lat, 99))} ms, "
        f"max {_ms(max(lat) if lat else None)} ms"
    )
    share = not_200 / res["sent"] if res["sent"] else 0.0
    print(f"  responses not 200: {not_200:,} of {res['sent']:,} ({share:.1%}) [{statuses}]", end="")
    print(f"; entries not '201 Created' in the 200s: {res['bad_entries']:,}")
    if res["first_error"]:
        print(f"  first error: {res['first_error']}")
    if res.get("warmup_error"):
        print(f"  warm-up error: {res['warmup_error']}")
    cpu, share, total = res["worker_cpu"]
    print(f"  server workers' CPU during the ingest: {cpu}")
    if total > 0 and sent_obs:
        print(
            f"  = {total / sent_obs * 1e6:,.0f} us of server CPU an Observation: at that cost the machine's "
            f"{CORES} cores, doing nothing else, would ingest at most {CORES * sent_obs / total:,.0f} Observations/s"
        )
        print(
            f"    of which the work itself (timed in this process) {r.work_us:,.0f} us "
            f"({r.work_us / (total / sent_obs * 1e6):.0%}); the rest is HTTP, the database, and serving"
        )
        _print_machine_cost(total, res.get("database_cpu"), res.get("load_cpu"), sent_obs, "an Observation", 1e6, "us")
    if share is not None and share > 0.75:
        print(
            f"  NOTE: one worker did {share:.0%} of the work: the kernel gives each of the {args.connections} "
            "keep-alive connections to a worker by a hash of its addresses, and so few can fall unevenly; "
            "--connections sets more, --close-connections sends each Bundle on a new connection"
            if not args.close_connections
            else f"  NOTE: one worker did {share:.0%} of the work"
        )
    if res.get("server_log"):
        print(f"  server log during the ingest: {res['server_log']}")
    for line in r.check:
        print(f"  stored: {line}")
    sys.stdout.flush()


def _print_machine_cost(
    server: float, database: float | None, load: float | None, units: float, unit: str, scale: float, shown: str
) -> None:
    """Beside the server's CPU a unit: PostgreSQL's and the load process's in the same time
    (the same cores), all together, and the ceiling that sets."""
    if database is None or load is None or units <= 0:
        print("    (PostgreSQL's processes or the load process's CPU could not be read)")
        return
    every = (server + database + load) / units
    print(
        f"    beside it, on the same cores: PostgreSQL {database / units * scale:,.1f} {shown} and the load process "
        f"{load / units * scale:,.1f} {shown} {unit}; all together {every * scale:,.1f} {shown}: at most "
        f"{CORES / every:,.0f} {'Observations' if unit == 'an Observation' else 'calls'}/s on {CORES} cores"
    )


def p99_all(result: dict[str, Any]) -> float | None:
    """p99 in seconds over every scheduled request, a failure counting as slower than any (inf)."""
    latencies = result.get("latencies") or []
    failures = sum(n for k, n in (result.get("status") or {}).items() if k != "200")
    return _percentile(latencies + [float("inf")] * failures, 99)


def _p99_ratio(result: dict[str, Any], timeout: float) -> str:
    p99 = p99_all(result)
    if p99 is None:
        return "n/a"
    if p99 == float("inf"):
        return f"p99 > {timeout:g} s (over 1% not answered): NOT met"
    return _ratio(p99 * 1000, CDS_P99_TARGET_MS, False)


def print_cds(run: CdsRun, args: argparse.Namespace) -> None:
    res = run.result
    if not res.get("serial"):
        print(f"\n== CDS patient-view, {run.label} patient: {res.get('first_error')}")
        return
    if run.rate == args.cds_rates[0]:
        serial = res["serial"]
        print()
        print(f"== CDS Hooks patient-view, {run.label} patient ({run.observations:,} Observations in the prefetch) ==")
        cards = "; ".join(f"{i}: {s if len(s) < 60 else s[:57] + '...'}" for i, s in res["cards"])
        print(f"  request body {run.body_kib:,.0f} KiB; {len(res['cards'])} cards: {cards}")
        print(
            f"  unloaded, {len(serial)} calls one after another: p50 {_ms(statistics.median(serial))} ms, "
            f"min {_ms(min(serial))} ms, max {_ms(max(serial))} ms"
        )
        if res.get("serial_cpu"):
            cost = res["serial_cpu"]
            print(
                f"  = {cost * 1000:.1f} ms of server CPU a call: at that cost the machine's {CORES} cores, doing "
                f"nothing else, would answer at most {CORES / cost:,.0f} calls/s"
            )
            print(
                f"    of which the work itself (timed in this process) {run.work_ms * 1000:.1f} ms "
                f"({run.work_ms / cost:.0%}); the rest is HTTP, authentication, the database, the audit and serving"
            )
            database = res.get("serial_database_cpu")
            load = res.get("serial_load_cpu")
            _print_machine_cost(cost, database, None if load is None else load / SERIAL_CALLS, 1, "a call", 1e3, "ms")
        print(
            f"  open loop, {args.cds_seconds:g} s each, at most {args.cds_connections} at the server; latencies of "
            "the 200 answers, from the scheduled send"
        )
        print(
            f"  {'rate/s':>7}{'sent':>7}{'sent/s':>8}{'ok/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'lag p99':>9}{'errors':>8}{'load':>6}  p99 (errors as slowest) vs {CDS_P99_TARGET_MS:g} ms"
        )
    lat = res["latencies"]
    errors = sum(n for k, n in res["status"].items() if k != "200")
    sent_rate = (res["count"] - 1) / res["send_seconds"] if res["count"] > 1 and res["send_seconds"] > 0 else None
    ok_rate = len(lat) / res["answer_seconds"] if res["answer_seconds"] else None
    print(
        f"  {run.rate:>7g}{res['count']:>7,}{_fmt(sent_rate, '.1f'):>8}{_fmt(ok_rate, '.1f'):>8}"
        f"{_ms(_percentile(lat, 50)):>9}{_ms(_percentile(lat, 90)):>9}{_ms(_percentile(lat, 99)):>9}"
        f"{_ms(max(lat) if lat else None):>9}{_ms(_percentile(res['lags'], 99)):>9}{errors:>8,}{run.load:>6.1f}  "
        f"{_p99_ratio(res, args.cds_timeout)}"
    )
    print(f"    server workers' CPU during the run: {res['worker_cpu'][0]}")
    if res.get("server_log"):
        print(f"    server log during the run: {res['server_log']}")
    if errors:
        kinds = ", ".join(f"{k}: {n:,}" for k, n in sorted(res["status"].items()) if k != "200")
        print(f"    errors [{kinds}]; first: {res['first_error']}")
    if run.settle_s > 1:
        print(f"    (before this run the server took {run.settle_s:.1f} s to finish the previous run's backlog)")
    sys.stdout.flush()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_targets(ingests: list[Ingest], runs: list[CdsRun]) -> None:
    print()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"== against the targets == (load average 1/5/15 min at end: {load})")
    for r in ingests:
        if r.result["stopped_at_deadline"]:
            print(f"  [{r.backend}] ingest stopped at its deadline: no rate")
            continue
        obs_s = r.observations / r.result["wall"]
        not_200 = sum(n for k, n in r.result["status"].items() if k != "200")
        print(
            f"  [{r.backend}] FHIR ingest {obs_s:,.0f} Observations/s: {_ratio(obs_s, INGEST_TARGET, True)}, "
            f"target {INGEST_TARGET:,.0f}/s; not 200: {not_200}"
        )
    for run in runs:
        p99 = p99_all(run.result)
        errors = sum(n for k, n in run.result.get("status", {}).items() if k != "200")
        shown = "" if p99 is None or p99 == float("inf") else f"p99 {p99 * 1000:,.1f} ms: "
        print(
            f"  [postgresql] CDS patient-view, {run.label} patient ({run.observations:,} Observations), "
            f"{run.rate:g}/s: {shown}{_p99_ratio(run.result, run.timeout)}, target "
            f"{CDS_P99_TARGET_MS:g} ms; errors {errors:,} of {run.result.get('count', 0):,}"
        )
    print("  (latency: a ratio below 1 meets the target; throughput: a ratio of 1 or more meets it)")


# --- Main ---------------------------------------------------------------------------------


def build(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every Bundle (encoded, one a line) and the two CDS request bodies, before any timing."""
    protocol = load_protocol(JURISDICTION)
    as_of = dt.date.today()
    say(f"building {args.patients:,} demo patients and their Bundles ...")
    patients = list(build_cohort(args.patients, SEED, as_of))
    extra = [build_patient(args.patients + n, SEED, as_of) for n in range(WARMUP_BUNDLES)]
    expected: dict[str, Expected] = {}
    kinds: dict[str, int] = {}
    observations = entries = duplicates = 0
    for path, group in ((workdir / "bundles.ndjson", patients), (workdir / "warmup.ndjson", extra)):
        with path.open("wb") as out:
            for data in group:
                bundle, want = transaction_bundle(data, protocol)
                out.write(json.dumps(bundle, separators=(",", ":")).encode() + b"\n")
                expected[data["id"]] = want
                if group is patients:
                    observations += want.observations
                    entries += want.entries
                    duplicates += want.observations - len(want.labs) - len(want.symptoms)
                    for entry in bundle["entry"]:
                        kind = entry["resource"]["resourceType"]
                        kinds[kind] = kinds.get(kind, 0) + 1
    by_labs = sorted(patients, key=lambda p: (len(p.get("labs") or []), p["id"]))
    cds = {}
    for label, data in (("median", by_labs[len(by_labs) // 2]), ("largest", by_labs[-1])):
        prefix, suffix = hook_body(data, protocol)
        (workdir / f"cds-{label}.prefix").write_bytes(prefix)
        (workdir / f"cds-{label}.suffix").write_bytes(suffix)
        cds[label] = {
            "prefix": workdir / f"cds-{label}.prefix",
            "suffix": workdir / f"cds-{label}.suffix",
            "observations": expected[data["id"]].observations,
            "bytes": len(prefix) + len(suffix) + 36,
        }
    return {
        "bundles": workdir / "bundles.ndjson",
        "warmup": workdir / "warmup.ndjson",
        "expected": expected,
        "observations": observations,
        "entries": entries,
        "duplicates": duplicates,
        "kinds": kinds,
        "cds": cds,
        "as_of": as_of.isoformat(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300, help="demo patients, one transaction Bundle each")
    parser.add_argument("--backends", default="postgresql,sqlite", help="postgresql, sqlite or both")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (alemwatch serve --workers)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections of the ingest load")
    parser.add_argument(
        "--close-connections",
        action="store_true",
        help="ingest: a new connection for every Bundle (Connection: close) instead of keep-alive",
    )
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per ingest request")
    parser.add_argument("--ingest-timeout", type=float, default=300.0, help="no new Bundle is sent after this")
    parser.add_argument("--cds-rates", default="50,200", help="open-loop CDS request rates per second ('' for none)")
    parser.add_argument("--cds-seconds", type=float, default=10.0, help="seconds of each open-loop CDS run")
    parser.add_argument("--cds-timeout", type=float, default=10.0, help="seconds before a CDS request is given up")
    parser.add_argument(
        "--cds-connections", type=int, default=64, help="connections the open-loop client may hold at once"
    )
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or any(b not in ("sqlite", "postgresql") for b in args.backends):
        parser.error("--backends takes postgresql and/or sqlite")
    args.cds_rates = [float(r) for r in args.cds_rates.split(",") if r.strip()]
    if args.patients < 1 or args.workers < 1 or args.connections < 1 or any(r <= 0 for r in args.cds_rates):
        parser.error("--patients, --workers, --connections and the rates must be positive")
    if args.cds_rates and "postgresql" not in args.backends:
        print("  (the CDS runs use the PostgreSQL server: none with --backends sqlite)", file=sys.stderr)
    return args


def _stopped(signum: int, frame: Any) -> None:
    say("stopped (SIGTERM): stopping the server and dropping the databases ...")
    sys.exit(128 + signum)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stopped)  # run the clean-ups when stopped
    started = time.perf_counter()
    ingests: list[Ingest] = []
    runs: list[CdsRun] = []
    with tempfile.TemporaryDirectory(prefix="interop-bench-") as tmp:
        workdir = Path(tmp)
        cohort = build(args, workdir)
        say("timing the work itself in this process ...")
        cohort["work"] = work_costs(cohort)
        print_header(args, cohort)
        for backend in args.backends:
            ingest, backend_runs = run_backend(backend, args, workdir, cohort)
            ingests.append(ingest)
            runs += backend_runs
    print_targets(ingests, runs)
    print(f"\n  whole run {time.perf_counter() - started:,.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
