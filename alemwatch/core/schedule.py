"""The monitoring plan: every task from the first infusion to 48 months after the last.

Each course anchors a series at its last infusion (due = anchor + k x interval months); a
new course ends the previous series (tasks due on or after its first infusion are dropped)
and starts its own, so the 48-month clock restarts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from alemwatch.core.chart import Chart, add_months, any_between
from alemwatch.protocol.model import MonitoringTask


@dataclass(frozen=True)
class Task:
    task: str
    due: dt.date
    status: str
    window_start: dt.date
    window_end: dt.date
    course: int
    done_on: dt.date | None
    rule: str

    def to_json(self) -> dict[str, object]:
        return {
            "task": self.task,
            "due": self.due.isoformat(),
            "status": self.status,
            "window": [self.window_start.isoformat(), self.window_end.isoformat()],
            "course": self.course,
            "done_on": self.done_on.isoformat() if self.done_on else None,
            "rule": self.rule,
        }


def task_status(due: dt.date, spec: MonitoringTask, dates: list[dt.date], as_of: dt.date, course: int) -> Task:
    start = due - dt.timedelta(days=spec.window_before_days)
    end = due + dt.timedelta(days=spec.window_after_days)
    done_on = any_between(dates, start, min(end, as_of))
    if done_on is not None:
        status = "done"
    elif as_of < start:
        status = "upcoming"
    elif as_of <= end:
        status = "due"
    else:
        status = "overdue"
    return Task(spec.task, due, status, start, end, course, done_on, spec.id)


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
        for order, spec in enumerate(specs):
            for months in range(spec.interval_months, horizon + 1, spec.interval_months):
                due = add_months(course.end, months)
                if next_start is not None and due >= next_start:
                    break
                task = task_status(due, spec, dates[spec.id], chart.as_of, course.number)
                tasks.append((due, order, task))
    tasks.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in tasks]
