"""The daily sweep: re-assessing only what can have changed leaves the registry exactly as a
full re-assessment would, day after day."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from alemwatch.protocol.load import load_protocol
from alemwatch.registry.sweep import sweep
from alemwatch.store import models as m
from alemwatch.store.db import session_factory, transaction
from alemwatch.store.repo import save_patient_file

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
PROTOCOL = load_protocol("us")


def _cohort() -> list[dict[str, Any]]:
    """Patients at different stages around the swept days (a course, labs, a planned course)."""
    base = json.loads(json.dumps(EXAMPLE))
    second = {
        **base,
        "id": "p-2",
        "planned_course_start": "2026-02-20",
        "labs": base["labs"]
        + [
            {"test": "platelets", "value": 210, "unit": "10*9/L", "date": "2026-01-25"},
            {"test": "cd4", "value": 250, "unit": "/uL", "date": "2025-03-20"},
        ],
    }
    third = {
        **base,
        "id": "p-3",
        "infusions": [
            {**i, "date": (dt.date(2025, 12, 1) + dt.timedelta(days=n)).isoformat()}
            for n, i in enumerate(base["infusions"][:3])
        ],
        "planned_course_start": None,
        "symptoms": [],
    }
    third.pop("planned_course_start")
    return [base, second, third]


def _snapshot(url: str) -> dict[str, Any]:
    with session_factory(url)() as session:
        alerts = sorted(
            (a.patient_id, a.fingerprint, a.severity, a.status) for a in session.execute(select(m.Alert)).scalars()
        )
        items = sorted(
            (i.patient_id, i.id, i.window_start, i.window_end)
            for i in session.execute(select(m.WorklistItem)).scalars()
        )
        summaries = {s.patient_id: s.summary for s in session.execute(select(m.PatientState)).scalars()}
    return {"alerts": alerts, "items": items, "summaries": summaries}


def test_incremental_sweeps_equal_a_full_reassessment_every_day(db_url: str, tmp_path: Path) -> None:
    with transaction(db_url) as session:
        for record in _cohort():
            save_patient_file(session, record, PROTOCOL)
    start = dt.date(2026, 1, 1)
    sweep(db_url, PROTOCOL, start)
    assessed = []
    for offset in range(1, 75, 2):
        day = start + dt.timedelta(days=offset)
        assessed.append(sweep(db_url, PROTOCOL, day).assessed)
        incremental = _snapshot(db_url)
        sweep(db_url, PROTOCOL, day, full=True)
        assert _snapshot(db_url) == incremental, f"incremental sweep missed a change on {day}"
    assert min(assessed) == 0 < max(assessed)  # some days nothing needs re-assessing, some days something does


def test_the_bulk_digest_equals_the_per_patient_digest_for_every_golden_case() -> None:
    """The sweep skips rewriting a patient when these agree, so they must agree exactly."""
    from alemwatch.core.assess import assess
    from alemwatch.core.bulk import bulk_assess
    from alemwatch.core.columnar import Cohort
    from alemwatch.core.patient import parse_patient
    from alemwatch.registry.digest import digest_bulk, digest_result
    from alemwatch.registry.refresh import TEST_LOOKAHEAD
    from alemwatch.registry.sweep import _prophylaxis_days

    cases = sorted((Path(__file__).parent / "cases" / "assess").glob("*.json"))
    by_day: dict[tuple[str, str], list[Any]] = {}
    for path in cases:
        case = json.loads(path.read_text())
        by_day.setdefault((case["as_of"], case.get("jurisdiction") or "us"), []).append(case["patient"])
    checked = 0
    for (as_of, jurisdiction), files in by_day.items():
        protocol = load_protocol(jurisdiction)
        day = dt.date.fromisoformat(as_of)
        patients = [parse_patient(f, protocol) for f in files]
        cohort = Cohort.from_patients(patients, protocol)
        on_pro, _ = _prophylaxis_days(cohort, cohort.size, day.toordinal())
        bulk = digest_bulk(bulk_assess(cohort, protocol, day), on_pro, cohort.planned_start, TEST_LOOKAHEAD)
        for i, patient in enumerate(patients):
            result = assess(patient, protocol, day)
            on = bool(result["prophylaxis"]["herpes"]["on_prophylaxis"])
            assert int(bulk[i]) == digest_result(result, on, day, TEST_LOOKAHEAD), patient.id
            assert on == bool(on_pro[i]), patient.id
            checked += 1
    assert checked == len(cases)
