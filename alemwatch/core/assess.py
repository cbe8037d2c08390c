"""One patient's record in, what the care team must know today out (the contract's JSON)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alemwatch.core.chart import Chart
from alemwatch.core.deviations import deviations
from alemwatch.core.eligibility import eligibility
from alemwatch.core.findings import all_findings
from alemwatch.core.patient import Patient
from alemwatch.core.prophylaxis import herpes_prophylaxis
from alemwatch.core.schedule import monitoring_plan, monitoring_until, tasks_to_json
from alemwatch.protocol.model import Protocol


def assess(patient: Patient, protocol: Protocol, as_of: dt.date) -> dict[str, Any]:
    chart = Chart.build(patient, protocol, as_of)
    until = monitoring_until(chart)
    herpes = herpes_prophylaxis(chart)
    earliest_stop = dt.date.fromisoformat(herpes["earliest_stop"]) if herpes["earliest_stop"] else None
    result: dict[str, Any] = {
        "patient": patient.id,
        "as_of": as_of.isoformat(),
        "protocol": {"version": protocol.protocol_version, "jurisdiction": protocol.jurisdiction},
    }
    plan = eligibility(chart)
    if plan is not None:
        result["eligibility"] = plan
    result.update(
        {
            "courses": [course.to_json() for course in chart.courses],
            "monitoring": {
                "until": until.isoformat() if until else None,
                "tasks": tasks_to_json(monitoring_plan(chart)),
            },
            "prophylaxis": {"herpes": herpes},
            "findings": [finding.to_json() for finding in all_findings(chart)],
            "deviations": [d.to_json() for d in deviations(chart, earliest_stop)],
        }
    )
    return result
