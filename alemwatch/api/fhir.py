"""The FHIR R4 endpoint under /fhir: capability statement, transaction/batch, create, update,
read, search, and the exports (CarePlan, DetectedIssue, Flag, Patient/$everything).

Thin like the REST routes: mapping lives in `alemwatch.fhir`, storing in
`alemwatch.registry.fhir_store`. Every error answers an OperationOutcome."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from alemwatch import __version__
from alemwatch.api.deps import ActorDep, ProtocolDep, RawJsonRoute, SessionDep, client_ip
from alemwatch.core.assess import assess
from alemwatch.fhir import codes, outbound
from alemwatch.fhir.inbound import SUPPORTED, FhirInputError, FhirIssue
from alemwatch.protocol.model import Protocol
from alemwatch.registry import fhir_store
from alemwatch.store import audit, repo
from alemwatch.store import models as m

router = APIRouter(prefix="/fhir", route_class=RawJsonRoute)
FHIR_JSON = "application/fhir+json"
EXPORTED = ("CarePlan", "DetectedIssue", "Flag")
SEARCHABLE = (*SUPPORTED, *EXPORTED)
DATE_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4}(-\d{2}(-\d{2})?)?)$")
MAX_COUNT = 5000
MAX_ID = 200  # a patient id, as the registry stores it


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def outcome_response(status: int, issues: list[FhirIssue], headers: dict[str, str] | None = None) -> FhirResponse:
    return FhirResponse(fhir_store.operation_outcome(issues), status_code=status, headers=headers)


def _problem(code: str, message: str, expression: str, status: int = 400) -> FhirInputError:
    return FhirInputError([FhirIssue(code, message, expression)], status=status)


# --- capability ----------------------------------------------------------------------------


@router.get("/metadata", name="fhir_metadata")
def metadata(request: Request) -> FhirResponse:
    """The CapabilityStatement: what this server really does."""
    searches = {
        "Patient": [("_id", "token"), ("identifier", "token")],
        "Observation": [("patient", "reference"), ("subject", "reference"), ("code", "token"), ("date", "date")],
    }
    default = [("patient", "reference"), ("subject", "reference"), ("date", "date")]
    resources = []
    for kind in SEARCHABLE:
        interactions = ["read", "search-type"] + (["create", "update"] if kind in SUPPORTED else [])
        entry: dict[str, Any] = {
            "type": kind,
            "interaction": [{"code": i} for i in interactions],
            "updateCreate": kind != "Patient",
            "searchParam": [{"name": n, "type": t} for n, t in searches.get(kind, default)],
        }
        if kind == "Patient":
            entry["operation"] = [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
            ]
        resources.append(entry)
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": dt.date.today().isoformat(),
        "kind": "instance",
        "software": {"name": "alemwatch", "version": __version__},
        "implementation": {"description": "alemwatch registry: alemtuzumab safety monitoring", "url": _base(request)},
        "fhirVersion": codes.FHIR_VERSION,
        "format": ["json", FHIR_JSON],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Writes: transaction (all or nothing) and batch (each patient's entries together) Bundles of "
                    f"at most {fhir_store.MAX_ENTRIES} entries, create and update. Observations need a LOINC code "
                    "the protocol "
                    "follows and a UCUM unit. Search results are one page of _count (default 500)."
                ),
                "security": {
                    "description": (
                        "Bearer tokens from POST /api/auth/token (roles clinician and nurse); every access is audited."
                    )
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }
    return FhirResponse(statement)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


# --- writes --------------------------------------------------------------------------------


@router.post("", name="fhir_transaction")
def transaction(
    bundle: Annotated[Any, Body(media_type=FHIR_JSON)],
    session: SessionDep,
    protocol: ProtocolDep,
    actor: ActorDep,
    request: Request,
) -> FhirResponse:
    """A transaction (all or nothing) or batch Bundle of Patient, Observation,
    MedicationAdministration, MedicationRequest, MedicationStatement, Immunization, Procedure."""
    response, written = fhir_store.transaction_bundle(
        session, bundle, protocol, actor.label, dt.date.today(), _base(request)
    )
    audit.record(
        session,
        actor,
        "create",
        "/fhir",
        None,
        ip=client_ip(request),
        patient_ids=written,
        entries=len(response["entry"]),
    )
    return FhirResponse(response)


def _single(
    session: Session, protocol: Protocol, actor: Any, request: Request, resource: Any, method: str, url: str
) -> FhirResponse:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": resource, "request": {"method": method, "url": url}}],
    }
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    name = kind if kind in SUPPORTED else "Resource"
    if method == "PUT" and isinstance(resource, dict) and resource.get("id") not in (None, url.split("/")[-1]):
        # FHIR update: an id in the body other than the one in the address SHALL be a 400.
        raise _problem(
            "invalid", f"the resource's id is not {url.split('/')[-1]!r}, the id in the address", f"{name}.id"
        )
    if kind in SUPPORTED and kind != url.split("/")[0]:
        raise _problem(
            "invalid", f"{url.split('/')[0]} takes a {url.split('/')[0]}, got a {kind}", "Resource.resourceType", 422
        )
    try:
        response, written = fhir_store.transaction_bundle(
            session, bundle, protocol, actor.label, dt.date.today(), _base(request)
        )
    except FhirInputError as exc:  # name the element in the resource sent, not in the Bundle made of it
        issues = [
            FhirIssue(
                i.code,
                i.diagnostics,
                i.expression.replace("Bundle.entry[0].resource", name).replace(
                    "Bundle.entry[0].request.url", f"{name}.id"
                ),
                i.severity,
            )
            for i in exc.issues
        ]
        raise FhirInputError(issues, exc.status) from None
    entry = response["entry"][0]["response"]
    audit.record(session, actor, "create", f"/fhir/{url}", written[0] if written else None, ip=client_ip(request))
    if "location" not in entry:  # stored nothing: not about alemtuzumab (the outcome says why)
        outcome = entry.get("outcome") or {}
        for issue in outcome.get("issue") or []:
            issue["expression"] = [e.replace("Bundle.entry[0].resource", name) for e in issue.get("expression") or []]
        return FhirResponse(outcome, status_code=200)
    kind, rid = entry["location"].split("/", 1)
    body = _read(session, protocol, kind, rid, written[0] if written and kind != "Patient" else None)
    status = int(entry["status"].split()[0])  # 201 when it was created, 200 when it was there already
    return FhirResponse(body, status_code=status, headers={"Location": f"{_base(request)}/{entry['location']}"})


@router.post("/{resource_type}", name="fhir_create", status_code=201)
def create(
    resource_type: str,
    resource: Annotated[Any, Body(media_type=FHIR_JSON)],
    session: SessionDep,
    protocol: ProtocolDep,
    actor: ActorDep,
    request: Request,
) -> FhirResponse:
    _writable(resource_type)
    return _single(session, protocol, actor, request, resource, "POST", resource_type)


@router.put("/{resource_type}/{resource_id}", name="fhir_update")
def update(
    resource_type: str,
    resource_id: str,
    resource: Annotated[Any, Body(media_type=FHIR_JSON)],
    session: SessionDep,
    protocol: ProtocolDep,
    actor: ActorDep,
    request: Request,
) -> FhirResponse:
    _writable(resource_type)
    if resource_type == "Patient" and session.get(m.Patient, resource_id) is None:
        # No update-as-create for patients (a mistyped id must not start a new record): POST creates.
        raise _problem("not-found", f"Patient/{resource_id} not found; create it with POST", "Patient.id", 404)
    return _single(session, protocol, actor, request, resource, "PUT", f"{resource_type}/{resource_id}")


def _writable(resource_type: str) -> None:
    if resource_type not in SUPPORTED:
        raise _problem(
            "not-supported",
            f"{resource_type} cannot be written here; use one of {', '.join(SUPPORTED)}",
            resource_type,
            404,
        )


# --- reads ---------------------------------------------------------------------------------


def patient_resources(
    session: Session, protocol: Protocol, patient_id: str, today: dt.date | None = None
) -> list[dict[str, Any]] | None:
    """Every resource of one patient: the record, the monitoring CarePlan, DetectedIssues, Flags."""
    data = repo.patient_file(session, patient_id, ids=True)
    if data is None:
        return None
    resources = outbound.record_resources(data, protocol)
    stored = repo.load_patient(session, patient_id, protocol)
    assert stored is not None
    result = assess(stored, protocol, today or dt.date.today())
    resources.append(outbound.care_plan(result, protocol))
    resources += outbound.detected_issues(result)
    alerts = (
        select(m.Alert)
        .where(m.Alert.patient_id == patient_id, m.Alert.status != "resolved")
        .order_by(m.Alert.raised_at)
    )
    resources += [outbound.flag(_alert(a)) for a in session.execute(alerts).scalars()]
    return resources


def _alert(alert: m.Alert) -> dict[str, Any]:
    raised = alert.raised_at if alert.raised_at.tzinfo else alert.raised_at.replace(tzinfo=dt.UTC)
    return {
        "id": alert.id,
        "patient_id": alert.patient_id,
        "kind": alert.kind,
        "code": alert.code,
        "severity": alert.severity,
        "message": alert.message,
        "raised_at": raised.isoformat(timespec="seconds"),
    }


def _of_type(session: Session, protocol: Protocol, patient_id: str, kind: str) -> list[dict[str, Any]] | None:
    if kind == "Patient":
        data = repo.patient_file(session, patient_id)
        return None if data is None else [outbound.patient(data)]
    if kind in EXPORTED:
        found = patient_resources(session, protocol, patient_id)
    else:
        data = repo.patient_file(session, patient_id, ids=True)
        found = None if data is None else outbound.record_resources(data, protocol)
    return None if found is None else [r for r in found if r["resourceType"] == kind]


def _read(
    session: Session, protocol: Protocol, kind: str, resource_id: str, patient_id: str | None = None
) -> dict[str, Any]:
    """One resource by id; `patient_id` when it is known (a record of a patient whose id cannot
    lead a FHIR id has a hashed id that names no patient: see `outbound.record_id`)."""
    if patient_id is None:
        patient_id = resource_id if kind == "Patient" else (outbound.split_id(resource_id) or ("", ""))[0]
    for resource in _of_type(session, protocol, patient_id, kind) or []:
        if resource["id"] == resource_id:
            return resource
    raise _problem("not-found", f"{kind}/{resource_id} not found", f"{kind}/{resource_id}", 404)


@router.get("/Patient/{patient_id}/$everything", name="fhir_everything")
def everything(
    patient_id: str, session: SessionDep, protocol: ProtocolDep, actor: ActorDep, request: Request
) -> FhirResponse:
    """The whole record of one patient, with what the engine concludes, as a searchset Bundle."""
    resources = patient_resources(session, protocol, patient_id)
    if resources is None:
        raise _problem("not-found", f"Patient/{patient_id} not found", f"Patient/{patient_id}", 404)
    audit.record(session, actor, "read", "/fhir/Patient/$everything", patient_id, ip=client_ip(request))
    return FhirResponse(_searchset(request, resources, len(resources)))


@router.get("/{resource_type}/{resource_id}", name="fhir_read")
def read(
    resource_type: str, resource_id: str, session: SessionDep, protocol: ProtocolDep, actor: ActorDep, request: Request
) -> FhirResponse:
    _searchable(resource_type)
    resource = _read(session, protocol, resource_type, resource_id)
    patient_id = (
        resource_id
        if resource_type == "Patient"
        else resource["subject" if "subject" in resource else "patient"]["reference"].split("/")[1]
    )
    audit.record(session, actor, "read", f"/fhir/{resource_type}", patient_id, ip=client_ip(request))
    return FhirResponse(resource)


def _searchable(resource_type: str) -> None:
    if resource_type not in SEARCHABLE:
        raise _problem(
            "not-supported",
            f"{resource_type} is not served here; use one of {', '.join(SEARCHABLE)}",
            resource_type,
            404,
        )


@router.get("/{resource_type}", name="fhir_search")
def search(
    resource_type: str, session: SessionDep, protocol: ProtocolDep, actor: ActorDep, request: Request
) -> FhirResponse:
    """Search: `patient` (or `subject`) for every type but Patient; `code` (system|code, comma
    for any of several) and `date` (with ge/le/gt/lt/eq prefixes, repeatable); `_count`, `_offset`."""
    _searchable(resource_type)
    params = request.query_params
    known = {"patient", "subject", "code", "date", "_count", "_offset", "_id", "identifier", "_format"}
    for name in params:
        if name not in known:
            raise _problem("not-supported", f"search parameter {name!r} is not supported", name)
    count, offset = (
        _int(params.get("_count"), "_count", 500, 0, MAX_COUNT),
        _int(params.get("_offset"), "_offset", 0, 0, 10**9),
    )
    if resource_type == "Patient":
        ids = _patient_ids(session, params.get("_id") or params.get("identifier"), count, offset)
        resources = [r for pid in ids for r in _of_type(session, protocol, pid, "Patient") or []]
        total = len(resources) if params.get("_id") or params.get("identifier") else repo.count_patients(session, None)
        audit.record(session, actor, "read", "/fhir/Patient", None, ip=client_ip(request), patient_ids=ids[:500])
        return FhirResponse(_searchset(request, resources, total, count, offset))
    name = "patient" if "patient" in params else "subject"
    reference = params.get(name)
    if not reference:
        raise _problem("required", f"searching {resource_type} needs the patient parameter", "patient")
    if len(params.getlist("patient") + params.getlist("subject")) > 1:
        raise _problem("not-supported", "one patient per search (patient or subject, once)", name)
    patient_id = reference.split("/")[-1]
    if not patient_id or len(patient_id) > MAX_ID:
        raise _problem("value", f"{name}: a Patient id is 1 to {MAX_ID} characters", name)
    found = _of_type(session, protocol, patient_id, resource_type) or []
    if "code" in params:
        wanted = [_token(t) for t in params["code"].split(",")]
        found = [r for r in found if any(_has_code(r, system, code) for system, code in wanted)]
    for value in params.getlist("date"):
        _date_matches({}, value)  # a malformed date is refused even when there is nothing to compare it with
        found = [r for r in found if _date_matches(r, value)]
    audit.record(
        session, actor, "read", f"/fhir/{resource_type}", patient_id, ip=client_ip(request), results=len(found)
    )
    return FhirResponse(_searchset(request, found[offset : offset + count], len(found), count, offset))


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise _problem("value", f"{name} must be a whole number from {low} to {high}", name)
    return int(value)


def _patient_ids(session: Session, wanted: str | None, count: int, offset: int) -> list[str]:
    if wanted:
        ids = [w.split("|")[-1] for w in wanted.split(",")]
        return [i for i in ids if session.get(m.Patient, i) is not None]
    return list(session.execute(select(m.Patient.id).order_by(m.Patient.id).limit(count).offset(offset)).scalars())


def _token(value: str) -> tuple[str | None, str]:
    system, bar, code = value.partition("|")
    return (system, code) if bar else (None, value)


def _has_code(resource: dict[str, Any], system: str | None, code: str) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("code") == code and (system is None or c.get("system") == system) for c in codings)


def _when(resource: dict[str, Any]) -> str | None:
    for key in ("effectiveDateTime", "occurrenceDateTime", "performedDateTime", "identifiedDateTime"):
        if resource.get(key):
            return str(resource[key])[:10]
    for key in ("effectivePeriod", "period"):
        if resource.get(key):
            return str(resource[key]["start"])[:10]
    return None


def _date_matches(resource: dict[str, Any], value: str) -> bool:
    match = DATE_PREFIX.match(value)
    if not match:
        raise _problem("value", f"date {value!r} must be [prefix]YYYY[-MM[-DD]]", "date")
    prefix, day = match.group(1) or "eq", match.group(2)
    year, month, date = ([int(part) for part in day.split("-")] + [1, 1])[:3]
    try:  # a real month and day ("2025-13-45" is no date)
        dt.date(year, month, date)
    except ValueError:
        raise _problem("value", f"date {value!r} is not a calendar date", "date") from None
    when = _when(resource)
    if when is None:
        return False
    stamp = when[: len(day)]
    return {
        "eq": stamp == day,
        "ne": stamp != day,
        "gt": stamp > day,
        "sa": stamp > day,
        "lt": stamp < day,
        "eb": stamp < day,
        "ge": stamp >= day,
        "le": stamp <= day,
    }[prefix]


def _searchset(
    request: Request, resources: list[dict[str, Any]], total: int, count: int = MAX_COUNT, offset: int = 0
) -> dict[str, Any]:
    base = _base(request)
    links = [{"relation": "self", "url": str(request.url)}]
    if count and offset + count < total:  # _count=0 asks for the total only: no next page (it would be this one)
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]
        query.append(("_offset", str(offset + count)))
        links.append({"relation": "next", "url": str(request.url.replace(query=urlencode(query)))})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }
