"""When can an assessment change without new data? The incremental sweep re-assesses a
patient on that day; any earlier date is safe (a wasted re-assessment), a later one is not."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alemwatch.core.patient import Patient

ONE_DAY = dt.timedelta(days=1)


def _later(candidates: list[dt.date], as_of: dt.date) -> dt.date | None:
    future = [d for d in candidates if d > as_of]
    return min(future) if future else None


def record_dates(patient: Patient) -> list[dt.date]:
    """Dates on which a stored record starts to count (records dated in the future, and the
    day after a prophylaxis stop)."""
    days = [lab.date for lab in patient.labs] + [i.date for i in patient.infusions] + [e.date for e in patient.exams]
    days += [v.date for v in patient.vaccinations] + [s.date for s in patient.symptoms]
    for record in patient.prophylaxis:
        days.append(record.start)
        if record.stop:
            days.append(record.stop + ONE_DAY)
    return days


def next_change(
    result: dict[str, Any], as_of: dt.date, infusion_week_days: int, records: list[dt.date], lookahead: dt.timedelta
) -> dt.date | None:
    """The first day after `as_of` on which some status in `result` may change by itself
    (`lookahead`: how long before its window a task is listed on the worklist)."""
    days: list[dt.date] = list(records)
    for task in result["monitoring"]["tasks"]:
        if task["status"] != "done":
            start, end = (dt.date.fromisoformat(d) for d in task["window"])
            days += [start - lookahead, start, end + ONE_DAY]
    until = result["monitoring"]["until"]
    if until:
        days.append(dt.date.fromisoformat(until) + ONE_DAY)
    herpes = result["prophylaxis"]["herpes"]
    for key in ("minimum_until", "earliest_stop"):
        if herpes.get(key):
            days.append(dt.date.fromisoformat(herpes[key]))
    eligibility = result.get("eligibility")
    if eligibility:
        for item in eligibility["baseline"]:
            if item.get("valid_until"):
                days.append(dt.date.fromisoformat(item["valid_until"]) + ONE_DAY)
        for key in ("earliest_start", "planned_course_start"):
            if eligibility.get(key):
                day = dt.date.fromisoformat(eligibility[key])
                days += [day, day + ONE_DAY]  # the planned course leaves the worklist the day after
    for course in result["courses"]:
        days.append(dt.date.fromisoformat(course["end"]) + dt.timedelta(days=infusion_week_days) + ONE_DAY)
    return _later(days, as_of)
