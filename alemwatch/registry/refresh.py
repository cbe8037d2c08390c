"""Re-assess one stored patient and bring alerts, worklist items and state in line.

Runs inside the caller's transaction: a lab result and the alert it raises are committed
together or not at all."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from alemwatch.core.assess import assess
from alemwatch.core.next_change import next_change, record_dates
from alemwatch.protocol.model import URGENCY_RANK, Protocol
from alemwatch.registry.alerts import SYSTEM, reconcile, wanted_alerts
from alemwatch.registry.digest import digest_result
from alemwatch.store import charts
from alemwatch.store import models as m
from alemwatch.store.repo import load_patient

TEST_LOOKAHEAD = dt.timedelta(days=35)  # tests whose window opens within this are listed (daily sweep refreshes)
COURSE_LOOKAHEAD = dt.timedelta(days=90)  # planned courses shown this long before they start


def worklist_rows(patient_id: str, result: dict[str, Any], as_of: dt.date) -> list[dict[str, Any]]:
    """The time-based work an assessment finds: open tests, prophylaxis decisions, courses."""
    rows = []
    for task in result["monitoring"]["tasks"]:
        start, end = (dt.date.fromisoformat(d) for d in task["window"])
        if task["status"] != "done" and start <= as_of + TEST_LOOKAHEAD:
            rows.append(
                {
                    "patient_id": patient_id,
                    "id": f"test:{task['task']}:{task['due']}",
                    "kind": "test",
                    "task": task["task"],
                    "due": dt.date.fromisoformat(task["due"]),
                    "window_start": start,
                    "window_end": end,
                    "detail": {"course": task["course"], "rule": task["rule"]},
                }
            )
    herpes = result["prophylaxis"]["herpes"]
    if herpes["status"] == "may_stop" and herpes.get("on_prophylaxis"):
        day = dt.date.fromisoformat(herpes["earliest_stop"])
        rows.append(
            {
                "patient_id": patient_id,
                "id": "prophylaxis:herpes:may_stop",
                "kind": "prophylaxis",
                "task": "herpes_may_stop",
                "due": day,
                "window_start": day,
                "window_end": dt.date.max,
                "detail": {"latest_cd4": herpes.get("latest_cd4"), "rule": herpes["rule"]},
            }
        )
    elif herpes["status"] == "required" and not herpes.get("on_prophylaxis"):
        rows.append(
            {
                "patient_id": patient_id,
                "id": "prophylaxis:herpes:missing",
                "kind": "prophylaxis",
                "task": "herpes_not_on_prophylaxis",
                "due": as_of,
                "window_start": as_of,
                "window_end": dt.date.max,
                "detail": {"earliest_stop": herpes["earliest_stop"], "rule": herpes["rule"]},
            }
        )
    eligibility = result.get("eligibility")
    if eligibility:
        start = dt.date.fromisoformat(eligibility["planned_course_start"])
        if start >= as_of:
            rows.append(
                {
                    "patient_id": patient_id,
                    "id": f"course:{start.isoformat()}",
                    "kind": "course",
                    "task": "planned_course",
                    "due": start,
                    "window_start": start - COURSE_LOOKAHEAD,
                    "window_end": start,
                    "detail": {
                        "status": eligibility["status"],
                        "course_number": eligibility["course_number"],
                        "reasons": sorted({r["code"] for r in eligibility["reasons"] if r["level"] != "caution"}),
                    },
                }
            )
    return rows


def summary(result: dict[str, Any]) -> dict[str, Any]:
    severities = [f["severity"] for f in result["findings"]]
    return {
        "max_severity": max(severities, key=URGENCY_RANK.__getitem__) if severities else None,
        "findings": [[f["condition"], f["severity"]] for f in result["findings"]],
        "until": result["monitoring"]["until"],
        "prophylaxis": result["prophylaxis"]["herpes"]["status"],
        "eligibility": (result.get("eligibility") or {}).get("status"),
        "courses": len(result["courses"]),
    }


def refresh_patient(
    session: Session, patient_id: str, protocol: Protocol, as_of: dt.date, actor: str = SYSTEM
) -> dict[str, Any] | None:
    patient = load_patient(session, patient_id, protocol)
    if patient is None:
        return None
    result = assess(patient, protocol, as_of)
    reconcile(session, patient_id, wanted_alerts(result, protocol), actor)
    session.execute(delete(m.WorklistItem).where(m.WorklistItem.patient_id == patient_id))
    rows = worklist_rows(patient_id, result, as_of)
    if rows:
        session.execute(insert(m.WorklistItem), rows)
    state = session.get(m.PatientState, patient_id)
    if state is None:
        state = m.PatientState(patient_id=patient_id, data_version=1)
        session.add(state)
    state.assessed_version = state.data_version
    state.assessed_on = as_of
    state.protocol_version = protocol.protocol_version
    week = protocol.int_parameter("infusion_week_after_last_days")
    state.next_change_on = next_change(result, as_of, week, record_dates(patient), TEST_LOOKAHEAD)
    herpes = result["prophylaxis"]["herpes"]
    digest = digest_result(result, bool(herpes.get("on_prophylaxis")), as_of, TEST_LOOKAHEAD)
    state.summary = {**summary(result), "digest": str(digest)}
    charts.store(session, patient, protocol)  # the bulk sweep reads exactly what was assessed
    return result
