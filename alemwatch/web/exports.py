"""Take-aways: the monitoring schedule as an iCalendar file, the alert card as a PDF.

The calendar has one all-day event per day with tests due (the plan's tasks from today on,
with their window) and one for a planned course, each with a stable UID so that importing
the file again updates the events instead of adding copies."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from icalendar import Alarm, Calendar, Event

from alemwatch import __version__
from alemwatch.protocol.model import Protocol
from alemwatch.web.present import long_date, task_names

PRODID = f"-//alemwatch//alemwatch {__version__}//EN"


def _event(uid: str, day: dt.date, summary: str, description: str, stamp: dt.datetime) -> Event:
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp)
    event.add("dtstart", day)
    event.add("dtend", day + dt.timedelta(days=1))
    event.add("summary", summary)
    event.add("description", description)
    event.add("transp", "TRANSPARENT")
    reminder = Alarm()
    reminder.add("action", "DISPLAY")
    reminder.add("description", summary)
    reminder.add("trigger", dt.timedelta(days=-1))
    event.add_component(reminder)
    return event


def _tests_by_day(tasks: list[dict[str, Any]], today: dt.date) -> dict[str, list[dict[str, Any]]]:
    """Tasks not yet done whose window has not closed, by due date."""
    days: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        if task["status"] != "done" and task["window"][1] >= today.isoformat():
            days[task["due"]].append(task)
    return dict(sorted(days.items()))


def schedule_calendar(patient_id: str, result: dict[str, Any], protocol: Protocol, today: dt.date) -> bytes:
    names = task_names(protocol)
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"Alemtuzumab monitoring ({patient_id})")
    for due, tasks in _tests_by_day(result["monitoring"]["tasks"], today).items():
        listed = ", ".join(names.get(t["task"], t["task"]) for t in tasks)
        window = tasks[0]["window"]
        description = (
            f"Tests due: {listed}. Any day from {long_date(window[0])} to {long_date(window[1])} counts. "
            f"Monitoring continues until {long_date(result['monitoring']['until'])}. "
            f"Source: {protocol.monitoring.source}"
        )
        uid = f"{patient_id}-tests-{due}@alemwatch"
        calendar.add_component(
            _event(uid, dt.date.fromisoformat(due), f"Monitoring tests: {listed}", description, stamp)
        )
    eligibility = result.get("eligibility")
    if eligibility and eligibility["planned_course_start"] >= today.isoformat():
        start = dt.date.fromisoformat(eligibility["planned_course_start"])
        summary = f"Alemtuzumab course {eligibility['course_number']} starts"
        description = (
            f"Planned first infusion of course {eligibility['course_number']}. Source: {protocol.courses.source}"
        )
        calendar.add_component(
            _event(f"{patient_id}-course-{start.isoformat()}@alemwatch", start, summary, description, stamp)
        )
    ical: bytes = calendar.to_ical()
    return ical


def pdf_from_html(html: str, base_url: str) -> bytes:
    """Render a page to PDF (WeasyPrint, imported here: it takes a second to load)."""
    from weasyprint import HTML

    document: bytes = HTML(string=html, base_url=base_url).write_pdf()
    return document
