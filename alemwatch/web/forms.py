"""The forms a nurse fills in, as data: their fields, and how the submitted text becomes a
contract record. Parsing checks what a form can know (a number is a number, a date is not in
the future, the observation ends after the infusion); the patient-file validation in
`alemwatch.core.patient` then checks the record itself, and its errors are mapped back to the
field they name. A failed submit shows every error beside its field, with what was typed."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alemwatch.core.patient import Screening
from alemwatch.protocol.model import Protocol

Values = dict[str, str]
Errors = dict[str, str]
YES_NO = (("yes", "Yes"), ("no", "No"))
SEVERITIES = (
    ("mild", "Mild"),
    ("moderate", "Moderate"),
    ("severe", "Severe"),
    ("life_threatening", "Life-threatening"),
)
SCREENING_CHOICES = (("unknown", "Unknown"), ("negative", "Negative"), ("positive", "Positive"))
SEXES = (("female", "Female"), ("male", "Male"), ("other", "Other"), ("unknown", "Unknown"))
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # kept out of the record (PostgreSQL refuses NUL)
PATIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VITAL_SIGN_EXAM = "vital_signs"
# Plausible bounds of vital signs as typed (input checks, not clinical thresholds).
VITAL_BOUNDS = {
    "bp_systolic": (40, 300),
    "bp_diastolic": (20, 200),
    "pulse": (20, 250),
    "temperature": (30, 45),
    "spo2": (50, 100),
}


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text, number, date, time, select, radio, checkbox, textarea, hidden
    required: bool = False
    options: tuple[tuple[str, str], ...] = ()
    help: str = ""
    autocomplete: str = "off"
    suggestions: tuple[str, ...] = ()
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FormSpec:
    title: str
    fields: tuple[Field, ...]
    submit: str
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # fieldset legend -> field names


# --- parsing helpers ------------------------------------------------------------------------


def text(values: Values, name: str, errors: Errors, required: bool = False, max_length: int = 2000) -> str | None:
    value = (values.get(name) or "").strip()
    if not value:
        if required:
            errors[name] = "Required."
        return None
    if CONTROL.search(value):
        errors[name] = "Contains a control character; please type it again."
        return None
    if len(value) > max_length:
        errors[name] = f"At most {max_length} characters."
        return None
    return value


def number(values: Values, name: str, errors: Errors, required: bool = False) -> int | float | None:
    raw = text(values, name, errors, required, 40)
    if raw is None:
        return None
    try:
        parsed = float(raw.replace(",", "."))
    except ValueError:
        errors[name] = f"Enter a number (for example 150 or 0.8), not {raw!r}."
        return None
    if parsed != parsed or parsed in (float("inf"), float("-inf")):
        errors[name] = "Enter a finite number."
        return None
    return int(parsed) if parsed.is_integer() else parsed


def date(values: Values, name: str, errors: Errors, today: dt.date, required: bool = True) -> dt.date | None:
    raw = text(values, name, errors, required, 10)
    if raw is None:
        return None
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        errors[name] = "Enter a date as YYYY-MM-DD."
        return None
    if day > today:
        errors[name] = "Cannot be in the future."
        return None
    return day


def any_date(values: Values, name: str, errors: Errors) -> dt.date | None:
    """A date that may lie in the future (a planned course)."""
    raw = text(values, name, errors, False, 10)
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors[name] = "Enter a date as YYYY-MM-DD."
        return None


def clock(values: Values, name: str, errors: Errors, required: bool = True) -> dt.time | None:
    raw = text(values, name, errors, required, 8)
    if raw is None:
        return None
    try:
        return dt.time.fromisoformat(raw)
    except ValueError:
        errors[name] = "Enter a time as HH:MM."
        return None


def choice(values: Values, name: str, errors: Errors, options: tuple[tuple[str, str], ...]) -> str | None:
    value = text(values, name, errors, True, 100)
    if value is not None and value not in {key for key, _ in options}:
        errors[name] = "Choose one of the options."
        return None
    return value


def field_of(
    error_field: str, form_fields: tuple[str, ...], fallback: str, aliases: Mapping[str, str] | None = None
) -> str:
    """The form field a patient-file error names: `labs[0].unit` -> `unit`, `screening.hiv` -> `hiv`."""
    tail = re.sub(r"^[a-z_]+\[\d+\]\.?", "", error_field)
    for segment in tail.split("."):
        name = (aliases or {}).get(segment.split("[")[0], segment.split("[")[0])
        if name in form_fields:
            return name
    return fallback


# --- lab result --------------------------------------------------------------------------------


def _units_on_change(action: str) -> dict[str, str]:
    return {"hx-get": action, "hx-target": "#field-unit", "hx-select": "#field-unit", "hx-swap": "outerHTML"}


def lab_form(protocol: Protocol, test: str | None, action: str) -> FormSpec:
    """The lab form; choosing a test fetches its units (HTMX; without JavaScript any unit is checked on save)."""
    analytes = tuple((name, f"{spec.name} ({name})") for name, spec in protocol.analytes.items())
    spec = protocol.analytes.get(test or "platelets") or protocol.analytes["platelets"]  # type: ignore[call-overload]
    units = tuple((unit, unit) for unit in spec.units)
    return FormSpec(
        "Lab result",
        (
            Field("test", "Test", "select", True, analytes, attrs=_units_on_change(action)),
            Field("value", "Value", "number", True, help="As printed on the report, in the unit chosen below."),
            Field(
                "unit",
                "Unit",
                "select",
                True,
                units,
                help=f"Canonical unit: {spec.unit}; any listed unit is converted.",
            ),
            Field("date", "Date of the sample", "date", True),
            Field(
                "ref_low", "Lower reference limit (optional)", "number", help="The laboratory's own range, same unit."
            ),
            Field("ref_high", "Upper reference limit (optional)", "number"),
        ),
        "Save the result",
    )


def parse_lab(values: Values, today: dt.date) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {}
    item: dict[str, Any] = {
        "test": text(values, "test", errors, True, 40),
        "value": number(values, "value", errors, True),
        "unit": text(values, "unit", errors, True, 40),
        "date": date(values, "date", errors, today),
    }
    for bound in ("ref_low", "ref_high"):
        value = number(values, bound, errors)
        if value is not None:
            item[bound] = value
    if item["date"] is not None:
        item["date"] = item["date"].isoformat()
    return item, errors


# --- infusion day --------------------------------------------------------------------------------


def infusion_form() -> FormSpec:
    return FormSpec(
        "Infusion day",
        (
            Field("date", "Infusion date", "date", True),
            Field("premedication", "Corticosteroid premedication given", "radio", True, YES_NO),
            Field("dose_mg", "Dose (mg)", "number", help="12 mg per infusion on the label."),
            Field("infusion_end", "Infusion ended at", "time", True),
            Field("observation_end", "Observation ended at", "time", True, help="At least 2 hours after the infusion."),
            Field("bp_systolic", "Blood pressure, systolic (mmHg)", "number"),
            Field("bp_diastolic", "Blood pressure, diastolic (mmHg)", "number"),
            Field("pulse", "Pulse (/min)", "number"),
            Field("temperature", "Temperature (°C)", "number"),
            Field("spo2", "Oxygen saturation (%)", "number"),
            Field("reaction_type", "Reaction (leave empty if none)", help="For example rash, fever, chest tightness."),
            Field("reaction_severity", "Reaction severity", "select", False, SEVERITIES),
            Field("reaction_onset_hours", "Reaction onset (hours after the start)", "number"),
        ),
        "Save the infusion day",
        (
            ("Infusion", ("date", "premedication", "dose_mg", "infusion_end", "observation_end")),
            ("Vital signs", ("bp_systolic", "bp_diastolic", "pulse", "temperature", "spo2")),
            ("Infusion reaction", ("reaction_type", "reaction_severity", "reaction_onset_hours")),
        ),
    )


def _observation_minutes(values: Values, errors: Errors) -> int | None:
    ended, observed = clock(values, "infusion_end", errors), clock(values, "observation_end", errors)
    if ended is None or observed is None:
        return None
    minutes = (observed.hour * 60 + observed.minute) - (ended.hour * 60 + ended.minute)
    if minutes < 0:
        errors["observation_end"] = "Must be after the end of the infusion."
        return None
    return minutes


def _vital_signs(values: Values, errors: Errors) -> str | None:
    """The vital signs as one line of text (stored as a `vital_signs` examination)."""
    read: dict[str, float] = {}
    for name, (low, high) in VITAL_BOUNDS.items():
        value = number(values, name, errors)
        if value is not None and not low <= value <= high:
            errors[name] = f"Between {low} and {high}."
        elif value is not None:
            read[name] = value

    def shown(name: str) -> str:
        return f"{read[name]:g}" if name in read else "?"

    parts = []
    if "bp_systolic" in read or "bp_diastolic" in read:
        parts.append(f"BP {shown('bp_systolic')}/{shown('bp_diastolic')} mmHg")
    for name, template in (("pulse", "pulse {}/min"), ("temperature", "temperature {} °C"), ("spo2", "SpO2 {} %")):
        if name in read:
            parts.append(template.format(shown(name)))
    return "; ".join(parts) or None


def _reaction(values: Values, errors: Errors) -> dict[str, Any] | None:
    kind = text(values, "reaction_type", errors, False, 200)
    onset = number(values, "reaction_onset_hours", errors)
    if kind is None:
        return None
    reaction: dict[str, Any] = {"type": kind, "severity": values.get("reaction_severity") or "mild"}
    if onset is not None:
        reaction["onset_hours"] = onset
    return reaction


def parse_infusion(values: Values, today: dt.date) -> tuple[dict[str, Any], dict[str, Any] | None, Errors]:
    """(infusion, vital-signs exam or None, errors)."""
    errors: Errors = {}
    day = date(values, "date", errors, today)
    premedication = choice(values, "premedication", errors, YES_NO)
    infusion: dict[str, Any] = {
        "date": day.isoformat() if day else None,
        "premedication": premedication == "yes",
        "observation_minutes": _observation_minutes(values, errors),
    }
    dose = number(values, "dose_mg", errors)
    if dose is not None:
        infusion["dose_mg"] = dose
    reaction = _reaction(values, errors)
    if reaction is not None:
        infusion["reactions"] = [reaction]
    vitals = _vital_signs(values, errors)
    exam = {"type": VITAL_SIGN_EXAM, "date": infusion["date"], "result": vitals} if vitals and day else None
    return infusion, exam, errors


# --- exam, vaccination, prophylaxis ---------------------------------------------------------------


def exam_form(protocol: Protocol) -> FormSpec:
    kinds = (*protocol.exam_types, VITAL_SIGN_EXAM, "neurological", "mri")
    return FormSpec(
        "Examination",
        (
            Field("type", "Examination", "text", True, suggestions=kinds, help="skin and hpv count for the plan."),
            Field("date", "Date", "date", True),
            Field("result", "Result (optional)", "textarea"),
        ),
        "Save the examination",
    )


def parse_exam(values: Values, today: dt.date) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {}
    day = date(values, "date", errors, today)
    item: dict[str, Any] = {"type": text(values, "type", errors, True, 100), "date": day.isoformat() if day else None}
    result = text(values, "result", errors, False, 2000)
    if result:
        item["result"] = result
    return item, errors


def vaccination_form() -> FormSpec:
    return FormSpec(
        "Vaccination",
        (
            Field("vaccine", "Vaccine", "text", True, help="For example varicella, influenza (inactivated)."),
            Field(
                "live", "Live vaccine", "radio", True, YES_NO, help="Live vaccines: at least 6 weeks before a course."
            ),
            Field("date", "Date given", "date", True),
        ),
        "Save the vaccination",
    )


def parse_vaccination(values: Values, today: dt.date) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {}
    day = date(values, "date", errors, today)
    live = choice(values, "live", errors, YES_NO)
    vaccine = text(values, "vaccine", errors, True, 200)
    return {"vaccine": vaccine, "live": live == "yes", "date": day.isoformat() if day else None}, errors


def prophylaxis_start_form() -> FormSpec:
    return FormSpec(
        "Start herpes prophylaxis",
        (
            Field("drug", "Drug", "text", True, suggestions=("aciclovir", "valaciclovir")),
            Field("start", "Start date", "date", True),
        ),
        "Record the start",
    )


def prophylaxis_stop_form(open_records: list[dict[str, Any]]) -> FormSpec:
    options = tuple((r["start"], f"{r['drug']} since {r['start']}") for r in open_records)
    return FormSpec(
        "Stop herpes prophylaxis",
        (Field("record", "Prophylaxis to stop", "select", True, options), Field("stop", "Stop date", "date", True)),
        "Record the stop",
    )


def parse_prophylaxis_start(values: Values, today: dt.date) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {}
    day = date(values, "start", errors, today)
    drug = text(values, "drug", errors, True, 100)
    return {"kind": "herpes", "drug": drug, "start": day.isoformat() if day else None, "stop": None}, errors


def parse_prophylaxis_stop(
    values: Values, today: dt.date, open_records: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, str | None, Errors]:
    """(the open record to stop, its stop date, errors)."""
    errors: Errors = {}
    starts = {r["start"]: r for r in open_records}
    record = starts.get(values.get("record", ""))
    if record is None:
        errors["record"] = "Choose the prophylaxis to stop."
    day = date(values, "stop", errors, today)
    if record is not None and day is not None and day.isoformat() < record["start"]:
        errors["stop"] = "Cannot be before the start."
    return record, day.isoformat() if day else None, errors


# --- a new patient ----------------------------------------------------------------------------------


SCREENING_FLAGS = tuple(name for name, info in Screening.model_fields.items() if info.annotation is bool)


def patient_form() -> FormSpec:
    flags = tuple(Field(name, name.replace("_", " ").capitalize(), "checkbox") for name in SCREENING_FLAGS)
    return FormSpec(
        "New patient",
        (
            Field("id", "Patient id", "text", True, help="Letters, digits, dot, dash or underscore; no names."),
            Field("birth_date", "Date of birth", "date"),
            Field("sex", "Sex", "select", True, SEXES),
            Field("planned_course_start", "Planned first infusion of the next course", "date"),
            Field("hiv", "HIV status", "select", True, SCREENING_CHOICES),
            Field("tuberculosis", "Tuberculosis screening", "select", True, SCREENING_CHOICES),
            *flags,
        ),
        "Create the patient",
        (
            ("Patient", ("id", "birth_date", "sex", "planned_course_start")),
            ("Screening", ("hiv", "tuberculosis", *SCREENING_FLAGS)),
        ),
    )


def parse_patient_form(values: Values, today: dt.date) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {}
    patient_id = text(values, "id", errors, True, 64)
    if patient_id is not None and not PATIENT_ID.match(patient_id):
        errors["id"] = "Use letters, digits, dot, dash or underscore (at most 64)."
    born = date(values, "birth_date", errors, today, required=False)
    planned = any_date(values, "planned_course_start", errors)
    screening: dict[str, Any] = {
        "hiv": choice(values, "hiv", errors, SCREENING_CHOICES),
        "tuberculosis": choice(values, "tuberculosis", errors, SCREENING_CHOICES),
    }
    screening.update({name: values.get(name) == "on" for name in SCREENING_FLAGS})
    patient: dict[str, Any] = {"id": patient_id, "sex": choice(values, "sex", errors, SEXES), "screening": screening}
    if born:
        patient["birth_date"] = born.isoformat()
    if planned:
        patient["planned_course_start"] = planned.isoformat()
    return patient, errors


# --- what a patient reports -----------------------------------------------------------------------------


def report_form() -> FormSpec:
    return FormSpec(
        "Tell your team how you feel",
        (
            Field(
                "text",
                "Describe your symptoms in your own words",
                "textarea",
                True,
                help="For example: when it started, what you feel, your temperature if you took it.",
            ),
            Field("date", "When did it start?", "date", True),
        ),
        "Send to my MS team",
    )


def parse_report(values: Values, today: dt.date) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {}
    report = text(values, "text", errors, True, 5000)
    day = date(values, "date", errors, today)
    return {"text": report, "date": day}, errors


def resolve_reason(values: Values) -> tuple[str | None, Errors]:
    errors: Errors = {}
    return text(values, "reason", errors, True, 2000), errors
