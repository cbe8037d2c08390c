"""The assessment of a whole cohort at one date, equal to `assess` patient by patient.

`bulk_assess(cohort, protocol, as_of)` computes for every patient of a `Cohort` what the
registry stores of `assess(patient, protocol, as_of)`: the courses, the monitoring plan and
each task's status, herpes prophylaxis, the findings merged by condition, the deviations,
the eligibility for a planned course, and `next_change`, the first day on which the
assessment can change without new data.

It applies the same protocol data with the same rules, mirroring each evaluator of
`core.findings`, `core.schedule`, `core.prophylaxis`, `core.deviations` and
`core.eligibility` (their docstrings say what a rule means; the comments here say how it is
computed for many patients at once). Records are sorted once by (patient, ..., date, row) into
int64 keys `(group << 22) | date` (a date ordinal fits 22 bits), so "the latest result on or
before a day" is a `searchsorted` and "the latest result" the end of a group. Month
arithmetic goes through `datetime64[M]`, clamped to the month's end as `add_months`.

Patients are processed in chunks (8192 by default): the working set stays in cache and the
memory bounded; outputs are row arrays grouped by patient, in patient order. Symptom texts
are triaged once per (text, class of days since the infusion) for the whole call: the
triage lexicon reads the days only through window bounds and combination minimums, so
every day of a class gives the same result (`day_breaks`).
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from alemwatch.core.columnar import SEXES, TABLES, Cohort, screening_values
from alemwatch.core.findings import REACTION_SEVERITY, triage_engine
from alemwatch.protocol import model as m
from alemwatch.protocol.model import URGENCY_RANK, Protocol

I8 = npt.NDArray[np.int8]
I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

DATE_BITS = 22  # date.max.toordinal() < 2**22
DATE_MASK = (1 << DATE_BITS) - 1
EPOCH = dt.date(1970, 1, 1).toordinal()  # datetime64[D] zero
FAR = np.iinfo(np.int32).max  # "no date" in minimum reductions

SEVERITY_NAMES: tuple[str, ...] = tuple(sorted(URGENCY_RANK, key=URGENCY_RANK.__getitem__))
CONDITIONS: tuple[str, ...] = tuple(sorted(typing.get_args(m.Condition)))  # index order = name order
STATUS_NAMES = ("done", "due", "overdue", "upcoming")
HERPES_NAMES = ("not_required", "required", "may_stop")
ELIGIBILITY_NAMES = ("eligible", "not_ready", "contraindicated")  # -1: no planned course
LEVELS = ("contraindication", "not_ready", "caution")
DEVIATION_CODES = (  # sorted: index order = name order, as deviations() sorts by (date, code)
    "baseline_too_old",
    "course_length_unexpected",
    "course_too_early",
    "live_vaccine_after_course",
    "observation_too_short",
    "premedication_missing",
    "prophylaxis_missing",
    "prophylaxis_stopped_early",
)
REACTION_RULE = "infusion.reaction_recorded"  # the rule id reaction_findings gives a recorded reaction
CONDITION_INDEX = {name: n for n, name in enumerate(CONDITIONS)}
DEVIATION_INDEX = {name: n for n, name in enumerate(DEVIATION_CODES)}
DEFAULT_CHUNK = 8192


# --- array helpers ---------------------------------------------------------------------


def _i64(values: npt.ArrayLike) -> I64:
    return np.asarray(values, dtype=np.int64)


def order_rows(columns: Sequence[npt.NDArray[Any]]) -> I64:
    """The permutation sorting rows by `columns` (most significant first), ties kept in row
    order. The columns and the row number are packed into one int64 key when they fit (one
    fast sort instead of a lexsort); input that is already in order costs one pass."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, np.int64)
    lows = [int(c.min()) for c in columns]
    bits = [(int(c.max()) - low).bit_length() for c, low in zip(columns, lows, strict=True)]
    row_bits = max(1, (n - 1).bit_length())
    if sum(bits) + row_bits > 63:
        return np.lexsort(tuple(columns[::-1])).astype(np.int64)
    key = np.zeros(n, np.int64)
    for column, low, width in zip(columns, lows, bits, strict=True):
        if width:
            key <<= width
            key |= column.astype(np.int64) - low
    key <<= row_bits
    key |= np.arange(n, dtype=np.int64)
    if n > 1 and not bool(np.all(key[1:] > key[:-1])):
        key.sort()
    key &= (1 << row_bits) - 1
    return key


def expand(counts: I64) -> tuple[I64, I64]:
    """For segments of the given lengths: each element's segment and its rank inside it."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(len(owner), dtype=np.int64) - starts[owner]


def group_starts(keys: I64) -> Bool:
    """True where a run of equal keys starts (keys sorted)."""
    new = np.ones(len(keys), np.bool_)
    if len(keys) > 1:
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
    return new


def min_by(groups: I64, values: I64, size: int) -> I64:
    """Per group 0..size-1, the minimum of `values` (FAR where none)."""
    out = np.full(size, FAR, np.int64)
    if len(groups):
        np.minimum.at(out, groups, values)
    return out


def min_by_sorted(groups: I64, values: I64, size: int) -> I64:
    """`min_by` for groups in ascending order (one reduceat instead of a scatter)."""
    out = np.full(size, FAR, np.int64)
    if len(groups):
        starts = np.flatnonzero(group_starts(groups))
        out[groups[starts]] = np.minimum.reduceat(values, starts)
    return out


def _month_parts(days: I64) -> tuple[npt.NDArray[np.datetime64], I64]:
    """(datetime64[M] month, 0-based day of month) of date ordinals."""
    as_days = (days - EPOCH).astype("datetime64[D]")
    months = as_days.astype("datetime64[M]")
    return months, (as_days - months.astype("datetime64[D]")).astype(np.int64)


def add_months(days: I64, months: npt.ArrayLike) -> I64:
    """Calendar months added to date ordinals, clamped to the month's end (chart.add_months)."""
    month, day_of_month = _month_parts(days)
    target = month + np.asarray(months, dtype=np.int64).astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    result: I64 = (first + np.minimum(day_of_month, length - 1)).astype(np.int64) + EPOCH
    return result


def months_before(start: I64, limit: I64) -> I64:
    """The largest m with add_months(start, m) < limit: the months a course's series runs
    before the next course starts. In limit's month, start's day (clamped) is either before
    limit's day (m = the month difference) or not (one month less)."""
    start_month, start_day = _month_parts(start)
    limit_month, limit_day = _month_parts(limit)
    diff = (limit_month - start_month).astype(np.int64)
    length = (limit_month + np.timedelta64(1, "M")).astype("datetime64[D]") - limit_month.astype("datetime64[D]")
    day_there = np.minimum(start_day, length.astype(np.int64) - 1)
    return np.where(day_there < limit_day, diff, diff - 1)


def day_breaks(protocol: Protocol) -> I64:
    """The day counts at which some triage window or combination starts or stops applying.
    TriageEngine reads the days since the infusion only through `DaysWindow.contains` and
    `days < combination.min_days`, so all days between two breaks give the same result."""
    breaks: set[int] = set()
    for sign in protocol.triage.signs:
        for window in sign.windows:
            if window.min_days is not None:
                breaks.add(window.min_days)
            if window.max_days is not None:
                breaks.add(window.max_days + 1)
    breaks |= {c.min_days for c in protocol.triage.combinations if c.min_days is not None}
    return _i64(sorted(breaks))


def _screening_code(field_name: str, value: object) -> int | None:
    """The int8 code of a screening value, None when the field cannot take it (no match)."""
    for code, option in enumerate(screening_values(field_name.removeprefix("screening."))):
        if option == value and type(option) is type(value):
            return code
    return None


# --- the protocol, as arrays ------------------------------------------------------------


class Names:
    """An indexed list of names that grows on first sight (rule ids, reason codes)."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        for name in names:
            self.add(name)

    def add(self, name: str) -> int:
        found = self.index.get(name)
        if found is None:
            found = self.index[name] = len(self.names)
            self.names.append(name)
        return found


@dataclass
class Plan:
    """What the bulk path reads from the protocol, as lookup arrays."""

    protocol: Protocol
    analytes: dict[str, int]
    default_low: F64
    default_high: F64
    gap: int
    week_after: int
    lookback: int
    combination_window: int
    horizon: int
    interval: I64  # per monitoring task
    before: I64
    after: I64
    kmax: I64
    sex_ok: Bool  # [sex code, task]
    exam_tasks: list[I64]  # layers: exam kind -> task (-1); a kind in several tasks has several layers
    rules: Names
    reasons: Names
    breaks: I64
    reads_baseline: Bool  # per analyte: some rule compares its latest result with the baseline
    reads_previous: Bool
    reads_week: Bool  # some rule asks whether its latest result lies in an infusion week

    @classmethod
    def build(cls, protocol: Protocol) -> Plan:
        analytes = {str(name): n for n, name in enumerate(protocol.analytes)}
        specs = protocol.monitoring.tasks
        horizon = protocol.monitoring.months_after_last_infusion
        sex_ok = np.array([[s.sex is None or sex in s.sex for s in specs] for sex in SEXES], dtype=np.bool_)
        rules = Names([r.id for r in protocol.findings])
        for sign in protocol.triage.signs:
            rules.add(sign.id)
        for combo in protocol.triage.combinations:
            rules.add(combo.id)
        for rule_id in (protocol.infusion.delayed_reactions.id, REACTION_RULE, protocol.vaccines.after_course.id):
            rules.add(rule_id)
        reasons = Names([r.code for r in protocol.contraindications] + [r.code for r in protocol.cautions])
        for code in (protocol.baseline.tuberculosis_positive.code, "baseline_missing", "live_vaccine_too_recent"):
            reasons.add(code)
        for code in ("vaccine_within_6_weeks", "course_too_early"):
            reasons.add(code)
        return cls(
            protocol=protocol,
            analytes=analytes,
            default_low=np.array([a.ref_low for a in protocol.analytes.values()], dtype=np.float64),
            default_high=np.array([a.ref_high for a in protocol.analytes.values()], dtype=np.float64),
            gap=protocol.int_parameter("course_max_gap_days"),
            week_after=protocol.int_parameter("infusion_week_after_last_days"),
            lookback=protocol.int_parameter("bleeding_symptom_lookback_days"),
            combination_window=protocol.int_parameter("lab_combination_window_days"),
            horizon=horizon,
            interval=_i64([s.interval_months for s in specs]),
            before=_i64([s.window_before_days for s in specs]),
            after=_i64([s.window_after_days for s in specs]),
            kmax=_i64([horizon // s.interval_months for s in specs]),
            sex_ok=sex_ok,
            exam_tasks=_layers(
                len(protocol.exam_types),
                [[list(protocol.exam_types).index(e) for e in s.satisfied_by.exams] for s in specs],
            ),
            rules=rules,
            reasons=reasons,
            breaks=day_breaks(protocol),
            reads_baseline=_analytes_read(
                protocol, analytes, {"rise_from_baseline", "rise_from_baseline_with", "above_ref_high_without_baseline"}
            ),
            reads_previous=_analytes_read(protocol, analytes, {"fall_from_previous"}),
            reads_week=_analytes_read(
                protocol, analytes, {"below", "below_ref_low", "fall_from_previous", "infusion_week_dip"}
            ),
        )


def _analytes_read(protocol: Protocol, analytes: dict[str, int], kinds: set[str]) -> Bool:
    """Per analyte, whether a finding rule of one of these kinds reads it (the bulk path
    computes baselines, previous results and infusion weeks only where a rule needs them)."""
    out = np.zeros(len(analytes), np.bool_)
    for rule in protocol.findings:
        name = getattr(rule, "analyte", None)
        if rule.kind in kinds and name is not None:
            out[analytes[name]] = True
    return out


def _layers(size: int, members: list[list[int]]) -> list[I64]:
    """Lookup arrays item -> task index (-1 none), one layer per task an item belongs to."""
    layers: list[I64] = []
    for task, items in enumerate(members):
        for item in items:
            layer = next((lay for lay in layers if lay[item] < 0), None)
            if layer is None:
                layer = np.full(size, -1, np.int64)
                layers.append(layer)
            layer[item] = task
    return layers


class Triage:
    """Triage results per (text, class of days since the last infusion), each computed once
    with the per-patient engine (and its cache) and kept for the whole bulk call."""

    def __init__(self, plan: Plan, texts: list[str]) -> None:
        self.engine = triage_engine(plan.protocol)
        self.plan = plan
        self.texts = texts
        self.unknown = len(plan.breaks) + 1  # the class of "no infusion before the report"
        self.cache: dict[tuple[int, int], tuple[tuple[int, int, int], ...]] = {}

    def day_class(self, days: I64, known: Bool) -> I64:
        return np.where(known, np.searchsorted(self.plan.breaks, days, side="right"), self.unknown)

    def suspected(self, text: int, day_class: int, days: int | None) -> tuple[tuple[int, int, int], ...]:
        """(condition, severity, rule) of each suspected condition, in the engine's order;
        `days` is any day count of the class (None for the unknown class)."""
        key = (text, day_class)
        found = self.cache.get(key)
        if found is None:
            result = self.engine.triage(self.texts[text], days)
            found = self.cache[key] = tuple(
                (CONDITION_INDEX[s.condition], URGENCY_RANK[s.urgency], self.plan.rules.add(s.signs[0]))
                for s in result.suspected
            )
        return found


# --- one chunk: courses and labs --------------------------------------------------------


@dataclass
class Courses:
    """Infusions up to as_of in (patient, date) order, grouped into courses (group_courses)."""

    inf_patient: I64
    inf_date: I64
    inf_premed: I8
    inf_observation: F64
    inf_day: I64  # 1-based day within its course
    inf_key: I64  # (patient << 22) | date, sorted
    patient: I64  # per course
    start: I64
    end: I64
    count: I64
    number: I64  # 1-based within the patient
    key: I64  # (patient << 22) | start, sorted
    n_courses: I64  # per patient
    first_start: I64  # per patient, 0 = no course
    last_start: I64
    last_end: I64

    def part(self, lo: int, hi: int) -> Courses:
        """The courses of patients lo..hi-1, renumbered from 0 (rows are grouped by patient)."""
        infusions = slice(*np.searchsorted(self.inf_patient, [lo, hi]).tolist())
        courses = slice(*np.searchsorted(self.patient, [lo, hi]).tolist())
        shift = lo << DATE_BITS
        return Courses(
            inf_patient=self.inf_patient[infusions] - lo,
            inf_date=self.inf_date[infusions],
            inf_premed=self.inf_premed[infusions],
            inf_observation=self.inf_observation[infusions],
            inf_day=self.inf_day[infusions],
            inf_key=self.inf_key[infusions] - shift,
            patient=self.patient[courses] - lo,
            start=self.start[courses],
            end=self.end[courses],
            count=self.count[courses],
            number=self.number[courses],
            key=self.key[courses] - shift,
            n_courses=self.n_courses[lo:hi],
            first_start=self.first_start[lo:hi],
            last_start=self.last_start[lo:hi],
            last_end=self.last_end[lo:hi],
        )


def build_courses(c: Cohort, plan: Plan, day: int) -> Courses:
    """Chart.build and group_courses: infusions up to as_of, a gap longer than
    course_max_gap_days starting a new course."""
    keep = c.inf_date <= day
    patient, date = _i64(c.inf_patient[keep]), _i64(c.inf_date[keep])
    order = order_rows([patient, date])
    patient, date = patient[order], date[order]
    n = len(date)
    new = np.ones(n, np.bool_)
    if n > 1:
        new[1:] = (patient[1:] != patient[:-1]) | (date[1:] - date[:-1] > plan.gap)
    firsts = np.flatnonzero(new)
    lasts = np.append(firsts[1:] - 1, n - 1) if n else firsts
    course = np.cumsum(new) - 1
    c_patient = patient[firsts]
    size = c.size
    p_first = np.searchsorted(c_patient, np.arange(size), side="left")
    n_courses = np.searchsorted(c_patient, np.arange(size), side="right") - p_first
    has = n_courses > 0
    first_idx = np.minimum(p_first, max(len(firsts) - 1, 0))
    last_idx = np.maximum(p_first + n_courses - 1, 0)
    start, end = date[firsts], date[lasts]

    def pick(values: I64, index: I64) -> I64:
        """Per patient, a course's date (0 without courses)."""
        return np.where(has, values[index], 0) if n else np.zeros(size, np.int64)

    return Courses(
        inf_patient=patient,
        inf_date=date,
        inf_premed=c.inf_premed[keep][order],
        inf_observation=c.inf_observation[keep][order],
        inf_day=np.arange(n) - firsts[course] + 1,
        inf_key=(patient << DATE_BITS) | date,
        patient=c_patient,
        start=start,
        end=end,
        count=lasts - firsts + 1,
        number=np.arange(len(firsts)) - p_first[c_patient] + 1,
        key=(c_patient << DATE_BITS) | start,
        n_courses=n_courses,
        first_start=pick(start, first_idx),
        last_start=pick(start, last_idx),
        last_end=pick(end, last_idx),
    )


def in_infusion_week(courses: Courses, plan: Plan, patient: I64, date: I64) -> Bool:
    """chart.in_infusion_week for (patient, date) pairs: the last course started on or before
    the date is the only one whose week can still cover it (later courses end later)."""
    if not len(courses.key):
        return np.zeros(len(date), np.bool_)
    j = np.searchsorted(courses.key, (patient << DATE_BITS) | date, side="right") - 1
    jc = np.maximum(j, 0)
    inside: Bool = (j >= 0) & (courses.patient[jc] == patient) & (date <= courses.end[jc] + plan.week_after)
    return inside


@dataclass
class Labs:
    """Lab results up to as_of sorted by (analyte, patient, date, row): each analyte is one
    slice, each (patient, analyte) one run. Per (patient, analyte), the latest, previous and
    baseline result in dense [patient, analyte] tables."""

    key: I64  # ((analyte * P + patient) << 22) | date, sorted
    row: I64  # the cohort row of each sorted result
    value: F64  # the cohort's lab_value column (read through `row`)
    has: Bool  # [P, A]
    value_latest: F64
    date_latest: I64
    low: F64  # the latest result's own lower limit, else the default
    high: F64
    prev_value: F64  # NaN: no previous result
    base_value: F64
    is_baseline: Bool  # the latest result is the baseline one
    in_week: Bool  # the latest result lies in an infusion week

    @property
    def patients(self) -> int:
        return int(self.has.shape[0])

    def slice(self, analyte: int) -> slice:
        """The sorted rows of one analyte."""
        bounds = np.searchsorted(self.key, _i64([analyte, analyte + 1]) * self.patients << DATE_BITS)
        return slice(int(bounds[0]), int(bounds[1]))

    def latest_on_or_before(self, analytes: Sequence[int], patient: I64, day: I64) -> I64:
        """Per query, the latest date on or before `day` of any of the analytes (0: none)."""
        best = np.zeros(len(patient), np.int64)
        if not len(self.key):
            return best
        for a in analytes:
            group = a * self.patients + patient
            j = np.searchsorted(self.key, (group << DATE_BITS) | day, side="right") - 1
            found = self.key[np.maximum(j, 0)]
            ok = (j >= 0) & ((found >> DATE_BITS) == group)
            best = np.where(ok, np.maximum(best, found & DATE_MASK), best)
        return best


def sort_labs(c: Cohort, day: int) -> tuple[I64, I64]:
    """(sorted keys, cohort rows) of the results up to as_of in (analyte, patient, date, row)
    order. Rows that come in (patient, date) order, as a registry query returns them, need
    only a stable radix sort on the 16-bit analyte; others one sort of packed keys."""
    keep = c.lab_date <= day
    rows = None if bool(keep.all()) else np.flatnonzero(keep)
    patient, analyte, date = (
        (c.lab_patient, c.lab_analyte, c.lab_date)
        if rows is None
        else (c.lab_patient[rows], c.lab_analyte[rows], c.lab_date[rows])
    )
    key = (analyte.astype(np.int64) * c.size + patient) << DATE_BITS
    key |= date
    timeline = (patient.astype(np.int64) << DATE_BITS) | date
    if len(key) < 2 or bool(np.all(timeline[1:] >= timeline[:-1])):
        order = np.argsort(analyte, kind="stable")
    else:
        order = order_rows([analyte, patient, date])
    return key[order], (order if rows is None else rows[order])


def build_labs(c: Cohort, plan: Plan, day: int, courses: Courses) -> Labs:
    """Chart.latest / previous / findings.baseline_result for every (patient, analyte)."""
    key, rows = sort_labs(c, day)
    size, width = c.size, len(plan.analytes)
    group = key >> DATE_BITS
    firsts = np.flatnonzero(group_starts(group))
    lasts = np.append(firsts[1:] - 1, len(group) - 1) if len(group) else firsts
    analyte, patient = np.divmod(group[firsts], size)
    cells = patient * width + analyte
    last_rows = rows[lasts]
    own_low, own_high = c.lab_ref_low[last_rows], c.lab_ref_high[last_rows]
    date = key[lasts] & DATE_MASK
    shape = (size, width)
    has = np.zeros(shape, np.bool_).ravel()
    has[cells] = True
    labs = Labs(
        key=key,
        row=rows,
        value=c.lab_value,
        has=has.reshape(shape),
        value_latest=_dense(shape, cells, c.lab_value[last_rows], np.nan),
        date_latest=_dense(shape, cells, date, 0),
        low=_dense(shape, cells, np.where(np.isnan(own_low), plan.default_low[analyte], own_low), np.nan),
        high=_dense(shape, cells, np.where(np.isnan(own_high), plan.default_high[analyte], own_high), np.nan),
        prev_value=np.full(shape, np.nan),
        base_value=np.full(shape, np.nan),
        is_baseline=np.zeros(shape, np.bool_),
        in_week=np.zeros(shape, np.bool_),
    )
    # Only for the analytes some rule reads that way:
    pick = np.flatnonzero(plan.reads_previous[analyte])
    previous = np.where(lasts[pick] > firsts[pick], c.lab_value[rows[np.maximum(lasts[pick] - 1, 0)]], np.nan)
    labs.prev_value.ravel()[cells[pick]] = previous
    pick = np.flatnonzero(plan.reads_week[analyte])
    labs.in_week.ravel()[cells[pick]] = in_infusion_week(courses, plan, patient[pick], date[pick])
    # The baseline (findings.baseline_result): the latest on or before the first infusion, else the first.
    pick = np.flatnonzero(plan.reads_baseline[analyte])
    probe = (group[firsts[pick]] << DATE_BITS) | courses.first_start[patient[pick]]
    before = np.searchsorted(key, probe, side="right") - 1
    base = np.where(before >= firsts[pick], before, firsts[pick])
    labs.base_value.ravel()[cells[pick]] = c.lab_value[rows[base]]
    labs.is_baseline.ravel()[cells[pick]] = base == lasts[pick]
    return labs


def _dense(shape: tuple[int, int], cells: I64, values: npt.NDArray[Any], fill: Any) -> Any:
    """A [patient, analyte] table holding `values` at the flat `cells`, `fill` elsewhere."""
    out = np.full(shape[0] * shape[1], fill, dtype=values.dtype if len(values) else np.asarray(fill).dtype)
    out[cells] = values
    return out.reshape(shape)


# --- findings ----------------------------------------------------------------------------


@dataclass
class Symptoms:
    """Symptom reports up to as_of, with their day class and the index of their triage."""

    patient: I64
    date: I64
    text: I64
    row: I64  # position among the chunk's reports (the patient's list order)
    days: I64
    known: Bool  # an infusion precedes the report


def build_symptoms(c: Cohort, day: int, courses: Courses) -> Symptoms:
    """The reports up to as_of and their days since the last infusion on or before them."""
    keep = c.sym_date <= day
    patient, date = _i64(c.sym_patient[keep]), _i64(c.sym_date[keep])
    j = np.searchsorted(courses.inf_key, (patient << DATE_BITS) | date, side="right") - 1
    jc = np.maximum(j, 0)
    known = (j >= 0) & (courses.inf_patient[jc] == patient) if len(courses.inf_key) else np.zeros(len(date), bool)
    days = np.where(known, date - courses.inf_date[jc], -1) if len(courses.inf_key) else np.full(len(date), -1)
    return Symptoms(patient, date, _i64(c.sym_text[keep]), np.flatnonzero(keep), _i64(days), known)


@dataclass
class Candidates:
    """Findings before the merge: one row per rule that fired for a patient."""

    patient: list[I64] = field(default_factory=list)
    condition: list[I64] = field(default_factory=list)
    severity: list[I64] = field(default_factory=list)
    order: list[I64] = field(default_factory=list)  # (source << 32) | position: the engine's list order
    rule: list[I64] = field(default_factory=list)

    def add(self, patient: I64, condition: Any, severity: Any, source: int, position: Any, rule: Any) -> None:
        """Rows for `patient`; the other values are scalars or arrays of the same length."""
        n = len(patient)
        self.patient.append(patient)
        self.condition.append(np.broadcast_to(_i64(condition), n))
        self.severity.append(np.broadcast_to(_i64(severity), n))
        self.order.append(np.broadcast_to((source << 32) | _i64(position), n))
        self.rule.append(np.broadcast_to(_i64(rule), n))


class LabRules:
    """Each lab finding rule evaluated for every patient: (fired, severity) arrays. One
    method per rule kind, each mirroring its evaluator in core.findings."""

    def __init__(self, plan: Plan, labs: Labs, reported: Callable[[Bool, I64, list[str]], Bool]) -> None:
        self.plan = plan
        self.labs = labs
        self.reported = reported
        self.size = labs.has.shape[0]
        self.kinds: dict[str, Callable[[Any], tuple[Bool, I64]]] = {
            "below": self.below,
            "below_ref_low": self.below_ref_low,
            "fall_from_previous": self.fall_from_previous,
            "infusion_week_dip": self.infusion_week_dip,
            "rise_from_baseline": self.rise_from_baseline,
            "rise_from_baseline_with": self.rise_from_baseline_with,
            "at_least": self.at_least,
            "above_ref_high": self.above_ref_high,
            "above_ref_high_without_baseline": self.above_ref_high_without_baseline,
            "outside_range": self.outside_range,
            "above_uln_multiple": self.above_uln_multiple,
            "both_above_uln_multiple": self.both_above_uln_multiple,
        }

    def evaluate(self, rule: Any) -> tuple[Bool, I64]:
        return self.kinds[rule.kind](rule)

    def _a(self, analyte: str) -> int:
        return self.plan.analytes[analyte]

    def _severity(self, severity: str) -> I64:
        return np.full(self.size, URGENCY_RANK[severity], np.int64)

    def _outside_week(self, a: int, applies_in_week: bool) -> Bool:
        """_latest_outside_infusion_week: a latest result, unless the rule skips infusion weeks."""
        has = self.labs.has[:, a]
        return has if applies_in_week else has & ~self.labs.in_week[:, a]

    def below(self, rule: m.Below) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        fired = self._outside_week(a, rule.applies_in_infusion_week) & (self.labs.value_latest[:, a] < rule.value)
        severity = self._severity(rule.severity)
        escalation = rule.escalate_with_symptoms
        if escalation is not None and fired.any():
            since = self.labs.date_latest[:, a] - self.plan.lookback
            severity[self.reported(fired, since, list(escalation.conditions))] = URGENCY_RANK[escalation.severity]
        return fired, severity

    def below_ref_low(self, rule: m.BelowRefLow) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        fired = self._outside_week(a, rule.applies_in_infusion_week) & (
            self.labs.value_latest[:, a] < self.labs.low[:, a]
        )
        return fired, self._severity(rule.severity)

    def fall_from_previous(self, rule: m.FallFromPrevious) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        previous = self.labs.prev_value[:, a]
        fired = self._outside_week(a, rule.applies_in_infusion_week) & (previous > 0)
        fired &= ~(self.labs.value_latest[:, a] > previous * (1 - rule.fraction))
        return fired, self._severity(rule.severity)

    def infusion_week_dip(self, rule: m.InfusionWeekDip) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        fired = self.labs.has[:, a] & self.labs.in_week[:, a] & (self.labs.value_latest[:, a] < self.labs.low[:, a])
        return fired, self._severity(rule.severity)

    def _rise(self, a: int, ratio: float, absolute: float) -> Bool:
        value, base = self.labs.value_latest[:, a], self.labs.base_value[:, a]
        return (
            self.labs.has[:, a] & ~self.labs.is_baseline[:, a] & ((value >= base * ratio) | (value - base >= absolute))
        )

    def rise_from_baseline(self, rule: m.RiseFromBaseline) -> tuple[Bool, I64]:
        return self._rise(self._a(rule.analyte), rule.ratio, rule.absolute), self._severity(rule.severity)

    def rise_from_baseline_with(self, rule: m.RiseFromBaselineWith) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        companion_ok = np.zeros(self.size, np.bool_)
        for companion in rule.with_:
            o = self._a(companion.analyte)
            near = np.abs(self.labs.date_latest[:, o] - self.labs.date_latest[:, a]) <= self.plan.combination_window
            other = self.labs.value_latest[:, o]
            if companion.above_ref_high:
                positive = other > self.labs.high[:, o]
            elif companion.min is not None:
                positive = other >= companion.min
            else:
                continue
            companion_ok |= self.labs.has[:, o] & near & positive
        return self._rise(a, rule.ratio, rule.absolute) & companion_ok, self._severity(rule.severity)

    def at_least(self, rule: m.AtLeast) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        return self.labs.has[:, a] & (self.labs.value_latest[:, a] >= rule.value), self._severity(rule.severity)

    def above_ref_high(self, rule: m.AboveRefHigh) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        fired = self.labs.has[:, a] & (self.labs.value_latest[:, a] > self.labs.high[:, a])
        return fired, self._severity(rule.severity)

    def above_ref_high_without_baseline(self, rule: m.AboveRefHighWithoutBaseline) -> tuple[Bool, I64]:
        fired, severity = self.above_ref_high(rule)  # type: ignore[arg-type]
        return fired & self.labs.is_baseline[:, self._a(rule.analyte)], severity

    def outside_range(self, rule: m.OutsideRange) -> tuple[Bool, I64]:
        a = self._a(rule.analyte)
        value = self.labs.value_latest[:, a]
        inside = (self.labs.low[:, a] <= value) & (value <= self.labs.high[:, a])
        return self.labs.has[:, a] & ~inside, self._severity(rule.severity)

    def _uln(self, analytes: Sequence[str], multiple: float) -> Bool:
        hit = np.zeros(self.size, np.bool_)
        for name in analytes:
            a = self._a(name)
            hit |= self.labs.has[:, a] & (self.labs.value_latest[:, a] > multiple * self.labs.high[:, a])
        return hit

    def above_uln_multiple(self, rule: m.AboveUlnMultiple) -> tuple[Bool, I64]:
        return self._uln(rule.analytes, rule.multiple), self._severity(rule.severity)

    def both_above_uln_multiple(self, rule: m.BothAboveUlnMultiple) -> tuple[Bool, I64]:
        fired = self._uln(rule.first.analytes, rule.first.multiple) & self._uln(
            rule.second.analytes, rule.second.multiple
        )
        return fired, self._severity(rule.severity)


def lab_findings(plan: Plan, labs: Labs, symptoms: Symptoms, triage: Triage, out: Candidates) -> None:
    """findings.lab_findings: every rule in protocol order (the order breaks severity ties)."""

    def reported(fired: Bool, since: I64, conditions: list[str]) -> Bool:
        """findings._recent_reports: a report from `since` to as_of suspecting one of the conditions."""
        rows = np.flatnonzero(fired[symptoms.patient] & (symptoms.date >= since[symptoms.patient]))
        wanted = {CONDITION_INDEX[c] for c in conditions}
        hits = [
            r
            for r in rows
            if any(s[0] in wanted for s in triage.suspected(int(symptoms.text[r]), triage.unknown, None))
        ]
        found = np.zeros(len(fired), np.bool_)
        found[symptoms.patient[_i64(hits)]] = True
        return found

    evaluator = LabRules(plan, labs, reported)
    for position, rule in enumerate(plan.protocol.findings):
        fired, severity = evaluator.evaluate(rule)
        patients = np.flatnonzero(fired)
        out.add(patients, CONDITION_INDEX[rule.condition], severity[patients], 0, position, plan.rules.index[rule.id])


def symptom_findings(symptoms: Symptoms, triage: Triage, out: Candidates) -> None:
    """findings.symptom_findings: each report triaged with its days since the last infusion."""
    if not len(symptoms.patient):
        return
    day_class = triage.day_class(symptoms.days, symptoms.known)
    key = symptoms.text * (triage.unknown + 1) + day_class
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    results = [
        triage.suspected(int(symptoms.text[r]), int(day_class[r]), int(symptoms.days[r]) if symptoms.known[r] else None)
        for r in first
    ]
    counts = _i64([len(r) for r in results])
    flat = np.array([s for r in results for s in r], dtype=np.int64).reshape(-1, 3)
    starts = np.cumsum(counts) - counts
    owner, rank = expand(counts[inverse])
    entry = starts[inverse][owner] + rank
    out.add(symptoms.patient[owner], flat[entry, 0], flat[entry, 1], 1, symptoms.row[owner], flat[entry, 2])


def reaction_findings(c: Cohort, plan: Plan, day: int, out: Candidates) -> None:
    """findings.reaction_findings: recorded reactions of infusions up to as_of (all reactions
    of one condition and severity name the same rule, so their order does not matter)."""
    keep = np.flatnonzero(c.rx_date <= day)
    protocol = plan.protocol
    onset = c.rx_onset_hours[keep]
    delayed = ~np.isnan(onset) & (onset > protocol.infusion.delayed_reactions.after_hours)
    conditions = np.where(delayed, CONDITION_INDEX["delayed_infusion_reaction"], CONDITION_INDEX["infusion_reaction"])
    severity_of = _i64(
        [URGENCY_RANK[REACTION_SEVERITY[name]] for name in ("mild", "moderate", "severe", "life_threatening")]
    )
    rules = np.where(delayed, plan.rules.index[protocol.infusion.delayed_reactions.id], plan.rules.index[REACTION_RULE])
    out.add(_i64(c.rx_patient[keep]), conditions, severity_of[c.rx_severity[keep]], 2, 0, rules)


def vaccine_findings(c: Cohort, plan: Plan, day: int, courses: Courses, out: Candidates) -> None:
    """findings.vaccine_findings: a live vaccine after the first infusion, up to as_of."""
    patients, _ = live_vaccines_after_course(c, day, courses)
    rule = plan.protocol.vaccines.after_course
    out.add(patients, CONDITION_INDEX[rule.condition], URGENCY_RANK[rule.severity], 3, 0, plan.rules.index[rule.id])


def live_vaccines_after_course(c: Cohort, day: int, courses: Courses) -> tuple[I64, I64]:
    """(patient, date) of live vaccines given after the first infusion and up to as_of."""
    patient, date = _i64(c.vac_patient), _i64(c.vac_date)
    first = courses.first_start[patient]
    keep = c.vac_live & (courses.n_courses[patient] > 0) & (first < date) & (date <= day)
    return patient[keep], date[keep]


@dataclass
class Findings:
    """Merged findings, one row per (patient, condition), with the rules that fired (CSR)."""

    patient: I64
    condition: I64
    severity: I64
    rule: I64
    offsets: I64  # rules fired for finding i: rules[offsets[i]:offsets[i + 1]]
    rules: I64


def merge_by_condition(candidates: Candidates) -> Findings:
    """findings.merge_by_condition: per (patient, condition) the highest severity wins, the
    first such finding in list order names the rule; every rule that fired is listed in
    order of first appearance. Findings come out by patient, severity (highest first), name."""
    if not candidates.patient:
        empty = np.zeros(0, np.int64)
        return Findings(empty, empty, empty, empty, np.zeros(1, np.int64), empty)
    patient, condition, severity, order, rule = (
        np.concatenate(parts)
        for parts in (candidates.patient, candidates.condition, candidates.severity, candidates.order, candidates.rule)
    )
    group = patient * len(CONDITIONS) + condition
    best = order_rows([group, 3 - severity, order])
    winners = best[group_starts(group[best])]
    cells = group[winners]
    by_rule = order_rows([group, rule, order])
    firsts = by_rule[group_starts((group[by_rule] << 20) | rule[by_rule])]  # first sight of each (cell, rule)
    listed = firsts[order_rows([group[firsts], order[firsts]])]
    starts = np.searchsorted(group[listed], cells, side="left")
    counts = np.searchsorted(group[listed], cells, side="right") - starts
    final = order_rows([cells // len(CONDITIONS), 3 - severity[winners], cells % len(CONDITIONS)])
    owner, rank = expand(counts[final])
    winners = winners[final]
    return Findings(
        patient=patient[winners],
        condition=condition[winners],
        severity=severity[winners],
        rule=rule[winners],
        offsets=np.append(0, np.cumsum(counts[final])),
        rules=rule[listed][starts[final][owner] + rank],
    )


# --- prophylaxis, deviations, eligibility ---------------------------------------------------


@dataclass
class Herpes:
    """Per patient: status (HERPES_NAMES), earliest_stop and minimum_until (0: no course)."""

    status: I64
    earliest_stop: I64
    minimum_until: I64


def herpes_prophylaxis(plan: Plan, day: int, courses: Courses, labs: Labs) -> Herpes:
    """prophylaxis.herpes_prophylaxis from the last course: a minimum time after its last
    infusion and (when the protocol requires it) a CD4+ count at or above the threshold."""
    rule = plan.protocol.prophylaxis.herpes
    has = courses.n_courses > 0
    minimum_until = np.where(has, add_months(courses.last_end, rule.min_months_after_course), 0)
    earliest = minimum_until
    met = day >= minimum_until
    if rule.require_cd4:
        cd4 = plan.analytes["cd4"]
        rows = labs.slice(cd4)
        patient, date = (labs.key[rows] >> DATE_BITS) - cd4 * len(has), labs.key[rows] & DATE_MASK
        ok = (date > courses.last_end[patient]) & (labs.value[labs.row[rows]] >= rule.cd4_threshold)
        first_ok = min_by_sorted(patient[ok], date[ok], len(has))
        earliest = np.where(first_ok < FAR, np.maximum(minimum_until, first_ok), minimum_until)
        latest_after = labs.has[:, cd4] & (labs.date_latest[:, cd4] > courses.last_end)
        met &= latest_after & (labs.value_latest[:, cd4] >= rule.cd4_threshold)
    return Herpes(np.where(has, np.where(met, 2, 1), 0), np.where(has, earliest, 0), minimum_until)


@dataclass
class Rows:
    """Rows of (patient, code, date/position) gathered from several rules."""

    patient: list[I64] = field(default_factory=list)
    code: list[I64] = field(default_factory=list)
    value: list[I64] = field(default_factory=list)

    def add(self, patient: I64, code: Any, value: Any) -> None:
        self.patient.append(patient)
        self.code.append(np.broadcast_to(_i64(code), len(patient)))
        self.value.append(np.broadcast_to(_i64(value), len(patient)))

    def arrays(self) -> tuple[I64, I64, I64]:
        if not self.patient:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self.patient), np.concatenate(self.code), np.concatenate(self.value)


def on_prophylaxis(c: Cohort, patient: I64, day: I64) -> Bool:
    """prophylaxis.on_prophylaxis for (patient, day) pairs: a record covering the day."""
    order = order_rows([c.pro_patient])
    pro_patient, start, stop = _i64(c.pro_patient[order]), _i64(c.pro_start[order]), _i64(c.pro_stop[order])
    low = np.searchsorted(pro_patient, patient, side="left")
    owner, rank = expand(np.searchsorted(pro_patient, patient, side="right") - low)
    record = low[owner] + rank
    covered = (start[record] <= day[owner]) & ((stop[record] == 0) | (stop[record] >= day[owner]))
    return np.bincount(owner[covered], minlength=len(patient)) > 0


def deviations(c: Cohort, plan: Plan, day: int, courses: Courses, labs: Labs, herpes: Herpes) -> tuple[I64, I64, I64]:
    """deviations.deviations as (patient, code, date) rows sorted by patient, date, code."""
    protocol = plan.protocol
    rows = Rows()
    premed = (courses.inf_day <= protocol.infusion.premedication.course_days) & (courses.inf_premed == 0)
    rows.add(courses.inf_patient[premed], DEVIATION_INDEX["premedication_missing"], courses.inf_date[premed])
    observation = courses.inf_observation
    short = ~np.isnan(observation) & (observation < protocol.infusion.observation.min_minutes)
    rows.add(courses.inf_patient[short], DEVIATION_INDEX["observation_too_short"], courses.inf_date[short])
    expected = np.where(courses.number == 1, protocol.courses.first_course_days, protocol.courses.later_course_days)
    odd = courses.count != expected
    rows.add(courses.patient[odd], DEVIATION_INDEX["course_length_unexpected"], courses.start[odd])
    previous_end = np.roll(courses.end, 1)
    early = (courses.number > 1) & (courses.start < add_months(previous_end, protocol.courses.min_interval_months))
    rows.add(courses.patient[early], DEVIATION_INDEX["course_too_early"], courses.start[early])
    missing = ~on_prophylaxis(c, courses.patient, courses.start)
    rows.add(courses.patient[missing], DEVIATION_INDEX["prophylaxis_missing"], courses.start[missing])
    too_old = np.zeros(len(courses.start), np.bool_)
    for test in protocol.baseline.tests:
        latest = labs.latest_on_or_before([plan.analytes[a] for a in test.any_of], courses.patient, courses.start)
        too_old |= (latest > 0) & (courses.start - latest > protocol.baseline.window_days)
    rows.add(courses.patient[too_old], DEVIATION_INDEX["baseline_too_old"], courses.start[too_old])
    patients, dates = live_vaccines_after_course(c, day, courses)
    rows.add(patients, DEVIATION_INDEX["live_vaccine_after_course"], dates)
    pro_patient, stop = _i64(c.pro_patient), _i64(c.pro_stop)
    stopped = (
        (stop != 0)
        & (courses.n_courses[pro_patient] > 0)
        & (courses.last_start[pro_patient] <= stop)
        & (stop < herpes.earliest_stop[pro_patient])
        & (stop <= day)
    )
    rows.add(pro_patient[stopped], DEVIATION_INDEX["prophylaxis_stopped_early"], stop[stopped])
    patient, code, date = rows.arrays()
    order = order_rows([patient, date, code])
    return patient[order], code[order], date[order]


@dataclass
class Eligibility:
    """Per patient status and reason rows (code, level) in the engine's order."""

    status: I64  # per patient, -1 without a planned course
    reason_patient: I64
    reason_code: I64
    reason_level: I64
    dates: I64  # per patient, the earliest eligibility date after as_of that the output names


def eligibility(c: Cohort, plan: Plan, day: int, courses: Courses, labs: Labs) -> Eligibility:
    """eligibility.eligibility for patients with a planned course; reasons in its order
    (the row value is (section << 32) | position within the section)."""
    planned = np.flatnonzero(c.planned_start != 0)
    start = _i64(c.planned_start[planned])
    rows = Rows()
    dates = np.full(c.size, FAR, np.int64)
    _screening_reasons(c, plan, planned, rows)
    dates[planned] = _baseline_reasons(c, plan, day, labs, planned, rows)
    _vaccine_reasons(c, plan, day, rows)
    earliest = add_months(courses.last_end[planned], plan.protocol.courses.min_interval_months)
    earliest = np.where(courses.n_courses[planned] > 0, earliest, 0)
    early = start < earliest
    rows.add(planned[early], plan.reasons.index["course_too_early"] * 4 + 1, 5 << 32)
    for candidate in (start, earliest):
        dates[planned] = np.minimum(dates[planned], np.where(candidate > day, candidate, FAR))
    patient, code, position = rows.arrays()
    order = order_rows([patient, position])
    patient, code = patient[order], code[order]
    status = np.full(c.size, -1, np.int64)
    status[planned] = 0
    level = code % 4
    np.maximum.at(status, patient[level == 1], 1)
    status[patient[level == 0]] = 2
    return Eligibility(status, patient, code // 4, level, dates)


def _screening_reasons(c: Cohort, plan: Plan, planned: I64, rows: Rows) -> None:
    """eligibility._screening_reasons for contraindications and cautions, then the positive
    tuberculosis screen. Codes carry the level: code * 4 + level."""
    protocol = plan.protocol
    for section, level, rules in ((0, 0, protocol.contraindications), (1, 2, protocol.cautions)):
        for position, rule in enumerate(rules):
            code = _screening_code(rule.field, rule.equals)
            if code is not None:
                hit = planned[c.screening[rule.field.removeprefix("screening.")][planned] == code]
                rows.add(hit, plan.reasons.index[rule.code] * 4 + level, (section << 32) | position)
    positive = _screening_code("tuberculosis", "positive")
    if positive is not None:
        hit = planned[c.screening["tuberculosis"][planned] == positive]
        rows.add(hit, plan.reasons.index[protocol.baseline.tuberculosis_positive.code] * 4 + 1, 2 << 32)


def _baseline_reasons(c: Cohort, plan: Plan, day: int, labs: Labs, planned: I64, rows: Rows) -> I64:
    """eligibility.baseline_checklist: a test is missing unless its latest result up to the
    planned start (and as_of) lies within the window before the start; a screening is
    missing while unknown. Returns, per planned patient, the first day after as_of on
    which a valid result expires (valid_until + 1)."""
    baseline = plan.protocol.baseline
    start = _i64(c.planned_start[planned])
    missing = plan.reasons.index["baseline_missing"] * 4 + 1
    expires = np.full(len(planned), FAR, np.int64)
    for position, test in enumerate(baseline.tests):
        latest = labs.latest_on_or_before([plan.analytes[a] for a in test.any_of], planned, np.minimum(start, day))
        ok = (latest > 0) & (start - latest <= baseline.window_days)
        rows.add(planned[~ok], missing, (3 << 32) | position)
        after = np.where(latest > 0, latest + baseline.window_days + 1, FAR)
        expires = np.minimum(expires, np.where(after > day, after, FAR))
    for position, screen in enumerate(baseline.screening):
        unknown = _screening_code(screen.field, "unknown")
        if unknown is not None:
            hit = planned[c.screening[screen.field.removeprefix("screening.")][planned] == unknown]
            rows.add(hit, missing, (3 << 32) | (len(baseline.tests) + position))
    return expires


def _vaccine_reasons(c: Cohort, plan: Plan, day: int, rows: Rows) -> None:
    """eligibility._vaccine_reasons: vaccines within the interval before the planned start."""
    rule = plan.protocol.vaccines
    patient, date = _i64(c.vac_patient), _i64(c.vac_date)
    start = _i64(c.planned_start[patient])
    near = (start != 0) & (start - rule.min_days_before_course < date) & (date <= np.minimum(start, day))
    live = near & c.vac_live
    rows.add(patient[live], plan.reasons.index["live_vaccine_too_recent"] * 4 + 1, (4 << 32) | np.flatnonzero(live))
    other = near & ~c.vac_live
    rows.add(patient[other], plan.reasons.index["vaccine_within_6_weeks"] * 4 + 2, (4 << 32) | np.flatnonzero(other))


# --- the monitoring plan -------------------------------------------------------------------


@dataclass
class Tasks:
    """Monitoring tasks of one chunk as row arrays (statuses index STATUS_NAMES)."""

    patient: I32
    kind: I16
    due: I32
    status: I8
    window_start: I32
    window_end: I32
    course: I16
    next_change: I64  # per patient, the first window start or end + 1 after as_of (FAR: none)


def task_events(c: Cohort, plan: Plan, day: int, labs: Labs) -> I64:
    """Sorted keys ((task * P + patient) << 22) | date of every result or exam that counts for
    a task (Chart.dates_for of its tests and exams), each date once. A task's results are
    its analytes' sorted slices, shifted to the task's key range: a merge of sorted runs."""
    size = c.size
    parts = []
    for task, spec in enumerate(plan.protocol.monitoring.tasks):
        for name in spec.satisfied_by.tests:
            a = plan.analytes[name]
            parts.append(labs.key[labs.slice(a)] + ((task - a) * size << DATE_BITS))
    keep = (c.exam_date <= day) & (c.exam_kind >= 0)
    exam_patient, exam_kind, exam_date = _i64(c.exam_patient[keep]), c.exam_kind[keep], _i64(c.exam_date[keep])
    for layer in plan.exam_tasks:
        exam_task = layer[exam_kind]
        chosen = exam_task >= 0
        parts.append(np.sort(((exam_task[chosen] * size + exam_patient[chosen]) << DATE_BITS) | exam_date[chosen]))
    keys = np.sort(np.concatenate(parts), kind="stable") if parts else np.zeros(0, np.int64)
    return keys[group_starts(keys)]


@dataclass
class DueTables:
    """Due dates and windows of every task for every distinct last infusion of the cohort:
    [task, end, months 0..horizon] flattened; computed once per bulk call."""

    ends: I64  # sorted distinct course ends
    cells: int  # horizon + 1
    due: I32
    start: I32
    end: I32

    @classmethod
    def build(cls, plan: Plan, ends: I64) -> DueTables:
        ends = np.unique(ends)
        cells = plan.horizon + 1
        table = add_months(ends[:, None], np.arange(cells)[None, :]).astype(np.int32)[None, :, :]
        before, after = plan.before.astype(np.int32)[:, None, None], plan.after.astype(np.int32)[:, None, None]
        kinds = len(plan.interval)
        return cls(
            ends=ends,
            cells=cells,
            due=np.broadcast_to(table, (kinds, *table.shape[1:])).ravel(),
            start=(table - before).ravel(),
            end=(table + after).ravel(),
        )


def monitoring_plan(c: Cohort, plan: Plan, day: int, courses: Courses, events: I64, tables: DueTables) -> Tasks:
    """schedule.monitoring_plan: per course and task, due = last infusion + k x interval
    months up to the horizon, stopping before the next course's first infusion; a task is
    done when a qualifying date lies in its window. Rows: by patient, course, task, k.

    Work is done per block (course, task) where possible: a block's rows read consecutive
    cells of the due-date tables through one running index. Only tasks whose window has
    opened are searched for a qualifying date (events are on or before as_of)."""
    blocks = task_blocks(c, plan, courses)
    count, kind, course = blocks.count, blocks.kind, blocks.course
    end_index = np.searchsorted(tables.ends, courses.end[course])
    step = plan.interval[kind]
    first = (kind * len(tables.ends) + end_index) * tables.cells + step
    row_start = np.cumsum(count) - count
    increment = np.repeat(step.astype(np.int32), count)
    previous_last = np.roll(first + step * (count - 1), 1)
    previous_last[:1] = 0
    increment[row_start] = first - previous_last
    index = np.cumsum(increment, dtype=np.int64)
    window_start = tables.start[index]
    window_end = tables.end[index]
    upcoming = window_start > day
    status = upcoming.view(np.int8) * np.int8(3)
    opened = np.add.reduceat(~upcoming, row_start, dtype=np.int64) if len(row_start) else np.zeros(0, np.int64)
    patient = courses.patient[course]
    searched = ~upcoming
    base = np.repeat((kind * c.size + patient) << DATE_BITS, opened)
    start_open, end_open = window_start[searched], window_end[searched]
    padded = np.append(events, np.iinfo(np.int64).max)
    found = padded[np.searchsorted(padded, base | start_open)]
    not_done = (found > (base | end_open)).view(np.int8)
    status_open = (np.int8(2) - (end_open >= day).view(np.int8)) * not_done  # 0 done, 1 due, 2 overdue
    status[searched] = status_open
    # next change: the first window to open, or the end (+1) of a window open and not done
    size = c.size
    first_up = row_start + opened
    later = opened < count
    change = min_by_sorted(patient[later], window_start[first_up[later]].astype(np.int64), size)
    due_now = np.flatnonzero(status_open == 1)
    due_patient = patient[np.searchsorted(np.cumsum(opened), due_now, side="right")]
    change = np.minimum(change, min_by(due_patient, end_open[due_now].astype(np.int64) + 1, size))
    return Tasks(
        patient=np.repeat(patient.astype(np.int32), count),
        kind=np.repeat(kind.astype(np.int16), count),
        due=tables.due[index],
        status=status,
        window_start=window_start,
        window_end=window_end,
        course=np.repeat(courses.number[course].astype(np.int16), count),
        next_change=change,
    )


@dataclass
class Blocks:
    """The non-empty (course, task) blocks of the monitoring plan, in row order."""

    course: I64
    kind: I64
    count: I64


def task_blocks(c: Cohort, plan: Plan, courses: Courses) -> Blocks:
    """How many tasks each course has of each task: the multiples of the task's interval up
    to the horizon, before the next course's first infusion, for the patient's sex."""
    width = len(plan.interval)
    n = len(courses.start)
    has_next = courses.number < courses.n_courses[courses.patient]
    following = courses.start[np.minimum(np.arange(n) + 1, max(n - 1, 0))]
    months = np.where(
        has_next, months_before(courses.end, np.where(has_next, following, courses.end + 1)), plan.horizon
    )
    counts = np.minimum(np.minimum(months, plan.horizon)[:, None] // plan.interval[None, :], plan.kmax[None, :])
    counts *= plan.sex_ok[c.sex[courses.patient]]
    flat = counts.ravel()
    blocks = np.flatnonzero(flat)
    return Blocks(course=blocks // width, kind=blocks % width, count=flat[blocks])


# --- next change ---------------------------------------------------------------------------


def future_records(c: Cohort, day: int) -> I64:
    """Per patient, the first date after as_of on which a stored record starts to count
    (or a prophylaxis record starts or stops covering a day); FAR when none."""
    best = np.full(c.size, FAR, np.int64)
    pairs = [
        (c.lab_patient, c.lab_date),
        (c.inf_patient, c.inf_date),
        (c.exam_patient, c.exam_date),
        (c.vac_patient, c.vac_date),
        (c.sym_patient, c.sym_date),
        (c.pro_patient, c.pro_start),
        (c.pro_patient, c.pro_stop),
        (c.pro_patient, np.where(c.pro_stop != 0, c.pro_stop + 1, 0)),
    ]
    for patient, date in pairs:
        later = date > day
        if later.any():
            best = np.minimum(best, min_by(_i64(patient[later]), _i64(date[later]), c.size))
    return best


def next_change(size: int, day: int, parts: list[I64]) -> I64:
    """The first date after as_of among the candidates (per patient), 0 when none."""
    best = np.full(size, FAR, np.int64)
    for candidate in parts:
        best = np.minimum(best, np.where(candidate > day, candidate, FAR))
    return np.where(best < FAR, best, 0)


def _week_ends_after(courses: Courses, plan: Plan, day: int, size: int) -> I64:
    """Per patient, the first end of an infusion week (+1) after as_of."""
    ends = courses.end + plan.week_after + 1
    later = ends > day
    return min_by_sorted(courses.patient[later], ends[later], size)


# --- the whole cohort ---------------------------------------------------------------------


def assess_chunk(
    c: Cohort, plan: Plan, day: int, triage: Triage, courses: Courses, tables: DueTables
) -> dict[str, npt.NDArray[Any]]:
    """Every output for the patients of one chunk (patient indices local to the chunk)."""
    labs = build_labs(c, plan, day, courses)
    symptoms = build_symptoms(c, day, courses)
    candidates = Candidates()
    lab_findings(plan, labs, symptoms, triage, candidates)
    symptom_findings(symptoms, triage, candidates)
    reaction_findings(c, plan, day, candidates)
    vaccine_findings(c, plan, day, courses, candidates)
    found = merge_by_condition(candidates)
    herpes = herpes_prophylaxis(plan, day, courses, labs)
    dev_patient, dev_code, dev_date = deviations(c, plan, day, courses, labs, herpes)
    ready = eligibility(c, plan, day, courses, labs)
    tasks = monitoring_plan(c, plan, day, courses, task_events(c, plan, day, labs), tables)
    has = courses.n_courses > 0
    until = np.where(has, add_months(courses.last_end, plan.horizon), 0)
    candidates_dates = [
        future_records(c, day),
        tasks.next_change,
        _week_ends_after(courses, plan, day, c.size),
        np.where(has, until + 1, FAR),
        herpes.minimum_until,
        herpes.earliest_stop,
        ready.dates,
    ]
    return {
        "until": until.astype(np.int32),
        "course_count": courses.n_courses.astype(np.int16),
        "prophylaxis_status": herpes.status.astype(np.int8),
        "earliest_stop": herpes.earliest_stop.astype(np.int32),
        "eligibility_status": ready.status.astype(np.int8),
        "next_change": next_change(c.size, day, candidates_dates).astype(np.int32),
        "course_patient": courses.patient.astype(np.int32),
        "course_start": courses.start.astype(np.int32),
        "course_end": courses.end.astype(np.int32),
        "course_infusions": courses.count.astype(np.int16),
        "task_patient": tasks.patient,
        "task_kind": tasks.kind,
        "task_due": tasks.due,
        "task_status": tasks.status,
        "task_window_start": tasks.window_start,
        "task_window_end": tasks.window_end,
        "task_course": tasks.course,
        "finding_patient": found.patient.astype(np.int32),
        "finding_condition": found.condition.astype(np.int16),
        "finding_severity": found.severity.astype(np.int8),
        "finding_rule": found.rule.astype(np.int32),
        "finding_rules_count": np.diff(found.offsets),
        "finding_rules": found.rules.astype(np.int32),
        "dev_patient": dev_patient.astype(np.int32),
        "dev_code": dev_code.astype(np.int16),
        "dev_date": dev_date.astype(np.int32),
        "reason_patient": ready.reason_patient.astype(np.int32),
        "reason_code": ready.reason_code.astype(np.int16),
        "reason_level": ready.reason_level.astype(np.int8),
    }


PATIENT_COLUMNS = ("course_patient", "task_patient", "finding_patient", "dev_patient", "reason_patient")


class Chunks:
    """The cohort cut into runs of `size` patients, each a Cohort with patient indices local
    to the run, built when asked for. Event rows are grouped by run with a stable sort only
    when they are not already, so each patient's rows keep their order."""

    def __init__(self, cohort: Cohort, size: int) -> None:
        self.cohort = cohort
        n = cohort.size
        self.bounds = np.append(np.arange(0, n, size), n) if n else _i64([0, 0])
        self.tables: dict[str, tuple[list[npt.NDArray[Any]], I64]] = {}
        for columns in TABLES.values():
            arrays = [getattr(cohort, name) for name in columns]
            patient = arrays[0]
            if len(patient) < 2 or bool(np.all(patient[1:] >= patient[:-1])):
                starts = np.searchsorted(patient, self.bounds, side="left")
            else:
                run = patient // size
                if len(self.bounds) <= np.iinfo(np.int16).max:
                    run = run.astype(np.int16)  # a stable sort of 16-bit keys is a radix sort
                order = np.argsort(run, kind="stable")
                arrays = [a[order] for a in arrays]
                starts = np.searchsorted(run[order], np.arange(len(self.bounds)), side="left")
            self.tables[columns[0]] = arrays, starts

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def start(self, k: int) -> int:
        return int(self.bounds[k])

    def __getitem__(self, k: int) -> Cohort:
        cohort = self.cohort
        lo, hi = int(self.bounds[k]), int(self.bounds[k + 1])
        values: dict[str, Any] = {
            "patient_ids": cohort.patient_ids[lo:hi],
            "sex": cohort.sex[lo:hi],
            "planned_start": cohort.planned_start[lo:hi],
            "screening": {name: codes[lo:hi] for name, codes in cohort.screening.items()},
            "texts": cohort.texts,
        }
        for columns in TABLES.values():
            arrays, starts = self.tables[columns[0]]
            rows = slice(int(starts[k]), int(starts[k + 1]))
            values[columns[0]] = (arrays[0][rows] - lo).astype(np.int32)
            for name, array in zip(columns[1:], arrays[1:], strict=True):
                values[name] = array[rows]
        return Cohort(**values)


TASK_COLUMNS = (
    "task_patient",
    "task_kind",
    "task_due",
    "task_status",
    "task_window_start",
    "task_window_end",
    "task_course",
)


def bulk_assess(
    cohort: Cohort, protocol: Protocol, as_of: dt.date, *, chunk_size: int = DEFAULT_CHUNK
) -> BulkAssessment:
    """Assess every patient of the cohort at `as_of` (see the module docstring).

    The task columns, nearly all of the output, are allocated once: the courses of every
    chunk are grouped first, which gives the number of tasks; each chunk then writes its
    rows in place (no second copy of the output at the end)."""
    cohort.check(protocol)
    plan = Plan.build(protocol)
    triage = Triage(plan, cohort.texts)
    day = as_of.toordinal()
    runs = Chunks(cohort, chunk_size)
    everyone = build_courses(cohort, plan, day)
    blocks = task_blocks(cohort, plan, everyone)
    per_patient = np.bincount(everyone.patient[blocks.course], weights=blocks.count, minlength=cohort.size)
    sizes = [int(per_patient[runs.start(k) : runs.start(k + 1)].sum()) for k in range(len(runs))]
    tables = DueTables.build(plan, everyone.end)
    columns: dict[str, Any] = {}
    parts: list[dict[str, npt.NDArray[Any]]] = []
    at = 0
    for k, size in enumerate(sizes):
        lo = runs.start(k)
        part = assess_chunk(runs[k], plan, day, triage, everyone.part(lo, runs.start(k + 1)), tables)
        for name in PATIENT_COLUMNS:
            part[name] += np.int32(lo)
        for name in TASK_COLUMNS:
            piece = part.pop(name)
            if name not in columns:
                columns[name] = np.empty(sum(sizes), dtype=piece.dtype)
            columns[name][at : at + size] = piece
        at += size
        parts.append(part)
    for name in list(parts[0]):
        columns[name] = np.concatenate([part.pop(name) for part in parts])  # frees each piece as it goes
    counts = columns.pop("finding_rules_count")
    columns["finding_rules_offsets"] = np.append(0, np.cumsum(counts)).astype(np.int64)
    return BulkAssessment(
        as_of=as_of,
        patient_ids=cohort.patient_ids,
        task_names=[t.task for t in protocol.monitoring.tasks],
        task_rules=[t.id for t in protocol.monitoring.tasks],
        rule_ids=list(plan.rules.names),
        reason_codes=list(plan.reasons.names),
        deviation_rules=_deviation_rules(protocol),
        **columns,
    )


def _deviation_rules(protocol: Protocol) -> list[str]:
    """The rule id each deviation code names (as core.deviations writes them)."""
    herpes = protocol.prophylaxis.herpes.id
    by_code = {
        "baseline_too_old": protocol.baseline.id,
        "course_length_unexpected": protocol.courses.id,
        "course_too_early": protocol.courses.id,
        "live_vaccine_after_course": protocol.vaccines.after_course.id,
        "observation_too_short": protocol.infusion.observation.id,
        "premedication_missing": protocol.infusion.premedication.id,
        "prophylaxis_missing": herpes,
        "prophylaxis_stopped_early": herpes,
    }
    return [by_code[code] for code in DEVIATION_CODES]


def _iso(ordinal: int) -> str | None:
    return dt.date.fromordinal(ordinal).isoformat() if ordinal else None


@dataclass
class BulkAssessment:
    """Columnar result of `bulk_assess`. Row arrays are grouped by patient in patient order;
    codes index the name lists (`task_names`, `CONDITIONS`, `SEVERITY_NAMES`, `rule_ids`,
    `DEVIATION_CODES`, `reason_codes`, `LEVELS`, `STATUS_NAMES`, `HERPES_NAMES`,
    `ELIGIBILITY_NAMES`); dates are ordinals, 0 = none."""

    as_of: dt.date
    patient_ids: list[str]
    task_names: list[str]
    task_rules: list[str]
    rule_ids: list[str]
    reason_codes: list[str]
    deviation_rules: list[str]
    until: I32
    course_count: I16
    prophylaxis_status: I8
    earliest_stop: I32
    eligibility_status: I8
    next_change: I32
    course_patient: I32
    course_start: I32
    course_end: I32
    course_infusions: I16
    task_patient: I32
    task_kind: I16
    task_due: I32
    task_status: I8
    task_window_start: I32
    task_window_end: I32
    task_course: I16
    finding_patient: I32
    finding_condition: I16
    finding_severity: I8
    finding_rule: I32
    finding_rules_offsets: I64
    finding_rules: I32
    dev_patient: I32
    dev_code: I16
    dev_date: I32
    reason_patient: I32
    reason_code: I16
    reason_level: I8

    def rows(self, table: str, patient: int) -> slice:
        """The rows of one patient in a row table ("course", "task", "finding", "dev", "reason")."""
        owner: I32 = getattr(self, f"{table}_patient")
        return slice(
            int(np.searchsorted(owner, patient, side="left")), int(np.searchsorted(owner, patient, side="right"))
        )

    def patient_view(self, i: int) -> dict[str, Any]:
        """Patient i in the JSON shapes of `assess` for the fields the bulk path computes."""
        view: dict[str, Any] = {"patient": self.patient_ids[i], "as_of": self.as_of.isoformat()}
        if self.eligibility_status[i] >= 0:
            reasons = self.rows("reason", i)
            view["eligibility"] = {
                "status": ELIGIBILITY_NAMES[self.eligibility_status[i]],
                "reasons": [
                    {"code": self.reason_codes[code], "level": LEVELS[level]}
                    for code, level in zip(self.reason_code[reasons], self.reason_level[reasons], strict=True)
                ],
            }
        courses = self.rows("course", i)
        view["courses"] = [
            {"start": _iso(int(s)), "end": _iso(int(e)), "infusions": int(n)}
            for s, e, n in zip(
                self.course_start[courses], self.course_end[courses], self.course_infusions[courses], strict=True
            )
        ]
        view["monitoring"] = {"until": _iso(int(self.until[i])), "tasks": self._tasks(i)}
        view["prophylaxis"] = {
            "herpes": {
                "status": HERPES_NAMES[self.prophylaxis_status[i]],
                "earliest_stop": _iso(int(self.earliest_stop[i])),
            }
        }
        view["findings"] = self._findings(i)
        dev = self.rows("dev", i)
        view["deviations"] = [
            {"code": DEVIATION_CODES[code], "date": _iso(int(date)), "rule": self.deviation_rules[code]}
            for code, date in zip(self.dev_code[dev], self.dev_date[dev], strict=True)
        ]
        view["next_change"] = _iso(int(self.next_change[i]))
        return view

    def _tasks(self, i: int) -> list[dict[str, Any]]:
        rows = self.rows("task", i)
        kind, due = self.task_kind[rows], self.task_due[rows]
        order = np.lexsort((kind, due))  # schedule.monitoring_plan: by due date, then task order
        iso: dict[int, str | None] = {}
        out = []
        for n in order:
            r = rows.start + int(n)
            dates = [int(self.task_due[r]), int(self.task_window_start[r]), int(self.task_window_end[r])]
            due_iso, start_iso, end_iso = (iso[d] if d in iso else iso.setdefault(d, _iso(d)) for d in dates)
            out.append(
                {
                    "task": self.task_names[self.task_kind[r]],
                    "due": due_iso,
                    "status": STATUS_NAMES[self.task_status[r]],
                    "window": [start_iso, end_iso],
                    "course": int(self.task_course[r]),
                    "rule": self.task_rules[self.task_kind[r]],
                }
            )
        return out

    def _findings(self, i: int) -> list[dict[str, Any]]:
        rows = self.rows("finding", i)
        out = []
        for r in range(rows.start, rows.stop):
            fired = self.finding_rules[self.finding_rules_offsets[r] : self.finding_rules_offsets[r + 1]]
            out.append(
                {
                    "condition": CONDITIONS[self.finding_condition[r]],
                    "severity": SEVERITY_NAMES[self.finding_severity[r]],
                    "rule": self.rule_ids[self.finding_rule[r]],
                    "rules": [self.rule_ids[k] for k in fired],
                }
            )
        return out
