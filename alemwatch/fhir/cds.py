"""CDS Hooks 2.0 services, pure: the discovery document, prefetch templates, and the cards
built from an assessment (the engine's JSON). Getting the data (prefetch or the EHR's FHIR
server) and answering HTTP is `alemwatch.api.cds`'s job.

Indicators: an emergency or urgent finding and a contraindication are `critical`; overdue
monitoring, a course that is not ready, a missing prophylaxis and a `soon` finding are
`warning`; the rest is `info`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import quote

from alemwatch.fhir import codes
from alemwatch.fhir.inbound import planned_start, read_raw
from alemwatch.protocol.model import Protocol

PATIENT_VIEW = "alemwatch-patient-view"
ORDER_SELECT = "alemwatch-order-select"
ORDER_SIGN = "alemwatch-order-sign"
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "administrations": "MedicationAdministration?patient={{context.patientId}}",
    "requests": "MedicationRequest?patient={{context.patientId}}",
    "statements": "MedicationStatement?patient={{context.patientId}}",
    "immunizations": "Immunization?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
}
SERVICES = {
    PATIENT_VIEW: {
        "hook": "patient-view",
        "title": "alemtuzumab safety monitoring",
        "description": (
            "Overdue monitoring (monthly blood and urine tests, three-monthly TSH, yearly skin exam), open findings "
            "(ITP, anti-GBM disease, thyroid, ...) and herpes prophylaxis decisions for a patient treated with "
            "alemtuzumab (LEMTRADA)."
        ),
        "id": PATIENT_VIEW,
        "prefetch": PREFETCH,
    },
    ORDER_SELECT: {
        "hook": "order-select",
        "title": "alemtuzumab course readiness",
        "description": (
            "When an alemtuzumab order is selected: contraindications, baseline tests missing or older than 30 days "
            "(REMS), vaccines too recent, course too early."
        ),
        "id": ORDER_SELECT,
        "prefetch": PREFETCH,
    },
    ORDER_SIGN: {
        "hook": "order-sign",
        "title": "alemtuzumab course readiness (at signing)",
        "description": "The same checks as order-select, when an alemtuzumab order is about to be signed.",
        "id": ORDER_SIGN,
        "prefetch": PREFETCH,
    },
}
INDICATOR = {"emergency": "critical", "urgent": "critical", "soon": "warning", "routine": "info"}
OVERRIDE_REASONS = [
    {"system": f"{codes.BASE}/CodeSystem/cds-override", "code": "clinical-judgement", "display": "Clinical judgement"},
    {"system": f"{codes.BASE}/CodeSystem/cds-override", "code": "already-addressed", "display": "Already addressed"},
    {"system": f"{codes.BASE}/CodeSystem/cds-override", "code": "data-incomplete", "display": "EHR data incomplete"},
]


def discovery() -> dict[str, Any]:
    return {"services": list(SERVICES.values())}


def render(template: str, context: dict[str, Any]) -> str:
    """A prefetch template with its `{{context.X}}` tokens filled in, each value percent-encoded
    (a patient id cannot add query parameters or path segments to the EHR's search)."""
    out = template
    for key, value in context.items():
        if isinstance(value, str):
            out = out.replace("{{context." + key + "}}", quote(value, safe=""))
    return out


def prefetched(value: Any) -> list[dict[str, Any]] | None:
    """The resources of one prefetch value (a resource or a search Bundle); None when the
    value is absent or an OperationOutcome (the EHR could not get it: fetch it ourselves)."""
    if not isinstance(value, dict) or value.get("resourceType") == "OperationOutcome":
        return None
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        if entries is None:
            return []
        if not isinstance(entries, list):  # not a Bundle that can be read: fetch it ourselves
            return None
        return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    return [value]


def _source(protocol: Protocol, topic: str) -> dict[str, Any]:
    return {
        "label": f"alemwatch (protocol {protocol.protocol_version}, {protocol.jurisdiction.upper()} label)",
        "topic": {"system": f"{codes.BASE}/CodeSystem/cds-topic", "code": topic, "display": topic.replace("-", " ")},
    }


def _card(summary: str, indicator: str, detail: str, source: dict[str, Any], **more: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(summary),
        "indicator": indicator,
        "detail": detail,
        "source": source,
    }
    if indicator != "info":
        card["overrideReasons"] = OVERRIDE_REASONS
    card.update(more)
    return card


def _summary(text: str) -> str:
    return text if len(text) < 140 else text[:136].rstrip() + "..."


# --- patient-view --------------------------------------------------------------------------


def patient_view_cards(result: dict[str, Any], protocol: Protocol, unread: list[str]) -> list[dict[str, Any]]:
    """Open findings, overdue and due monitoring, and the herpes prophylaxis decision."""
    cards = [_finding_card(f, protocol) for f in _by_urgency(result.get("findings") or [])]
    names = {task.task: task.name for task in protocol.monitoring.tasks}
    overdue = [t for t in result["monitoring"]["tasks"] if t["status"] == "overdue"]
    due = [t for t in result["monitoring"]["tasks"] if t["status"] == "due"]
    if overdue:
        lines = "\n".join(f"- {names.get(t['task'], t['task'])}: due {t['due']}" for t in overdue[-12:])
        more = f"\n\n({len(overdue) - 12} earlier ones not shown)" if len(overdue) > 12 else ""
        cards.append(
            _card(
                f"{len(overdue)} alemtuzumab monitoring test(s) overdue",
                "warning",
                f"Monitoring continues until {result['monitoring']['until']} (48 months after the last infusion).\n\n"
                f"{lines}{more}",
                _source(protocol, "monitoring"),
            )
        )
    if due:
        lines = "\n".join(f"- {names.get(t['task'], t['task'])}: due {t['due']}" for t in due)
        cards.append(_card(f"{len(due)} monitoring test(s) due now", "info", lines, _source(protocol, "monitoring")))
    herpes = (result.get("prophylaxis") or {}).get("herpes") or {}
    if herpes.get("status") == "may_stop":
        cards.append(
            _card(
                "Herpes prophylaxis may stop: CD4+ at threshold and minimum duration passed",
                "info",
                f"CD4+ {herpes.get('latest_cd4')} /uL (threshold {herpes.get('cd4_threshold')}); minimum until "
                f"{herpes.get('minimum_until')} (whichever is later).",
                _source(protocol, "prophylaxis"),
            )
        )
    elif herpes.get("status") == "required" and not herpes.get("on_prophylaxis"):
        cards.append(
            _card(
                "Herpes prophylaxis required but none recorded",
                "warning",
                f"Antiviral prophylaxis from the first day of the course until at least {herpes.get('earliest_stop')} "
                "and CD4+ >= 200/uL, whichever is later.",
                _source(protocol, "prophylaxis"),
            )
        )
    cards += unread_card(unread, protocol)
    return cards


def registry_alert_cards(
    alerts: list[dict[str, Any]], result: dict[str, Any], protocol: Protocol
) -> list[dict[str, Any]]:
    """Open alerts of the registry's own record of this patient that the EHR's data does not
    show (above all what the patient reported in the portal): a red flag is never lost
    because it was told to alemwatch rather than to the EHR."""
    shown = {f["condition"] for f in result.get("findings") or []}
    cards = []
    for alert in alerts:
        if alert["kind"] == "finding" and alert["code"] in shown:
            continue
        severity = alert["severity"] if alert["severity"] in INDICATOR else "soon"
        cards.append(
            _card(
                f"{severity.upper()} (alemwatch registry): {alert['message']}",
                INDICATOR[severity],
                f"{alert.get('action') or ''}\n\nOpen in the alemwatch registry since {alert['raised_at']}; rule "
                f"`{alert['rule']}`.".strip(),
                _source(protocol, "registry-alert"),
            )
        )
    return cards


def _by_urgency(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {"emergency": 0, "urgent": 1, "soon": 2, "routine": 3}
    return sorted(findings, key=lambda f: order.get(f["severity"], 9))


def _finding_card(finding: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    condition = finding["condition"].replace("_", " ")
    evidence = "\n".join(f"- {e}" for e in finding.get("evidence") or [])
    return _card(
        f"{finding['severity'].upper()}: {condition}. {finding.get('action') or ''}".strip(),
        INDICATOR[finding["severity"]],
        f"{evidence}\n\nRule `{finding['rule']}`.",
        _source(protocol, finding["condition"].replace("_", "-")),
    )


def unread_card(unread: list[str], protocol: Protocol, nothing_assessed: bool = False) -> list[dict[str, Any]]:
    """What could not be read from the EHR: a warning, so that a gap is never taken for 'all well'."""
    if not unread:
        return []
    lines = "\n".join(f"- {u}" for u in unread[:10])
    summary = (
        "alemwatch could not assess this patient from the EHR's data"
        if nothing_assessed
        else f"{len(unread)} EHR record(s) could not be read; the alemtuzumab checks may be incomplete"
    )
    return [
        _card(
            summary,
            "warning",
            lines,
            _source(protocol, "data-quality"),
        )
    ]


# --- order-select / order-sign ---------------------------------------------------------------


def alemtuzumab_orders(
    draft_orders: Any, selections: list[str] | None
) -> tuple[list[tuple[str, dt.date | None]], list[str]]:
    """The drafted alemtuzumab MedicationRequests (those selected, for order-select): (id,
    start), and what could not be read of them (an order whose start is unreadable is assessed
    as starting today, and says so). Raises FhirInputError naming an order that does not have
    its FHIR shape (its medication or timing a string, say): whether it is alemtuzumab, and
    when, cannot be told."""
    from alemwatch.fhir import inbound

    found: list[tuple[str, dt.date | None]] = []
    problems: list[str] = []
    entries = draft_orders.get("entry") if isinstance(draft_orders, dict) else None
    if entries is not None and not isinstance(entries, list):
        raise inbound.FhirInputError([inbound.FhirIssue("structure", "must be a list", "context.draftOrders.entry")])
    for n, entry in enumerate(entries or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationRequest":
            continue
        ref = f"MedicationRequest/{resource.get('id')}"
        if selections and ref not in selections:
            continue
        place = f"context.draftOrders.entry[{n}].resource"
        try:
            raw = read_raw(resource, place)
            concept = raw.medicationCodeableConcept
            text = " ".join([concept.text or "", *(c.display or "" for c in concept.coding or [])]) if concept else ""
            coding = (concept.coding or []) if concept else []
            codings = [{"system": c.system or "", "code": c.code or ""} for c in coding]
            if not (codes.coded(codings, codes.ALEMTUZUMAB_CODES) or codes.ALEMTUZUMAB_TEXT.search(text)):
                continue
            try:
                start: dt.date | None = planned_start(raw, place)
            except inbound.FhirInputError as exc:
                start = None
                issue = exc.issues[0]
                problems.append(f"{issue.expression}: {issue.diagnostics}; the course is assessed as starting today")
        except (TypeError, KeyError, AttributeError, IndexError) as exc:
            issue = inbound.FhirIssue("structure", f"does not have its FHIR shape ({type(exc).__name__})", place)
            raise inbound.FhirInputError([issue]) from None
        found.append((ref, start))
    return found, problems


def order_cards(result: dict[str, Any], protocol: Protocol, patient_id: str, unread: list[str]) -> list[dict[str, Any]]:
    """The eligibility of the drafted course as cards: contraindicated is critical, not ready a
    warning with ServiceRequests for the missing baseline tests, eligible an info card with the
    REMS 30-day validity of the baseline."""
    plan = result.get("eligibility")
    if plan is None:
        return []
    source = _source(protocol, "course-eligibility")
    reasons = plan.get("reasons") or []
    course = plan.get("course_number")
    start = plan.get("planned_course_start")
    cards = []
    blocking = [r for r in reasons if r.get("level") == "contraindication"]
    if plan["status"] == "contraindicated":
        lines = "\n".join(f"- {r['message']} (`{r['rule']}`)" for r in blocking)
        cards.append(
            _card(
                f"Alemtuzumab is contraindicated: {blocking[0]['message'] if blocking else ''}",
                "critical",
                lines,
                source,
            )
        )
    not_ready = [r for r in reasons if r.get("level") == "not_ready"]
    if not_ready:
        lines = "\n".join(f"- {r['message']} (`{r['rule']}`)" for r in not_ready)
        missing = [b for b in plan.get("baseline") or [] if b.get("status") in ("missing", "too_old")]
        suggestions = []
        if missing:
            suggestions.append(
                {
                    "label": (
                        f"Order the {len(missing)} baseline test(s) missing or older than "
                        f"{protocol.baseline.window_days} days"
                    ),
                    "uuid": str(uuid.uuid4()),
                    "isRecommended": True,
                    "actions": [
                        {
                            "type": "create",
                            "description": f"Order {b['name']}",
                            "resource": _service_request(b, patient_id, protocol),
                        }
                        for b in missing
                    ],
                }
            )
        more: dict[str, Any] = {"suggestions": suggestions, "selectionBehavior": "at-most-one"} if suggestions else {}
        cards.append(
            _card(
                f"Not ready for alemtuzumab course {course} on {start}: {len(not_ready)} item(s) to complete first",
                "warning",
                f"{lines}\n\nREMS: baseline laboratory tests within {protocol.baseline.window_days} days before the "
                "first infusion of each course.",
                source,
                **more,
            )
        )
    cautions = [r for r in reasons if r.get("level") == "caution"]
    if cautions:
        lines = "\n".join(f"- {r['message']} (`{r['rule']}`)" for r in cautions)
        cards.append(
            _card(f"Caution before alemtuzumab course {course}: {cautions[0]['message']}", "warning", lines, source)
        )
    if plan["status"] == "eligible":
        valid = [b["valid_until"] for b in plan.get("baseline") or [] if b.get("valid_until")]
        until = f"; the baseline results are valid until {min(valid)} (REMS 30-day rule)" if valid else ""
        cards.append(
            _card(f"Eligible for alemtuzumab course {course} on {start}{until}", "info", "All checks passed.", source)
        )
    cards += unread_card(unread, protocol)
    return cards


def _service_request(baseline: dict[str, Any], patient_id: str, protocol: Protocol) -> dict[str, Any]:
    test = next((t for t in protocol.baseline.tests if t.id == baseline["rule"]), None)
    coding = []
    if test is not None:
        spec = protocol.analytes[test.any_of[0]]
        coding = [{"system": codes.LOINC, "code": spec.loinc[0], "display": spec.name}]
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": coding, "text": baseline["name"]} if coding else {"text": baseline["name"]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": "Baseline before an alemtuzumab course (REMS: within 30 days)"}],
    }
