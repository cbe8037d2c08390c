"""The monitoring plan: every task from the first infusion to 48 months after the last.

Each course anchors a series at its last infusion (due = anchor + k x interval months); a
new course ends the previous series (tasks due on or after its first infusion are dropped)
and starts its own, so the 48-month clock restarts.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import NamedTuple

from alemwatch.core.chart import Chart, add_months, any_between
from alemwatch.protocol.model import MonitoringTask


class Task(NamedTuple):
    """One monitoring task (a named tuple: a plan builds hundreds per assessment)."""

    task: str
    due: dt.date
    status: str
    window_start: dt.date
    window_end: dt.date
    course: int
    done_on: dt.date | None
    rule: str


def tasks_to_json(tasks: list[Task]) -> list[dict[str, object]]:
    """The tasks as the contract's JSON. Tasks share due dates and windows, so each date is
    formatted once per plan."""
    iso: dict[dt.date, str] = {}
    out: list[dict[str, object]] = []
    for task in tasks:
        due = iso.get(task.due) or iso.setdefault(task.due, task.due.isoformat())
        start = iso.get(task.window_start) or iso.setdefault(task.window_start, task.window_start.isoformat())
        end = iso.get(task.window_end) or iso.setdefault(task.window_end, task.window_end.isoformat())
        done_on = task.done_on.isoformat() if task.done_on else None
        out.append(
            {
                "task": task.task,
                "due": due,
                "status": task.status,
                "window": [start, end],
                "course": task.course,
                "done_on": done_on,
                "rule": task.rule,
            }
        )
    return out


def task_status(due: dt.date, spec: MonitoringTask, dates: list[dt.date], as_of: dt.date, course: int) -> Task:
    start = due - _days(spec.window_before_days)
    end = due + _days(spec.window_after_days)
    done_on = any_between(dates, start, end if end < as_of else as_of)
    if done_on is not None:
        status = "done"
    elif as_of < start:
        status = "upcoming"
    elif as_of <= end:
        status = "due"
    else:
        status = "overdue"
    return Task(spec.task, due, status, start, end, course, done_on, spec.id)


@functools.cache
def _days(days: int) -> dt.timedelta:
    return dt.timedelta(days=days)


def monitoring_until(chart: Chart) -> dt.date | None:
    if not chart.courses:
        return None
    return add_months(chart.courses[-1].end, chart.protocol.monitoring.months_after_last_infusion)


def monitoring_plan(chart: Chart) -> list[Task]:
    protocol = chart.protocol
    horizon = protocol.monitoring.months_after_last_infusion
    specs = [s for s in protocol.monitoring.tasks if s.sex is None or chart.patient.sex in s.sex]
    dates = {s.id: chart.dates_for(s.satisfied_by.tests, s.satisfied_by.exams) for s in specs}
    tasks: list[tuple[dt.date, int, Task]] = []
    for index, course in enumerate(chart.courses):
        next_start = chart.courses[index + 1].start if index + 1 < len(chart.courses) else None
        dues = [add_months(course.end, months) for months in range(horizon + 1)]  # shared by every task
        for order, spec in enumerate(specs):
            for months in range(spec.interval_months, horizon + 1, spec.interval_months):
                due = dues[months]
                if next_start is not None and due >= next_start:
                    break
                tasks.append((due, order, task_status(due, spec, dates[spec.id], chart.as_of, course.number)))
    tasks.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in tasks]
