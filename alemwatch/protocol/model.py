"""Typed model of the protocol file. Parsing it is validating it: a protocol that loads is
one the engine can run. Finding rules are a tagged union keyed on `kind`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Urgency = Literal["emergency", "urgent", "soon", "routine"]
Condition = Literal[
    "infusion_reaction",
    "delayed_infusion_reaction",
    "itp",
    "anti_gbm",
    "thyroid",
    "thyroid_cancer",
    "melanoma",
    "lymphoproliferative",
    "stroke_dissection",
    "hlh",
    "acquired_hemophilia_a",
    "listeria",
    "herpes",
    "autoimmune_hepatitis",
    "infection",
    "common_adverse_effect",
]
TaskName = Literal["cbc", "creatinine", "urinalysis", "tsh", "liver", "skin_exam", "hpv_screening"]
Analyte = Literal[
    "platelets",
    "hemoglobin",
    "wbc",
    "lymphocytes",
    "neutrophils",
    "cd4",
    "creatinine",
    "urine_blood",
    "urine_rbc",
    "urine_protein",
    "upcr",
    "tsh",
    "free_t4",
    "alt",
    "ast",
    "bilirubin",
    "aptt",
    "ferritin",
]
URGENCY_RANK: dict[str, int] = {"routine": 0, "soon": 1, "urgent": 2, "emergency": 3}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    title: str


class Parameter(Strict):
    value: float
    unit: str
    source: str


class AdverseEffect(Strict):
    id: str
    name: str
    system: str
    category: Literal["common", "serious"]
    frequency_pct: float | None = None
    serious_pct: float | None = None
    condition: Condition
    source: str
    watch: str | None = None
    action: str | None = None


class ScreeningRule(Strict):
    """A contraindication or caution read from one screening field."""

    id: str
    code: str
    field: str = Field(pattern=r"^screening\.[a-z_]+$")
    equals: bool | str
    source: str
    message: str


class BaselineTest(Strict):
    id: str
    name: str
    any_of: list[Analyte] = Field(min_length=1)
    source: str


class BaselineScreening(Strict):
    id: str
    name: str
    field: str = Field(pattern=r"^screening\.[a-z_]+$")
    source: str


class CodedRule(Strict):
    id: str
    code: str
    source: str
    message: str


class Baseline(Strict):
    id: str
    window_days: int = Field(gt=0)
    source: str
    tests: list[BaselineTest]
    screening: list[BaselineScreening]
    tuberculosis_positive: CodedRule


class AfterCourseVaccineRule(Strict):
    id: str
    source: str
    condition: Condition
    severity: Urgency
    action: str


class Vaccines(Strict):
    id: str
    min_days_before_course: int = Field(gt=0)
    source: str
    after_course: AfterCourseVaccineRule


class Courses(Strict):
    id: str
    first_course_days: int = Field(gt=0)
    later_course_days: int = Field(gt=0)
    min_interval_months: int = Field(gt=0)
    source: str


class Premedication(Strict):
    id: str
    course_days: int = Field(gt=0)
    source: str


class Observation(Strict):
    id: str
    min_minutes: int = Field(gt=0)
    source: str


class DelayedReactions(Strict):
    id: str
    after_hours: int = Field(gt=0)
    source: str


class Infusion(Strict):
    premedication: Premedication
    observation: Observation
    delayed_reactions: DelayedReactions


class HerpesProphylaxis(Strict):
    id: str
    start: Literal["first_day_of_course"]
    min_months_after_course: int = Field(gt=0)
    cd4_threshold: float = Field(gt=0)
    require_cd4: bool
    source: str


class Prophylaxis(Strict):
    herpes: HerpesProphylaxis


class SatisfiedBy(Strict):
    tests: list[Analyte] = []
    exams: list[str] = []

    @model_validator(mode="after")
    def _not_empty(self) -> SatisfiedBy:
        if not self.tests and not self.exams:
            raise ValueError("a monitoring task needs at least one test or exam")
        return self


class MonitoringTask(Strict):
    id: str
    task: TaskName
    name: str
    interval_months: int = Field(gt=0)
    sex: list[Literal["female", "male", "other", "unknown"]] | None = None
    satisfied_by: SatisfiedBy
    window_before_days: int = Field(ge=0)
    window_after_days: int = Field(ge=0)
    source: str


class Monitoring(Strict):
    months_after_last_infusion: int = Field(gt=0)
    source: str
    tasks: list[MonitoringTask]


class AnalyteSpec(Strict):
    name: str
    loinc: list[str] = Field(min_length=1)
    unit: str
    units: dict[str, float]
    ref_low: float
    ref_high: float
    plausible: tuple[float, float]
    source: str

    @model_validator(mode="after")
    def _canonical_unit_listed(self) -> AnalyteSpec:
        if self.units.get(self.unit) != 1:
            raise ValueError(f"canonical unit {self.unit!r} must be listed in units with factor 1")
        if self.ref_low > self.ref_high:
            raise ValueError("ref_low is above ref_high")
        return self


# --- finding rules: one class per kind -------------------------------------------------


class RuleBase(Strict):
    id: str
    condition: Condition
    severity: Urgency
    source: str
    action: str


class SymptomEscalation(Strict):
    conditions: list[Condition]
    severity: Urgency


class Below(RuleBase):
    kind: Literal["below"]
    analyte: Analyte
    value: float
    applies_in_infusion_week: bool = True
    escalate_with_symptoms: SymptomEscalation | None = None


class BelowRefLow(RuleBase):
    kind: Literal["below_ref_low"]
    analyte: Analyte
    applies_in_infusion_week: bool = True


class FallFromPrevious(RuleBase):
    kind: Literal["fall_from_previous"]
    analyte: Analyte
    fraction: float = Field(gt=0, lt=1)
    applies_in_infusion_week: bool = True


class InfusionWeekDip(RuleBase):
    kind: Literal["infusion_week_dip"]
    analyte: Analyte


class RiseFromBaseline(RuleBase):
    kind: Literal["rise_from_baseline"]
    analyte: Analyte
    ratio: float = Field(gt=1)
    absolute: float = Field(gt=0)


class CompanionTest(Strict):
    analyte: Analyte
    min: float | None = None
    above_ref_high: bool = False


class RiseFromBaselineWith(RuleBase):
    kind: Literal["rise_from_baseline_with"]
    analyte: Analyte
    ratio: float = Field(gt=1)
    absolute: float = Field(gt=0)
    with_: list[CompanionTest] = Field(alias="with", min_length=1)


class AtLeast(RuleBase):
    kind: Literal["at_least"]
    analyte: Analyte
    value: float


class AboveRefHigh(RuleBase):
    kind: Literal["above_ref_high"]
    analyte: Analyte


class AboveRefHighWithoutBaseline(RuleBase):
    kind: Literal["above_ref_high_without_baseline"]
    analyte: Analyte


class OutsideRange(RuleBase):
    kind: Literal["outside_range"]
    analyte: Analyte


class UlnMultiple(Strict):
    analytes: list[Analyte] = Field(min_length=1)
    multiple: float = Field(gt=0)


class AboveUlnMultiple(RuleBase):
    kind: Literal["above_uln_multiple"]
    analytes: list[Analyte] = Field(min_length=1)
    multiple: float = Field(gt=0)


class BothAboveUlnMultiple(RuleBase):
    kind: Literal["both_above_uln_multiple"]
    first: UlnMultiple
    second: UlnMultiple


FindingRule = Annotated[
    Below
    | BelowRefLow
    | FallFromPrevious
    | InfusionWeekDip
    | RiseFromBaseline
    | RiseFromBaselineWith
    | AtLeast
    | AboveRefHigh
    | AboveRefHighWithoutBaseline
    | OutsideRange
    | AboveUlnMultiple
    | BothAboveUlnMultiple,
    Field(discriminator="kind"),
]

# --- triage -----------------------------------------------------------------------------


class UrgencyLevel(Strict):
    rank: int
    advice: str


class Negation(Strict):
    cues: list[str]
    # A red flag (a sign that can be urgent or an emergency) is denied only by a cue right
    # before it, these words apart ("i dont have any weakness"); a cue further off is taken to
    # be about something else ("no fever no pain face droopy on the left").
    red_flag_gap_words: list[str] = []
    post: list[str] = []  # denials right after a mention, in its clause ("fever free", "lumps: none found")
    post_at_end: list[str] = []  # denials that count only as the last words of the clause ("weakness: none")
    pseudo: list[str]  # phrases that look like a negation and are not; lexicon phrases ("never ~6 before")
    terminators: list[str]
    max_words: int = Field(gt=0)
    # Words that join a list a negation reaches through ("no fever or rash"); past any other
    # word after a mention of its own the negation stops ("dont have a temperature throat is swelling").
    list_words: list[str] = ["or", "nor"]


class DaysWindow(Strict):
    min_days: int | None = None
    max_days: int | None = None
    condition: Condition | None = None
    urgency: Urgency | None = None

    def contains(self, days: int) -> bool:
        low_ok = self.min_days is None or days >= self.min_days
        return low_ok and (self.max_days is None or days <= self.max_days)


class Sign(Strict):
    id: str = Field(pattern=r"^triage\.[a-z0-9_]+$")
    condition: Condition
    urgency: Urgency
    source: str
    phrases: list[str] = Field(min_length=1)
    windows: list[DaysWindow] = []
    windows_only: bool = False  # the sign counts only inside one of its windows
    days_unknown: DaysWindow | None = None


class Combination(Strict):
    id: str
    all_of: list[list[str]] = Field(min_length=2)
    condition: Condition
    urgency: Urgency
    source: str
    min_days: int | None = None


class Temperature(Strict):
    fever_sign: str
    high_fever_sign: str


class ReportedPlatelets(Strict):
    """A platelet count the patient quotes ("platelets were 40") is read as a number: below the
    value of the finding rule `below_rule` (a `below` rule on platelets, so the threshold is kept
    once) it raises `low_sign`."""

    low_sign: str
    below_rule: str


class ReportedHeartRate(Strict):
    """A heart rate the patient quotes ("resting heart rate 115", "pulse 120", "130 bpm") is read
    as a number: at or above the protocol parameter `at_least_parameter` it raises `fast_sign`."""

    fast_sign: str
    at_least_parameter: str


class Triage(Strict):
    source: str
    urgency_levels: dict[Urgency, UrgencyLevel]
    negation: Negation
    signs: list[Sign]
    combinations: list[Combination]
    temperature: Temperature
    platelets: ReportedPlatelets | None = None
    heart_rate: ReportedHeartRate | None = None
    # Words taken out before reading (hedges that push a symptom past a phrase's gap: "my chest
    # feels a bit tight"), and lay or text-speak spellings read as the word they stand for.
    fillers: list[str] = []
    respellings: dict[str, str] = {}


class DeviationSeverity(Strict):
    source: str
    codes: dict[str, Urgency]


class Protocol(Strict):
    format_version: Literal[1]
    protocol_version: str
    drug: Literal["alemtuzumab"]
    jurisdiction: Literal["us", "eu"]
    sources: dict[str, Source]
    parameters: dict[str, Parameter]
    adverse_effects: list[AdverseEffect]
    contraindications: list[ScreeningRule]
    cautions: list[ScreeningRule]
    baseline: Baseline
    vaccines: Vaccines
    courses: Courses
    infusion: Infusion
    prophylaxis: Prophylaxis
    monitoring: Monitoring
    deviation_severity: DeviationSeverity
    exam_types: dict[str, list[str]]
    analytes: dict[Analyte, AnalyteSpec]
    findings: list[FindingRule]
    triage: Triage

    def parameter(self, name: str) -> float:
        return self.parameters[name].value

    def int_parameter(self, name: str) -> int:
        return int(self.parameters[name].value)
