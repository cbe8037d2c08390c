"""End-to-end fixtures: the real server (uvicorn in a subprocess on a free 127.0.0.1 port) on a
migrated database (SQLite, and PostgreSQL in its own schema), Debian's Chromium driven by
Playwright, axe-core for accessibility, and screenshots saved to artifacts/.

What the tests need from outside Python is installed by `make e2e-deps` (called by
`make test`): without it these tests are skipped locally and FAIL in CI (CI=true)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import create_engine, text

from alemwatch.core.chart import add_months
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.refresh import refresh_patient
from alemwatch.store.db import get_engine, transaction, upgrade
from alemwatch.store.repo import save_patient_file
from tests.conftest import IN_CI, PASSWORD, PG_BASE, _pg_reachable, make_user

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ALEMWATCH_CHROMIUM", "/usr/bin/chromium"))
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TODAY = dt.date.today()


def missing(what: str) -> None:
    message = f"{what} is missing; run `make e2e-deps`"
    if IN_CI:
        pytest.fail(message + " (CI requires it)")
    pytest.skip(message)


# --- the server ------------------------------------------------------------------------------


@dataclass
class LiveServer:
    base: str
    db_url: str
    backend: str
    nurse: str = "e2e-nurse"
    clinician: str = "e2e-clinician"

    def url(self, path: str) -> str:
        return self.base + path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(process: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer on {base} within {timeout} s")


@pytest.fixture(scope="module")
def run_server() -> Iterator[Callable[[str, str], LiveServer]]:
    """Start servers on given databases; each is stopped (by its own pid) at the end of the module."""
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(db_url: str, backend: str) -> LiveServer:
        port = free_port()
        env = {
            **os.environ,
            "ALEMWATCH_DATABASE_URL": db_url,
            "ALEMWATCH_ENVIRONMENT": "test",
            "ALEMWATCH_SECRET_KEY": "e2e-secret-" + "x" * 32,
        }
        command = [sys.executable, "-m", "uvicorn", "alemwatch.api.app:app_from_env", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        ARTIFACTS.mkdir(exist_ok=True)
        log = ARTIFACTS / f"server-{backend}.log"
        output = log.open("wb")
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        started.append((process, output))
        base = f"http://127.0.0.1:{port}"
        wait_until_up(process, base, log)
        return LiveServer(base, db_url, backend)

    yield start
    for process, output in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()


@pytest.fixture(scope="module")
def pg_e2e_url() -> Iterator[str]:
    """A PostgreSQL schema of the e2e module's own (other tests truncate the shared one)."""
    problem = _pg_reachable()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_BASE} is not reachable: {problem} (CI requires it)")
        pytest.skip(f"PostgreSQL at {PG_BASE} is not reachable: {problem}")
    schema = f"aw_e2e_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    get_engine(url).dispose()
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def e2e_database(request: pytest.FixtureRequest, directory: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = directory / "e2e.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_e2e_url")
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
    run_server: Callable[[str, str], LiveServer],
) -> LiveServer:
    """The live server with a nurse and a clinician, on SQLite and on PostgreSQL in turn."""
    url = e2e_database(request, tmp_path_factory.mktemp("e2e"), sqlite_template)
    make_user(url, "e2e-nurse", "nurse")
    make_user(url, "e2e-clinician", "clinician")
    return run_server(url, request.param)


# --- patients, seeded through the store as an import would ---------------------------------------


def course(last_day: dt.date, days: int = 5) -> list[dict[str, Any]]:
    """A course of infusions on consecutive days ending on `last_day`, given by the protocol."""
    first = last_day - dt.timedelta(days=days - 1)
    return [
        {"date": (first + dt.timedelta(days=n)).isoformat(), "premedication": n < 3, "observation_minutes": 130}
        for n in range(days)
    ]


def patient_file(patient_id: str, last_infusion: dt.date, **records: Any) -> dict[str, Any]:
    infusions = course(last_infusion)
    data: dict[str, Any] = {
        "id": patient_id,
        "sex": "female",
        "birth_date": "1988-05-04",
        "screening": {"hiv": "negative", "tuberculosis": "negative"},
        "infusions": infusions,
        "prophylaxis": [{"kind": "herpes", "drug": "aciclovir", "start": infusions[0]["date"], "stop": None}],
    }
    data.update(records)
    return data


def seed(server: LiveServer, *patients: dict[str, Any], patient_user: str | None = None) -> None:
    protocol = load_protocol("us")
    with transaction(server.db_url) as session:
        for patient in patients:
            save_patient_file(session, patient, protocol, source="e2e")
            refresh_patient(session, patient["id"], protocol, TODAY, "e2e")
    if patient_user:
        make_user(server.db_url, patient_user, "patient", patients[0]["id"])


def months_ago(months: int) -> dt.date:
    return add_months(TODAY, -months)


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing(f"Chromium ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Open pages in fresh contexts (own cookies); all are closed after the test, and
    screenshotted first when it failed."""
    contexts: list[Any] = []

    def open_page(viewport: dict[str, int] | None = None) -> Any:
        # bypass_csp: the pages forbid inline scripts, and axe-core is injected as one.
        context = browser.new_context(viewport=viewport or DESKTOP, bypass_csp=True, accept_downloads=True)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    failed = request.node.stash.get(FAILED, False)
    for n, context in enumerate(contexts):
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            for m, page in enumerate(context.pages):
                page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}-{n}-{m}.png"), full_page=True)
        context.close()


def login(page: Any, server: LiveServer, username: str, password: str = PASSWORD) -> None:
    page.goto(server.url("/login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page: Any, server: LiveServer, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{server.backend}-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def assert_accessible(page: Any, name: str) -> None:
    """axe-core in the page: no serious or critical violation (all violations saved as an artefact)."""
    if not AXE.exists():
        missing(f"axe-core ({AXE})")
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(violations, indent=1))
    serious = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, f"accessibility violations on {name}:\n" + "\n".join(serious)
