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
