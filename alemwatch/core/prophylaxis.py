"""Herpes prophylaxis: from the first day of each course until the later of a minimum time
after the course's last infusion and (US) a CD4+ count at or above the threshold."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alemwatch.core.chart import Chart, add_months


def herpes_prophylaxis(chart: Chart) -> dict[str, Any]:
    rule = chart.protocol.prophylaxis.herpes
    base: dict[str, Any] = {
        "rule": rule.id,
        "cd4_threshold": rule.cd4_threshold if rule.require_cd4 else None,
    }
    if not chart.courses:
        return {
            "status": "not_required",
            "earliest_stop": None,
            "on_prophylaxis": on_prophylaxis(chart, chart.as_of),
            **base,
        }
    course = chart.courses[-1]
    minimum_until = add_months(course.end, rule.min_months_after_course)
    cd4 = [r for r in chart.results("cd4") if r.date > course.end]
    latest = cd4[-1] if cd4 else None
    earliest_stop = minimum_until
    cd4_met: bool | None = None
    if rule.require_cd4:
        first_ok = next((r for r in cd4 if r.canonical >= rule.cd4_threshold), None)
        if first_ok is not None:
            earliest_stop = max(minimum_until, first_ok.date)
        cd4_met = latest is not None and latest.canonical >= rule.cd4_threshold
        met = chart.as_of >= minimum_until and cd4_met
    else:
        met = chart.as_of >= minimum_until
    return {
        "status": "may_stop" if met else "required",
        "earliest_stop": earliest_stop.isoformat(),
        "course_start": course.start.isoformat(),
        "minimum_until": minimum_until.isoformat(),
        "cd4_met": cd4_met,
        "latest_cd4": {"value": latest.canonical, "date": latest.date.isoformat()} if latest else None,
        "on_prophylaxis": on_prophylaxis(chart, chart.as_of),
        **base,
    }


def on_prophylaxis(chart: Chart, day: dt.date) -> bool:
    return any(
        p.start <= day and (p.stop is None or p.stop >= day) for p in chart.patient.prophylaxis if p.kind == "herpes"
    )
