"""The contract's patient file as typed, validated values.

Unknown keys, bad dates, unknown tests, impossible units and non-numeric values are
rejected with the path of the offending field (e.g. `labs[2].unit`). Lab results are
normalised to the protocol's canonical unit on the way in; the value and unit as received
are kept beside the normalised ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alemwatch.protocol.model import Analyte, Protocol

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2199, 12, 31)  # dates any record can carry
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PatientFileError(ValueError):
    """Invalid patient data; `field` is the dotted path of the first offending field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _iso_date(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not ISO_DATE.match(value):
        raise ValueError(f"must be a date written YYYY-MM-DD, got {value!r}")
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a real calendar date") from None
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"{value!r} is outside {EARLIEST.isoformat()}..{LATEST.isoformat()}")
    return day


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
Number = StrictInt | StrictFloat


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Screening(Record):
    hiv: Literal["negative", "positive", "unknown"] = "unknown"
    active_infection: bool = False
    alemtuzumab_hypersensitivity: bool = False
    tuberculosis: Literal["negative", "positive", "unknown"] = "unknown"
    uncontrolled_hypertension: bool = False
    history_of_stroke: bool = False
    history_of_arterial_dissection: bool = False
    history_of_angina_or_mi: bool = False
    coagulopathy: bool = False
    anticoagulant_or_antiplatelet_therapy: bool = False
    other_autoimmune_disease: bool = False
    pregnant: bool = False


class Vaccination(Record):
    vaccine: str = Field(min_length=1, max_length=200)
    live: bool
    date: IsoDate


class Reaction(Record):
    type: str = Field(min_length=1, max_length=200)
    severity: Literal["mild", "moderate", "severe", "life_threatening"] = "mild"
    onset_hours: Number | None = Field(default=None, ge=0, le=24 * 365)


class Infusion(Record):
    date: IsoDate
    premedication: bool | None = None
    observation_minutes: Number | None = Field(default=None, ge=0, le=24 * 60)
    reactions: list[Reaction] = []
    dose_mg: Number | None = Field(default=None, gt=0, le=1000)


class LabResult(Record):
    """One result; `test`/`unit`/`value` are as received, `analyte`/`canonical` normalised."""

    id: str | None = Field(default=None, min_length=1, max_length=200)
    test: str
    value: Number
    unit: str = Field(min_length=1, max_length=40)
    date: IsoDate
    ref_low: Number | None = None
    ref_high: Number | None = None
    analyte: Analyte = Field(default="platelets", exclude=True)  # always set by _normalise
    canonical: float = Field(default=0.0, exclude=True)
    canonical_ref_low: float | None = Field(default=None, exclude=True)
    canonical_ref_high: float | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any, info: ValidationInfo) -> Any:
        protocol: Protocol | None = (info.context or {}).get("protocol")
        if protocol is None:
            raise ValueError("lab results are validated against a protocol (use parse_patient)")
        if not isinstance(data, dict):
            return data
        return normalise_lab(protocol, data)


class Exam(Record):
    type: str = Field(min_length=1, max_length=100)
    date: IsoDate
    result: str | None = Field(default=None, max_length=2000)


class ProphylaxisRecord(Record):
    kind: Literal["herpes"]
    drug: str = Field(min_length=1, max_length=100)
    start: IsoDate
    stop: IsoDate | None = None

    @model_validator(mode="after")
    def _stop_after_start(self) -> ProphylaxisRecord:
        if self.stop is not None and self.stop < self.start:
            raise ValueError("stop is before start")
        return self


class SymptomReport(Record):
    date: IsoDate
    text: str = Field(min_length=1, max_length=5000)


class Patient(Record):
    id: str = Field(min_length=1, max_length=200)
    birth_date: IsoDate | None = None
    sex: Literal["female", "male", "other", "unknown"] = "unknown"
    screening: Screening = Screening()
    planned_course_start: IsoDate | None = None
    vaccinations: list[Vaccination] = []
    infusions: list[Infusion] = []
    labs: list[LabResult] = []
    exams: list[Exam] = []
    prophylaxis: list[ProphylaxisRecord] = []
    symptoms: list[SymptomReport] = []

    @field_validator("infusions")
    @classmethod
    def _one_infusion_a_day(cls, infusions: list[Infusion]) -> list[Infusion]:
        seen: set[dt.date] = set()
        for n, infusion in enumerate(infusions):
            if infusion.date in seen:
                raise ValueError(f"infusions[{n}] repeats the date {infusion.date.isoformat()}")
            seen.add(infusion.date)
        return infusions


@functools.lru_cache(maxsize=4096)
def _unit_key(unit: str) -> str:
    return unit.strip().replace("µ", "u").replace("μ", "u").replace(" ", "").lower()


# What a (test, unit) pair resolves to under one protocol: its analyte, plausible range and unit
# factor. A lab system sends the same few pairs for every result, so each is worked out once
# (only pairs that resolve are kept; a table is emptied when it grows past _LOOKUP_LIMIT). The
# protocol models are frozen: what a pair resolves to cannot change under a protocol.
_LOOKUPS: dict[int, tuple[Protocol, dict[tuple[str, str], tuple[str, float, float, float]]]] = {}
_LOOKUP_LIMIT = 4096  # pairs a protocol
_PROTOCOLS_KEPT = 16


def _lookup(protocol: Protocol, test: str, unit: str) -> tuple[str, float, float, float]:
    """(analyte, unit factor, plausible low, plausible high) of a lab result; ValueError naming
    the field when the test or the unit is not one of the protocol's."""
    held = _LOOKUPS.get(id(protocol))
    if held is None or held[0] is not protocol:
        if len(_LOOKUPS) >= _PROTOCOLS_KEPT:  # protocols made and dropped (tests, reloads): not kept alive
            _LOOKUPS.clear()
        held = (protocol, {})
        _LOOKUPS[id(protocol)] = held
    table = held[1]
    found = table.get((test, unit))
    if found is not None:
        return found
    analyte = _known_analyte(protocol, test)
    spec = protocol.analytes[analyte]  # type: ignore[index]
    wanted = _unit_key(unit)
    factor = next((f for u, f in spec.units.items() if _unit_key(u) == wanted), None)
    if factor is None:
        raise ValueError(f"unit: {unit!r} is not a unit of {spec.name}; use one of {', '.join(spec.units)}")
    if len(table) >= _LOOKUP_LIMIT:
        table.clear()
    found = table[(test, unit)] = (analyte, factor, *spec.plausible)
    return found


def _known_analyte(protocol: Protocol, test: str) -> str:
    analyte = resolve_analyte(protocol, test)
    if analyte is None:
        raise ValueError(f"test: unknown test {test!r}; use one of {', '.join(protocol.analytes)} or their LOINC codes")
    return analyte


def normalise_lab(protocol: Protocol, data: dict[str, Any]) -> dict[str, Any]:
    """Resolve the test name or LOINC code and convert value and range to the canonical unit."""
    test = data.get("test")
    if not isinstance(test, str):
        raise ValueError("test: must be an analyte name or a LOINC code")
    unit = data.get("unit")
    if not isinstance(unit, str):
        _known_analyte(protocol, test)  # an unknown test is named first
        raise ValueError("unit: must be a UCUM unit string")
    analyte, factor, low, high = _lookup(protocol, test, unit)
    value = data.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"value: must be a number, got {value!r}")
    if not _finite(value):
        raise ValueError(f"value: must be a finite number, got {value!r}")
    canonical = float(value) * factor
    if not low <= canonical <= high:
        name = protocol.analytes[analyte].name  # type: ignore[index]
        raise ValueError(f"value: {value} {unit} is outside the plausible range for {name}")
    out = dict(data)
    out["analyte"] = analyte
    out["canonical"] = canonical
    for bound in ("ref_low", "ref_high"):
        raw = data.get(bound)
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not _finite(raw):
                raise ValueError(f"{bound}: must be a finite number, got {raw!r}")
            out[f"canonical_{bound}"] = float(raw) * factor
    ref_low, ref_high = out.get("canonical_ref_low"), out.get("canonical_ref_high")
    if ref_low is not None and ref_high is not None and ref_low > ref_high:
        raise ValueError("ref_low: is above ref_high")
    return out


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value)) and abs(float(value)) < 1e12
    except OverflowError:
        return False


def resolve_analyte(protocol: Protocol, test: str) -> str | None:
    key = test.strip()
    if key in protocol.analytes:
        return key
    for name, spec in protocol.analytes.items():
        if key in spec.loinc:
            return name
    return None


def _location(loc: tuple[int | str, ...], msg: str) -> tuple[str, str]:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not IDENTIFIER.match(part):
            path += f"[{json.dumps(part)}]"  # a key like "\n" stays on one line
        else:
            path += f".{part}" if path else str(part)
    # Messages from the lab normaliser carry the sub-field first ("unit: ...").
    sub = re.match(r"^(?:Value error, )?(test|unit|value|ref_low|ref_high): (.*)$", msg)
    if sub:
        return f"{path}.{sub.group(1)}" if path else sub.group(1), sub.group(2)
    return path or "patient", msg.removeprefix("Value error, ")


def parse_patient(data: Any, protocol: Protocol) -> Patient:
    """Validate a decoded patient file; raises PatientFileError naming the first bad field."""
    if not isinstance(data, dict):
        raise PatientFileError("patient", "must be a JSON object")
    try:
        return Patient.model_validate(data, context={"protocol": protocol})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        err = errors[0]
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and (p in {"int", "float"} or p.startswith("function-")))
        )
        field, problem = _location(loc, err["msg"])
        if err["type"] == "extra_forbidden":
            problem = "unknown key"
        elif err["type"] == "missing":
            problem = "is required"
        elif err["type"] == "literal_error":
            problem = f"{err['msg'].lower()}, got {err.get('input')!r}"
        elif err["type"] in {"int_type", "float_type"}:
            problem = f"must be a number, got {err.get('input')!r}"
        raise PatientFileError(field, problem) from None
