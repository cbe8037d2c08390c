"""The one demo builder: a synthetic alemtuzumab cohort as contract patient files.

Tests, benchmarks and `make run` all take their demo patients from here. Nobody in it is
real. Patient `index` of `seed` is a pure function of (seed, index, as_of): it can be rebuilt
alone, and a cohort is just those patients in order.

Each patient sits at one stage of the programme as of `as_of` (planned first course, first
year, between courses, after course 2, after course 3, beyond the 48-month plan) and carries
what a clinic would have recorded by then: screening, infusions with premedication,
observation and reactions, herpes prophylaxis, baseline labs before each course and monthly
labs after it (some missed, some late, some from labs with other units or their own ranges),
yearly skin and HPV exams, vaccinations and symptom reports in the patient's own words.

Adverse events come at the seed's rates (constants below, each citing its source). The demo
is a snapshot, so events are placed where an assessment can see them:
- thyroid disease starts 6-36 months after the first course and stays (TSH out of range at
  every later check), so among patients followed for 40 months or more the share with a
  thyroid finding is about THYROID_RATE;
- acute autoimmune events (ITP, anti-GBM, hepatitis, neutropenia, acquired haemophilia A)
  are episodes under way at the latest visits of patients still in monitoring, so the share
  of those patients with a current finding is about the event's rate.
Numbers that no source gives are tagged POLICY (demo): they only shape a realistic cohort.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import operator
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, NamedTuple

from alemwatch.core.chart import add_months

# --- Rates of the cohort ------------------------------------------------------------------
FEMALE_SHARE = 0.70  # POLICY (demo): MS is two to three times as common in women
INFUSION_REACTION_RATE = 0.92  # SEED: Infusion reactions ... Occur in 92% of patients
SERIOUS_INFUSION_REACTION_RATE = 0.03  # SEED: with 3% being severe reactions (such as anaphylactic shock, bronchospasm)
THYROID_RATE = 0.368  # SEED: Thyroid diseases (36.8%)
ITP_RATE = 0.02  # SEED: Immune thrombocytopenia (ITP, 2%)
ANTI_GBM_RATE = 0.003  # SEED: Anti-glomerular basement membrane disease (0.3%)
HEPATITIS_RATE = 0.003  # POLICY (demo): the seed gives no rate; US-PI 5 reports autoimmune hepatitis as rare
HEMOPHILIA_RATE = 0.002  # POLICY (demo): the seed gives no rate ("tendency for spontaneous bleeding")
NEUTROPENIA_RATE = 0.01  # POLICY (demo): the seed gives no rate; US-PI 5 lists autoimmune cytopenias
STROKE_REPORT_RATE = 0.002  # POLICY (demo): the seed gives no rate ("Mostly occur within 3 days after administration")

# Common adverse effects reported in the patient's own words: (rate, text).
COMMON_REPORTS = (
    (0.18, "feeling tired"),  # SEED: fatigue (18%)
    (0.25, "sore throat and a runny nose"),  # SEED: Nasopharyngitis (25%)
    (0.19, "it burns when I pee"),  # SEED: urinary tract infection (19%)
    (0.16, "a cold sore on my lip"),  # SEED: herpes virus infection (16%)
    (0.21, "I feel sick and have no appetite"),  # SEED: Nausea (21%)
    (0.12, "my joints ache"),  # SEED: Arthralgia (12%)
    (0.10, "pins and needles in my feet"),  # SEED: paresthesia (10%)
)
DELAYED_RASH_REPORT_RATE = 0.08  # POLICY (demo); SEED: "Some cases occur more than 24 hours after infusion"
DELAYED_RASH_TEXT = "rash on my arms two days after the infusion"
STROKE_TEXT = "sudden worst headache of my life and my left arm feels weak"
ITP_TEXTS = ("bruises on my legs I can't explain", "my gums bleed when I brush my teeth", "tiny red spots on my shins")
GRAVES_TEXT = "my heart is racing and I feel shaky"
HYPOTHYROID_TEXT = "I feel so sluggish and I'm putting on weight"
ANTI_GBM_TEXT = "my legs and ankles are puffy"
HEPATITIS_TEXT = "my skin and eyes look yellow"
HEMOPHILIA_TEXT = "huge bruises on my thigh and I didn't bump into anything"

# Shapes of the events (POLICY (demo) unless tagged).
GRAVES_SHARE = 0.65  # POLICY (demo): most alemtuzumab thyroid disease is Graves' disease (US-PI 5)
THYROID_ONSET_DAYS = (183, 1095)  # POLICY (demo): the clinical reference's 6-36 months
THYROID_SYMPTOM_SHARE = 0.4
ITP_SEVERE_SHARE = 0.4  # platelets below 30
ITP_SYMPTOM_SHARE = 0.7
ANTI_GBM_SYMPTOM_SHARE = 0.5
HEPATITIS_SYMPTOM_SHARE = 0.5
DELAYED_REACTION_SHARE = 0.06  # of reactions, onset > 24 h
MODERATE_REACTION_SHARE = 0.15
REACTION_PER_INFUSION = 0.35  # chance of a reaction on each infusion of a reacting patient

# Care as delivered (POLICY (demo)): how often the clinic departs from the protocol.
PREMEDICATION_MISSED_RATE = 0.01  # per infusion on days 1-3
SHORT_OBSERVATION_RATE = 0.015  # per infusion, < 120 minutes
PROPHYLAXIS_MISSING_RATE = 0.03  # per course, no record
PROPHYLAXIS_LATE_RATE = 0.02  # per course, started after day 1
PROPHYLAXIS_EARLY_STOP_RATE = 0.04  # per course, stopped before 2 months
MISSED_VISIT_RATE = 0.08  # monthly visits not done
LATE_VISIT_RATE = 0.04  # visits outside the +-7 day window
URINALYSIS_SKIPPED_RATE = 0.03
BASELINE_TOO_OLD_RATE = 0.06  # baseline panel more than 30 days before a course
BASELINE_INCOMPLETE_RATE = 0.12  # a planned course's baseline panel lacks a test
SKIN_EXAM_MISSED_RATE = 0.10
HPV_MISSED_RATE = 0.15
MENSTRUAL_TRACE_RATE = 0.01  # women's urine dipstick trace blood (explained by menstruation)
VACCINATED_BEFORE_RATE = 0.35
FLU_VACCINE_RATE = 0.4  # yearly inactivated influenza vaccine after treatment
LIVE_VACCINE_TOO_CLOSE_RATE = 0.04  # of planned first courses: inside the 42 days before
LIVE_VACCINE_AFTER_COURSE_RATE = 0.005
EARLY_SECOND_COURSE_RATE = 0.01  # course 2 less than 12 months after course 1
PLANNED_NEXT_COURSE_RATE = 0.6  # patients between courses with a date for the next one

# Stages as of the assessment date, with their share of the cohort (POLICY (demo)).
STAGES = (
    ("planned_first", 0.10),
    ("first_year", 0.20),
    ("between_courses", 0.08),
    ("after_second", 0.37),
    ("after_third", 0.10),
    ("beyond_monitoring", 0.15),
)
STAGE_NAMES = tuple(name for name, _ in STAGES)
STAGE_CUMULATIVE = tuple(itertools.accumulate(share for _, share in STAGES))
MONITORING_MONTHS = 48
TREND_MONTHS = 36  # months after a course with a modelled lymphocyte and CD4+ recovery; later ones are settled
CD4_MONTHS = frozenset({1, 2, 3, 6, 9, 12})  # POLICY (demo): CD4+ counts in the first year after a course

MONTHLY = (
    "platelets",
    "hemoglobin",
    "wbc",
    "lymphocytes",
    "neutrophils",
    "creatinine",
    "urine_blood",
    "urine_rbc",
    "upcr",
)
URINE = ("urine_blood", "urine_rbc", "upcr")
QUARTERLY = ("tsh", "free_t4", "alt", "ast", "bilirubin")
LIVER = ("alt", "ast", "bilirubin")
BASELINE_PANEL = (*MONTHLY, *QUARTERLY, "cd4")
# The tests of the monthly visit `month` months after a course (index 0 unused).
SERIES_TESTS = tuple(
    MONTHLY + (QUARTERLY if month and month % 3 == 0 else ()) + (("cd4",) if month in CD4_MONTHS else ())
    for month in range(MONITORING_MONTHS + 1)
)
DROPPABLE_BASELINE = ("upcr", "tsh", "bilirubin", "alt", "ast")

# Healthy values in canonical units: (female set point range, male set point range, sd).
# Noise is cut at 2.5 sd and the set points leave that much room inside every demo lab's
# reference range, so the cohort's findings come from its events rather than from noise.
HEALTHY: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "platelets": ((215, 320), (205, 310), 18),
    "hemoglobin": ((125, 145), (140, 160), 5),
    "wbc": ((4.8, 7.5), (4.8, 7.5), 0.5),
    "lymphocytes": ((1.4, 2.6), (1.4, 2.6), 0.06),
    "neutrophils": ((2.6, 4.8), (2.6, 4.8), 0.4),
    "cd4": ((600, 1100), (550, 1000), 25),
    "creatinine": ((55, 72), (72, 90), 3.5),
    "urine_blood": ((0, 0), (0, 0), 0),
    "urine_rbc": ((1.0, 1.6), (1.0, 1.6), 0.45),  # whole cells: 0-3 /HPF
    "upcr": ((5, 9), (4, 8), 1.5),
    "tsh": ((1.1, 2.6), (1.1, 2.6), 0.24),
    "free_t4": ((14.5, 18), (14.5, 18), 0.8),
    "alt": ((14, 26), (18, 30), 4),
    "ast": ((16, 26), (18, 28), 3),
    "bilirubin": ((6, 12), (7, 14), 2),
    "aptt": ((28, 33), (28, 33), 1.2),
}
NOISE_CUT_SD = 2.5

# How each lab reports: analyte -> (unit, canonical units per reported unit, decimals), and
# the lab's own reference ranges in its units (absent: the protocol's default applies).
Report = tuple[str, float, int]
HOSPITAL: dict[str, Report] = {
    "platelets": ("10*9/L", 1.0, 0),
    "hemoglobin": ("g/L", 1.0, 0),
    "wbc": ("10*9/L", 1.0, 1),
    "lymphocytes": ("10*9/L", 1.0, 2),
    "neutrophils": ("10*9/L", 1.0, 1),
    "cd4": ("/uL", 1.0, 0),
    "creatinine": ("umol/L", 1.0, 0),
    "urine_blood": ("{presence}", 1.0, 0),
    "urine_rbc": ("/[HPF]", 1.0, 0),
    "upcr": ("mg/mmol", 1.0, 1),
    "tsh": ("m[IU]/L", 1.0, 2),
    "free_t4": ("pmol/L", 1.0, 1),
    "alt": ("U/L", 1.0, 0),
    "ast": ("U/L", 1.0, 0),
    "bilirubin": ("umol/L", 1.0, 0),
    "aptt": ("s", 1.0, 1),
}
US_UNITS: dict[str, Report] = {
    **HOSPITAL,
    "platelets": ("10*3/uL", 1.0, 0),
    "hemoglobin": ("g/dL", 10.0, 1),
    "cd4": ("cells/uL", 1.0, 0),
    "creatinine": ("mg/dL", 88.42, 2),
    "tsh": ("u[IU]/mL", 1.0, 2),
    "free_t4": ("ng/dL", 12.87, 2),
    "bilirubin": ("mg/dL", 17.1, 1),
}
MIXED_UNITS: dict[str, Report] = {**HOSPITAL, "platelets": ("10*3/uL", 1.0, 0), "creatinine": ("mg/dL", 88.42, 2)}
EU_RANGES: dict[str, tuple[float, float]] = {
    "platelets": (150, 400),
    "creatinine": (44, 106),
    "tsh": (0.27, 4.2),
    "alt": (0, 45),
    "ast": (0, 40),
}
US_RANGES: dict[str, tuple[float, float]] = {
    "platelets": (150, 450),
    "hemoglobin": (12.0, 17.5),
    "creatinine": (0.5, 1.2),
    "tsh": (0.45, 4.5),
    "free_t4": (0.8, 1.8),
    "alt": (7, 56),
    "ast": (10, 40),
    "bilirubin": (0.1, 1.2),
}
# (share of patients, units, own ranges)
LABS: tuple[tuple[float, dict[str, Report], dict[str, tuple[float, float]]], ...] = (
    (0.45, HOSPITAL, {}),
    (0.20, HOSPITAL, EU_RANGES),
    (0.20, US_UNITS, US_RANGES),
    (0.15, MIXED_UNITS, {}),
)

LAB_CUMULATIVE = tuple(itertools.accumulate(share for share, _, _ in LABS))

# Infusion reactions, weighted by the seed's frequencies where it gives them.
REACTION_TYPES = (
    ("rash", 53),  # SEED: Rash (53%)
    ("headache", 52),  # SEED: headache (52%)
    ("fever", 29),  # SEED: Fever (29%)
    ("nausea", 21),  # SEED: Nausea (21%)
    ("urticaria", 16),  # SEED: urticaria (16%)
    ("pruritus", 14),  # SEED: pruritus (14%)
    ("flushing", 10),  # POLICY (demo): US-PI 5 lists flushing among infusion reactions
    ("chest tightness", 5),  # SEED: report symptoms such as chest tightness
)
REACTION_NAMES = tuple(name for name, _ in REACTION_TYPES)
REACTION_CUMULATIVE = tuple(itertools.accumulate(weight for _, weight in REACTION_TYPES))
SERIOUS_REACTION_TYPES = ("anaphylaxis", "bronchospasm")  # SEED: anaphylactic shock, bronchospasm
PRE_COURSE_VACCINES = (("influenza", False), ("pneumococcal", False), ("hepatitis B", False), ("varicella", True))

# 256 standard normal quantiles (cut at NOISE_CUT_SD), picked by 8 random bits: noise without
# the cost of random.gauss, identical on every run.
_NORMAL = tuple(max(-NOISE_CUT_SD, min(NOISE_CUT_SD, NormalDist().inv_cdf((i + 0.5) / 256))) for i in range(256))
_DAY = dt.timedelta(days=1)
_SCALE = (1, 10, 100, 1000)  # 10**decimals
_SHIFT = {days: dt.timedelta(days=days) for days in range(-30, 31)}
# Recovery after a course, in steps: the step of each month since a course (months 1, 2, 3,
# 4-6, 7-9, 10-12, 13-18, 19-24, 25-36; step 0: before any course, or settled) and the month
# each step stands for.
STEP_MONTHS = (0, 1, 2, 3, 5, 8, 11, 15, 21, 30)
TREND_STEP = (0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, *[7] * 6, *[8] * 6, *[9] * 12)
# Lymphocytes: share of the pre-treatment count (deep depletion, then slow recovery over years).
LYMPHOCYTE_RECOVERY = (1.0, *(0.12 + 0.78 * (1 - math.exp(-month / 10)) for month in STEP_MONTHS[1:]))
# CD4+ cells: share of the way from the nadir back to 70% of the pre-treatment count, by the
# recovery time constant in months.
CD4_TAUS = tuple(2.5 + 0.5 * k for k in range(11))
CD4_RECOVERY = {tau: tuple(1 - math.exp(-month / tau) for month in STEP_MONTHS) for tau in CD4_TAUS}


class Visit(NamedTuple):
    day: dt.date
    tests: tuple[str, ...]
    since: int | None  # whole months since the end of the latest course (None before any)


# One analyte as one patient's lab reports it: (test, expected value by month since a course
# (index 0: before any course, or settled) and noise table, both in units of the last
# reported digit, unit, 10**decimals, the lab's own range or None, None).
Row = tuple[str, tuple[int, ...], tuple[int, ...], str, int, float | None, float | None]
# How a lab reports an analyte: (unit, noise in units of the last digit, 10**decimals, own
# range or None, None, digits per canonical unit).
LabRow = tuple[str, tuple[int, ...], int, float | None, float | None, float]
# A visit's rows in five groups, and each test's place: (group, index in it). See `_places`.
Layout = tuple[tuple[list[Row], ...], dict[str, tuple[int, int]]]
CD4_GROUP = 4


@dataclass
class Course:
    start: dt.date
    days: list[dt.date]

    @property
    def end(self) -> dt.date:
        return self.days[-1]


@dataclass
class Build:
    """One patient under construction: the hidden truth behind the record."""

    rng: random.Random
    index: int
    as_of: dt.date
    stage: str
    female: bool
    courses: list[Course]
    planned: dt.date | None
    setpoint: dict[str, float] = field(default_factory=dict)
    lab: int = 0  # which of LABS reports this patient's results
    units: dict[str, Report] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    visits: list[Visit] = field(default_factory=list)
    cd4_nadir: float = 0.0
    cd4_tau: float = CD4_TAUS[0]
    patches: list[tuple[int, str, float]] = field(default_factory=list)  # (visit position, analyte, value)
    symptoms: list[tuple[dt.date, str]] = field(default_factory=list)
    cd4_recovered: dict[int, dt.date] = field(default_factory=dict)
    labs: list[dict[str, Any]] = field(default_factory=list)


# --- Public API ---------------------------------------------------------------------------


def build_cohort(n: int, seed: int = 7, as_of: dt.date | None = None) -> Iterator[dict[str, Any]]:
    """`n` demo patient files; `as_of` defaults to today (then the cohort follows the calendar)."""
    day = as_of or dt.date.today()
    for index in range(n):
        yield build_patient(index, seed, day)


def build_patient(index: int, seed: int, as_of: dt.date) -> dict[str, Any]:
    """Demo patient `index` of cohort `seed` as recorded up to `as_of` (a contract patient file)."""
    rng = random.Random(f"alemwatch-demo:{seed}:{index}")  # str seeds go through SHA-512, not hash()
    stage = _pick_stage(rng)
    courses, planned = _timeline(rng, stage, as_of)
    build = Build(rng, index, as_of, stage, rng.random() < FEMALE_SHARE, courses, planned)
    _physiology(build)
    build.visits = _visits(build)
    _cell_recovery(build)
    if build.female:
        _menstrual_traces(build)
    _events(build)
    _emit_labs(build)
    return _record(build)


# --- Small helpers ------------------------------------------------------------------------


def _between(rng: random.Random, low: int, high: int) -> int:
    """A whole number in [low, high]: randint without its argument checks (5x faster)."""
    return low + int(rng.random() * (high - low + 1))


def _months_later(day: dt.date, months: int) -> dt.date:
    """`add_months` of the schedule (the same dates), with a fast path for days 1-28."""
    if day.day > 28:
        return add_months(day, months)
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    return dt.date(year, month + 1, day.day)


# --- Timeline -----------------------------------------------------------------------------


def _pick_stage(rng: random.Random) -> str:
    return rng.choices(STAGE_NAMES, cum_weights=STAGE_CUMULATIVE)[0]


def _days_ago(as_of: dt.date, low: int, high: int, rng: random.Random) -> dt.date:
    return as_of - dt.timedelta(days=_between(rng, low, high))


def _course(start: dt.date, days: int, as_of: dt.date) -> Course:
    """The course's infusion days given by as_of (a course under way has fewer)."""
    return Course(start, [day for n in range(days) if (day := start + dt.timedelta(days=n)) <= as_of])


def _gap_after(rng: random.Random) -> dt.timedelta:
    """The interval between the first two course starts: a little over the label's 12 months."""
    if rng.random() < EARLY_SECOND_COURSE_RATE:
        return dt.timedelta(days=_between(rng, 320, 355))
    return dt.timedelta(days=_between(rng, 370, 430))


def _course_starts(rng: random.Random, stage: str, as_of: dt.date) -> list[dt.date]:
    if stage == "planned_first":
        return []
    if stage == "first_year":
        return [_days_ago(as_of, 0, 364, rng)]
    if stage == "between_courses":
        return [_days_ago(as_of, 375, 600, rng)]
    if stage == "after_second":
        second = _days_ago(as_of, 0, 1460, rng)
        return [second - _gap_after(rng), second]
    if stage == "after_third":
        third = _days_ago(as_of, 0, 1460, rng)
        second = third - dt.timedelta(days=_between(rng, 375, 900))
        return [second - _gap_after(rng), second, third]
    last = _days_ago(as_of, 1470, 2200, rng)  # beyond_monitoring: the plan ended
    return [last - _gap_after(rng), last] if rng.random() < 0.75 else [last]


def _planned_start(rng: random.Random, stage: str, as_of: dt.date, starts: list[dt.date]) -> dt.date | None:
    soon = as_of + dt.timedelta(days=_between(rng, 3, 25))
    if stage == "planned_first":
        return soon
    if stage == "between_courses" and rng.random() < PLANNED_NEXT_COURSE_RATE:
        return soon
    if stage == "after_second" and 380 <= (as_of - starts[-1]).days <= 720 and rng.random() < 0.3:
        return soon
    return None


def _timeline(rng: random.Random, stage: str, as_of: dt.date) -> tuple[list[Course], dt.date | None]:
    starts = _course_starts(rng, stage, as_of)
    courses = [_course(start, 5 if n == 0 else 3, as_of) for n, start in enumerate(starts)]
    return courses, _planned_start(rng, stage, as_of, starts)


# --- Physiology and the visit schedule ------------------------------------------------------


def _physiology(build: Build) -> None:
    """Set points of each analyte, and how this patient's lab reports them."""
    rng = build.rng
    build.lab = rng.choices(range(len(LABS)), cum_weights=LAB_CUMULATIVE)[0]
    _share, build.units, build.ranges = LABS[build.lab]
    for analyte, (female, male, _sd) in HEALTHY.items():
        low, high = female if build.female else male
        build.setpoint[analyte] = low + (high - low) * rng.random()


def _months_between(earlier: dt.date, later: dt.date) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month - (later.day < earlier.day)


def _series(build: Build, course: Course, stop: dt.date) -> list[Visit]:
    """Monthly visits after a course until the next course, the end of the plan or as_of."""
    draw, visits, end = build.rng.random, [], course.end
    for month in range(1, MONITORING_MONTHS + 1):
        due = _months_later(end, month)
        if due >= stop:
            break
        if draw() < MISSED_VISIT_RATE:
            continue
        day = due + _SHIFT[8 + int(draw() * 13) if draw() < LATE_VISIT_RATE else -4 + int(draw() * 10)]
        if day >= stop:
            break
        tests = SERIES_TESTS[month]
        if draw() < URINALYSIS_SKIPPED_RATE:
            tests = tuple(t for t in tests if t not in URINE)
        visits.append(Visit(day, tests, month))
    return visits


def _baseline_visit(build: Build, start: dt.date, planned: bool) -> Visit:
    rng = build.rng
    day = start - dt.timedelta(days=_between(rng, 3, 28))
    if rng.random() < BASELINE_TOO_OLD_RATE:
        day = start - dt.timedelta(days=_between(rng, 35, 75))
    day = min(day, build.as_of)  # a planned course's panel is drawn by today at the latest
    tests: tuple[str, ...] = BASELINE_PANEL
    if planned and rng.random() < BASELINE_INCOMPLETE_RATE:
        missing = set(rng.sample(DROPPABLE_BASELINE, _between(rng, 1, 2)))
        tests = tuple(t for t in tests if t not in missing)
    previous = [c for c in build.courses if c.end < day]
    since = _months_between(previous[-1].end, day) if previous else None
    return Visit(day, tests, since)


def _visits(build: Build) -> list[Visit]:
    visits: list[Visit] = []
    starts = [c.start for c in build.courses] + ([build.planned] if build.planned else [])
    for start in starts:
        visits.append(_baseline_visit(build, start, start == build.planned))
    for n, course in enumerate(build.courses):
        stop = build.courses[n + 1].start if n + 1 < len(build.courses) else build.as_of + _DAY
        visits += _series(build, course, stop)
    visits.sort(key=operator.attrgetter("day"))
    return visits


# --- Trends and events --------------------------------------------------------------------


def _override(build: Build, position: int, analyte: str, value: float) -> None:
    """Replace a healthy result by `value` (canonical unit); a later override wins."""
    build.patches.append((position, analyte, value))


def _cell_recovery(build: Build) -> None:
    """How deep CD4+ cells fall after each course and how fast they recover (see `_expected`)."""
    build.cd4_nadir = 40 + 140 * build.rng.random()
    build.cd4_tau = build.rng.choice(CD4_TAUS)


def _menstrual_traces(build: Build) -> None:
    """A trace of blood on some women's dipsticks: the 'not explained by menstruation' caveat."""
    rng = build.rng
    for position, visit in enumerate(build.visits):
        if rng.random() < MENSTRUAL_TRACE_RATE and "urine_blood" in visit.tests:
            _override(build, position, "urine_blood", 1)


def _follow_up(build: Build) -> list[int]:
    """Positions of the visits after the first course."""
    return [n for n, v in enumerate(build.visits) if v.since is not None]


def _in_monitoring(build: Build) -> bool:
    if not build.courses or not build.visits:
        return False
    return (build.as_of - build.visits[-1].day).days <= 60 and build.visits[-1].since is not None


def _events(build: Build) -> None:
    rng = build.rng
    if build.courses:
        _thyroid(build)
        _common_reports(build)
    after = _follow_up(build)
    if not _in_monitoring(build) or len(after) < 2:
        return
    episode = after[-_between(rng, 1, 2) :]
    for rate, event in (
        (ITP_RATE, _itp),
        (ANTI_GBM_RATE, _anti_gbm),
        (HEPATITIS_RATE, _hepatitis),
        (HEMOPHILIA_RATE, _hemophilia),
        (NEUTROPENIA_RATE, _neutropenia),
    ):
        if rng.random() < rate:
            event(build, episode)


def _thyroid(build: Build) -> None:
    rng = build.rng
    if rng.random() >= THYROID_RATE:
        return
    onset = build.courses[0].end + dt.timedelta(days=_between(rng, *THYROID_ONSET_DAYS))
    graves = rng.random() < GRAVES_SHARE
    tsh, t4 = build.setpoint["tsh"], build.setpoint["free_t4"]
    seen = False
    for position, visit in enumerate(build.visits):
        months = (visit.day - onset).days / 30.4
        if months <= 0 or "tsh" not in visit.tests:
            continue
        drift = min(months, 3.0)
        _override(build, position, "tsh", max(0.01, tsh * (0.2**drift if graves else 3.0**drift)))
        _override(build, position, "free_t4", t4 + (6.0 if graves else -2.5) * drift)
        seen = True
    if seen and rng.random() < THYROID_SYMPTOM_SHARE:
        report = onset + dt.timedelta(days=_between(rng, 10, 90))
        if report <= build.as_of:
            build.symptoms.append((report, GRAVES_TEXT if graves else HYPOTHYROID_TEXT))


def _add_tests(build: Build, position: int, tests: tuple[str, ...]) -> None:
    visit = build.visits[position]
    extra = tuple(t for t in tests if t not in visit.tests)
    if extra:
        build.visits[position] = visit._replace(tests=visit.tests + extra)


def _report_before(build: Build, position: int, text: str, days: int = 7) -> None:
    day = build.visits[position].day - dt.timedelta(days=_between(build.rng, 0, days))
    build.symptoms.append((day, text))


def _itp(build: Build, episode: list[int]) -> None:
    rng = build.rng
    nadir = _between(rng, 5, 29) if rng.random() < ITP_SEVERE_SHARE else _between(rng, 35, 95)
    for step, position in enumerate(reversed(episode)):
        _add_tests(build, position, ("platelets",))
        _override(build, position, "platelets", nadir if step == 0 else _between(rng, max(nadir + 30, 100), 145))
    if rng.random() < ITP_SYMPTOM_SHARE:
        _report_before(build, episode[-1], rng.choice(ITP_TEXTS))


def _anti_gbm(build: Build, episode: list[int]) -> None:
    rng, base = build.rng, build.setpoint["creatinine"]
    for step, position in enumerate(reversed(episode)):
        _add_tests(build, position, ("creatinine", *URINE))
        rise = 1.6 + 1.2 * rng.random() if step == 0 else 1.2 + 0.2 * rng.random()
        _override(build, position, "creatinine", base * rise)
        _override(build, position, "urine_blood", _between(rng, 2, 3))
        _override(build, position, "urine_rbc", _between(rng, 10, 80))
        _override(build, position, "upcr", _between(rng, 40, 250))
    if rng.random() < ANTI_GBM_SYMPTOM_SHARE:
        _report_before(build, episode[-1], ANTI_GBM_TEXT)


def _hepatitis(build: Build, episode: list[int]) -> None:
    rng = build.rng
    for step, position in enumerate(reversed(episode)):
        _add_tests(build, position, LIVER)
        scale = 1.0 if step == 0 else 0.35
        _override(build, position, "alt", scale * _between(rng, 200, 700))
        _override(build, position, "ast", scale * _between(rng, 130, 500))
        _override(build, position, "bilirubin", max(build.setpoint["bilirubin"], scale * _between(rng, 12, 70)))
    if rng.random() < HEPATITIS_SYMPTOM_SHARE:
        _report_before(build, episode[-1], HEPATITIS_TEXT)


def _hemophilia(build: Build, episode: list[int]) -> None:
    rng, last = build.rng, episode[-1]
    _add_tests(build, last, ("aptt", "hemoglobin"))
    _override(build, last, "aptt", 50 + 45 * rng.random())
    _override(build, last, "hemoglobin", build.setpoint["hemoglobin"] - _between(rng, 15, 35))
    _report_before(build, last, HEMOPHILIA_TEXT)


def _neutropenia(build: Build, episode: list[int]) -> None:
    last = episode[-1]
    value = 0.3 + 0.65 * build.rng.random()
    _add_tests(build, last, ("neutrophils", "wbc"))
    _override(build, last, "neutrophils", value)
    _override(build, last, "wbc", value + 0.4 + build.rng.random())


def _random_day(rng: random.Random, first: dt.date, last: dt.date) -> dt.date:
    return first + dt.timedelta(days=_between(rng, 0, max(0, (last - first).days)))


def _common_reports(build: Build) -> None:
    rng, first = build.rng, build.courses[0].start
    last = min(build.as_of, add_months(build.courses[-1].end, MONITORING_MONTHS))
    for rate, text in COMMON_REPORTS:
        if rng.random() < rate:
            build.symptoms.append((_random_day(rng, first, last), text))
    infusions = [day for course in build.courses for day in course.days]
    if rng.random() < DELAYED_RASH_REPORT_RATE:
        _report_after_infusion(build, rng.choice(infusions), 2, DELAYED_RASH_TEXT)
    if rng.random() < STROKE_REPORT_RATE:
        _report_after_infusion(build, rng.choice(infusions), _between(rng, 1, 3), STROKE_TEXT)


def _report_after_infusion(build: Build, infusion: dt.date, days: int, text: str) -> None:
    day = infusion + dt.timedelta(days=days)
    if day <= build.as_of:
        build.symptoms.append((day, text))


# --- Lab results --------------------------------------------------------------------------


@functools.cache
def _lab_rows(lab: int) -> dict[str, LabRow]:
    """How lab number `lab` of LABS reports each analyte (the patient-independent part of a Row)."""
    _share, units, ranges = LABS[lab]
    rows = {}
    for test, (unit, factor, decimals) in units.items():
        per_digit = _SCALE[decimals] / factor
        noise = tuple(round(HEALTHY[test][2] * z * per_digit) for z in _NORMAL)
        low, high = ranges.get(test, (None, None))
        rows[test] = (unit, noise, _SCALE[decimals], low, high, per_digit)
    return rows


def _expected(build: Build, test: str, per_digit: float) -> tuple[int, ...]:
    """The analyte's expected value by recovery step after a course, in units of the last digit:
    lymphocytes (and so white cells) and CD4+ cells fall after a course and recover."""
    setpoint = build.setpoint
    if test == "lymphocytes":
        return tuple([round(setpoint[test] * share * per_digit) for share in LYMPHOCYTE_RECOVERY])
    if test == "wbc":
        others, lymphocytes = setpoint["neutrophils"] + 0.45, setpoint["lymphocytes"]
        trend = [round((others + lymphocytes * share) * per_digit) for share in LYMPHOCYTE_RECOVERY[1:]]
        return (round(setpoint[test] * per_digit), *trend)
    if test == "cd4":
        nadir, span = build.cd4_nadir, 0.7 * setpoint[test] - build.cd4_nadir
        trend = [round((nadir + span * share) * per_digit) for share in CD4_RECOVERY[build.cd4_tau][1:]]
        return (round(setpoint[test] * per_digit), *trend)
    return (round(setpoint[test] * per_digit),) * len(STEP_MONTHS)


def _rows(build: Build) -> dict[str, Row]:
    return {
        test: (test, _expected(build, test, per_digit), noise, unit, scale, low, high)
        for test, (unit, noise, scale, low, high, per_digit) in _lab_rows(build.lab).items()
    }


@functools.cache
def _places(lab: int, tests: tuple[str, ...]) -> tuple[tuple[tuple[str, ...], ...], dict[str, tuple[int, int]]]:
    """A visit's tests in five groups (whole-number and decimal results, each without and with
    the lab's own range, then CD4+ counts), and where each test lands: (group, index in it)."""
    groups: tuple[list[str], ...] = ([], [], [], [], [])
    places = {}
    for test in tests:
        _unit, _noise, scale, low, _high, _per_digit = _lab_rows(lab)[test]
        group = CD4_GROUP if test == "cd4" else (scale > 1) + 2 * (low is not None)
        places[test] = (group, len(groups[group]))
        groups[group].append(test)
    return tuple(tuple(group) for group in groups), places


def _layout(build: Build, rows: dict[str, Row], tests: tuple[str, ...]) -> Layout:
    names, places = _places(build.lab, tests)
    return tuple([rows[test] for test in group] for group in names), places


def _emit_labs(build: Build) -> None:
    """Every visit's results in the lab's units: the hot path of the builder.

    A result is its expected value plus noise from a table, both whole numbers in units of the
    last reported digit (no rounding per result). Each group of rows (see `_places`) gets one
    comprehension over every visit, as a comprehension per visit would cost a function call
    each. Events then patch their results in place."""
    rows = _rows(build)
    layouts: dict[tuple[str, ...], Layout] = {}
    visits = []  # (date, recovery step, row groups)
    for day, tests, since in build.visits:
        layout = layouts.get(tests)
        if layout is None:
            layout = layouts[tests] = _layout(build, rows, tests)
        step = TREND_STEP[since] if since is not None and since <= TREND_MONTHS else 0
        visits.append((day.isoformat(), step, layout[0]))
    bits = build.rng.getrandbits
    groups = (
        [
            {"test": t, "value": e[m] + n[bits(8)], "unit": u, "date": iso}
            for iso, m, group in visits
            for t, e, n, u, _, _, _ in group[0]
        ],
        [
            {"test": t, "value": (e[m] + n[bits(8)]) / s, "unit": u, "date": iso}
            for iso, m, group in visits
            for t, e, n, u, s, _, _ in group[1]
        ],
        [
            {"test": t, "value": e[m] + n[bits(8)], "unit": u, "date": iso, "ref_low": low, "ref_high": high}
            for iso, m, group in visits
            for t, e, n, u, _, low, high in group[2]
        ],
        [
            {"test": t, "value": (e[m] + n[bits(8)]) / s, "unit": u, "date": iso, "ref_low": low, "ref_high": high}
            for iso, m, group in visits
            for t, e, n, u, s, low, high in group[3]
        ],
        [
            {"test": t, "value": e[m] + n[bits(8)], "unit": u, "date": iso}
            for iso, m, group in visits
            for t, e, n, u, _, _, _ in group[CD4_GROUP]
        ],
    )
    build.labs = [*groups[0], *groups[1], *groups[2], *groups[3], *groups[4]]
    if build.patches:
        _patch(build, layouts, [len(visit[2][g]) for visit in visits for g in range(len(groups))])
    _note_cd4_recovery(build, groups[CD4_GROUP])


def _patch(build: Build, layouts: dict[tuple[str, ...], Layout], sizes: list[int]) -> None:
    """Events' results over the healthy ones; `sizes` holds each visit's group sizes, visit by visit."""
    groups = len(sizes) // len(build.visits)
    totals = [sum(sizes[g::groups]) for g in range(groups)]
    firsts = list(itertools.accumulate(totals, initial=0))
    for position, test, value in build.patches:
        group, index = layouts[build.visits[position].tests][1][test]
        before = sum(sizes[group : position * groups + group : groups])
        build.labs[firsts[group] + before + index]["value"] = _reported(build, test, value)


def _note_cd4_recovery(build: Build, cd4: list[dict[str, Any]]) -> None:
    """The first CD4+ count of at least 200/uL after each course (herpes prophylaxis may stop)."""
    ends = [course.end.isoformat() for course in build.courses]
    for lab in cd4:
        course = sum(1 for end in ends if end < lab["date"]) - 1
        if course >= 0 and lab["value"] >= 200 and course not in build.cd4_recovered:
            build.cd4_recovered[course] = dt.date.fromisoformat(lab["date"])


def _reported(build: Build, test: str, value: float) -> float:
    unit, factor, decimals = build.units[test]
    digits = round(value / factor * _SCALE[decimals])
    return digits / _SCALE[decimals] if decimals else digits


# --- The record ---------------------------------------------------------------------------


def _birth_date(rng: random.Random, reference: dt.date) -> dt.date:
    """Aged 18 to 55 on the reference day (the first course, or the planned one)."""
    birthday = add_months(reference, -12 * _between(rng, 18, 55))
    return birthday - dt.timedelta(days=_between(rng, 0, 364))


def _screening(build: Build) -> dict[str, Any]:
    """Negative for treated patients (they passed it); a planned first course can still fail."""
    rng = build.rng
    screening: dict[str, Any] = {
        "hiv": "negative",
        "active_infection": False,
        "alemtuzumab_hypersensitivity": False,
        "tuberculosis": "negative",
    }
    if build.planned is None or build.courses:
        return screening
    roll = rng.random()
    if roll < 0.03:
        screening["hiv"] = "unknown"
    elif roll < 0.035:
        screening["hiv"] = "positive"
    elif roll < 0.06:
        screening["tuberculosis"] = "unknown"
    elif roll < 0.07:
        screening["tuberculosis"] = "positive"
    elif roll < 0.09:
        screening["active_infection"] = True
    elif roll < 0.12:
        screening[
            rng.choice(
                ("uncontrolled_hypertension", "anticoagulant_or_antiplatelet_therapy", "other_autoimmune_disease")
            )
        ] = True
    return screening


def _reaction(rng: random.Random, serious: bool) -> dict[str, Any]:
    if serious:
        kind = rng.choice(SERIOUS_REACTION_TYPES)
        return {"type": kind, "severity": "severe" if rng.random() < 0.8 else "life_threatening", "onset_hours": 0.5}
    kind = rng.choices(REACTION_NAMES, cum_weights=REACTION_CUMULATIVE)[0]
    severity = "moderate" if rng.random() < MODERATE_REACTION_SHARE else "mild"
    delayed = rng.random() < DELAYED_REACTION_SHARE
    onset = _between(rng, 26, 72) if delayed else _between(rng, 1, 16) / 2
    return {"type": kind, "severity": severity, "onset_hours": onset}


def _infusion(rng: random.Random, day: dt.date, course_day: int) -> dict[str, Any]:
    premedication = rng.random() >= PREMEDICATION_MISSED_RATE if course_day <= 3 else rng.random() < 0.5
    short = rng.random() < SHORT_OBSERVATION_RATE
    minutes = 5 * _between(rng, 12, 23) if short else 5 * _between(rng, 24, 36)
    return {"date": day.isoformat(), "premedication": premedication, "observation_minutes": minutes, "reactions": []}


def _infusions(build: Build) -> list[dict[str, Any]]:
    rng = build.rng
    infusions = [_infusion(rng, day, n + 1) for course in build.courses for n, day in enumerate(course.days)]
    if not infusions or rng.random() >= INFUSION_REACTION_RATE:
        return infusions
    for infusion in infusions:
        if rng.random() < REACTION_PER_INFUSION:
            infusion["reactions"].append(_reaction(rng, False))
    if not any(i["reactions"] for i in infusions):
        rng.choice(infusions[:5])["reactions"].append(_reaction(rng, False))
    if rng.random() < SERIOUS_INFUSION_REACTION_RATE / INFUSION_REACTION_RATE:
        rng.choice(infusions)["reactions"].append(_reaction(rng, True))
    return infusions


def _prophylaxis_stop(build: Build, n: int, course: Course) -> dt.date | None:
    rng = build.rng
    if rng.random() < PROPHYLAXIS_EARLY_STOP_RATE:
        stop = course.end + dt.timedelta(days=_between(rng, 20, 50))
    else:
        recovered = build.cd4_recovered.get(n)
        if recovered is None:
            return None
        stop = max(add_months(course.end, 2), recovered) + dt.timedelta(days=_between(rng, 0, 21))
    return stop if stop <= build.as_of else None


def _prophylaxis(build: Build) -> list[dict[str, Any]]:
    rng, records = build.rng, []
    drug = "valaciclovir" if rng.random() < 0.15 else "aciclovir"
    for n, course in enumerate(build.courses):
        if rng.random() < PROPHYLAXIS_MISSING_RATE:
            continue
        start = course.start
        if rng.random() < PROPHYLAXIS_LATE_RATE:
            start = min(build.as_of, start + dt.timedelta(days=_between(rng, 1, 3)))
        stop = _prophylaxis_stop(build, n, course)
        records.append(
            {"kind": "herpes", "drug": drug, "start": start.isoformat(), "stop": stop.isoformat() if stop else None}
        )
    return records


def _yearly_exams(build: Build) -> list[dict[str, Any]]:
    rng, exams = build.rng, []
    kinds = [("skin", SKIN_EXAM_MISSED_RATE)] + ([("hpv_screening", HPV_MISSED_RATE)] if build.female else [])
    for n, course in enumerate(build.courses):
        stop = build.courses[n + 1].start if n + 1 < len(build.courses) else build.as_of + _DAY
        for year in range(1, MONITORING_MONTHS // 12 + 1):
            due = _months_later(course.end, 12 * year)
            if due >= stop:
                break
            for kind, missed in kinds:
                day = due + _SHIFT[_between(rng, -20, 25)]
                if day < stop and rng.random() >= missed:
                    exams.append({"type": kind, "date": day.isoformat()})
    return exams


def _vaccinations(build: Build) -> list[dict[str, Any]]:
    rng, out = build.rng, []
    first = build.courses[0].start if build.courses else build.planned
    if first is not None and rng.random() < VACCINATED_BEFORE_RATE:
        vaccine, live = rng.choice(PRE_COURSE_VACCINES)
        out.append(
            {"vaccine": vaccine, "live": live, "date": (first - dt.timedelta(days=_between(rng, 60, 360))).isoformat()}
        )
    if build.planned is not None and not build.courses and rng.random() < LIVE_VACCINE_TOO_CLOSE_RATE:
        day = min(build.as_of, build.planned - dt.timedelta(days=_between(rng, 10, 40)))
        out.append({"vaccine": "measles, mumps and rubella", "live": True, "date": day.isoformat()})
    if build.courses:
        out += _vaccines_after(build)
    return out


def _vaccines_after(build: Build) -> list[dict[str, Any]]:
    rng, out = build.rng, []
    if rng.random() < FLU_VACCINE_RATE:
        for year in range(build.courses[0].start.year, build.as_of.year + 1):
            day = dt.date(year, 10, _between(rng, 1, 31))
            if build.courses[0].end < day <= build.as_of:
                out.append({"vaccine": "influenza", "live": False, "date": day.isoformat()})
    if rng.random() < LIVE_VACCINE_AFTER_COURSE_RATE:
        day = _random_day(rng, build.courses[0].end + _DAY, build.as_of)
        out.append({"vaccine": "yellow fever", "live": True, "date": day.isoformat()})
    return out


def _record(build: Build) -> dict[str, Any]:
    rng = build.rng
    reference = build.courses[0].start if build.courses else build.planned or build.as_of
    record: dict[str, Any] = {
        "id": f"demo-{build.index:06d}",
        "birth_date": _birth_date(rng, reference).isoformat(),
        "sex": "female" if build.female else "male",
        "screening": _screening(build),
    }
    if build.planned is not None:
        record["planned_course_start"] = build.planned.isoformat()
    record["vaccinations"] = _vaccinations(build)
    record["infusions"] = _infusions(build)
    record["labs"] = build.labs
    record["exams"] = _yearly_exams(build)
    record["prophylaxis"] = _prophylaxis(build)
    record["symptoms"] = [{"date": day.isoformat(), "text": text} for day, text in sorted(build.symptoms)]
    return record
