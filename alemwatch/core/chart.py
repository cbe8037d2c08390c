"""A patient's record as of one date, grouped into courses and indexed for the rules.

Nothing dated after `as_of` is kept: an assessment sees the record as it stood that day.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from alemwatch.core.patient import Infusion, LabResult, Patient
from alemwatch.protocol.model import Protocol


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar months, clamped to the month's end (Jan 31 + 1 month = Feb 28/29).

    The same arithmetic as `day + dateutil.relativedelta(months=months)` (a property test
    holds them equal), at a twentieth of the cost: a plan asks for ~250 of these."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


BY_DATE = operator.attrgetter("date")


@dataclass(frozen=True)
class Course:
    number: int
    infusions: tuple[Infusion, ...]

    @property
    def start(self) -> dt.date:
        return self.infusions[0].date

    @property
    def end(self) -> dt.date:
        return self.infusions[-1].date

    def to_json(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "infusions": len(self.infusions),
        }


def group_courses(infusions: Iterable[Infusion], max_gap_days: int) -> list[Course]:
    """Infusions no more than `max_gap_days` apart form one course; a longer gap starts the next."""
    ordered = sorted(infusions, key=BY_DATE)
    groups: list[list[Infusion]] = []
    for infusion in ordered:
        if groups and (infusion.date - groups[-1][-1].date).days <= max_gap_days:
            groups[-1].append(infusion)
        else:
            groups.append([infusion])
    return [Course(n + 1, tuple(group)) for n, group in enumerate(groups)]


@dataclass
class Chart:
    patient: Patient
    protocol: Protocol
    as_of: dt.date
    courses: list[Course]
    labs: dict[str, list[LabResult]]
    lab_dates: dict[str, list[dt.date]]
    exams: dict[str, list[dt.date]]
    _exam_aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, patient: Patient, protocol: Protocol, as_of: dt.date) -> Chart:
        infusions = [i for i in patient.infusions if i.date <= as_of]
        courses = group_courses(infusions, protocol.int_parameter("course_max_gap_days"))
        labs: dict[str, list[LabResult]] = {}
        for lab in patient.labs:
            if lab.date <= as_of:
                labs.setdefault(lab.analyte, []).append(lab)
        for results in labs.values():
            results.sort(key=BY_DATE)
        aliases = {alias: kind for kind, names in protocol.exam_types.items() for alias in names}
        exams: dict[str, list[dt.date]] = {}
        for exam in patient.exams:
            kind = aliases.get(exam.type.strip().lower().replace(" ", "_").replace("-", "_"))
            if kind and exam.date <= as_of:
                exams.setdefault(kind, []).append(exam.date)
        for dates in exams.values():
            dates.sort()
        lab_dates = {name: [r.date for r in results] for name, results in labs.items()}
        return cls(patient, protocol, as_of, courses, labs, lab_dates, exams, aliases)

    def results(self, analyte: str) -> list[LabResult]:
        return self.labs.get(analyte, [])

    def latest(self, analyte: str) -> LabResult | None:
        results = self.labs.get(analyte)
        return results[-1] if results else None

    def previous(self, analyte: str) -> LabResult | None:
        results = self.labs.get(analyte)
        return results[-2] if results and len(results) > 1 else None

    def dates_for(self, analytes: Sequence[str] = (), exams: Sequence[str] = ()) -> list[dt.date]:
        """Sorted dates on which any of the analytes was measured or exams were done."""
        if len(analytes) == 1 and not exams:
            return self.lab_dates.get(analytes[0], [])
        dates: list[dt.date] = []
        for name in analytes:
            dates.extend(self.lab_dates.get(name, []))
        for kind in exams:
            dates.extend(self.exams.get(kind, []))
        return sorted(dates)

    def last_infusion_on_or_before(self, day: dt.date) -> dt.date | None:
        last = None
        for course in self.courses:
            for infusion in course.infusions:
                if infusion.date <= day:
                    last = infusion.date
        return last

    def in_infusion_week(self, day: dt.date) -> bool:
        after = self.protocol.int_parameter("infusion_week_after_last_days")
        return any(c.start <= day <= c.end + dt.timedelta(days=after) for c in self.courses)


def any_between(dates: list[dt.date], low: dt.date, high: dt.date) -> dt.date | None:
    """The first date in [low, high] of a sorted list, or None."""
    index = bisect.bisect_left(dates, low)
    if index < len(dates) and dates[index] <= high:
        return dates[index]
    return None


def latest_on_or_before(dates: list[dt.date], day: dt.date) -> dt.date | None:
    index = bisect.bisect_right(dates, day)
    return dates[index - 1] if index else None
