"""The audit trail: every read and write of patient data, in the transaction of the change.

Events carry who, role, what, which patient, when, from where and the outcome; `detail`
holds identifiers and counts, never clinical values."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from alemwatch.security import Actor
from alemwatch.store import models as m


def record(
    session: Session,
    actor: Actor,
    action: str,
    resource: str,
    patient_id: str | None = None,
    outcome: str = "ok",
    ip: str = "",
    **detail: Any,
) -> None:
    # A Core INSERT, in the session's transaction: an audit event is never read back as an
    # object, and the ORM's unit of work would cost more than the statement.
    session.execute(
        insert(m.AuditEvent).values(
            user_id=actor.user_id,
            username=actor.username,
            role=actor.role,
            action=action,
            resource=resource,
            patient_id=patient_id,
            ip=ip,
            outcome=outcome,
            detail=detail,
        )
    )


def export(session: Session, since: dt.datetime | None) -> Iterator[str]:
    """Audit events as NDJSON lines, oldest first."""
    query = select(m.AuditEvent).order_by(m.AuditEvent.id)
    if since is not None:
        query = query.where(m.AuditEvent.at >= since)
    for event in session.execute(query.execution_options(yield_per=1000)).scalars():
        yield json.dumps(
            {
                "id": event.id,
                "at": event.at.isoformat(),
                "user_id": event.user_id,
                "username": event.username,
                "role": event.role,
                "action": event.action,
                "resource": event.resource,
                "patient_id": event.patient_id,
                "ip": event.ip,
                "outcome": event.outcome,
                "detail": event.detail,
            },
            sort_keys=True,
        )
