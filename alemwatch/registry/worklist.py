"""The morning worklist: who to call first, built from open alerts and time-based items."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from alemwatch.store import models as m

SEVERITY_ORDER = case({"emergency": 0, "urgent": 1, "soon": 2, "routine": 3}, value=m.Alert.severity, else_=4)
WEEK = dt.timedelta(days=7)


def _item_json(item: m.WorklistItem, status: str) -> dict[str, Any]:
    return {
        "patient_id": item.patient_id,
        "kind": item.kind,
        "task": item.task,
        "due": item.due.isoformat(),
        "window": [
            item.window_start.isoformat(),
            item.window_end.isoformat() if item.window_end != dt.date.max else None,
        ],
        "status": status,
        "detail": item.detail,
    }


def build_worklist(session: Session, day: dt.date, limit: int) -> dict[str, Any]:
    alerts_query = (
        select(m.Alert).where(m.Alert.status != "resolved").order_by(SEVERITY_ORDER, m.Alert.raised_at).limit(limit)
    )
    alerts = list(session.execute(alerts_query).scalars())
    urgent = [a for a in alerts if a.severity in ("emergency", "urgent")]
    other_alerts = [a for a in alerts if a.severity not in ("emergency", "urgent")]
    items = session.execute(
        select(m.WorklistItem)
        .where(m.WorklistItem.window_start <= day + WEEK)
        .order_by(m.WorklistItem.due)
        .limit(limit * 10)
    ).scalars()
    overdue, due_this_week, prophylaxis, courses = [], [], [], []
    for item in items:
        if item.kind == "test":
            if item.window_end < day:
                overdue.append(_item_json(item, "overdue"))
            elif item.due <= day + WEEK:
                due_this_week.append(_item_json(item, "due" if item.window_start <= day else "upcoming"))
        elif item.kind == "prophylaxis" and item.window_start <= day:
            prophylaxis.append(_item_json(item, "decision"))
        elif item.kind == "course" and item.due >= day:
            courses.append(_item_json(item, str(item.detail.get("status"))))
    sections = {
        "urgent_alerts": [_alert_row(a) for a in urgent],
        "overdue_tests": overdue[:limit],
        "due_this_week": due_this_week[:limit],
        "prophylaxis_decisions": prophylaxis[:limit],
        "upcoming_courses": courses[:limit],
        "other_alerts": [_alert_row(a) for a in other_alerts],
    }
    patient_ids = list(dict.fromkeys(row["patient_id"] for rows in sections.values() for row in rows))
    return {"date": day.isoformat(), **sections, "patient_ids": patient_ids}


def _alert_row(alert: m.Alert) -> dict[str, Any]:
    return {
        "patient_id": alert.patient_id,
        "alert_id": alert.id,
        "kind": alert.kind,
        "code": alert.code,
        "severity": alert.severity,
        "status": alert.status,
        "message": alert.message,
        "action": alert.action,
        "raised_at": alert.raised_at.isoformat(),
    }
