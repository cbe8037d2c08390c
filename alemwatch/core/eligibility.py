"""Is the patient ready for the planned course? Contraindications, baseline tests inside
their window, the vaccine interval and the minimum interval between courses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from alemwatch.core.chart import Chart, add_months, latest_on_or_before
from alemwatch.protocol.model import ScreeningRule

LEVEL_TO_STATUS = {"contraindication": "contraindicated", "not_ready": "not_ready"}


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    level: str  # contraindication | not_ready | caution
    rule: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "level": self.level, "rule": self.rule}


def _screening_value(chart: Chart, field: str) -> Any:
    return getattr(chart.patient.screening, field.removeprefix("screening."))


def _screening_reasons(chart: Chart, rules: list[ScreeningRule], level: str) -> list[Reason]:
    return [
        Reason(rule.code, rule.message, level, rule.id)
        for rule in rules
        if _screening_value(chart, rule.field) == rule.equals
    ]


def baseline_checklist(chart: Chart, start: dt.date) -> list[dict[str, Any]]:
    """Each baseline test: its latest result before the course and until when it is valid."""
    baseline = chart.protocol.baseline
    cutoff = min(start, chart.as_of)
    items: list[dict[str, Any]] = []
    for test in baseline.tests:
        latest = latest_on_or_before(chart.dates_for(test.any_of), cutoff)
        valid_until = latest + dt.timedelta(days=baseline.window_days) if latest else None
        ok = latest is not None and (start - latest).days <= baseline.window_days
        status = "valid" if ok else ("too_old" if latest else "missing")
        items.append(
            {
                "test": test.id.removeprefix("baseline."),
                "name": test.name,
                "rule": test.id,
                "status": status,
                "date": latest.isoformat() if latest else None,
                "valid_until": valid_until.isoformat() if valid_until else None,
            }
        )
    for screen in baseline.screening:
        value = _screening_value(chart, screen.field)
        items.append(
            {
                "test": screen.id.removeprefix("baseline."),
                "name": screen.name,
                "rule": screen.id,
                "status": "missing" if value == "unknown" else "valid",
                "date": None,
                "valid_until": None,
                "result": value,
            }
        )
    return items


def _baseline_reasons(checklist: list[dict[str, Any]], window_days: int) -> list[Reason]:
    reasons = []
    for item in checklist:
        if item["status"] == "valid":
            continue
        if item["status"] == "too_old":
            message = (
                f"{item['name']}: latest result {item['date']} is more than {window_days} days"
                " before the course; repeat it."
            )
        else:
            message = f"{item['name']}: no result before the course."
        reasons.append(Reason("baseline_missing", message, "not_ready", item["rule"]))
    return reasons


def _vaccine_reasons(chart: Chart, start: dt.date) -> list[Reason]:
    rule = chart.protocol.vaccines
    window_start = start - dt.timedelta(days=rule.min_days_before_course)
    reasons = []
    for vaccination in chart.patient.vaccinations:
        if not window_start < vaccination.date <= min(start, chart.as_of):
            continue
        ready = (vaccination.date + dt.timedelta(days=rule.min_days_before_course)).isoformat()
        if vaccination.live:
            message = (
                f"Live vaccine ({vaccination.vaccine}) on {vaccination.date.isoformat()}:"
                f" the course may start from {ready}."
            )
            reasons.append(Reason("live_vaccine_too_recent", message, "not_ready", rule.id))
        else:
            message = (
                f"Vaccine ({vaccination.vaccine}) on {vaccination.date.isoformat()} is within"
                f" {rule.min_days_before_course} days of the course; immunisations should be complete before."
            )
            reasons.append(Reason("vaccine_within_6_weeks", message, "caution", rule.id))
    return reasons


def earliest_next_course(chart: Chart) -> dt.date | None:
    if not chart.courses:
        return None
    return add_months(chart.courses[-1].end, chart.protocol.courses.min_interval_months)


def eligibility(chart: Chart) -> dict[str, Any] | None:
    start = chart.patient.planned_course_start
    if start is None:
        return None
    protocol = chart.protocol
    reasons = _screening_reasons(chart, protocol.contraindications, "contraindication")
    reasons += _screening_reasons(chart, protocol.cautions, "caution")
    if chart.patient.screening.tuberculosis == "positive":
        tb = protocol.baseline.tuberculosis_positive
        reasons.append(Reason(tb.code, tb.message, "not_ready", tb.id))
    checklist = baseline_checklist(chart, start)
    reasons += _baseline_reasons(checklist, protocol.baseline.window_days)
    reasons += _vaccine_reasons(chart, start)
    earliest = earliest_next_course(chart)
    if earliest is not None and start < earliest:
        message = (
            f"The last infusion was {chart.courses[-1].end.isoformat()}; the next course may start from"
            f" {earliest.isoformat()} (at least {protocol.courses.min_interval_months} months)."
        )
        reasons.append(Reason("course_too_early", message, "not_ready", protocol.courses.id))
    levels = {r.level for r in reasons}
    status = "contraindicated" if "contraindication" in levels else "not_ready" if "not_ready" in levels else "eligible"
    return {
        "status": status,
        "planned_course_start": start.isoformat(),
        "course_number": len(chart.courses) + 1,
        "course_days": protocol.courses.first_course_days if not chart.courses else protocol.courses.later_course_days,
        "earliest_start": earliest.isoformat() if earliest else None,
        "reasons": [r.to_json() for r in reasons],
        "baseline": checklist,
    }
