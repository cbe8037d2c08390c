"""Departures from the protocol in what was actually done: premedication, observation,
prophylaxis, course timing and length, vaccines and stale baselines."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from alemwatch.core.chart import Chart, Course, add_months, latest_on_or_before
from alemwatch.core.prophylaxis import on_prophylaxis


@dataclass(frozen=True)
class Deviation:
    code: str
    date: dt.date
    message: str
    rule: str

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "date": self.date.isoformat(),
            "message": self.message,
            "rule": self.rule,
        }


def _infusion_deviations(chart: Chart, course: Course) -> list[Deviation]:
    premed = chart.protocol.infusion.premedication
    observation = chart.protocol.infusion.observation
    out = []
    for day, infusion in enumerate(course.infusions, start=1):
        if day <= premed.course_days and infusion.premedication is False:
            out.append(
                Deviation(
                    "premedication_missing",
                    infusion.date,
                    f"No corticosteroid premedication on day {day} of course {course.number}"
                    f" (required on days 1-{premed.course_days}).",
                    premed.id,
                )
            )
        minutes = infusion.observation_minutes
        if minutes is not None and minutes < observation.min_minutes:
            out.append(
                Deviation(
                    "observation_too_short",
                    infusion.date,
                    f"Observed {minutes:g} minutes after the infusion;"
                    f" at least {observation.min_minutes} are required.",
                    observation.id,
                )
            )
    return out


def _course_deviations(chart: Chart, index: int, course: Course) -> list[Deviation]:
    rules = chart.protocol.courses
    out = []
    expected = rules.first_course_days if index == 0 else rules.later_course_days
    if len(course.infusions) != expected:
        out.append(
            Deviation(
                "course_length_unexpected",
                course.start,
                f"Course {course.number} had {len(course.infusions)} infusion days; the label gives {expected}.",
                rules.id,
            )
        )
    if index > 0:
        previous = chart.courses[index - 1]
        earliest = add_months(previous.end, rules.min_interval_months)
        if course.start < earliest:
            out.append(
                Deviation(
                    "course_too_early",
                    course.start,
                    f"Course {course.number} started {course.start.isoformat()}, before {earliest.isoformat()}"
                    f" ({rules.min_interval_months} months after the last dose of course {previous.number}).",
                    rules.id,
                )
            )
    herpes = chart.protocol.prophylaxis.herpes
    if not on_prophylaxis(chart, course.start):
        out.append(
            Deviation(
                "prophylaxis_missing",
                course.start,
                f"No herpes prophylaxis recorded on the first day of course {course.number}.",
                herpes.id,
            )
        )
    out += _baseline_deviations(chart, course)
    return out


def _baseline_deviations(chart: Chart, course: Course) -> list[Deviation]:
    baseline = chart.protocol.baseline
    too_old = []
    for test in baseline.tests:
        # A missing result is not flagged here: records imported mid-programme often lack the
        # history; the eligibility check for the next course does require every baseline.
        latest = latest_on_or_before(chart.dates_for(test.any_of), course.start)
        if latest is not None and (course.start - latest).days > baseline.window_days:
            too_old.append(f"{test.name} ({latest.isoformat()})")
    if not too_old:
        return []
    message = f"Baseline older than {baseline.window_days} days before course {course.number}: {', '.join(too_old)}."
    return [Deviation("baseline_too_old", course.start, message, baseline.id)]


def _vaccine_deviations(chart: Chart) -> list[Deviation]:
    if not chart.courses:
        return []
    rule = chart.protocol.vaccines.after_course
    first = chart.courses[0].start
    return [
        Deviation(
            "live_vaccine_after_course",
            v.date,
            f"Live vaccine ({v.vaccine}) given after alemtuzumab (first infusion {first.isoformat()}).",
            rule.id,
        )
        for v in chart.patient.vaccinations
        if v.live and first < v.date <= chart.as_of
    ]


def _prophylaxis_stopped_early(chart: Chart, course: Course, earliest_stop: dt.date) -> list[Deviation]:
    herpes = chart.protocol.prophylaxis.herpes
    out = []
    for record in chart.patient.prophylaxis:
        if (
            record.kind == "herpes"
            and record.stop is not None
            and course.start <= record.stop < earliest_stop
            and record.stop <= chart.as_of
        ):
            out.append(
                Deviation(
                    "prophylaxis_stopped_early",
                    record.stop,
                    f"Herpes prophylaxis stopped {record.stop.isoformat()}, before {earliest_stop.isoformat()}.",
                    herpes.id,
                )
            )
    return out


def deviations(chart: Chart, herpes_earliest_stop: dt.date | None) -> list[Deviation]:
    out: list[Deviation] = []
    for index, course in enumerate(chart.courses):
        out += _infusion_deviations(chart, course)
        out += _course_deviations(chart, index, course)
    out += _vaccine_deviations(chart)
    if chart.courses and herpes_earliest_stop is not None:
        out += _prophylaxis_stopped_early(chart, chart.courses[-1], herpes_earliest_stop)
    return sorted(out, key=lambda d: (d.date, d.code))
