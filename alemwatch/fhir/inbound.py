"""FHIR R4 resources in: each resource is validated with fhir.resources, then read into the
contract's patient-file records (the one shape the engine and the store know). The readers
read the JSON as it came (`Raw`), validated first where it is to be stored.

Pure: dicts in, records out, no database. Every problem is a `FhirIssue` that names the
resource and the element (`Bundle.entry[3].resource.valueQuantity.code`), so an
OperationOutcome can point at it. What is not about alemtuzumab (another drug, another
vaccine status, a cancelled result) is skipped with an informational issue, never guessed at.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from alemwatch.core.patient import (
    EARLIEST,
    LATEST,
    Exam,
    Infusion,
    PatientFileError,
    ProphylaxisRecord,
    Screening,
    SymptomReport,
    Vaccination,
    normalise_lab,
)
from alemwatch.fhir import codes, validation
from alemwatch.fhir.models import model_for
from alemwatch.protocol.model import Analyte, Protocol

SUPPORTED = (
    "Patient",
    "Observation",
    "MedicationAdministration",
    "MedicationRequest",
    "MedicationStatement",
    "Immunization",
    "Procedure",
)
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
STORED_LAB_STATUS = {"final", "amended", "corrected", "preliminary"}
RECORD_KINDS = ("labs", "infusions", "exams", "vaccinations", "prophylaxis", "symptoms")


@dataclass(frozen=True)
class FhirIssue:
    """One OperationOutcome issue: severity, IssueType code, what is wrong, and where."""

    code: str
    diagnostics: str
    expression: str
    severity: str = "error"


class FhirInputError(ValueError):
    def __init__(self, issues: list[FhirIssue], status: int = 422) -> None:
        self.issues = issues
        self.status = status
        super().__init__("; ".join(f"{i.expression}: {i.diagnostics}" for i in issues))


@dataclass
class PatientUpdate:
    """What a set of resources says about one patient: attributes (None: not said) and new records.
    `origins[kind][n]` is the place (an expression prefix) of the resource behind record n."""

    patient_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in RECORD_KINDS})
    origins: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in RECORD_KINDS})
    premedication_days: dict[dt.date, str] = field(default_factory=dict)
    patient_place: str | None = None

    def add(self, kind: str, record: dict[str, Any], place: str) -> None:
        self.records[kind].append(record)
        self.origins[kind].append(place)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.records.values())


def validate_resource(data: Any, place: str) -> Any:
    """`data` as its reader takes it (`_readable`) once fhir.resources has validated it, or a
    FhirInputError naming the element."""
    if not isinstance(data, dict):
        raise FhirInputError([FhirIssue("structure", "must be a JSON object (a FHIR resource)", place)])
    kind = data.get("resourceType")
    if kind not in SUPPORTED:
        raise FhirInputError(
            [
                FhirIssue(
                    "not-supported",
                    f"resourceType {kind!r} is not accepted here; use one of {', '.join(SUPPORTED)}",
                    f"{place}.resourceType",
                )
            ]
        )
    if data.get("modifierExtension"):
        raise FhirInputError(
            [
                FhirIssue(
                    "not-supported",
                    "a modifierExtension changes what the resource means, and this server understands none",
                    f"{place}.modifierExtension",
                )
            ]
        )
    if "contained" in data:
        _check_contained(data["contained"], place)
    try:
        validation.validate(data)  # as fhir.resources' model does, faster for a shape seen before
    except ValidationError as exc:
        raise FhirInputError([_pydantic_issue(err, place) for err in exc.errors(include_url=False)][:20]) from None
    except RecursionError:
        raise FhirInputError([FhirIssue("structure", "nested too deeply to be a FHIR resource", place)]) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # fhir.resources gives up on some shapes with a plain exception (a contained resource of
        # an unknown resourceType is a KeyError): still a bad resource, never a server error.
        issue = FhirIssue("structure", f"not a valid {kind} ({type(exc).__name__})", place)
        raise FhirInputError([issue]) from None
    return _readable(data)


def _check_contained(contained: Any, place: str) -> None:
    """Every contained resource names a FHIR resource type (fhir.resources fails on one that does not)."""
    for n, item in enumerate(contained if isinstance(contained, list) else []):
        kind = item.get("resourceType") if isinstance(item, dict) else None
        where = f"{place}.contained[{n}].resourceType"
        if not isinstance(kind, str) or not re.fullmatch(r"[A-Z][A-Za-z]{1,60}", kind):
            raise FhirInputError([FhirIssue("structure", f"{kind!r} is not a FHIR resource type", where)])
        try:
            model_for(kind)
        except ImportError:
            raise FhirInputError([FhirIssue("structure", f"{kind!r} is not a FHIR resource type", where)]) from None


class Raw(dict[str, Any]):
    """A resource as it came in JSON, whose elements also read as attributes (`resource.code`,
    None when absent); nested objects are `Raw` too (see `_raw`). The readers of every type but
    Observation get one: validated by `validate_resource` (what is stored), or not (`read_raw`:
    an EHR's prefetch data, assessed and never stored, where every element a reader uses is
    still checked but the rest is not). Observations are not wrapped: their reader uses the
    dict's own `get` (see `_readable`).
    No FHIR element a reader uses is named like a dict method (get, items, keys, values, ...)."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

    else:
        __getattr__ = dict.get  # only called for names that are not dict's own (C speed)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def _raw(value: Any) -> Any:
    """A JSON value with every object in it a `Raw` (a copy: the caller's data is not changed)."""
    if isinstance(value, dict):
        return Raw({k: _raw(v) if isinstance(v, dict | list) else v for k, v in value.items()})
    if isinstance(value, list):
        return [_raw(v) if isinstance(v, dict | list) else v for v in value]
    return value


def read_raw(data: Any, place: str) -> Any:
    """A resource to read without full validation (see `Raw`); its type must be one we read."""
    if not isinstance(data, dict):
        raise FhirInputError([FhirIssue("structure", "must be a JSON object (a FHIR resource)", place)])
    if data.get("resourceType") not in SUPPORTED:
        got = data.get("resourceType")
        raise FhirInputError([FhirIssue("not-supported", f"resourceType {got!r} is not read", f"{place}.resourceType")])
    return _readable(data)


def _readable(data: dict[str, Any]) -> Any:
    """A resource as its reader takes it: an Observation (most of what an EHR sends) as the
    dict it came as, read with the dict's own `get`; the other types as `Raw`."""
    if isinstance(data, Raw) or data.get("resourceType") == "Observation":
        return data
    return _raw(data)


def set_id(resource: dict[str, Any], value: str | None) -> None:
    """Give a read resource another id (a validated id is replaced by a shorter form of itself
    or by the request's: both already checked)."""
    resource["id"] = value


def _pydantic_issue(err: Any, place: str) -> FhirIssue:
    path = place
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("__root__",) and not str(part).startswith("function-"):
            path += f".{part}"
    message = str(err["msg"]).removeprefix("Value error, ")
    code = "required" if err["type"] == "missing" else "structure" if err["type"] == "extra_forbidden" else "value"
    if err["type"] == "extra_forbidden":
        message = "unknown element"
    return FhirIssue(code, message, path)


# --- small readers ---------------------------------------------------------------------------


def _codings(concept: Any) -> list[dict[str, str]]:
    if not concept:
        return []
    return [
        {"system": c.get("system") or "", "code": c.get("code") or "", "display": c.get("display") or ""}
        for c in concept.get("coding") or []
    ]


def _text(concept: Any) -> str:
    if not concept:
        return ""
    return " ".join([concept.text or "", *(c.display or "" for c in concept.coding or [])]).strip()


def _day(value: Any, place: str) -> dt.date:
    """A FHIR date or dateTime as the calendar day it was written for (its own time zone)."""
    if value is None:
        raise FhirInputError([FhirIssue("required", "a date is required", place)])
    try:
        if not isinstance(value, str) or not FULL_DATE.match(value):
            raise ValueError
        day = dt.date.fromisoformat(value[:10])
    except ValueError:
        raise FhirInputError([FhirIssue("value", f"needs a full date (YYYY-MM-DD), got {value!r}", place)]) from None
    if not EARLIEST <= day <= LATEST:
        raise FhirInputError([FhirIssue("value", f"{day} is outside {EARLIEST}..{LATEST}", place)])
    return day


def _effective(resource: Any, place: str, *names: str) -> tuple[dt.date, str]:
    """The first date among the named elements (a Period counts by its start)."""
    for name in names:
        value = resource.get(name)
        if value is None:
            continue
        if isinstance(value, dict):  # a Period
            return _day(value.get("start"), f"{place}.{name}.start"), f"{place}.{name}"
        return _day(value, f"{place}.{name}"), f"{place}.{name}"
    raise FhirInputError([FhirIssue("required", f"one of {', '.join(names)} is required", place)])


def reference_id(reference: Any, place: str, kind: str = "Patient") -> str:
    """The id in `Patient/123` (or a bundle-local `urn:uuid:...`, returned as it is)."""
    text = reference.get("reference") if reference is not None else None
    if not text:
        raise FhirInputError([FhirIssue("required", f"a reference to the {kind} is required", place)])
    if text.startswith("urn:"):
        return str(text)
    parts = str(text).rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != kind:
        raise FhirInputError([FhirIssue("value", f"must reference a {kind} (e.g. {kind}/123), got {text!r}", place)])
    return parts[-1]


def _extension(resource: Any, url: str) -> Any:
    for ext in getattr(resource, "extension", None) or []:
        if ext.url == url:
            return ext
    return None


def _record(model: type[Any], data: dict[str, Any], place: str, fields: dict[str, str]) -> dict[str, Any]:
    """Validate one record with the contract's model; a bad field is named by its FHIR element."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        where = f"{place}.{fields.get(name, name)}" if name else place
        raise FhirInputError([FhirIssue("value", message, where)]) from None
    return data


# --- resources --------------------------------------------------------------------------------


def read_patient(resource: Any, place: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {"sex": resource.gender or "unknown"}
    if resource.birthDate:
        born = _day(resource.birthDate, f"{place}.birthDate")
        if born > dt.date.today():
            raise FhirInputError([FhirIssue("value", f"{born.isoformat()} is in the future", f"{place}.birthDate")])
        attributes["birth_date"] = born.isoformat()
    ext = _extension(resource, codes.EXT_SCREENING)
    if ext is None:  # an EHR's Patient says nothing of screening: what is stored stays
        return attributes
    screening: dict[str, Any] = {}
    if ext is not None:
        for n, part in enumerate(ext.extension or []):
            where = f"{place}.extension.where(url='{codes.EXT_SCREENING}').extension[{n}]"
            if part.url not in Screening.model_fields:
                known = ", ".join(Screening.model_fields)
                raise FhirInputError([FhirIssue("value", f"unknown screening item {part.url!r}; use {known}", where)])
            value = part.valueCode if part.valueCode is not None else part.valueBoolean
            if value is None:
                raise FhirInputError([FhirIssue("required", "valueCode or valueBoolean is required", where)])
            screening[part.url] = value
        _record(Screening, screening, f"{place}.extension", {})
    attributes["screening"] = screening
    return attributes


def read_observation(
    resource: dict[str, Any], place: str, protocol: Protocol
) -> tuple[str, dict[str, Any]] | FhirIssue:
    """A lab result (by LOINC) or a symptom report; ('labs'|'symptoms', record) or a skip.
    (Most of what an EHR sends: a plain dict, read with its own `get`.)"""
    concept = resource.get("code")
    codings = (concept.get("coding") or []) if concept else []
    by_loinc = _analytes_by_loinc(protocol)
    analyte, symptom = None, False
    for coding in codings:  # one pass: the first LOINC code we follow, and whether it is a symptom report
        system, code = coding.get("system"), coding.get("code")
        if system == codes.CS_SYMPTOM and code == codes.SYMPTOM_CODE:
            symptom = True
            break
        if analyte is None and system == codes.LOINC:
            analyte = by_loinc.get(code)
    if symptom:
        day, _ = _effective(resource, place, "effectiveDateTime", "effectivePeriod", "issued")
        words = resource.get("valueString")
        if not words:
            raise FhirInputError([FhirIssue("required", "valueString (the patient's words) is required", place)])
        report = {"date": day.isoformat(), "text": words}
        return "symptoms", _record(SymptomReport, report, place, {"text": "valueString"})
    status = resource.get("status")
    if status not in STORED_LAB_STATUS:
        return FhirIssue("informational", f"not stored: status {status!r}", f"{place}.status", "information")
    if analyte is None:
        shown = ", ".join(f"{c['system']}|{c['code']}" for c in _codings(concept)) or "none"
        raise FhirInputError(
            [FhirIssue("code-invalid", f"no LOINC code this protocol follows (got {shown})", f"{place}.code")]
        )
    quantity = resource.get("valueQuantity")
    if quantity is None or quantity.get("value") is None:
        raise FhirInputError(
            [FhirIssue("required", "valueQuantity with a value is required", f"{place}.valueQuantity")]
        )
    if quantity.get("system") not in (None, codes.UCUM):
        raise FhirInputError(
            [FhirIssue("value", f"unit system must be UCUM ({codes.UCUM})", f"{place}.valueQuantity.system")]
        )
    unit = quantity.get("code") or quantity.get("unit")
    if not unit:
        raise FhirInputError([FhirIssue("required", "a UCUM unit code is required", f"{place}.valueQuantity.code")])
    day, _ = _effective(resource, place, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
    record: dict[str, Any] = {
        "test": analyte,
        "value": _number(quantity["value"]),
        "unit": unit,
        "date": day.isoformat(),
    }
    # Our own export names the stored result in its identifier (its resource id may be hashed):
    # that id comes back, so a re-sent export stores nothing twice.
    own = None
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") == codes.LAB_ID_SYSTEM and identifier.get("value"):
            own = identifier["value"]
            break
    if own or resource.get("id"):
        record["id"] = own or resource["id"]
    ranges = resource.get("referenceRange")
    if ranges:
        low, high = ranges[0].get("low"), ranges[0].get("high")
        if low is not None and low.get("value") is not None:
            record["ref_low"] = _number(low["value"])
        if high is not None and high.get("value") is not None:
            record["ref_high"] = _number(high["value"])
    try:
        normalise_lab(protocol, record)
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        if name == "unit":
            spec = protocol.analytes[analyte]
            message = f"{unit!r} is not a UCUM unit of {spec.name}; use one of {', '.join(spec.units)}"
        raise FhirInputError(
            [FhirIssue("value", message or str(exc), f"{place}.{LAB_ELEMENTS.get(name, 'value')}")]
        ) from None
    return "labs", record


# A lab record's fields and the Observation elements they are read from.
LAB_ELEMENTS = {
    "test": "code",
    "unit": "valueQuantity.code",
    "value": "valueQuantity.value",
    "ref_low": "referenceRange[0].low.value",
    "ref_high": "referenceRange[0].high.value",
}


_LOINC_MAPS: dict[int, tuple[Protocol, dict[str, Analyte]]] = {}


def _analytes_by_loinc(protocol: Protocol) -> dict[str, Analyte]:
    """Each LOINC code of the protocol's analytes -> the analyte (kept per protocol object)."""
    found = _LOINC_MAPS.get(id(protocol))
    if found is None or found[0] is not protocol:
        mapping = {code: name for name, spec in protocol.analytes.items() for code in spec.loinc}
        found = (protocol, mapping)
        _LOINC_MAPS[id(protocol)] = found
    return found[1]


def _number(value: Any) -> int | float:
    if isinstance(value, bool | str):
        raise ValueError(f"must be a number, got {value!r}")
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def read_administration(resource: Any, place: str) -> tuple[str, dict[str, Any]] | FhirIssue:
    """An alemtuzumab infusion ('infusion', record), a corticosteroid premedication
    ('premedication', {date}), or a skip."""
    concept = resource.medicationCodeableConcept
    codings, text = _codings(concept), _text(concept)
    if resource.status in ("not-done", "entered-in-error"):
        return FhirIssue("informational", f"not stored: status {resource.status!r}", f"{place}.status", "information")
    day, _ = _effective(resource, place, "effectiveDateTime", "effectivePeriod")
    if codes.coded(codings, codes.PREMEDICATION_CODES) or codes.PREMEDICATION_TEXT.search(text):
        return "premedication", {"date": day.isoformat()}
    if not (codes.coded(codings, codes.ALEMTUZUMAB_CODES) or codes.ALEMTUZUMAB_TEXT.search(text)):
        return FhirIssue(
            "informational",
            "not stored: neither alemtuzumab (RxNorm 1594660/117055, ATC L04AG06) nor a corticosteroid premedication",
            f"{place}.medicationCodeableConcept",
            "information",
        )
    record: dict[str, Any] = {"date": day.isoformat()}
    premedication = _extension(resource, codes.EXT_PREMEDICATION)
    if premedication is not None and premedication.valueBoolean is not None:
        record["premedication"] = premedication.valueBoolean
    minutes = _extension(resource, codes.EXT_OBSERVATION_MINUTES)
    if minutes is not None and minutes.valueDecimal is not None:
        record["observation_minutes"] = _number(minutes.valueDecimal)
    dose = resource.dosage.dose if resource.dosage else None
    if dose is not None and dose.value is not None:
        if (dose.code or dose.unit) not in ("mg", None):
            raise FhirInputError([FhirIssue("value", "dose must be in mg", f"{place}.dosage.dose.code")])
        record["dose_mg"] = _number(dose.value)
    reactions = []
    for ext in resource.extension or []:
        if ext.url != codes.EXT_REACTION:
            continue
        parts = {p.url: p for p in ext.extension or []}
        reaction: dict[str, Any] = {"type": parts["type"].valueString if "type" in parts else ""}
        if "severity" in parts:
            reaction["severity"] = parts["severity"].valueCode
        if "onset-hours" in parts:
            reaction["onset_hours"] = _number(parts["onset-hours"].valueDecimal)
        reactions.append(reaction)
    if reactions:
        record["reactions"] = reactions
    fields = {"observation_minutes": "extension", "dose_mg": "dosage.dose.value", "reactions": "extension"}
    return "infusions", _record(Infusion, record, place, fields)


def read_immunization(resource: Any, place: str) -> tuple[str, dict[str, Any]] | FhirIssue:
    if resource.status != "completed":
        return FhirIssue("informational", f"not stored: status {resource.status!r}", f"{place}.status", "information")
    day, _ = _effective(resource, place, "occurrenceDateTime")
    codings, text = _codings(resource.vaccineCode), _text(resource.vaccineCode)
    live_ext = _extension(resource, codes.EXT_LIVE_VACCINE)
    if live_ext is not None and live_ext.valueBoolean is not None:
        live = bool(live_ext.valueBoolean)
    else:
        live = any(c["system"] == codes.CVX and c["code"] in codes.LIVE_VACCINE_CVX for c in codings) or bool(
            codes.LIVE_VACCINE_TEXT.search(text)
        )
    name = resource.vaccineCode.text or next((c["display"] or c["code"] for c in codings), "vaccine")
    record = {"vaccine": name, "live": live, "date": day.isoformat()}
    return "vaccinations", _record(Vaccination, record, place, {"vaccine": "vaccineCode", "date": "occurrenceDateTime"})


def read_statement(resource: Any, place: str) -> tuple[str, dict[str, Any]] | FhirIssue:
    """Herpes prophylaxis (aciclovir and pro-drugs) as a MedicationStatement."""
    concept = resource.medicationCodeableConcept
    codings, text = _codings(concept), _text(concept)
    drug = next(
        (
            codes.HERPES_DRUGS[(c["system"], c["code"])]
            for c in codings
            if (c["system"], c["code"]) in codes.HERPES_DRUGS
        ),
        None,
    )
    if drug is None:
        match = codes.HERPES_TEXT.search(text)
        drug = match.group(1).lower().replace("acyclovir", "aciclovir") if match else None
    if drug is None:
        return FhirIssue(
            "informational",
            "not stored: not a herpes prophylaxis drug",
            f"{place}.medicationCodeableConcept",
            "information",
        )
    if resource.status in ("entered-in-error", "not-taken", "intended"):
        return FhirIssue("informational", f"not stored: status {resource.status!r}", f"{place}.status", "information")
    period = resource.effectivePeriod
    if period is None or period.start is None:
        if resource.effectiveDateTime is None:
            raise FhirInputError(
                [FhirIssue("required", "effectivePeriod.start is required", f"{place}.effectivePeriod")]
            )
        start, stop = _day(resource.effectiveDateTime, f"{place}.effectiveDateTime"), None
    else:
        start = _day(period.start, f"{place}.effectivePeriod.start")
        stop = _day(period.end, f"{place}.effectivePeriod.end") if period.end else None
    record = {"kind": "herpes", "drug": drug, "start": start.isoformat(), "stop": stop.isoformat() if stop else None}
    return "prophylaxis", _record(ProphylaxisRecord, record, place, {"stop": "effectivePeriod.end"})


def read_procedure(resource: Any, place: str) -> tuple[str, dict[str, Any]] | FhirIssue:
    if resource.status != "completed":
        return FhirIssue("informational", f"not stored: status {resource.status!r}", f"{place}.status", "information")
    day, _ = _effective(resource, place, "performedDateTime", "performedPeriod")
    codings = _codings(resource.code)
    kind = next((c["code"] for c in codings if c["system"] == codes.CS_EXAM), None) or _text(resource.code)
    if not kind:
        raise FhirInputError([FhirIssue("required", "code (which exam) is required", f"{place}.code")])
    record: dict[str, Any] = {"type": kind, "date": day.isoformat()}
    if resource.outcome is not None and _text(resource.outcome):
        record["result"] = _text(resource.outcome)
    return "exams", _record(Exam, record, place, {"type": "code", "result": "outcome"})


def read_request(resource: Any, place: str) -> tuple[str, dict[str, Any]] | FhirIssue:
    """A planned alemtuzumab course: a MedicationRequest whose timing bounds start the course."""
    concept = resource.medicationCodeableConcept
    if not (codes.coded(_codings(concept), codes.ALEMTUZUMAB_CODES) or codes.ALEMTUZUMAB_TEXT.search(_text(concept))):
        return FhirIssue(
            "informational", "not stored: not an alemtuzumab order", f"{place}.medicationCodeableConcept", "information"
        )
    if resource.status not in ("active", "draft", "on-hold"):
        return FhirIssue("informational", f"not stored: status {resource.status!r}", f"{place}.status", "information")
    return "planned", {"planned_course_start": planned_start(resource, place).isoformat()}


def planned_start(resource: Any, place: str) -> dt.date:
    """When an alemtuzumab order would start: its timing's bounds, its first event, or when it was written."""
    for n, dosage in enumerate(resource.dosageInstruction or []):
        timing = dosage.timing
        where = f"{place}.dosageInstruction[{n}].timing"
        if timing is None:
            continue
        if timing.repeat is not None and timing.repeat.boundsPeriod is not None and timing.repeat.boundsPeriod.start:
            return _day(timing.repeat.boundsPeriod.start, f"{where}.repeat.boundsPeriod.start")
        if timing.event:
            return _day(timing.event[0], f"{where}.event[0]")
    if resource.authoredOn is not None:
        return _day(resource.authoredOn, f"{place}.authoredOn")
    raise FhirInputError(
        [
            FhirIssue(
                "required",
                "dosageInstruction[0].timing.repeat.boundsPeriod.start (the course start) is required",
                place,
            )
        ]
    )


READERS = {
    "Observation": read_observation,
    "MedicationAdministration": read_administration,
    "Immunization": read_immunization,
    "MedicationStatement": read_statement,
    "Procedure": read_procedure,
    "MedicationRequest": read_request,
}


def subject_element(resource: dict[str, Any]) -> str:
    """The element that names the resource's patient."""
    return "patient" if resource.get("resourceType") == "Immunization" else "subject"


def subject_of(resource: dict[str, Any], place: str) -> str:
    name = subject_element(resource)
    return reference_id(resource.get(name), f"{place}.{name}")


# What a reader raises on an element of an unexpected shape in data fhir.resources has not
# validated (an EHR's prefetch: a string where a Reference belongs, a list for an id).
SHAPE_ERRORS = (TypeError, KeyError, AttributeError, IndexError, ValueError, ArithmeticError, RecursionError)


def apply(
    update: PatientUpdate, resource: Any, place: str, protocol: Protocol
) -> tuple[str, dict[str, Any]] | FhirIssue:
    """Read one non-Patient resource into the patient's update: (record kind, record), or an
    informational issue saying why nothing is stored."""
    reader = READERS[resource.get("resourceType")]
    try:
        result = reader(resource, place, protocol) if reader is read_observation else reader(resource, place)  # type: ignore[operator]
    except SHAPE_ERRORS as exc:
        if isinstance(exc, FhirInputError):
            raise
        # Only an unvalidated (`Raw`) resource can get here: an element of the wrong shape.
        raise FhirInputError([FhirIssue("structure", f"an element has the wrong type: {exc}", place)]) from None
    if isinstance(result, FhirIssue):
        return result
    kind, record = result
    if kind == "premedication":
        update.premedication_days.setdefault(dt.date.fromisoformat(record["date"]), place)
        note = f"recorded as the corticosteroid premedication of the alemtuzumab infusion on {record['date']}"
        return FhirIssue("informational", note, place, "information")
    if kind == "planned":
        update.attributes.update(record)
    else:
        update.add(kind, record, place)
    return kind, record


def merge(current: dict[str, Any] | None, update: PatientUpdate, strict: bool = True) -> dict[str, Any]:
    """The patient file after the update: attributes replaced where said, records added, a
    corticosteroid given on an infusion day marking that infusion premedicated. A
    corticosteroid on a day without an alemtuzumab infusion is an error when `strict` (stored
    data must say what it means), and is left out otherwise (an EHR's record, assessed and
    never stored, holds relapse treatment too)."""
    data: dict[str, Any] = dict(current) if current else {"id": update.patient_id}
    data.update(update.attributes)
    for kind in RECORD_KINDS:
        data[kind] = [*(data.get(kind) or []), *update.records[kind]]
    infusions: dict[str, dict[str, Any]] = {}
    for infusion in data["infusions"]:
        # A later record for the same day replaces what it says; what it does not say stays as
        # stored (an EHR's alemtuzumab administration never says the premedication, sent apart).
        infusions[infusion["date"]] = {**infusions.get(infusion["date"], {}), **infusion}
    for day, place in update.premedication_days.items():
        premedicated = infusions.get(day.isoformat())
        if premedicated is None and not strict:
            continue
        if premedicated is None:
            raise FhirInputError(
                [FhirIssue("business-rule", f"a premedication on {day} with no alemtuzumab infusion that day", place)]
            )
        premedicated["premedication"] = True
    data["infusions"] = list(infusions.values())
    return data


def locate(error: PatientFileError, current: dict[str, Any] | None, update: PatientUpdate) -> FhirIssue:
    """Point a patient-file error (`labs[7].value`) at the resource it came from."""
    match = re.match(r"^(\w+)\[(\d+)\](.*)$", error.field)
    if match and match.group(1) in RECORD_KINDS:
        kind, n = match.group(1), int(match.group(2))
        offset = len((current or {}).get(kind) or [])
        if n >= offset and n - offset < len(update.origins[kind]):
            return FhirIssue(
                "business-rule",
                f"{error.field.split(']', 1)[-1].lstrip('.') or kind}: {error.problem}",
                update.origins[kind][n - offset],
            )
    where = update.patient_place or f"Patient/{update.patient_id}"
    head = error.field.split(".")[0]
    element = PATIENT_ELEMENTS.get(head)
    if element and update.patient_place:
        where = f"{where}.{element}"
    return FhirIssue("value", f"{error.field}: {error.problem}", where)


# The patient file's attributes and the Patient elements they are read from.
PATIENT_ELEMENTS = {"sex": "gender", "birth_date": "birthDate", "screening": "extension", "id": "id"}


def ids(resources: Iterable[Any]) -> list[str]:
    return [r.id for r in resources if getattr(r, "id", None)]
