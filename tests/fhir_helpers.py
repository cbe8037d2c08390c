"""Helpers for the FHIR tests: resources written the way a hospital sends them, the R4 code
values we rely on, a validator of everything the server emits, a second empty registry, the
live server, and the command line.

The resources here are written by hand with the standard code systems (LOINC, UCUM, RxNorm,
CVX), not with the product's own mapping, so that a test reads the interface as an outside
system would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from alemwatch.fhir.models import validate
from alemwatch.store.db import get_engine, upgrade
from tests.conftest import PG_BASE
from tests.e2e.conftest import free_port, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "alemwatch"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
LAB_CATEGORY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]
}
ALEMTUZUMAB = {"system": RXNORM, "code": "1594660", "display": "alemtuzumab 10 MG/ML Injection [Lemtrada]"}
METHYLPREDNISOLONE = {"system": RXNORM, "code": "6902", "display": "methylprednisolone"}
ACICLOVIR = {"system": RXNORM, "code": "281", "display": "acyclovir"}
RECORD_TYPES = (
    "Patient",
    "Observation",
    "MedicationAdministration",
    "MedicationRequest",
    "MedicationStatement",
    "Immunization",
    "Procedure",
)

# --- resources as a hospital writes them -------------------------------------------------------


def reference(patient: str) -> dict[str, str]:
    """`urn:uuid:...` (a Patient of the same Bundle) as it is, anything else as Patient/{id}."""
    return {"reference": patient if patient.startswith("urn:") else f"Patient/{patient}"}


def patient(patient_id: str | None = None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.826.0.1.3680043.2.1143", "value": "MRN-0042"}],
        "name": [{"family": "Muster", "given": ["Erika"]}],
        "gender": "female",
        "birthDate": "1985-03-02",
    }
    if patient_id:
        resource["id"] = patient_id
    return {**resource, **extra}


def lab(
    patient_id: str,
    loinc: str,
    value: Any,
    unit: str,
    when: str,
    ref: tuple[float, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [LAB_CATEGORY],
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": reference(patient_id),
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    if ref is not None:
        resource["referenceRange"] = [
            {
                "low": {"value": ref[0], "unit": unit, "system": UCUM, "code": unit},
                "high": {"value": ref[1], "unit": unit, "system": UCUM, "code": unit},
            }
        ]
    return {**resource, **extra}


def administration(patient_id: str, coding: dict[str, str], when: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [coding]},
        "subject": reference(patient_id),
        "effectiveDateTime": when,
        **extra,
    }


def infusion(patient_id: str, when: str) -> dict[str, Any]:
    dose = {"dose": {"value": 12, "unit": "mg", "system": UCUM, "code": "mg"}}
    return administration(patient_id, ALEMTUZUMAB, when, dosage=dose)


def immunization(patient_id: str, cvx: str, display: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": CVX, "code": cvx, "display": display}]},
        "patient": reference(patient_id),
        "occurrenceDateTime": when,
    }


def prophylaxis(patient_id: str, start: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"coding": [ACICLOVIR], "text": "aciclovir 400 mg twice daily"},
        "subject": reference(patient_id),
        "effectivePeriod": {"start": start},
    }


def planned_course(patient_id: str, start: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [ALEMTUZUMAB]},
        "subject": reference(patient_id),
        "authoredOn": "2025-11-20",
        "dosageInstruction": [
            {"text": "12 mg/day IV for 3 days", "timing": {"repeat": {"boundsPeriod": {"start": start}}}}
        ],
    }


def entry(resource: dict[str, Any], method: str = "POST", full_url: str | None = None) -> dict[str, Any]:
    kind = resource["resourceType"]
    url = f"{kind}/{resource['id']}" if method == "PUT" else kind
    out: dict[str, Any] = {"fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}", "resource": resource}
    out["request"] = {"method": method, "url": url}
    return out


def bundle(entries: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def put_all(resources: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    """A Bundle of `resources` with Patients PUT by id and everything else POSTed."""
    return bundle([entry(r, "PUT" if r["resourceType"] == "Patient" else "POST") for r in resources], kind)


HOSPITAL_PATIENT = "urn:uuid:8c1f0f5e-3d2a-4b8e-9a51-7f0e2b6c4d13"
COURSE = ["2025-01-06", "2025-01-07", "2025-01-08", "2025-01-09", "2025-01-10"]


def hospital_bundle() -> dict[str, Any]:
    """One patient's first course as a hospital's EHR sends it: the Patient POSTed without an
    id under a `urn:uuid:` fullUrl that every other entry references, LOINC/UCUM results
    (creatinine in mg/dL, a cancelled result), five alemtuzumab infusions with methylprednisolone
    on the first three days, a live vaccine, aciclovir and the planned second course."""
    pid = HOSPITAL_PATIENT
    resources = [
        lab(pid, "2160-0", 0.8, "mg/dL", "2025-01-02T07:45:00+01:00"),
        lab(pid, "777-3", 212, "10*9/L", "2025-01-02T07:45:00+01:00", ref=(150, 400)),
        lab(pid, "731-0", 1.9, "10*9/L", "2025-01-02T07:45:00+01:00"),
        lab(pid, "3016-3", 1.8, "m[IU]/L", "2025-01-02"),
        lab(pid, "5804-0", 0, "{presence}", "2025-01-02"),
        lab(pid, "777-3", 85, "10*3/uL", "2025-03-10T08:10:00+01:00"),
        lab(pid, "2160-0", 1.3, "mg/dL", "2025-03-10T08:10:00+01:00"),
        lab(pid, "3016-3", 6.2, "m[IU]/L", "2025-04-10"),
        lab(pid, "718-7", 13.1, "g/dL", "2025-04-10", status="cancelled"),
        immunization(pid, "21", "varicella", "2024-10-01"),
        prophylaxis(pid, COURSE[0]),
        planned_course(pid, "2026-01-12"),
    ]
    for n, day in enumerate(COURSE):
        resources.append(infusion(pid, f"{day}T10:00:00+01:00"))
        if n < 3:
            resources.append(administration(pid, METHYLPREDNISOLONE, f"{day}T09:15:00+01:00"))
    entries = [entry(patient(), full_url=pid), *(entry(r) for r in resources)]
    return bundle(entries)


# --- the R4 codes we rely on (fhir.resources checks structure, not code values) ---------------

R4_CODES: dict[tuple[str, str], set[str]] = {
    ("Observation", "status"): {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    ("DetectedIssue", "status"): {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    ("DetectedIssue", "severity"): {"high", "moderate", "low"},
    ("Flag", "status"): {"active", "inactive", "entered-in-error"},
    ("CarePlan", "status"): {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    ("CarePlan", "intent"): {"proposal", "plan", "order", "option"},
    ("MedicationAdministration", "status"): {
        "in-progress",
        "not-done",
        "on-hold",
        "completed",
        "entered-in-error",
        "stopped",
        "unknown",
    },
    ("MedicationRequest", "status"): {
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    },
    ("MedicationRequest", "intent"): {
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    },
    ("MedicationStatement", "status"): {
        "active",
        "completed",
        "entered-in-error",
        "intended",
        "stopped",
        "on-hold",
        "unknown",
        "not-taken",
    },
    ("Immunization", "status"): {"completed", "entered-in-error", "not-done"},
    ("Procedure", "status"): {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    },
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("Bundle", "type"): {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    },
    ("CapabilityStatement", "status"): {"draft", "active", "retired", "unknown"},
    ("CapabilityStatement", "kind"): {"instance", "capability", "requirements"},
}
CAREPLAN_ACTIVITY_STATUS = {
    "not-started",
    "scheduled",
    "in-progress",
    "on-hold",
    "completed",
    "cancelled",
    "stopped",
    "unknown",
    "entered-in-error",
}
CAREPLAN_ACTIVITY_KIND = {
    "Appointment",
    "CommunicationRequest",
    "DeviceRequest",
    "MedicationRequest",
    "NutritionOrder",
    "Task",
    "ServiceRequest",
    "VisionPrescription",
}
ISSUE_SEVERITY = {"fatal", "error", "warning", "information"}
ISSUE_TYPE = {
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "security",
    "login",
    "unknown",
    "expired",
    "forbidden",
    "suppressed",
    "processing",
    "not-supported",
    "duplicate",
    "multiple-matches",
    "not-found",
    "deleted",
    "too-long",
    "code-invalid",
    "extension",
    "too-costly",
    "business-rule",
    "conflict",
    "transient",
    "lock-error",
    "no-store",
    "exception",
    "timeout",
    "incomplete",
    "throttled",
    "informational",
}
OBSERVATION_CATEGORY = {
    "social-history",
    "vital-signs",
    "imaging",
    "laboratory",
    "procedure",
    "survey",
    "exam",
    "therapy",
    "activity",
}
FLAG_CATEGORY = {
    "diet",
    "drug",
    "lab",
    "admin",
    "contact",
    "clinical",
    "behavioral",
    "research",
    "advance-directive",
    "safety",
}
SEARCH_MODE = {"match", "include", "outcome"}
TYPE_INTERACTION = {
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
}
SYSTEM_INTERACTION = {"transaction", "batch", "search-system", "history-system"}
SEARCH_PARAM_TYPE = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}
TASK_STATUS = {"done", "due", "overdue", "upcoming"}  # the contract's, carried in an extension
EXT_TASK_STATUS = "https://alemwatch.org/fhir/StructureDefinition/monitoring-task-status"


def code_problems(resource: dict[str, Any], where: str = "") -> list[str]:
    """The code values of one resource (and of the resources inside a Bundle) that R4 does not allow."""
    kind = resource.get("resourceType", "?")
    where = where or kind
    problems = []
    for (rtype, name), allowed in R4_CODES.items():
        if rtype == kind and name in resource and resource[name] not in allowed:
            problems.append(f"{where}.{name} = {resource[name]!r}")
    if kind == "Observation":
        for category in resource.get("category") or []:
            for coding in category.get("coding") or []:
                if coding["code"] not in OBSERVATION_CATEGORY:
                    problems.append(f"{where}.category = {coding['code']!r}")
        quantity = resource.get("valueQuantity")
        if quantity is not None and (quantity.get("system") != UCUM or not quantity.get("code")):
            problems.append(f"{where}.valueQuantity is not a UCUM quantity: {quantity}")
    if kind == "CarePlan":
        for n, activity in enumerate(resource.get("activity") or []):
            detail = activity.get("detail") or {}
            if detail.get("status") not in CAREPLAN_ACTIVITY_STATUS:
                problems.append(f"{where}.activity[{n}].detail.status = {detail.get('status')!r}")
            if detail.get("kind") not in CAREPLAN_ACTIVITY_KIND:
                problems.append(f"{where}.activity[{n}].detail.kind = {detail.get('kind')!r}")
            statuses = [e.get("valueCode") for e in activity.get("extension") or [] if e["url"] == EXT_TASK_STATUS]
            if len(statuses) != 1 or statuses[0] not in TASK_STATUS:
                problems.append(f"{where}.activity[{n}] task status extension = {statuses}")
    if kind == "Flag":
        for category in resource.get("category") or []:
            for coding in category.get("coding") or []:
                if coding["code"] not in FLAG_CATEGORY:
                    problems.append(f"{where}.category = {coding['code']!r}")
    if kind == "OperationOutcome":
        for n, issue in enumerate(resource.get("issue") or []):
            if issue.get("severity") not in ISSUE_SEVERITY:
                problems.append(f"{where}.issue[{n}].severity = {issue.get('severity')!r}")
            if issue.get("code") not in ISSUE_TYPE:
                problems.append(f"{where}.issue[{n}].code = {issue.get('code')!r}")
    if kind == "CapabilityStatement":
        if resource.get("fhirVersion") != "4.0.1":
            problems.append(f"{where}.fhirVersion = {resource.get('fhirVersion')!r} (R4 is 4.0.1)")
        for rest in resource.get("rest") or []:
            if rest.get("mode") not in ("client", "server"):
                problems.append(f"{where}.rest.mode = {rest.get('mode')!r}")
            for interaction in rest.get("interaction") or []:
                if interaction["code"] not in SYSTEM_INTERACTION:
                    problems.append(f"{where}.rest.interaction = {interaction['code']!r}")
            for item in rest.get("resource") or []:
                for interaction in item.get("interaction") or []:
                    if interaction["code"] not in TYPE_INTERACTION:
                        problems.append(f"{where}.rest.resource({item['type']}).interaction = {interaction['code']!r}")
                for param in item.get("searchParam") or []:
                    if param["type"] not in SEARCH_PARAM_TYPE:
                        problems.append(f"{where}.rest.resource({item['type']}).searchParam = {param['type']!r}")
    if kind == "Bundle":
        for n, item in enumerate(resource.get("entry") or []):
            mode = (item.get("search") or {}).get("mode")
            if mode is not None and mode not in SEARCH_MODE:
                problems.append(f"{where}.entry[{n}].search.mode = {mode!r}")
            response = item.get("response")
            if response is not None:
                status = str(response.get("status", ""))
                if not (len(status) >= 3 and status[:3].isdigit()):
                    problems.append(f"{where}.entry[{n}].response.status = {status!r}")
                if response.get("outcome"):
                    problems += code_problems(response["outcome"], f"{where}.entry[{n}].response.outcome")
            if item.get("resource"):
                problems += code_problems(item["resource"], f"{where}.entry[{n}].resource")
        for link in resource.get("link") or []:
            if link.get("relation") not in ("self", "next", "previous", "first", "last"):
                problems.append(f"{where}.link.relation = {link.get('relation')!r}")
    return problems


def r4_problems(resource: dict[str, Any]) -> list[str]:
    """Everything wrong with an emitted resource: fhir.resources' R4B model, fhirclient's strict
    R4 (4.0.1) model, and the R4 code values above."""
    from fhirclient.models.fhirelementfactory import FHIRElementFactory

    kind = resource.get("resourceType", "?")
    problems = []
    try:
        validate(resource)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        problems.append(f"{kind} is not valid R4B: {exc}")
    try:
        FHIRElementFactory.instantiate(kind, json.loads(json.dumps(resource))).as_json()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{kind} is not valid R4 (4.0.1): {exc}")
    return problems + code_problems(resource)


def assert_r4(*resources: dict[str, Any]) -> None:
    problems = [p for resource in resources for p in r4_problems(resource)]
    assert not problems, "\n".join(problems)


def outcome(response: Any) -> dict[str, Any]:
    """The OperationOutcome a refused request answers (valid R4, FHIR media type)."""
    assert response.headers["content-type"].startswith("application/fhir+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert_r4(body)
    return body


def expressions(body: dict[str, Any]) -> list[str]:
    return [e for issue in body["issue"] for e in issue.get("expression") or []]


# --- a second, empty registry -------------------------------------------------------------------


@contextmanager
def empty_database(like: str, directory: Path, sqlite_template: Path) -> Iterator[str]:
    """A migrated, empty registry on the backend of `like`: a copy of the migrated SQLite
    template, or a fresh PostgreSQL schema (dropped afterwards), as tests/conftest.py builds them."""
    if like.startswith("sqlite"):
        path = directory / f"second-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
        yield url
        get_engine(url).dispose()
        return
    schema = f"aw_fhir_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- the live server (started as tests/e2e/conftest.py starts it, with its helpers) --------------


@contextmanager
def live_server(db_url: str, log: Path) -> Iterator[str]:
    """uvicorn on a free 127.0.0.1 port serving `db_url`; stopped (by its own pid) afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "ALEMWATCH_DATABASE_URL": db_url,
        "ALEMWATCH_ENVIRONMENT": "test",
        "ALEMWATCH_SECRET_KEY": "fhir-secret-" + "x" * 32,
    }
    command = [sys.executable, "-m", "uvicorn", "alemwatch.api.app:app_from_env", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(process, base, log)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the command line ---------------------------------------------------------------------------


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALEMWATCH_DATABASE_URL": url, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
