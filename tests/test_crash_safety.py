"""Crash safety of the importer: a test kills (SIGKILL) an import in mid-flight, many times at
random points, and proves that no patient is half-stored and that re-running the import stores
each result once. On SQLite and on PostgreSQL.

The import runs as the installed command in a subprocess (`alemwatch import FILE --no-sweep
--json`), so a kill is a real crash: no `finally`, no rollback by Python, the database must
undo the open transaction itself."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from alemwatch.protocol.load import load_protocol
from alemwatch.registry.importer import import_file
from alemwatch.store import models as m
from alemwatch.store.db import get_engine, session_factory

CLI = Path(sys.executable).parent / "alemwatch"
SEED = 20261125
PATIENTS = 400  # enough that a fast import is still running when the first kill comes
KILLS = 8  # SIGKILLs per backend while the import adds patients, at points spread over the file
REIMPORT_KILLS = 1  # and while a re-import re-saves patients already stored
INFUSIONS_PER_COURSE = 5
ANALYTES = [  # (test, unit, low, high): plausible values in the protocol's accepted units
    ("platelets", "10*9/L", 20, 400),
    ("hemoglobin", "g/L", 90, 170),
    ("wbc", "10*9/L", 1, 12),
    ("lymphocytes", "10*9/L", 0.2, 4),
    ("creatinine", "umol/L", 50, 130),
    ("tsh", "m[IU]/L", 0.1, 8),
    ("alt", "U/L", 5, 80),
]


# --- the cohort -----------------------------------------------------------------------------


def _patient_file(rng: random.Random, number: int) -> dict[str, Any]:
    """A contract patient file: one course of infusions, 20-60 labs, about half with client ids.
    Labs without an id differ in content (each is on its own day), so none is a duplicate."""
    pid = f"crash-{number:04d}"
    start = dt.date(2024, 1, 8) + dt.timedelta(days=rng.randrange(300))
    labs = []
    for i, day in enumerate(rng.sample(range(-30, 700), rng.randint(20, 60))):
        test, unit, low, high = ANALYTES[i % len(ANALYTES)]
        lab = {
            "test": test,
            "value": round(rng.uniform(low, high), 1),
            "unit": unit,
            "date": (start + dt.timedelta(days=day)).isoformat(),
        }
        labs.append({"id": f"{pid}-lab-{i}", **lab} if rng.random() < 0.5 else lab)
    return {
        "id": pid,
        "birth_date": f"{rng.randint(1960, 2000)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "sex": rng.choice(["female", "male"]),
        "screening": {
            "hiv": "negative",
            "active_infection": False,
            "alemtuzumab_hypersensitivity": False,
            "tuberculosis": "negative",
        },
        "infusions": [
            {"date": (start + dt.timedelta(days=k)).isoformat(), "premedication": True, "observation_minutes": 125}
            for k in range(INFUSIONS_PER_COURSE)
        ],
        "labs": labs,
    }


def _cohort(size: int, seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_patient_file(rng, n) for n in range(size)]


def _write_ndjson(path: Path, cohort: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in cohort), encoding="utf-8")
    return path


# --- what the file says and what the database holds -------------------------------------------


LabKey = tuple[str | None, str, str, float, str]  # (client id or None, date, test, value, unit)


@dataclass
class Holding:
    labs: Counter[LabKey] = field(default_factory=Counter)
    infusions: Counter[str] = field(default_factory=Counter)
    has_state: bool = False


def _expected(cohort: list[dict[str, Any]]) -> dict[str, Holding]:
    out = {}
    for p in cohort:
        holding = Holding(has_state=True)
        for lab in p["labs"]:
            holding.labs[(lab.get("id"), lab["date"], lab["test"], float(lab["value"]), lab["unit"])] += 1
        for infusion in p["infusions"]:
            holding.infusions[infusion["date"]] += 1
        out[p["id"]] = holding
    return out


def _stored(url: str, client_ids: set[tuple[str, str]]) -> dict[str, Holding]:
    """Every stored patient with its labs (client id kept only where the file gave one, since
    the others carry a content-derived id) and infusions; rows of patients not stored too."""
    out: dict[str, Holding] = {}
    with session_factory(url)() as session:
        for (pid,) in session.execute(select(m.Patient.id)):
            out[pid] = Holding()
        lab_rows = session.execute(
            select(
                m.LabResult.patient_id,
                m.LabResult.id,
                m.LabResult.date,
                m.LabResult.test,
                m.LabResult.value,
                m.LabResult.unit,
            )
        )
        for pid, lab_id, day, test, value, unit in lab_rows:
            key = (lab_id if (pid, lab_id) in client_ids else None, day.isoformat(), test, float(value), unit)
            out.setdefault(pid, Holding()).labs[key] += 1
        for pid, day in session.execute(select(m.Infusion.patient_id, m.Infusion.date)):
            out.setdefault(pid, Holding()).infusions[day.isoformat()] += 1
        for (pid,) in session.execute(select(m.PatientState.patient_id)):
            out.setdefault(pid, Holding()).has_state = True
    return out


def _client_ids(cohort: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(p["id"], lab["id"]) for p in cohort for lab in p["labs"] if "id" in lab}


def _assert_whole_or_nothing(url: str, cohort: list[dict[str, Any]]) -> int:
    """Every patient in the database holds exactly what the file has for it: the patient row,
    its state, every lab once and every infusion once; no records of a patient not stored.
    Returns the number of patients stored."""
    expected = _expected(cohort)
    stored = _stored(url, _client_ids(cohort))
    assert set(stored) <= set(expected), f"unknown patients stored: {sorted(set(stored) - set(expected))[:5]}"
    for pid, holding in stored.items():
        want = expected[pid]
        assert holding.labs == want.labs, (
            f"{pid} is half-stored: {sum(holding.labs.values())} of {sum(want.labs.values())} lab results, "
            f"missing {sorted((want.labs - holding.labs).elements(), key=str)[:3]}, "
            f"extra {sorted((holding.labs - want.labs).elements(), key=str)[:3]}"
        )
        assert holding.infusions == want.infusions, f"{pid}: infusions {holding.infusions} != {want.infusions}"
        assert holding.has_state, f"{pid} stored without its patient_state row"
    with session_factory(url)() as session:
        patients = session.scalar(select(func.count()).select_from(m.Patient))
        assert patients == len(stored), "records stored for a patient whose row is missing"
    return len(stored)


def _table_counts(url: str) -> dict[str, int]:
    with session_factory(url)() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (m.Patient, m.PatientState, m.LabResult, m.Infusion, m.Alert, m.AlertEvent)
        }


# --- running the command ----------------------------------------------------------------------


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "ALEMWATCH_DATABASE_URL": url, "PYTHONWARNINGS": "ignore"}


def _import_to_completion(path: Path, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(CLI), "import", str(path), "--no-sweep", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(url),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _start_import(path: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(CLI), "import", str(path), "--no-sweep", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(url),
    )


SAVES = select(func.coalesce(func.sum(m.Patient.version), 0))


def _saves(url: str) -> int:
    """Patient saves committed so far: each save inserts a patient at version 1 or adds 1 to it."""
    with get_engine(url).connect() as connection:
        return int(connection.execute(SAVES).scalar_one())


def _kill_mid_import(path: Path, url: str, position: int, jitter: float) -> int:
    """Start an import, wait until it has committed `position` patients (new or stored before),
    let it run `jitter` seconds more and SIGKILL it. The point is chosen by progress rather than
    by wall-clock time, so a busy machine still kills in mid-flight. Returns the exit status."""
    target = _saves(url) + position
    process = _start_import(path, url)
    try:
        deadline = time.monotonic() + 90
        while _saves(url) < target:
            assert process.poll() is None, f"the import ended (status {process.returncode}) before {position} saves"
            assert time.monotonic() < deadline, (
                f"the import did not commit {position} patient saves (patients.version) in 90 s"
            )
            time.sleep(0.02)
        time.sleep(jitter)
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# --- the tests ---------------------------------------------------------------------------------


def test_sigkill_mid_import_never_leaves_a_patient_half_stored_and_a_rerun_stores_each_result_once(
    db_url: str, tmp_path: Path
) -> None:
    cohort = _cohort(PATIENTS)
    path = _write_ndjson(tmp_path / "cohort.ndjson", cohort)
    labs_in_file = sum(len(p["labs"]) for p in cohort)
    assert 0 < len(_client_ids(cohort)) < labs_in_file  # both idempotency paths: client ids and content ids

    rng = random.Random(SEED)
    stored: list[int] = []
    slice_ = (PATIENTS - 10) / KILLS
    for i in range(KILLS):
        if stored and stored[-1] >= PATIENTS - 1:
            break  # a busy machine let the last run finish before its kill: nothing left to cut
        # A random point in each slice of the file (each run first re-saves the patients stored
        # before, then adds new ones), plus 0-80 ms: mostly inside a patient's transaction.
        position = min(max(int(1 + (i + rng.random()) * slice_), (stored[-1] if stored else 0) + 1), PATIENTS - 1)
        jitter = rng.uniform(0, 0.08)
        if i == 0:  # the first kill as early as it can be: at least one must land mid-import
            position, jitter = 1, 0.0
        status = _kill_mid_import(path, db_url, position, jitter=jitter)
        if status == 0 and stored:  # a fast import finished before a late kill: its end is checked, nothing to cut
            stored.append(_assert_whole_or_nothing(db_url, cohort))
            break
        assert status == -signal.SIGKILL, f"kill {i}: the import ended with status {status} before the kill"
        stored.append(_assert_whole_or_nothing(db_url, cohort))
    assert all(0 < n <= PATIENTS for n in stored) and stored[0] < PATIENTS, f"no kill landed mid-import: {stored}"
    assert stored == sorted(stored) and stored[-1] > stored[0], stored

    report = _import_to_completion(path, db_url)
    assert report["errors"] == [] and report["patients"] == PATIENTS
    assert _assert_whole_or_nothing(db_url, cohort) == PATIENTS
    counts = _table_counts(db_url)
    assert counts["patients"] == counts["patient_state"] == PATIENTS
    assert counts["lab_results"] == labs_in_file
    assert counts["infusions"] == PATIENTS * INFUSIONS_PER_COURSE

    for i in range(REIMPORT_KILLS):  # crashes while re-saving patients already stored
        statuses = []
        for _ in range(3):  # a re-save is quick: a kill that comes after the end is tried again, earlier
            position = rng.randrange(1, PATIENTS // (2 + len(statuses)))
            statuses.append(_kill_mid_import(path, db_url, position, jitter=rng.uniform(0, 0.02)))
            assert _assert_whole_or_nothing(db_url, cohort) == PATIENTS
            assert _table_counts(db_url) == counts
            if statuses[-1] == -signal.SIGKILL:
                break
        assert statuses[-1] == -signal.SIGKILL, f"re-import kill {i}: the import ended before each kill: {statuses}"

    again = _import_to_completion(path, db_url)
    assert again["errors"] == [] and again["patients"] == PATIENTS
    assert _table_counts(db_url) == counts  # the third run adds nothing
    assert _assert_whole_or_nothing(db_url, cohort) == PATIENTS


def test_the_import_report_counts_new_records_and_a_rerun_reports_none(db_url: str, tmp_path: Path) -> None:
    cohort = _cohort(5, seed=7)
    path = _write_ndjson(tmp_path / "small.ndjson", cohort)
    protocol = load_protocol("us")
    in_file = sum(len(p["labs"]) + len(p["infusions"]) for p in cohort)
    first = import_file(path, db_url, protocol)
    second = import_file(path, db_url, protocol)
    assert (first.records, second.records) == (in_file, 0)
