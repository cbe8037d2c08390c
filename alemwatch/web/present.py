"""Presentation only: words, symbols and layout for what the engine and the registry answer.

Nothing here decides anything clinical. The assessment, the worklist and the protocol say
what is due, overdue or dangerous; this module says how to show it — every status in words
with a symbol (colour only repeats them), dates written for people, and each statement's
source looked up in the protocol.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from alemwatch.protocol.model import AdverseEffect, Protocol
from alemwatch.views import BASELINE_STATUS, ELIGIBILITY, HERPES_STATUS, REASON_LEVEL, TASK_STATUS, URGENCY

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# What a patient must do, said plainly; the protocol's advice for the level follows it.
PATIENT_HEADLINE = {
    "emergency": "Call emergency services now",
    "urgent": "Contact your MS team today",
    "soon": "Contact your MS care team within the next few days",
    "routine": "Mention this at your next visit",
}
ALERT_STATUS = {
    "open": ("Open", "●", "open"),
    "acknowledged": ("Acknowledged", "✔", "acknowledged"),
    "resolved": ("Resolved", "✔", "resolved"),
}
TABLES: dict[str, dict[str, tuple[str, str, str]]] = {
    "urgency": URGENCY,
    "task": TASK_STATUS,
    "eligibility": ELIGIBILITY,
    "baseline": BASELINE_STATUS,
    "herpes": HERPES_STATUS,
    "reason": REASON_LEVEL,
    "alert": ALERT_STATUS,
}
STATUS_ORDER = {"overdue": 0, "due": 1, "upcoming": 2, "done": 3}


@dataclass(frozen=True)
class Badge:
    word: str
    symbol: str
    css: str


def badge(value: str | None, table: str) -> Badge:
    """A status as a word and a symbol, with a CSS class that only repeats them in colour."""
    key = value or "none"
    word, symbol, _style = TABLES[table].get(key, (key.replace("_", " ").upper(), "?", ""))
    return Badge(word, symbol, f"{table}-{key}")


# --- dates ------------------------------------------------------------------------------


def as_date(value: dt.date | str | None) -> dt.date | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value[:10])


def long_date(value: dt.date | str | None) -> str:
    day = as_date(value)
    return "—" if day is None else f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def relative(value: dt.date | str | None, today: dt.date) -> str:
    day = as_date(value)
    if day is None:
        return ""
    days = (day - today).days
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if days == -1:
        return "yesterday"
    return f"in {days} days" if days > 0 else f"{-days} days ago"


def timestamp(value: dt.datetime | None) -> str:
    return "—" if value is None else value.strftime("%d %b %Y %H:%M")


def words(value: str | None) -> str:
    return "" if not value else value.replace("_", " ")


def without_code(message: str, code: str) -> str:
    """An alert's message without the condition code it starts with (the page names the condition)."""
    prefix = f"{code}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


FILTERS = {
    "long_date": long_date,
    "relative": relative,
    "timestamp": timestamp,
    "words": words,
    "without_code": without_code,
}
GLOBALS = {"badge": badge, "PATIENT_HEADLINE": PATIENT_HEADLINE}


# --- the protocol's names and sources --------------------------------------------------------


def source_index(protocol: Protocol) -> dict[str, str]:
    """Rule id -> its source, over every part of the protocol a rule id can point to."""
    index: dict[str, str] = {rule.id: rule.source for rule in protocol.findings}
    index.update({sign.id: sign.source for sign in protocol.triage.signs})
    index.update({combo.id: combo.source for combo in protocol.triage.combinations})
    index.update({task.id: task.source for task in protocol.monitoring.tasks})
    index.update({test.id: test.source for test in protocol.baseline.tests})
    index.update({screen.id: screen.source for screen in protocol.baseline.screening})
    index.update({rule.id: rule.source for rule in [*protocol.contraindications, *protocol.cautions]})
    index.update({effect.id: effect.source for effect in protocol.adverse_effects})
    infusion = protocol.infusion
    for rule in (infusion.premedication, infusion.observation, infusion.delayed_reactions):
        index[rule.id] = rule.source
    for item in (protocol.prophylaxis.herpes, protocol.courses, protocol.baseline, protocol.vaccines):
        index[item.id] = item.source
    index[protocol.vaccines.after_course.id] = protocol.vaccines.after_course.source
    index[protocol.baseline.tuberculosis_positive.id] = protocol.baseline.tuberculosis_positive.source
    return index


def task_names(protocol: Protocol) -> dict[str, str]:
    return {task.task: task.name for task in protocol.monitoring.tasks}


def condition_names(protocol: Protocol) -> dict[str, str]:
    names: dict[str, str] = {e.condition: e.name for e in protocol.adverse_effects if e.category == "serious"}
    names.setdefault("infection", "Infection")
    names.setdefault("delayed_infusion_reaction", "Delayed infusion reaction")
    names.setdefault("common_adverse_effect", "Common side effect")
    return names


# --- the worklist ---------------------------------------------------------------------------------


@dataclass
class TestSummary:
    """One kind of test of one patient in a worklist section: how many, and their due dates."""

    name: str
    status: str
    dues: list[str] = field(default_factory=list)

    @property
    def first(self) -> str:
        return min(self.dues)

    @property
    def last(self) -> str:
        return max(self.dues)


@dataclass
class PatientTests:
    """One patient's open tests in a worklist section: one call covers them all."""

    patient_id: str
    tests: dict[str, TestSummary] = field(default_factory=dict)

    @property
    def latest(self) -> str:
        return max(t.last for t in self.tests.values())

    @property
    def earliest(self) -> str:
        return min(t.first for t in self.tests.values())


def group_tests(rows: Iterable[dict[str, Any]], names: dict[str, str], latest_first: bool) -> list[PatientTests]:
    """Worklist test rows grouped by patient and test. Overdue tests are listed with the most
    recently missed first (those can still be caught up); tests coming due, soonest first."""
    grouped: dict[str, PatientTests] = {}
    for row in rows:
        entry = grouped.setdefault(row["patient_id"], PatientTests(row["patient_id"]))
        name = names.get(row["task"], words(row["task"]))
        entry.tests.setdefault(row["task"], TestSummary(name, row["status"])).dues.append(row["due"])
    if latest_first:
        return sorted(grouped.values(), key=lambda p: (p.latest, p.patient_id), reverse=True)
    return sorted(grouped.values(), key=lambda p: (p.earliest, p.patient_id))


def prophylaxis_text(row: dict[str, Any], protocol: Protocol) -> str:
    """The decision a prophylaxis row asks for, with the protocol's numbers."""
    rule = protocol.prophylaxis.herpes
    if row["task"] == "herpes_may_stop":
        cd4 = (row["detail"] or {}).get("latest_cd4") or {}
        value = f"CD4 {cd4['value']:g}/µL on {long_date(cd4.get('date'))}" if cd4 else "CD4 criterion met"
        return (
            f"{value} (≥ {rule.cd4_threshold:g}) and {rule.min_months_after_course} months passed since the course: "
            "may stop herpes prophylaxis (aciclovir)."
        )
    until = long_date((row["detail"] or {}).get("earliest_stop"))
    return f"Not on herpes prophylaxis while it is required (at least until {until}): start it or record it."


def course_text(row: dict[str, Any]) -> str:
    detail = row["detail"] or {}
    reasons = ", ".join(words(r) for r in detail.get("reasons", []))
    status = words(detail.get("status"))
    text = f"Course {detail.get('course_number', '?')} planned {long_date(row['due'])}: {status}"
    return f"{text} — {reasons}" if reasons else text


def worklist_view(worklist: dict[str, Any], protocol: Protocol, limit: int) -> dict[str, Any]:
    names = task_names(protocol)
    return {
        "limit": limit,
        "date": worklist["date"],
        "urgent_alerts": worklist["urgent_alerts"],
        "overdue": group_tests(worklist["overdue_tests"], names, latest_first=True),
        "due_this_week": group_tests(worklist["due_this_week"], names, latest_first=False),
        "prophylaxis": [{**row, "text": prophylaxis_text(row, protocol)} for row in worklist["prophylaxis_decisions"]],
        "courses": [{**row, "text": course_text(row)} for row in worklist["upcoming_courses"]],
        "other_alerts": worklist["other_alerts"],
        "counts": {
            "emergency": sum(1 for a in worklist["urgent_alerts"] if a["severity"] == "emergency"),
            "urgent": sum(1 for a in worklist["urgent_alerts"] if a["severity"] == "urgent"),
            "overdue": len(worklist["overdue_tests"]),
            "due_this_week": len(worklist["due_this_week"]),
            "prophylaxis": len(worklist["prophylaxis_decisions"]),
            "courses": len(worklist["upcoming_courses"]),
            "other": len(worklist["other_alerts"]),
        },
    }


# --- the monitoring plan ------------------------------------------------------------------------------


@dataclass
class PlanYear:
    """One calendar year of the plan: a row per task, a cell per month (a list: tasks can repeat)."""

    year: int
    rows: list[tuple[str, list[list[dict[str, Any]]]]]


def plan_years(tasks: list[dict[str, Any]], protocol: Protocol) -> list[PlanYear]:
    names = task_names(protocol)
    order = [t.task for t in protocol.monitoring.tasks]
    by_year: dict[int, dict[str, list[list[dict[str, Any]]]]] = {}
    for task in tasks:
        due = dt.date.fromisoformat(task["due"])
        year = by_year.setdefault(due.year, {})
        months = year.setdefault(task["task"], [[] for _ in range(12)])
        months[due.month - 1].append(task)
    return [
        PlanYear(
            year,
            [(names.get(name, name), by_year[year][name]) for name in order if name in by_year[year]],
        )
        for year in sorted(by_year)
    ]


def open_tasks(tasks: list[dict[str, Any]], today: dt.date, horizon_days: int = 120) -> list[dict[str, Any]]:
    """Overdue and due tasks, then those coming up within the horizon, most pressing first."""
    limit = (today + dt.timedelta(days=horizon_days)).isoformat()
    selected = [
        t for t in tasks if t["status"] in ("overdue", "due") or (t["status"] == "upcoming" and t["due"] <= limit)
    ]
    return sorted(selected, key=lambda t: (STATUS_ORDER[t["status"]], t["due"]))


@dataclass
class TestVisit:
    """The tests due on one day with one status: one blood draw, one line."""

    due: str
    status: str
    window: list[str]
    tasks: list[str] = field(default_factory=list)


def visits(tasks: list[dict[str, Any]], names: dict[str, str]) -> list[TestVisit]:
    grouped: dict[tuple[str, str], TestVisit] = {}
    for task in tasks:
        visit = grouped.setdefault(
            (task["due"], task["status"]), TestVisit(task["due"], task["status"], task["window"])
        )
        visit.tasks.append(names.get(task["task"], task["task"]))
    return list(grouped.values())


def task_counts(tasks: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for task in tasks:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return counts


def age(birth_date: str | None, today: dt.date) -> int | None:
    born = as_date(birth_date)
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def search_effects(effects: list[AdverseEffect], query: str) -> list[AdverseEffect]:
    """The adverse effects whose name, system, signs, action or source mention every word of the query."""
    terms = query.lower().split()
    if not terms:
        return list(effects)

    def haystack(effect: AdverseEffect) -> str:
        parts = (effect.name, effect.system, effect.condition, effect.watch, effect.action, effect.source)
        return " ".join(p for p in parts if p).lower().replace("_", " ")

    return [e for e in effects if all(term in haystack(e) for term in terms)]
