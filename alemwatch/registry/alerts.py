"""Alerts with a life: raised from findings and deviations, acknowledged and resolved by
people, never raised twice while open, raised again after resolution only on new evidence.
Every change is an AlertEvent naming who, when and why, in the same transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from alemwatch.protocol.model import URGENCY_RANK, Protocol
from alemwatch.store import models as m

SYSTEM = "system:assessment"


@dataclass(frozen=True)
class WantedAlert:
    fingerprint: str
    kind: str
    code: str
    severity: str
    rule: str
    message: str
    action: str
    evidence: tuple[str, ...] = field(default=())


class AlertStateError(ValueError):
    """An alert cannot make that move (e.g. resolving one already resolved)."""


def evidence_key(evidence: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(evidence)).encode()).hexdigest()


def wanted_alerts(result: dict[str, Any], protocol: Protocol) -> list[WantedAlert]:
    """The alerts an assessment calls for: one per finding condition, one per deviation."""
    wanted = [
        WantedAlert(
            f"finding:{f['condition']}",
            "finding",
            f["condition"],
            f["severity"],
            f["rule"],
            f"{f['condition']}: {f['evidence'][0]}" if f["evidence"] else f["condition"],
            f["action"],
            tuple(f["evidence"]),
        )
        for f in result["findings"]
    ]
    severities = protocol.deviation_severity.codes
    wanted += [
        WantedAlert(
            f"deviation:{d['code']}:{d['date']}",
            "deviation",
            d["code"],
            severities.get(d["code"], "soon"),
            d["rule"],
            d["message"],
            "Review and document the departure from the protocol.",
            (d["message"],),
        )
        for d in result["deviations"]
    ]
    return wanted


def _event(session: Session, alert: m.Alert, actor: str, action: str, reason: str | None = None, **detail: Any) -> None:
    session.add(
        m.AlertEvent(
            patient_id=alert.patient_id, alert_id=alert.id, actor=actor, action=action, reason=reason, detail=detail
        )
    )


def _raise(session: Session, patient_id: str, want: WantedAlert, actor: str, action: str = "raised") -> m.Alert:
    alert = m.Alert(
        patient_id=patient_id,
        id=m.new_id(),
        fingerprint=want.fingerprint,
        kind=want.kind,
        code=want.code,
        severity=want.severity,
        rule=want.rule,
        status="open",
        message=want.message,
        action=want.action,
        evidence=list(want.evidence),
        evidence_key=evidence_key(want.evidence),
    )
    session.add(alert)
    session.flush()  # the unique index on open fingerprints speaks now, not at commit
    _event(session, alert, actor, action, severity=want.severity)
    return alert


def _update(session: Session, alert: m.Alert, want: WantedAlert, actor: str) -> None:
    escalated = URGENCY_RANK[want.severity] > URGENCY_RANK[alert.severity]
    new_evidence = set(want.evidence) - set(alert.evidence)
    if not escalated and not new_evidence and want.severity == alert.severity:
        return
    alert.severity, alert.rule, alert.message, alert.action = want.severity, want.rule, want.message, want.action
    alert.evidence = list(want.evidence)
    alert.evidence_key = evidence_key(want.evidence)
    alert.updated_at = m.utcnow()
    if escalated and alert.status == "acknowledged":
        alert.status = "open"  # worse than what was acknowledged: someone must look again
    _event(
        session,
        alert,
        actor,
        "escalated" if escalated else "updated",
        severity=want.severity,
        new_evidence=sorted(new_evidence),
    )


def reconcile(session: Session, patient_id: str, wanted: list[WantedAlert], actor: str = SYSTEM) -> dict[str, int]:
    """Bring a patient's alerts in line with what the assessment calls for."""
    counts = {"raised": 0, "updated": 0, "closed": 0}
    alerts = list(session.execute(select(m.Alert).where(m.Alert.patient_id == patient_id)).scalars())
    unresolved = {a.fingerprint: a for a in alerts if a.status != "resolved"}
    resolved: dict[str, list[m.Alert]] = {}
    for alert in alerts:
        if alert.status == "resolved":
            resolved.setdefault(alert.fingerprint, []).append(alert)
    wanted_by_fp = {w.fingerprint: w for w in wanted}
    for fingerprint, want in wanted_by_fp.items():
        current = unresolved.get(fingerprint)
        if current is not None:
            before = (current.severity, current.evidence_key)
            _update(session, current, want, actor)
            counts["updated"] += before != (current.severity, current.evidence_key)
            continue
        seen = {e for old in resolved.get(fingerprint, []) for e in old.evidence}
        if fingerprint in resolved and set(want.evidence) <= seen:
            continue  # resolved by a clinician, and nothing new since
        _raise(session, patient_id, want, actor, "reraised" if fingerprint in resolved else "raised")
        counts["raised"] += 1
    for fingerprint, alert in unresolved.items():
        if fingerprint in wanted_by_fp:
            continue
        if URGENCY_RANK[alert.severity] >= URGENCY_RANK["urgent"] and alert.status == "open":
            continue  # an urgent alert no one has seen stays until a person resolves it
        alert.status, alert.resolved_by, alert.resolved_at = "resolved", actor, m.utcnow()
        alert.resolution_reason = "No longer present in the assessment."
        _event(session, alert, actor, "resolved", alert.resolution_reason)
        counts["closed"] += 1
    return counts


def acknowledge(session: Session, alert: m.Alert, actor: str, reason: str | None) -> None:
    if alert.status != "open":
        raise AlertStateError(f"alert is {alert.status}; only an open alert can be acknowledged")
    alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", actor, m.utcnow()
    alert.updated_at = m.utcnow()
    _event(session, alert, actor, "acknowledged", reason)


def resolve(session: Session, alert: m.Alert, actor: str, reason: str) -> None:
    if alert.status == "resolved":
        raise AlertStateError("alert is already resolved")
    if not reason.strip():
        raise AlertStateError("a reason is required to resolve an alert")
    alert.status, alert.resolved_by, alert.resolved_at = "resolved", actor, m.utcnow()
    alert.resolution_reason = reason
    alert.updated_at = m.utcnow()
    _event(session, alert, actor, "resolved", reason)
