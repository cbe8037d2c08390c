"""CDS Hooks 2.0 under /cds-services: discovery, the patient-view and order-select/order-sign
services, and the feedback endpoint (accepted / overridden cards, into the audit log).

The services assess what the EHR knows: the request's prefetch, or, for any prefetch the EHR
did not send (or sent as an OperationOutcome), a search on the request's `fhirServer` with
its `fhirAuthorization`. When the data cannot be had the service answers a warning card that
says so: a check that could not run is never shown as a check that found nothing."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

import httpx
import orjson
from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from alemwatch.api.deps import ActorDep, ProtocolDep, RawJsonRoute, SessionDep, SettingsDep, client_ip
from alemwatch.core.assess import assess
from alemwatch.core.patient import PatientFileError, parse_patient
from alemwatch.fhir import cds, inbound
from alemwatch.fhir.inbound import PatientUpdate
from alemwatch.protocol.model import Protocol
from alemwatch.registry.fhir_store import read_entries
from alemwatch.settings import Settings
from alemwatch.store import audit
from alemwatch.store import models as m

router = APIRouter(prefix="/cds-services", route_class=RawJsonRoute)
MAX_PAGES = 20  # per prefetch search on the EHR's server
MAX_ANSWER_BYTES = 50 * 1024 * 1024  # one page of an EHR's search answer


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the specification's names, and `extension`
    extension: dict[str, Any] | None = None
    access_token: str = Field(min_length=1, max_length=10_000)
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


class HookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the specification's names, and `extension`
    extension: dict[str, Any] | None = None
    hook: str = Field(min_length=1, max_length=100)
    hookInstance: str = Field(min_length=1, max_length=100)  # noqa: N815 - the specification's name
    fhirServer: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")  # noqa: N815
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


class Coding(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the specification's names, and `extension`
    extension: dict[str, Any] | None = None
    code: str = Field(min_length=1, max_length=200)
    system: str | None = Field(default=None, max_length=500)
    display: str | None = Field(default=None, max_length=500)


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the specification's names, and `extension`
    extension: dict[str, Any] | None = None
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)  # noqa: N815


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the specification's names, and `extension`
    extension: dict[str, Any] | None = None
    card: str = Field(min_length=1, max_length=200)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[dict[str, Any]] = Field(default_factory=list, max_length=100)  # noqa: N815
    overrideReason: OverrideReason | None = None  # noqa: N815
    outcomeTimestamp: dt.datetime  # noqa: N815


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the specification's names, and `extension`
    extension: dict[str, Any] | None = None
    feedback: list[Feedback] = Field(min_length=1, max_length=100)


@router.get("", name="cds_discovery")
def discovery() -> dict[str, Any]:
    """The services this CDS service offers, with their prefetch templates."""
    return cds.discovery()


@router.post("/{service_id}", name="cds_service")
def call_service(
    service_id: str,
    body: HookRequest,
    session: SessionDep,
    protocol: ProtocolDep,
    settings: SettingsDep,
    actor: ActorDep,
    request: Request,
) -> dict[str, Any]:
    service = _service(service_id)
    if body.hook != service["hook"]:
        raise HTTPException(
            status_code=400, detail=f"hook: {service_id} answers {service['hook']!r}, got {body.hook!r}"
        )
    patient_id = _context_str(body.context, "patientId")
    _context_str(body.context, "userId")
    orders: list[tuple[str, dt.date | None]] = []
    order_problems: list[str] = []
    if service["hook"] != "patient-view":
        draft = body.context.get("draftOrders")
        if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
            raise HTTPException(status_code=400, detail="context.draftOrders: a Bundle of the draft orders is required")
        selections = body.context.get("selections") if service["hook"] == "order-select" else None
        if service["hook"] == "order-select" and not isinstance(selections, list):
            raise HTTPException(status_code=400, detail="context.selections: a list of order references is required")
        try:
            orders, order_problems = cds.alemtuzumab_orders(draft, selections)
        except inbound.FhirInputError as exc:
            issue = exc.issues[0]
            raise HTTPException(status_code=400, detail=f"{issue.expression}: {issue.diagnostics}") from None
        if not orders:  # nothing about alemtuzumab is being ordered
            _audit(session, actor, request, service_id, patient_id, body, [])
            return {"cards": []}
    resources, problems = _gather(body, patient_id, settings)
    cards, result = _cards(service["hook"], resources, order_problems + problems, patient_id, protocol, orders)
    if service["hook"] == "patient-view":
        cards += _registry_cards(session, patient_id, result, protocol)
    _audit(session, actor, request, service_id, patient_id, body, cards)
    return {"cards": cards}


def _service(service_id: str) -> dict[str, Any]:
    service = cds.SERVICES.get(service_id)
    if service is None:
        raise HTTPException(status_code=404, detail=f"no CDS service {service_id!r}; see GET /cds-services")
    return service


def _context_str(context: dict[str, Any], name: str) -> str:
    value = context.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise HTTPException(status_code=400, detail=f"context.{name}: is required (a string)")
    return value.split("/")[-1]


def _audit(
    session: Any,
    actor: Any,
    request: Request,
    service_id: str,
    patient_id: str,
    body: HookRequest,
    cards: list[dict[str, Any]],
) -> None:
    """The call, with the uuids of the cards answered (feedback names a card by its uuid)."""
    audit.record(
        session,
        actor,
        "cds",
        f"/cds-services/{service_id}",
        patient_id,
        ip=client_ip(request),
        hook_instance=body.hookInstance,
        cards=[card["uuid"] for card in cards],
        prefetch=sorted((body.prefetch or {}).keys()),
    )


def _gather(body: HookRequest, patient_id: str, settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """Every resource for the assessment: prefetch first, then the EHR's server for the rest."""
    resources: list[dict[str, Any]] = []
    missing: list[str] = []
    for key in cds.PREFETCH:
        found = cds.prefetched((body.prefetch or {}).get(key))
        if found is None:
            missing.append(key)
        else:
            resources += found
    problems: list[str] = []
    if not missing:
        return resources, problems
    if body.fhirServer is None:
        # CDS Hooks 2.0: without prefetch or a FHIR server the service cannot get its data.
        raise HTTPException(status_code=412, detail=f"prefetch {', '.join(missing)} missing and no fhirServer given")
    server = body.fhirServer.rstrip("/")
    if settings.cds_fhir_servers and not any(_within(server, allowed) for allowed in settings.cds_fhir_servers):
        raise HTTPException(status_code=403, detail="fhirServer: not one of the FHIR servers this service may call")
    headers = {"Accept": "application/fhir+json"}
    if body.fhirAuthorization is not None:
        headers["Authorization"] = f"Bearer {body.fhirAuthorization.access_token}"
    context = {**body.context, "patientId": patient_id}
    # One deadline for every call to the EHR: an answer that trickles in, or pages that link on
    # and on, cannot hold the CDS call (and a worker) past it.
    deadline = time.monotonic() + settings.cds_fetch_timeout_seconds
    with httpx.Client(timeout=settings.cds_fetch_timeout_seconds, headers=headers) as client:
        for key in missing:
            url: str | None = f"{server}/{cds.render(cds.PREFETCH[key], context)}"
            pages = 0
            while url and pages < MAX_PAGES:
                pages += 1
                document, problem = _fetch(client, url, deadline)
                if problem is not None:
                    problems.append(f"{key}: {problem}")
                    break
                found = cds.prefetched(document)
                if found is None:
                    problems.append(f"{key}: the EHR's FHIR server answered something that is not a FHIR Bundle")
                    break
                resources += found
                url = _next_link(document)
                if url is not None and not _within(url, server):
                    # The EHR's token goes to the EHR's server only, never to a host a link names.
                    problems.append(f"{key}: a next page on another server was not fetched")
                    break
            else:
                if url:
                    problems.append(f"{key}: more than {MAX_PAGES} pages; the rest was not fetched")
    return resources, problems


def _fetch(client: httpx.Client, url: str, deadline: float) -> tuple[Any, str | None]:
    """One page of the EHR's answer, decoded, read to the end before `deadline`; or what went wrong."""
    try:
        with client.stream("GET", url) as answer:
            if answer.status_code >= 400:
                return None, f"the EHR's FHIR server answered {answer.status_code}"
            content = bytearray()
            for chunk in answer.iter_bytes():
                content += chunk
                if time.monotonic() > deadline:
                    return None, "the EHR's FHIR server did not answer in time"
                if len(content) > MAX_ANSWER_BYTES:
                    return None, f"the EHR's FHIR server answered more than {MAX_ANSWER_BYTES // 2**20} MB"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return None, f"the EHR's FHIR server could not be reached ({type(exc).__name__})"
    if time.monotonic() > deadline:
        return None, "the EHR's FHIR server did not answer in time"
    try:
        return orjson.loads(content), None
    except ValueError:
        return None, "the EHR's FHIR server answered something that is not JSON"


def _within(url: str, base: str) -> bool:
    """Whether `url` is on the server at `base`: the same scheme, host and port, and a path at
    or below the base's (segment by segment: `https://ehr.example.org/fhir` holds neither
    `https://ehr.example.org.evil.com` nor `https://ehr.example.org/fhirevil`)."""
    try:
        target, root = httpx.URL(url), httpx.URL(base)
    except (httpx.InvalidURL, TypeError):
        return False
    if (target.scheme, target.host, target.port) != (root.scheme, root.host, root.port) or not target.host:
        return False
    prefix = root.path.rstrip("/")
    return target.path == prefix or target.path.startswith(prefix + "/")


def _next_link(document: Any) -> str | None:
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        return None
    links = document.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _cards(
    hook: str,
    resources: list[dict[str, Any]],
    problems: list[str],
    patient_id: str,
    protocol: Protocol,
    orders: list[tuple[str, dt.date | None]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The cards, and the assessment they come from (empty when nothing could be assessed)."""
    parsed = read_entries(resources, protocol, bundle=False, validate=False)
    unread = problems + [_where(issue.expression, resources) + f": {issue.diagnostics}" for issue in parsed.errors]
    others = sorted(pid for pid in parsed.updates if pid != patient_id)
    if others:  # never assessed as this patient's, and never silently dropped
        count = sum(parsed.updates[pid].count + (pid in parsed.new_patients) for pid in others)
        unread.append(f"{count} resource(s) about another patient ({', '.join(others[:3])}) were not read")
    update = parsed.updates.get(patient_id) or PatientUpdate(patient_id)
    data = inbound.merge(None, update, strict=False)
    today = dt.date.today()
    if orders:
        starts = [start for _, start in orders if start is not None]
        data["planned_course_start"] = (min(starts) if starts else today).isoformat()
    try:
        patient = parse_patient(data, protocol)
    except PatientFileError as exc:
        issue = inbound.locate(exc, None, update)
        problem = f"{_where(issue.expression, resources)}: {issue.diagnostics}"
        return cds.unread_card([*unread, problem], protocol, True), {}
    result = assess(patient, protocol, today)
    if hook == "patient-view":
        return cds.patient_view_cards(result, protocol, unread), result
    return cds.order_cards(result, protocol, patient_id, unread), result


def _registry_cards(
    session: Session, patient_id: str, result: dict[str, Any], protocol: Protocol
) -> list[dict[str, Any]]:
    """The registry's open findings for this patient, when it follows them, beyond what the EHR's data shows."""
    a = m.Alert
    query = (
        select(a.kind, a.code, a.severity, a.message, a.action, a.rule, a.raised_at)
        .where(a.patient_id == patient_id, a.status != "resolved", a.kind == "finding")
        .order_by(a.raised_at)
    )
    alerts = [{**row._asdict(), "raised_at": row.raised_at.date().isoformat()} for row in session.execute(query)]
    return cds.registry_alert_cards(alerts, result, protocol)


def _where(expression: str, resources: list[dict[str, Any]]) -> str:
    """`line 7.valueQuantity` -> `Observation/abc.valueQuantity` (the resource the EHR knows)."""
    head, dot, rest = expression.partition(".")
    if head.startswith("line ") and head[5:].isdigit():
        n = int(head[5:]) - 1
        if 0 <= n < len(resources):
            resource = resources[n]
            return f"{resource.get('resourceType')}/{resource.get('id', '?')}{dot}{rest}"
    return expression


@router.post("/{service_id}/feedback", name="cds_feedback")
def feedback(
    service_id: str,
    body: Annotated[FeedbackRequest, Body()],
    session: SessionDep,
    actor: ActorDep,
    request: Request,
) -> dict[str, Any]:
    """Which cards the clinician accepted or overrode, and why: one audit event per card."""
    _service(service_id)
    for item in body.feedback:
        reason = item.overrideReason
        audit.record(
            session,
            actor,
            f"cds_{item.outcome}",
            f"/cds-services/{service_id}/feedback",
            None,
            ip=client_ip(request),
            card=item.card,
            outcome=item.outcome,
            accepted_suggestions=[s.get("id") for s in item.acceptedSuggestions],
            override_reason=reason.reason.model_dump(exclude_none=True) if reason and reason.reason else None,
            override_comment=reason.userComment if reason else None,
            at=item.outcomeTimestamp.isoformat(),
        )
    return {"recorded": len(body.feedback)}
