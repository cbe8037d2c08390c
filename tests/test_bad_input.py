"""Bad input on every endpoint gets a 4xx naming the field, never a 500, and changes nothing stored.

The cases are generated from the application's route table: every path parameter, query
parameter and body of every route is attacked (wrong JSON types, unknown fields, malformed and
empty bodies, bodies over the size limit, bad dates, injection strings, negative and huge
numbers, unknown enum values, ids that do not exist, and for patient files unknown keys, units
and tests and non-numeric values). The web pages' forms (read by a dependency, so invisible in
the route table) have a valid form here, and each of its fields is spoilt in turn. A route,
parameter or field type without a recipe here fails.

Each rejected request must leave every table (but audit_events and login_attempts, which record
the attempt) and the stored patient file of p-001 exactly as they were.

Injection strings that are valid input are stored verbatim and harmlessly (the last tests).

One registry is built per backend (module scope, the same fresh-database recipe as the `db_url`
fixture): a rejected request changes nothing, so the cases can share it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import annotated_types as at
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import inspect, select, text

from alemwatch.api.app import create_app
from alemwatch.api.policy import POLICY
from alemwatch.settings import Settings
from alemwatch.store import models as m
from alemwatch.store.db import get_engine
from tests.conftest import PASSWORD, TABLES, make_user, token_for

EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())
SQL = "p-001'; DROP TABLE patients;--"
SCRIPT = "<script>alert(1)</script>"
NUL = "p-001\x00"
MAX_BODY = Settings(database_url="sqlite://").max_body_bytes  # the default; the registry below keeps it
GROWING_TABLES = {"audit_events", "login_attempts"}  # a refused attempt may be recorded


# --- the route table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    metadata: tuple[Any, ...]
    required: bool


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    path_params: tuple[Param, ...]
    query_params: tuple[Param, ...]
    body_params: tuple[Param, ...]


def _params(fields: list[Any]) -> tuple[Param, ...]:
    return tuple(
        Param(f.name, f.field_info.annotation, tuple(f.field_info.metadata), f.field_info.is_required()) for f in fields
    )


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every route (API and pages, not the docs), one per method. `iter_route_contexts` flattens the
    included routers, which recent FastAPI keeps as one lazy entry each in `app.routes`."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            d = route.dependant
            for method in sorted(context.methods or ()):
                found.append(
                    Endpoint(
                        context.name,
                        method,
                        context.path_format,
                        _params(d.path_params),
                        _params(d.query_params),
                        _params(d.body_params),
                    )
                )
    return found


ENDPOINTS = {e.name: e for e in endpoints(create_app(Settings(database_url="sqlite://", environment="test")))}


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X (other annotations unchanged)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bound(metadata: tuple[Any, ...], kind: type, attribute: str) -> Any:
    return next((getattr(item, attribute) for item in metadata if isinstance(item, kind)), None)


# --- valid requests, to spoil one part at a time --------------------------------------------------


def patient_file(patient_id: str = "p-001") -> dict[str, Any]:
    return {**json.loads(json.dumps(EXAMPLE)), "id": patient_id}


Body = Callable[[dict[str, str]], Any] | None  # path params -> JSON body; None: the route reads no body

# A valid body per route that takes one (given the path parameters). A body route missing here fails.
VALID_BODIES: dict[str, Body] = {
    "logout": None,
    "login": lambda p: {"username": "clin", "password": PASSWORD},
    "issue_token": lambda p: {"username": "clin", "password": PASSWORD},
    "assess_file": lambda p: patient_file("p-assess"),
    "triage": lambda p: {"text": "a rash on my arms", "days_since_infusion": 3, "patient_id": "p-001"},
    "create_patient": lambda p: patient_file("p-new"),
    "update_patient": lambda p: patient_file(p["patient_id"]),
    "add_symptom_report": lambda p: {"text": "a rash on my arms", "date": "2026-01-05"},
    "acknowledge_alert": lambda p: {"reason": "called the patient"},
    "resolve_alert": lambda p: {"reason": "seen by haematology"},
    "add_records": lambda p: [VALID_RECORDS.get(p["kind"], VALID_RECORDS["labs"])],
    "fhir_transaction": lambda p: {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _tsh_observation(), "request": {"method": "POST", "url": "Observation"}}],
    },
    "fhir_create": lambda p: _tsh_observation() if p.get("resource_type") == "Observation" else _fhir_patient(),
    "fhir_update": lambda p: _fhir_patient(p.get("resource_id", "p-001")),
    "cds_service": lambda p: {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": "p-001"},
        "prefetch": {"patient": _fhir_patient()}
        | {key: {"resourceType": "Bundle", "type": "searchset", "entry": []} for key in CDS_SEARCHES},
    },
    "cds_feedback": lambda p: {
        "feedback": [{"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-05T10:00:00Z"}]
    },
}
CDS_SEARCHES = ("observations", "administrations", "requests", "statements", "immunizations", "procedures")


def _tsh_observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "3016-3"}]},
        "subject": {"reference": "Patient/p-001"},
        "effectiveDateTime": "2026-01-05",
        "valueQuantity": {"value": 2.0, "unit": "m[IU]/L", "system": "http://unitsofmeasure.org", "code": "m[IU]/L"},
    }


def _fhir_patient(patient_id: str = "p-001") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "gender": "female", "birthDate": "1985-03-02"}


VALID_RECORDS: dict[str, dict[str, Any]] = {
    "labs": {"id": "lab-bad-input", "test": "platelets", "value": 180, "unit": "10*9/L", "date": "2026-01-05"},
    "exams": {"type": "skin", "date": "2026-01-05"},
    "vaccinations": {"vaccine": "influenza", "live": False, "date": "2026-01-05"},
    "infusions": {"date": "2026-01-05"},
    "prophylaxis": {"kind": "herpes", "drug": "aciclovir", "start": "2026-01-05"},
}
RECENT = (dt.date.today() - dt.timedelta(days=30)).isoformat()  # forms refuse dates in the future
# A valid form per web route that reads one. A POST route with neither a body nor a form here fails.
VALID_FORMS: dict[str, dict[str, str]] = {
    "web_login": {"username": "clin", "password": PASSWORD},
    "web_logout": {},
    "web_create_patient": {"id": "p-web", "sex": "female", "hiv": "negative", "tuberculosis": "negative"},
    "web_add_lab": {"test": "tsh", "value": "2.0", "unit": "m[IU]/L", "date": RECENT},
    "web_add_infusion": {"date": RECENT, "premedication": "yes", "infusion_end": "10:00", "observation_end": "12:30"},
    "web_add_exam": {"type": "skin", "date": RECENT},
    "web_add_vaccination": {"vaccine": "influenza", "live": "no", "date": RECENT},
    "web_change_prophylaxis": {"drug": "aciclovir", "start": RECENT},
    "web_acknowledge": {"reason": "called the patient"},
    "web_resolve": {"reason": "seen by haematology"},
    "web_portal_report": {"text": "a rash on my arms", "date": RECENT},
}
FORM_TYPE = "application/x-www-form-urlencoded"
# Routes whose body is a contract patient file (validated by alemwatch.core.patient, errors as `field`).
PATIENT_FILE_ROUTES = {"assess_file", "create_patient", "update_patient"}


# --- the cases ----------------------------------------------------------------------------------


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


KEEP: Any = _Marker("KEEP")  # send the route's valid body
NO_BODY: Any = _Marker("NO_BODY")  # send no body at all
DELETE: Any = _Marker("DELETE")  # (a value for _spoil) remove the key


@dataclass(frozen=True)
class Case:
    id: str
    route: str
    path: dict[str, str] = field(default_factory=dict)  # path parameters replacing the valid ones
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = KEEP  # a JSON value, or a function of the valid body (or form) returning one
    raw: bytes | Callable[[], Iterator[bytes]] | None = None  # sent as is (a callable: chunked, no length)
    status: int | None = 422  # None: any 4xx
    field: str | None = None  # the field the answer must name
    detail: str | None = None  # a text the answer must contain
    may_succeed: bool = False  # valid but odd input: a 2xx is fine too (only a 5xx is wrong)
    problem: str | None = None  # no recipe for this part of the route: the case fails, saying so


def _spoil(path: str, value: Any) -> Callable[[Any], Any]:
    """A function setting (or, with value DELETE, removing) `path` ("labs.0.unit") in a copy of a body."""

    def spoil(body: Any) -> Any:
        body = json.loads(json.dumps(body))
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) else last
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
        return body

    return spoil


HUGE_INT = 10**400  # no float can hold it
HUGE = 10**30


def _value_cases(annotation: Any, metadata: tuple[Any, ...], in_query: bool) -> list[tuple[str, Any, bool]] | None:
    """(label, bad value, may_succeed) for one parameter or field, chosen by its type; None: no recipe."""
    kind = _unwrap_optional(annotation)
    if kind is str:
        if in_query:  # any text is a string here: odd text must be answered, never a 500
            cases = [("sql", SQL, True), ("script", SCRIPT, True), ("nul", "x\x00", True)]
        else:
            cases = [("number", 12345, False), ("list", ["x"], False), ("object", {"x": 1}, False)]
        if (low := _bound(metadata, at.MinLen, "min_length")) is not None and low > 0:
            cases.append(("empty", "", False))
        if (high := _bound(metadata, at.MaxLen, "max_length")) is not None:
            cases.append(("too-long", "x" * (high + 1), False))
        return cases
    if kind is int:
        cases = [("text", "abc", False), ("fraction", "1.5" if in_query else 1.5, False), ("huge", HUGE, False)]
        if not in_query:
            cases.append(("huge-beyond-float", HUGE_INT, False))
        if (low := _bound(metadata, at.Ge, "ge")) is not None:
            cases.append(("below-minimum", low - 1, False))
        if (high := _bound(metadata, at.Le, "le")) is not None:
            cases.append(("above-maximum", high + 1, False))
        return cases
    if kind is dt.date:
        return [
            ("impossible-date", "2025-13-40", False),
            ("word-date", "yesterday", False),
            ("number-date", "20250101" if in_query else 20250101, False),
            ("far-future-date", "9999-12-31", True),  # real dates: accepted or refused, never a 500
            ("far-past-date", "0001-01-01", True),
        ]
    if typing.get_origin(kind) is typing.Literal:
        return [("unknown-value", "bogus", False), ("sql", SQL, False)]
    if kind is bool:
        return [("text", "maybe", False)]
    if kind is dt.datetime:
        return [("word-time", "yesterday", False), ("number-time", 20250101, False)]
    if kind is dict or typing.get_origin(kind) is dict or (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return [("list", ["x"], False), ("string", "x", False)]
    if typing.get_origin(kind) is list:
        return [("string", "x", False), ("object", {"x": 1}, False)]
    return None


PATH_VALUES: dict[str, list[tuple[str, str, int | None, str | None]]] = {
    # label, value, status (None: any 4xx), detail or field
    "patient_id": [
        ("unknown", "p-404", 404, "not found"),
        ("sql", SQL, 404, "not found"),
        ("script", SCRIPT, None, None),  # its "/" splits the path: any 4xx
        ("nul", NUL, None, None),
    ],
    "alert_id": [
        ("unknown", "a-404", 404, "not found"),
        ("sql", SQL, 404, "not found"),
        ("nul", "a\x00", None, None),
    ],
    "kind": [("unknown", "bogus", 422, "kind"), ("sql", SQL, 422, "kind"), ("script", SCRIPT, None, None)],
    "resource_type": [("unknown", "Banana", 404, "not"), ("sql", SQL, 404, "not"), ("nul", "Patient\x00", None, None)],
    "resource_id": [("unknown", "p-404", 404, "not found"), ("sql", SQL, None, None), ("nul", "p\x00", None, None)],
    "service_id": [("unknown", "bogus", 404, "no CDS service"), ("sql", SQL, 404, "no CDS service")],
}


def path_cases(endpoint: Endpoint) -> list[Case]:
    cases = []
    for param in endpoint.path_params:
        if param.name not in PATH_VALUES:
            cases.append(
                Case(f"{endpoint.name}-path-{param.name}", endpoint.name, problem="no bad values in PATH_VALUES")
            )
            continue
        for label, value, status, named in PATH_VALUES[param.name]:
            is_field = status == 422
            cases.append(
                Case(
                    f"{endpoint.name}-path-{param.name}-{label}",
                    endpoint.name,
                    path={param.name: value},
                    status=status,
                    field=named if is_field else None,
                    detail=None if is_field else named,
                )
            )
    return cases


def query_cases(endpoint: Endpoint) -> list[Case]:
    cases = []
    for param in endpoint.query_params:
        values = _value_cases(param.annotation, param.metadata, in_query=True)
        if values is None:
            cases.append(Case(f"{endpoint.name}-query-{param.name}", endpoint.name, problem="no recipe for its type"))
            continue
        opaque = (endpoint.name, param.name) in OPAQUE_QUERY
        for label, value, may_succeed in values:
            cases.append(
                Case(
                    f"{endpoint.name}-query-{param.name}-{label}",
                    endpoint.name,
                    query={param.name: value},
                    status=None if opaque else 422,
                    field=None if opaque else param.name,
                    may_succeed=may_succeed,
                )
            )
    return cases


# OAuth values no server can check by their content (an EHR's launch token, an authorization
# code): odd text is refused for what is missing beside it, any 4xx, never a 500.
OPAQUE_QUERY = {("web_smart_launch", "launch"), ("web_smart_callback", "code")}


def model_cases(endpoint: Endpoint, model: type[BaseModel], required: bool) -> list[Case]:
    """A body that is one pydantic model: every field spoiled in turn, unknown and missing fields."""
    name = endpoint.name
    cases = [
        Case(f"{name}-body-unknown-field", name, body=_spoil("evil", "x"), field="evil"),
        Case(f"{name}-body-list", name, body=["x"], field="body"),
        Case(f"{name}-body-string", name, body="x", field="body"),
    ]
    if required:
        cases.append(Case(f"{name}-body-null", name, body=None, field="body"))
    for field_name, info in model.model_fields.items():
        if info.is_required():
            cases.append(
                Case(f"{name}-body-{field_name}-missing", name, body=_spoil(field_name, DELETE), field=field_name)
            )
        values = _value_cases(info.annotation, tuple(info.metadata), in_query=False)
        if values is None:
            cases.append(Case(f"{name}-body-{field_name}", name, problem=f"no recipe for {info.annotation}"))
            continue
        for label, value, may_succeed in values:
            cases.append(
                Case(
                    f"{name}-body-{field_name}-{label}",
                    name,
                    body=_spoil(field_name, value),
                    field=field_name,
                    may_succeed=may_succeed,
                )
            )
    return cases


# Spoilt patient files: (label, path in the file, bad value, the field the answer must name).
PATIENT_FILE_CASES: list[tuple[str, str, Any, str]] = [
    ("unknown-key", "colour", "red", "colour"),
    ("id-number", "id", 123, "id"),
    ("id-empty", "id", "", "id"),
    ("id-too-long", "id", "p" * 201, "id"),
    ("sex-unknown-value", "sex", "robot", "sex"),
    ("birth-date-impossible", "birth_date", "2025-13-40", "birth_date"),
    ("birth-date-word", "birth_date", "yesterday", "birth_date"),
    ("birth-date-number", "birth_date", 20250101, "birth_date"),
    ("screening-unknown-key", "screening.colour", "red", "screening.colour"),
    ("screening-unknown-value", "screening.hiv", "maybe", "screening.hiv"),
    ("screening-not-object", "screening", "negative", "screening"),
    ("labs-not-list", "labs", "none", "labs"),
    ("lab-unknown-key", "labs.0.colour", "red", "labs[0].colour"),
    ("lab-unknown-unit", "labs.0.unit", "furlongs", "labs[0].unit"),
    ("lab-unknown-test", "labs.1.test", "unobtainium", "labs[1].test"),
    ("lab-value-text", "labs.0.value", "eighty", "labs[0].value"),
    ("lab-value-missing", "labs.0.value", DELETE, "labs[0].value"),
    ("lab-value-boolean", "labs.0.value", True, "labs[0].value"),
    ("lab-value-negative", "labs.0.value", -5, "labs[0].value"),
    ("lab-value-huge", "labs.0.value", HUGE_INT, "labs[0].value"),
    ("lab-value-nan", "labs.0.value", float("nan"), "labs[0].value"),
    ("lab-ref-low-huge", "labs.0.ref_low", HUGE_INT, "labs[0].ref_low"),
    ("lab-ref-high-infinity", "labs.0.ref_high", float("inf"), "labs[0].ref_high"),
    ("lab-date-impossible", "labs.0.date", "2025-02-30", "labs[0].date"),
    ("infusion-date-word", "infusions.0.date", "yesterday", "infusions[0].date"),
    ("infusion-repeated-date", "infusions.1.date", "2025-01-06", "infusions"),
    ("infusion-minutes-negative", "infusions.0.observation_minutes", -1, "infusions[0].observation_minutes"),
    ("infusion-minutes-huge", "infusions.0.observation_minutes", HUGE, "infusions[0].observation_minutes"),
    ("infusion-minutes-text", "infusions.0.observation_minutes", "ninety", "infusions[0].observation_minutes"),
    ("reaction-unknown-severity", "infusions.0.reactions.0.severity", "dire", "infusions[0].reactions[0].severity"),
    ("reaction-onset-huge", "infusions.0.reactions.0.onset_hours", HUGE_INT, "infusions[0].reactions[0].onset_hours"),
    (
        "reaction-onset-infinity",
        "infusions.0.reactions.0.onset_hours",
        float("inf"),
        "infusions[0].reactions[0].onset_hours",
    ),
    ("vaccination-live-text", "vaccinations.0.live", "maybe", "vaccinations[0].live"),
    ("prophylaxis-unknown-kind", "prophylaxis.0.kind", "measles", "prophylaxis[0].kind"),
    ("prophylaxis-stop-before-start", "prophylaxis.0.stop", "2024-01-01", "prophylaxis[0]"),
    ("exam-result-too-long", "exams.0.result", "x" * 2001, "exams[0].result"),
    ("symptom-text-empty", "symptoms.0.text", "", "symptoms[0].text"),
]


def patient_file_cases(endpoint: Endpoint) -> list[Case]:
    name = endpoint.name
    cases = [
        Case(f"{name}-file-{label}", name, body=_spoil(path, value), field=named)
        for label, path, value, named in PATIENT_FILE_CASES
    ]
    cases.append(Case(f"{name}-file-list", name, body=[patient_file()], field="body"))
    return cases


# Spoilt records for POST /patients/{id}/{kind}: (label, kind, records, the field the answer must name).
RECORD_CASES: list[tuple[str, str, Any, str]] = [
    ("lab-unknown-unit", "labs", [{**VALID_RECORDS["labs"], "unit": "furlongs"}], "labs[0].unit"),
    ("lab-unknown-test", "labs", [{**VALID_RECORDS["labs"], "test": "unobtainium"}], "labs[0].test"),
    ("lab-value-text", "labs", [{**VALID_RECORDS["labs"], "value": "eighty"}], "labs[0].value"),
    ("lab-value-null", "labs", [{**VALID_RECORDS["labs"], "value": None}], "labs[0].value"),
    ("lab-value-huge", "labs", [{**VALID_RECORDS["labs"], "value": HUGE_INT}], "labs[0].value"),
    ("lab-ref-high-infinity", "labs", [{**VALID_RECORDS["labs"], "ref_high": float("inf")}], "labs[0].ref_high"),
    ("lab-unknown-key", "labs", [{**VALID_RECORDS["labs"], "colour": "red"}], "labs[0].colour"),
    ("lab-id-empty", "labs", [{**VALID_RECORDS["labs"], "id": ""}], "labs[0].id"),
    ("lab-date-word", "labs", [{**VALID_RECORDS["labs"], "date": "yesterday"}], "labs[0].date"),
    ("lab-date-number", "labs", [{**VALID_RECORDS["labs"], "date": 20250101}], "labs[0].date"),
    ("lab-second-bad", "labs", [VALID_RECORDS["labs"], {**VALID_RECORDS["labs"], "unit": "x"}], "labs[1].unit"),
    ("no-records", "labs", [], "labs"),
    ("too-many-records", "labs", [{**VALID_RECORDS["labs"], "id": f"lab-{n}"} for n in range(5001)], "labs"),
    ("exam-type-number", "exams", [{**VALID_RECORDS["exams"], "type": 1}], "exams[0].type"),
    ("vaccine-missing", "vaccinations", [{"live": False, "date": "2026-01-05"}], "vaccinations[0].vaccine"),
    ("infusion-date-impossible", "infusions", [{"date": "2025-13-40"}], "infusions[0].date"),
    ("prophylaxis-unknown-kind", "prophylaxis", [{**VALID_RECORDS["prophylaxis"], "kind": "x"}], "prophylaxis[0].kind"),
]


def record_cases(endpoint: Endpoint) -> list[Case]:
    name = endpoint.name
    cases = [
        Case(f"{name}-{kind}-{label}", name, path={"kind": kind}, body=records, field=named)
        for label, kind, records, named in RECORD_CASES
    ]
    cases += [
        Case(f"{name}-records-not-objects", name, body=["x"], status=422),
        Case(f"{name}-records-string", name, body="x", status=422),
    ]
    return cases


def _chunked_oversize() -> Iterator[bytes]:
    yield b'{"text": "'
    yield b"x" * (MAX_BODY + 1)
    yield b'"}'


def oversize_cases(name: str) -> list[Case]:
    """A body over settings.max_body_bytes, with its length announced, and sent in chunks without one."""
    return [
        Case(f"{name}-raw-over-size-limit", name, raw=b"x" * (MAX_BODY + 1), status=413),
        Case(f"{name}-raw-over-size-limit-chunked", name, raw=_chunked_oversize, status=413),
    ]


def raw_body_cases(endpoint: Endpoint, required: bool) -> list[Case]:
    """Bodies that are not JSON, too deep, too big, or missing."""
    name = endpoint.name
    cases = [
        Case(f"{name}-raw-malformed-json", name, raw=b'{"text": "unfinished', detail="body"),
        Case(f"{name}-raw-not-json", name, raw=b"text=hello", detail="body"),
        Case(f"{name}-raw-bad-utf8", name, raw=b'{"text": "\xff\xfe"}', status=None),
        Case(f"{name}-raw-too-deep", name, raw=b"[" * 100_000 + b"]" * 100_000, status=None),
        *oversize_cases(name),
    ]
    if required:
        cases.append(Case(f"{name}-raw-empty", name, body=NO_BODY, field="body"))
    return cases


FORM_VALUES = [("missing", DELETE), ("too-long", "x" * 10_001), ("nul", "x\x00")]


def form_cases(endpoint: Endpoint) -> list[Case]:
    """Each field of the route's valid form spoilt in turn. A form is text the page checks itself:
    it may be accepted, or refused (changing nothing), never a 500."""
    name = endpoint.name
    cases = []  # (unknown fields are ignored, as by any HTML form: nothing to refuse)
    for field_name in VALID_FORMS[name]:
        for label, value in FORM_VALUES:
            spoilt = _spoil(field_name, value)
            cases.append(Case(f"{name}-form-{field_name}-{label}", name, body=spoilt, status=None, may_succeed=True))
    return cases + oversize_cases(name)


# Spoilt FHIR bodies: (label, path in the body, bad value, status, the OperationOutcome expression).
_OBS = "entry.0.resource"


def _nested_extension(levels: int) -> dict[str, Any]:
    """An extension with extensions inside it, `levels` deep (fhir.resources recurses on each)."""
    extension: dict[str, Any] = {"url": "https://example.org/leaf", "valueString": "x"}
    for _ in range(levels):
        extension = {"url": "https://example.org/branch", "extension": [extension]}
    return extension


FHIR_TRANSACTION_CASES: list[tuple[str, str, Any, int, str]] = [
    ("not-a-bundle", "resourceType", "Patient", 422, "Bundle.resourceType"),
    ("bundle-type", "type", "document", 422, "Bundle.type"),
    ("entry-not-list", "entry", "x", 422, "Bundle.entry"),
    ("entry-not-object", "entry.0", "x", 422, "Bundle.entry[0]"),
    ("method-delete", "entry.0.request.method", "DELETE", 422, "Bundle.entry[0].request.method"),
    ("request-missing", "entry.0.request", DELETE, 422, "Bundle.entry[0].request"),
    ("url-other-type", "entry.0.request.url", "Patient", 422, "Bundle.entry[0].request.url"),
    ("url-conditional", "entry.0.request.url", "Observation?identifier=x", 422, "Bundle.entry[0].request.url"),
    ("if-none-exist", "entry.0.request.ifNoneExist", "identifier=x", 422, "Bundle.entry[0].request.ifNoneExist"),
    ("if-match", "entry.0.request.ifMatch", 'W/"1"', 422, "Bundle.entry[0].request.ifMatch"),
    (
        "subject-other-server",
        f"{_OBS}.subject.reference",
        "https://ehr.example.org/fhir/Patient/p-001",
        422,
        "Bundle.entry[0].resource.subject.reference",
    ),
    ("resource-type-unknown", f"{_OBS}.resourceType", "Banana", 422, "Bundle.entry[0].resource.resourceType"),
    (
        "contained-unknown-type",
        f"{_OBS}.contained",
        [{"resourceType": "Nope"}],
        422,
        "Bundle.entry[0].resource.contained[0].resourceType",
    ),
    (
        "contained-no-type",
        f"{_OBS}.contained",
        [{"id": "x"}],
        422,
        "Bundle.entry[0].resource.contained[0].resourceType",
    ),
    (
        "modifier-extension",
        f"{_OBS}.modifierExtension",
        [{"url": "https://example.org/not-really", "valueBoolean": True}],
        422,
        "Bundle.entry[0].resource.modifierExtension",
    ),
    ("extension-nested-too-deep", f"{_OBS}.extension", [_nested_extension(150)], 422, "Bundle.entry[0].resource"),
    ("resource-not-object", _OBS, "x", 422, "Bundle.entry[0]"),
    ("unknown-element", f"{_OBS}.colour", "red", 422, "Bundle.entry[0].resource.colour"),
    ("status-missing", f"{_OBS}.status", DELETE, 422, "Bundle.entry[0].resource.status"),
    ("unknown-loinc", f"{_OBS}.code.coding.0.code", "99999-9", 422, "Bundle.entry[0].resource.code"),
    ("other-code-system", f"{_OBS}.code.coding.0.system", "http://example.org", 422, "Bundle.entry[0].resource.code"),
    ("impossible-unit", f"{_OBS}.valueQuantity.code", "kg", 422, "Bundle.entry[0].resource.valueQuantity.code"),
    (
        "unit-system",
        f"{_OBS}.valueQuantity.system",
        "http://example.org",
        422,
        "Bundle.entry[0].resource.valueQuantity",
    ),
    ("value-text", f"{_OBS}.valueQuantity.value", "abc", 422, "Bundle.entry[0].resource.valueQuantity.value"),
    ("value-negative", f"{_OBS}.valueQuantity.value", -5, 422, "Bundle.entry[0].resource.valueQuantity.value"),
    ("value-missing", f"{_OBS}.valueQuantity", DELETE, 422, "Bundle.entry[0].resource.valueQuantity"),
    ("date-impossible", f"{_OBS}.effectiveDateTime", "2025-13-40", 422, "Bundle.entry[0].resource.effectiveDateTime"),
    ("date-missing", f"{_OBS}.effectiveDateTime", DELETE, 422, "Bundle.entry[0].resource"),
    ("patient-missing", f"{_OBS}.subject.reference", "Patient/p-404", 404, "Bundle.entry[0].resource.subject"),
    ("patient-sql", f"{_OBS}.subject.reference", f"Patient/{SQL}", 404, "Bundle.entry[0].resource.subject"),
    ("subject-not-patient", f"{_OBS}.subject.reference", "Group/1", 422, "Bundle.entry[0].resource.subject"),
    ("subject-missing", f"{_OBS}.subject", DELETE, 422, "Bundle.entry[0].resource.subject"),
    ("local-reference-unknown", f"{_OBS}.subject.reference", "urn:uuid:9", 404, "Bundle.entry[0].resource.subject"),
]
FHIR_PATIENT_CASES: list[tuple[str, str, Any, int, str]] = [
    ("gender-unknown", "gender", "robot", 422, "Patient.gender"),
    ("birth-date-impossible", "birthDate", "2025-13-40", 422, "Patient.birthDate"),
    (
        "birth-date-future",
        "birthDate",
        (dt.date.today() + dt.timedelta(days=400)).isoformat(),
        422,
        "Patient.birthDate",
    ),
    ("unknown-element", "colour", "red", 422, "Patient.colour"),
    ("resource-type-unknown", "resourceType", "Banana", 422, "Resource.resourceType"),
    ("resource-type-other", "resourceType", "Observation", 422, "Resource.resourceType"),
]
FHIR_ROUTES = {"fhir_transaction", "fhir_create", "fhir_update"}
FHIR_PATH = {"resource_type": "Patient", "resource_id": "p-001", "service_id": "alemwatch-patient-view"}


def fhir_cases(endpoint: Endpoint) -> list[Case]:
    """FHIR bodies: each answers an OperationOutcome whose expression names the element."""
    name = endpoint.name
    table = FHIR_TRANSACTION_CASES if name == "fhir_transaction" else FHIR_PATIENT_CASES
    cases = [
        Case(f"{name}-fhir-{label}", name, body=_spoil(path, value), status=status, field=expression)
        for label, path, value, status, expression in table
    ]
    if name == "fhir_update":
        cases.append(Case(f"{name}-fhir-other-id", name, body=_spoil("id", "p-002"), status=400, field="Patient.id"))
    return cases + [
        Case(
            f"{name}-raw-malformed-json", name, raw=b'{"resourceType": "unfinished', status=400, detail="malformed JSON"
        ),
        Case(f"{name}-raw-not-json", name, raw=b"text=hello", status=None),
        Case(f"{name}-raw-bad-utf8", name, raw=b'{"text": "\xff\xfe"}', status=None),
        Case(f"{name}-raw-too-deep", name, raw=b"[" * 100_000 + b"]" * 100_000, status=None),
        Case(f"{name}-raw-empty", name, body=NO_BODY, status=None),
        Case(f"{name}-body-null", name, body=None, status=None),
        Case(f"{name}-body-nul", name, body=_spoil("resourceType", "Bundle\x00"), status=422, field="resourceType"),
        *oversize_cases(name),
    ]


def body_cases(endpoint: Endpoint) -> list[Case]:
    name = endpoint.name
    if name in FHIR_ROUTES:
        return fhir_cases(endpoint)
    if name in VALID_FORMS:
        return form_cases(endpoint)
    if not endpoint.body_params:
        if endpoint.method in {"POST", "PUT", "PATCH"} and name not in VALID_BODIES:  # a form read elsewhere?
            return [Case(f"{name}-body", name, problem="no valid body in VALID_BODIES or form in VALID_FORMS")]
        return []
    if name not in VALID_BODIES:
        return [Case(f"{name}-body", name, problem="no valid body in VALID_BODIES")]
    if len(endpoint.body_params) > 1:
        return [Case(f"{name}-body", name, problem="several body parameters: write their cases")]
    (param,) = endpoint.body_params
    model = _unwrap_optional(param.annotation)
    if name in PATIENT_FILE_ROUTES:
        cases = patient_file_cases(endpoint)
    elif name == "add_records":
        cases = record_cases(endpoint)
    elif isinstance(model, type) and issubclass(model, BaseModel):
        cases = model_cases(endpoint, model, param.required)
    else:
        return [Case(f"{name}-body", name, problem=f"no recipe for a body of type {param.annotation}")]
    return cases + raw_body_cases(endpoint, param.required)


# Cases the generic recipes cannot know: ids in bodies, credentials.
EXTRA_CASES = [
    Case(
        "triage-body-patient_id-unknown", "triage", body=_spoil("patient_id", "p-404"), status=404, detail="not found"
    ),
    Case("triage-body-patient_id-sql", "triage", body=_spoil("patient_id", SQL), status=404, detail="not found"),
    Case("triage-body-patient_id-nul", "triage", body=_spoil("patient_id", NUL), status=422, field="patient_id"),
    Case("triage-body-text-nul", "triage", body=_spoil("text", "rash\x00"), may_succeed=True, field="text"),
    Case(
        "add_symptom_report-body-text-nul",
        "add_symptom_report",
        body=_spoil("text", "rash\x00"),
        may_succeed=True,
        field="text",
    ),
    Case("issue_token-body-sql-username", "issue_token", body=_spoil("username", "clin' OR '1'='1"), status=401),
    Case("issue_token-body-sql-password", "issue_token", body=_spoil("password", "' OR '1'='1' --"), status=401),
    Case("issue_token-body-nul-username", "issue_token", body=_spoil("username", "clin\x00"), status=None),
    Case("login-body-script-username", "login", body=_spoil("username", SCRIPT), status=401),
    Case("update_patient-body-other-id", "update_patient", body=_spoil("id", "p-002"), field="id"),
]


def all_cases() -> list[Case]:
    cases = []
    for endpoint in ENDPOINTS.values():
        cases += path_cases(endpoint) + query_cases(endpoint) + body_cases(endpoint)
    return cases + EXTRA_CASES


CASES = all_cases()


# --- app bugs these cases found (xfail, strict: fixing one makes its cases pass, and fail here) ----------


@dataclass(frozen=True)
class Bug:
    reason: str
    backends: frozenset[str] = frozenset({"sqlite", "postgresql"})


OVERFLOW_DATE = Bug(
    "APP BUG: date 9999-12-31 runs date arithmetic past date.max (worklist: day + 7 days; a symptom report: "
    "its re-assessment) -> OverflowError -> 500"
)
HUGE_FLOAT = Bug(
    "APP BUG: an integer beyond float range (10**400) as a lab value/ref_low or a reaction's onset_hours: "
    "float() raises OverflowError (normalise_lab, findings), not a validation error -> 500"
)
NON_FINITE = Bug(
    "APP BUG: ref_high Infinity (non-standard JSON the body parser accepts) passes validation: the lab is "
    "stored with inf and read back with ref_high null"
)
ONSET_INFINITY = Bug(
    "APP BUG: a reaction's onset_hours Infinity passes validation (SQLite: stored; PostgreSQL: the JSON "
    "column refuses it -> 500)"
)
PG_NUL = Bug("APP BUG: a NUL character reaches PostgreSQL (text cannot hold 0x00) -> 500", frozenset({"postgresql"}))
CHUNKED = Bug("APP BUG: the body size limit checks Content-Length only; a chunked body over it is read in full")
COMMIT_AFTER_ANSWER = Bug(
    "APP BUG: the request's transaction commits after the answer is sent; when the commit fails (here "
    "PostgreSQL refusing a NUL) the client was told 200/303 but nothing was stored",
    frozenset({"postgresql"}),
)
OFFSET = Bug(
    "APP BUG: offset has no upper bound: 10**30 reaches the database (SQLite OverflowError, PostgreSQL "
    "bigint out of range) -> 500"
)

# Bugs found by these cases and since fixed in the app: NUL characters, far-future dates, huge and
# non-finite numbers, offset bounds, chunked bodies, commit after answer. Add a case id here to mark a
# newly found bug as an expected failure (strict) until it is fixed.
KNOWN_BUGS: dict[str, Bug] = {}


# --- the registry ---------------------------------------------------------------------------------------


@dataclass
class Registry:
    backend: str
    url: str
    client: TestClient
    headers: dict[str, dict[str, str]]  # role -> bearer header
    alert_id: str  # an open alert of p-001
    tables: list[Any]  # the tables a refused request must leave as they were
    last: dict[str, Any] | None = None  # the snapshot taken after the previous case


def fresh_database(request: pytest.FixtureRequest, directory: Path, sqlite_template: Path) -> str:
    """A migrated, empty registry on the backend of `request.param` (as the db_url fixture)."""
    if request.param == "sqlite":
        path = directory / "registry.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_schema_url")
    with get_engine(url).begin() as connection:
        connection.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Registry]:
    url = fresh_database(request, tmp_path_factory.mktemp("bad-input"), sqlite_template)
    settings = Settings(database_url=url, environment="test", secret_key="test-secret-" + "x" * 32)
    assert settings.max_body_bytes == MAX_BODY
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        make_user(url, "clin", "clinician")
        make_user(url, "admin", "admin")
        headers = {role: token_for(client, user) for role, user in (("clinician", "clin"), ("admin", "admin"))}
        for patient_id in ("p-001", "p-002"):
            created = client.post("/api/patients", json=patient_file(patient_id), headers=headers["clinician"])
            assert created.status_code == 201, created.text
        make_user(url, "pat", "patient", "p-001")
        headers["patient"] = token_for(client, "pat")
        alerts = client.get("/api/patients/p-001/alerts", headers=headers["clinician"]).json()["alerts"]
        assert alerts, "the example file raises no alert"
        existing = set(inspect(get_engine(url)).get_table_names())
        tables = [t for t in m.Base.metadata.sorted_tables if t.name in existing and t.name not in GROWING_TABLES]
        yield Registry(request.param, url, client, headers, alerts[0]["id"], tables)
    if request.param == "sqlite":
        get_engine(url).dispose()


API_FILE = "GET /api/patients/p-001"


def stored_rows(registry: Registry) -> dict[str, list[str]]:
    """Every row of every watched table, as text (raw rows: no type conversion, several times faster)."""
    state: dict[str, list[str]] = {table.name: [] for table in registry.tables}
    with get_engine(registry.url).connect() as connection:
        quote_name = connection.dialect.identifier_preparer.quote
        if connection.dialect.name == "postgresql":  # one round trip: each row in its text form
            query = " UNION ALL ".join(
                f"SELECT '{table.name}', CAST(row AS text) FROM {quote_name(table.name)} AS row"
                for table in registry.tables
            )
            for name, row in connection.exec_driver_sql(query):
                state[name].append(row)
        else:
            for table in registry.tables:
                state[table.name] = [
                    repr(tuple(row)) for row in connection.exec_driver_sql(f"SELECT * FROM {quote_name(table.name)}")
                ]
    return {name: sorted(rows) for name, rows in state.items()}


def snapshot(registry: Registry, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every stored row (but the tables that record attempts), and p-001's patient file via the API.

    The API serves what the tables hold, so when every row is as in `known` (an earlier snapshot)
    its API answer is reused: the file is read through the API again only after a table changed.
    (Reading it costs some 20 ms of CPU; every row of every table is compared in any case.)"""
    state: dict[str, Any] = stored_rows(registry)
    if known is not None and all(known.get(name) == rows for name, rows in state.items()):
        state[API_FILE] = known[API_FILE]
        return state
    response = registry.client.get("/api/patients/p-001", headers=registry.headers["clinician"])
    assert response.status_code == 200, response.text
    state[API_FILE] = response.json()
    return state


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old != new:
            sizes = f"{len(old)} -> {len(new)} rows" if isinstance(old, list) and isinstance(new, list) else "changed"
            out.append(f"{key}: {sizes}")
    return sorted(out)


def role_for(route: str) -> str | None:
    rule = POLICY[route]
    if rule.public:
        return None
    role = next((role for role in ("clinician", "admin", "patient") if role in rule.roles), None)
    if role is None:
        pytest.fail(f"{route}: only {sorted(rule.roles)} may call it; give the registry such a user")
    return role


def send(registry: Registry, case: Case) -> Any:
    endpoint = ENDPOINTS[case.route]
    values = {"patient_id": "p-001", "alert_id": registry.alert_id, "kind": "labs", **FHIR_PATH, **case.path}
    params = {p.name: values[p.name] for p in endpoint.path_params}
    path = endpoint.path.format(**{k: quote(v, safe="") for k, v in params.items()})
    role = role_for(case.route)
    headers = dict(registry.headers[role]) if role else {}
    content: Any = None
    if case.raw is not None:
        content = case.raw() if callable(case.raw) else case.raw
        headers["content-type"] = FORM_TYPE if case.route in VALID_FORMS else "application/json"
    elif case.route in VALID_FORMS:
        form = VALID_FORMS[case.route]
        content = urlencode(form if case.body is KEEP else case.body(form)).encode()
        headers["content-type"] = FORM_TYPE
    elif endpoint.body_params and case.body is not NO_BODY:
        recipe = VALID_BODIES[case.route]
        assert recipe is not None, f"{case.route} takes a body: give it a valid one in VALID_BODIES"
        valid = recipe(params)
        body = valid if case.body is KEEP else case.body(valid) if callable(case.body) else case.body
        content = json.dumps(body).encode()  # json.dumps writes NaN, Infinity and huge integers as given
        headers["content-type"] = "application/json"
    registry.client.cookies.clear()
    return registry.client.request(
        endpoint.method, path, params=case.query, content=content, headers=headers, follow_redirects=False
    )


def names(response: Any, wanted: str) -> bool:
    """Whether the answer names the field: a FastAPI error's `loc`/`field`, a patient file's `field`,
    or an OperationOutcome issue's `expression` (FHIR)."""
    body = response.json()
    if body.get("resourceType") == "OperationOutcome":
        return any(e == wanted or e.startswith(wanted + ".") for i in body["issue"] for e in i.get("expression", []))
    detail = body.get("detail")
    if not isinstance(detail, list):
        return False
    for error in detail:
        loc = [str(part) for part in error.get("loc", [])]
        if error.get("field") == wanted or wanted in loc[1:2] or (loc == ["body"] and wanted == "body"):
            return True
    return False


# --- the tests -----------------------------------------------------------------------------------------


def test_every_route_with_input_has_cases() -> None:
    with_input = {e.name for e in ENDPOINTS.values() if e.path_params or e.query_params or e.body_params}
    assert with_input, "the route walk found no route taking input"
    assert with_input <= {case.route for case in CASES}
    assert len({case.id for case in CASES}) == len(CASES), "two cases share an id"
    assert set(KNOWN_BUGS) <= {case.id for case in CASES}, "a known bug names no case"


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    registry: Registry, case: Case, request: pytest.FixtureRequest
) -> None:
    if case.problem:
        pytest.fail(f"{case.route}: {case.problem} (route table entry without a bad-input recipe)")
    bug = KNOWN_BUGS.get(case.id)
    if bug and registry.backend in bug.backends:
        request.applymarker(pytest.mark.xfail(strict=True, reason=bug.reason))

    before = snapshot(registry, known=registry.last)
    response = send(registry, case)
    registry.last = after = snapshot(registry, known=before)
    said = f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"

    assert response.status_code < 500, f"server error: {said}"
    if case.may_succeed and response.status_code < 400:
        return  # valid, if odd, input: accepted (a web form answers 303 when it saved)
    if case.status is None:
        assert 400 <= response.status_code < 500, f"expected a 4xx: {said}"
    else:
        assert response.status_code == case.status, f"expected {case.status}: {said}"
    if case.field:
        assert names(response, case.field), f"the answer does not name {case.field!r}: {said}"
    if case.detail:
        assert case.detail in response.text, f"the answer does not say {case.detail!r}: {said}"
    assert changes(before, after) == [], f"a refused request changed stored data: {said}"


# --- injection strings that are valid input are stored verbatim and do no harm -----------------------------


def _patients_intact(registry: Registry) -> None:
    with get_engine(registry.url).connect() as connection:
        assert connection.execute(select(m.Patient.id).where(m.Patient.id == "p-001")).scalar_one() == "p-001"


def test_injection_in_a_symptom_text_is_stored_verbatim(registry: Registry) -> None:
    words = f'{SQL} {SCRIPT} " \\ %s {{}} ${{jndi:ldap://x}}'
    headers = registry.headers["clinician"]
    response = registry.client.post("/api/patients/p-001/symptoms", json={"text": words}, headers=headers)
    assert response.status_code == 201, response.text
    stored = registry.client.get("/api/patients/p-001/symptoms", headers=headers).json()["symptoms"]
    assert words in [symptom["text"] for symptom in stored]
    _patients_intact(registry)


def test_injection_in_record_fields_is_stored_verbatim(registry: Registry) -> None:
    exam = {"type": SCRIPT, "date": "2026-02-01", "result": SQL}
    headers = registry.headers["clinician"]
    response = registry.client.post("/api/patients/p-001/exams", json=exam, headers=headers)
    assert response.status_code == 201, response.text
    assert exam in registry.client.get("/api/patients/p-001/exams", headers=headers).json()["exams"]
    _patients_intact(registry)


def test_injection_in_a_patient_id_round_trips(registry: Registry) -> None:
    headers = registry.headers["clinician"]
    patient_id = "p-9'; DROP TABLE patients;--"
    response = registry.client.post("/api/patients", json=patient_file(patient_id), headers=headers)
    assert response.status_code == 201, response.text
    read = registry.client.get(f"/api/patients/{quote(patient_id, safe='')}", headers=headers)
    assert read.status_code == 200 and read.json()["patient"]["id"] == patient_id
    found = registry.client.get("/api/patients", params={"q": "DROP TABLE"}, headers=headers).json()
    assert [item["id"] for item in found["items"]] == [patient_id]
    _patients_intact(registry)


def test_injection_in_search_and_credentials_finds_nothing_and_harms_nothing(registry: Registry) -> None:
    headers = registry.headers["clinician"]
    for q in (SQL, "' OR '1'='1", SCRIPT):
        response = registry.client.get("/api/patients", params={"q": q}, headers=headers)
        assert response.status_code == 200 and response.json()["total"] == 0, (q, response.text)
    for username in ("clin' --", "' OR 1=1 --"):
        refused = registry.client.post("/api/auth/token", json={"username": username, "password": "' OR '1'='1"})
        assert refused.status_code == 401, refused.text
    _patients_intact(registry)


# --- an answer of success means the change was stored ---------------------------------------------------

NUL_WRITES = [  # (label, path, JSON body or form, the alert's status once it is done, a bug on PostgreSQL)
    ("api-resolve", "/api/patients/p-002/alerts/{id}/resolve", {"json": {"reason": "x\x00"}}, "resolved", True),
    (
        "api-acknowledge",
        "/api/patients/p-002/alerts/{id}/acknowledge",
        {"json": {"reason": "x\x00"}},
        "acknowledged",
        True,
    ),
    ("web-resolve", "/patients/p-002/alerts/{id}/resolve", {"data": {"reason": "x\x00"}}, "resolved", False),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "pg_bug"), [pytest.param(*rest, id=label) for label, *rest in NUL_WRITES]
)
def test_a_success_answer_means_the_change_was_stored(
    registry: Registry, path: str, body: dict[str, Any], status: str, pg_bug: bool, request: pytest.FixtureRequest
) -> None:
    """A NUL in an alert's reason: stored verbatim (SQLite) or refused, never answered "done" and lost."""
    headers = registry.headers["clinician"]
    alerts = registry.client.get("/api/patients/p-002/alerts", params={"status": "open"}, headers=headers).json()
    alert_id = alerts["alerts"][0]["id"]
    response = registry.client.post(path.format(id=alert_id), headers=headers, follow_redirects=False, **body)
    assert response.status_code < 500, response.text
    with get_engine(registry.url).connect() as connection:
        stored = connection.execute(select(m.Alert.status).where(m.Alert.id == alert_id)).scalar_one()
    if response.status_code < 400:
        assert stored == status, f"answered {response.status_code}, but the alert is still {stored!r}"
    else:
        assert stored == "open"
