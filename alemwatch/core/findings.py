"""Findings: what the results, reports and records mean, each with its urgency.

Lab rules read the latest result of each analyte (its previous result or the pre-treatment
baseline for relative rules). Every evaluator returns the evidence that made the rule fire,
written for the clinician, or None. Findings of one condition are merged: the highest
severity wins and every rule that fired is listed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alemwatch.core.chart import Chart
from alemwatch.core.patient import LabResult
from alemwatch.core.triage import TriageEngine
from alemwatch.protocol import model as m
from alemwatch.protocol.model import URGENCY_RANK


@dataclass
class Finding:
    condition: str
    severity: str
    rule: str
    evidence: list[str]
    action: str
    date: dt.date
    rules: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "severity": self.severity,
            "rule": self.rule,
            "evidence": self.evidence,
            "action": self.action,
            "date": self.date.isoformat(),
            "rules": self.rules or [self.rule],
        }


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _describe(chart: Chart, lab: LabResult) -> str:
    spec = chart.protocol.analytes[lab.analyte]
    received = "" if lab.unit == spec.unit else f" (received {lab.value} {lab.unit})"
    return f"{spec.name} {_fmt(lab.canonical)} {spec.unit} on {lab.date.isoformat()}{received}"


def ref_low(chart: Chart, lab: LabResult) -> float:
    own = lab.canonical_ref_low
    return own if own is not None else chart.protocol.analytes[lab.analyte].ref_low


def ref_high(chart: Chart, lab: LabResult) -> float:
    own = lab.canonical_ref_high
    return own if own is not None else chart.protocol.analytes[lab.analyte].ref_high


def _latest_outside_infusion_week(chart: Chart, analyte: str, applies_in_week: bool) -> LabResult | None:
    lab = chart.latest(analyte)
    if lab is None or (not applies_in_week and chart.in_infusion_week(lab.date)):
        return None
    return lab


def _below(chart: Chart, rule: m.Below) -> tuple[list[str], str] | None:
    lab = _latest_outside_infusion_week(chart, rule.analyte, rule.applies_in_infusion_week)
    if lab is None or lab.canonical >= rule.value:
        return None
    evidence = [f"{_describe(chart, lab)} is below {_fmt(rule.value)}"]
    severity = rule.severity
    if rule.escalate_with_symptoms:
        reports = _recent_reports(chart, lab.date, rule.escalate_with_symptoms.conditions)
        if reports:
            severity = rule.escalate_with_symptoms.severity
            evidence += reports
    return evidence, severity


def _below_ref_low(chart: Chart, rule: m.BelowRefLow) -> tuple[list[str], str] | None:
    lab = _latest_outside_infusion_week(chart, rule.analyte, rule.applies_in_infusion_week)
    if lab is None or lab.canonical >= ref_low(chart, lab):
        return None
    return [f"{_describe(chart, lab)} is below the lower limit {_fmt(ref_low(chart, lab))}"], rule.severity


def _fall_from_previous(chart: Chart, rule: m.FallFromPrevious) -> tuple[list[str], str] | None:
    lab = _latest_outside_infusion_week(chart, rule.analyte, rule.applies_in_infusion_week)
    previous = chart.previous(rule.analyte)
    if lab is None or previous is None or previous.canonical <= 0:
        return None
    if lab.canonical > previous.canonical * (1 - rule.fraction):
        return None
    fall = 100 * (1 - lab.canonical / previous.canonical)
    return [
        f"{_describe(chart, lab)} fell {fall:.0f}% from {_fmt(previous.canonical)} on {previous.date.isoformat()}"
    ], rule.severity


def _infusion_week_dip(chart: Chart, rule: m.InfusionWeekDip) -> tuple[list[str], str] | None:
    lab = chart.latest(rule.analyte)
    if lab is None or not chart.in_infusion_week(lab.date) or lab.canonical >= ref_low(chart, lab):
        return None
    return [f"{_describe(chart, lab)} in the infusion week (expected transient dip; recheck)"], rule.severity


def baseline_result(chart: Chart, analyte: str) -> LabResult | None:
    """The pre-treatment value: the latest on or before the first infusion, else the first."""
    results = chart.results(analyte)
    if not results:
        return None
    if chart.courses:
        before = [r for r in results if r.date <= chart.courses[0].start]
        if before:
            return before[-1]
    return results[0]


def _rise(chart: Chart, analyte: str, ratio: float, absolute: float) -> tuple[LabResult, LabResult] | None:
    lab = chart.latest(analyte)
    baseline = baseline_result(chart, analyte)
    if lab is None or baseline is None or lab is baseline:
        return None
    if lab.canonical >= baseline.canonical * ratio or lab.canonical - baseline.canonical >= absolute:
        return lab, baseline
    return None


def _rise_text(chart: Chart, lab: LabResult, baseline: LabResult) -> str:
    return f"{_describe(chart, lab)} is up from the baseline {_fmt(baseline.canonical)} on {baseline.date.isoformat()}"


def _rise_from_baseline(chart: Chart, rule: m.RiseFromBaseline) -> tuple[list[str], str] | None:
    pair = _rise(chart, rule.analyte, rule.ratio, rule.absolute)
    return ([_rise_text(chart, *pair)], rule.severity) if pair else None


def _rise_from_baseline_with(chart: Chart, rule: m.RiseFromBaselineWith) -> tuple[list[str], str] | None:
    pair = _rise(chart, rule.analyte, rule.ratio, rule.absolute)
    if pair is None:
        return None
    window = dt.timedelta(days=chart.protocol.int_parameter("lab_combination_window_days"))
    for companion in rule.with_:
        other = chart.latest(companion.analyte)
        if other is None or abs(other.date - pair[0].date) > window:
            continue
        if companion.above_ref_high:
            positive = other.canonical > ref_high(chart, other)
        else:
            positive = companion.min is not None and other.canonical >= companion.min
        if positive:
            return [_rise_text(chart, *pair), f"with {_describe(chart, other)}"], rule.severity
    return None


def _at_least(chart: Chart, rule: m.AtLeast) -> tuple[list[str], str] | None:
    lab = chart.latest(rule.analyte)
    if lab is None or lab.canonical < rule.value:
        return None
    return [f"{_describe(chart, lab)} is at or above {_fmt(rule.value)}"], rule.severity


def _above_ref_high(chart: Chart, rule: m.AboveRefHigh) -> tuple[list[str], str] | None:
    lab = chart.latest(rule.analyte)
    if lab is None or lab.canonical <= ref_high(chart, lab):
        return None
    return [f"{_describe(chart, lab)} is above the upper limit {_fmt(ref_high(chart, lab))}"], rule.severity


def _above_ref_high_without_baseline(chart: Chart, rule: m.AboveRefHighWithoutBaseline) -> tuple[list[str], str] | None:
    lab = chart.latest(rule.analyte)
    if lab is None or baseline_result(chart, rule.analyte) is not lab or lab.canonical <= ref_high(chart, lab):
        return None
    return [
        f"{_describe(chart, lab)} is above the upper limit {_fmt(ref_high(chart, lab))} (no baseline to compare)"
    ], rule.severity


def _outside_range(chart: Chart, rule: m.OutsideRange) -> tuple[list[str], str] | None:
    lab = chart.latest(rule.analyte)
    if lab is None:
        return None
    low, high = ref_low(chart, lab), ref_high(chart, lab)
    if low <= lab.canonical <= high:
        return None
    return [f"{_describe(chart, lab)} is outside {_fmt(low)}-{_fmt(high)}"], rule.severity


def _uln_hits(chart: Chart, spec: m.UlnMultiple) -> list[str]:
    hits = []
    for analyte in spec.analytes:
        lab = chart.latest(analyte)
        if lab is not None and lab.canonical > spec.multiple * ref_high(chart, lab):
            hits.append(
                f"{_describe(chart, lab)} is above {spec.multiple:g} x the upper limit {_fmt(ref_high(chart, lab))}"
            )
    return hits


def _above_uln_multiple(chart: Chart, rule: m.AboveUlnMultiple) -> tuple[list[str], str] | None:
    hits = _uln_hits(chart, m.UlnMultiple(analytes=rule.analytes, multiple=rule.multiple))
    return (hits, rule.severity) if hits else None


def _both_above_uln_multiple(chart: Chart, rule: m.BothAboveUlnMultiple) -> tuple[list[str], str] | None:
    first, second = _uln_hits(chart, rule.first), _uln_hits(chart, rule.second)
    return (first + second, rule.severity) if first and second else None


EVALUATORS: dict[str, Callable[[Chart, Any], tuple[list[str], str] | None]] = {
    "below": _below,
    "below_ref_low": _below_ref_low,
    "fall_from_previous": _fall_from_previous,
    "infusion_week_dip": _infusion_week_dip,
    "rise_from_baseline": _rise_from_baseline,
    "rise_from_baseline_with": _rise_from_baseline_with,
    "at_least": _at_least,
    "above_ref_high": _above_ref_high,
    "above_ref_high_without_baseline": _above_ref_high_without_baseline,
    "outside_range": _outside_range,
    "above_uln_multiple": _above_uln_multiple,
    "both_above_uln_multiple": _both_above_uln_multiple,
}


def _recent_reports(chart: Chart, since: dt.date, conditions: Sequence[str]) -> list[str]:
    lookback = dt.timedelta(days=chart.protocol.int_parameter("bleeding_symptom_lookback_days"))
    engine = triage_engine(chart.protocol)
    found = []
    for report in chart.patient.symptoms:
        if since - lookback <= report.date <= chart.as_of:
            result = engine.triage(report.text)
            if any(s.condition in conditions for s in result.suspected):
                found.append(f'reported on {report.date.isoformat()}: "{report.text}"')
    return found


_ENGINES: dict[int, TriageEngine] = {}


def triage_engine(protocol: m.Protocol) -> TriageEngine:
    engine = _ENGINES.get(id(protocol))
    if engine is None or engine.protocol is not protocol:
        engine = _ENGINES[id(protocol)] = TriageEngine(protocol)
    return engine


def lab_findings(chart: Chart) -> list[Finding]:
    findings = []
    for rule in chart.protocol.findings:
        result = EVALUATORS[rule.kind](chart, rule)
        if result is not None:
            evidence, severity = result
            analyte = getattr(rule, "analyte", None) or getattr(rule, "analytes", [None])[0]
            lab = chart.latest(analyte) if analyte else None
            findings.append(
                Finding(
                    rule.condition,
                    severity,
                    rule.id,
                    evidence,
                    rule.action,
                    lab.date if lab else chart.as_of,
                )
            )
    return findings


def symptom_findings(chart: Chart) -> list[Finding]:
    engine = triage_engine(chart.protocol)
    findings = []
    for report in chart.patient.symptoms:
        if report.date > chart.as_of:
            continue
        last = chart.last_infusion_on_or_before(report.date)
        days = (report.date - last).days if last else None
        result = engine.triage(report.text, days)
        for suspected in result.suspected:
            evidence = [
                f'reported on {report.date.isoformat()}: "{report.text}" (matched: {", ".join(suspected.matched)})'
            ]
            findings.append(
                Finding(
                    suspected.condition,
                    suspected.urgency,
                    suspected.signs[0],
                    evidence,
                    result.advice,
                    report.date,
                )
            )
    return findings


REACTION_SEVERITY = {
    "mild": "routine",
    "moderate": "soon",
    "severe": "urgent",
    "life_threatening": "urgent",
}


def reaction_findings(chart: Chart) -> list[Finding]:
    after_hours = chart.protocol.infusion.delayed_reactions.after_hours
    findings = []
    for course in chart.courses:
        for infusion in course.infusions:
            for reaction in infusion.reactions:
                delayed = reaction.onset_hours is not None and reaction.onset_hours > after_hours
                condition = "delayed_infusion_reaction" if delayed else "infusion_reaction"
                onset = f", onset {reaction.onset_hours:g} h" if reaction.onset_hours is not None else ""
                evidence = [
                    f"{reaction.severity} {reaction.type} with the infusion of {infusion.date.isoformat()}{onset}"
                ]
                action = "Review premedication and observation plans before the next infusion."
                findings.append(
                    Finding(
                        condition,
                        REACTION_SEVERITY[reaction.severity],
                        chart.protocol.infusion.delayed_reactions.id if delayed else "infusion.reaction_recorded",
                        evidence,
                        action,
                        infusion.date,
                    )
                )
    return findings


def vaccine_findings(chart: Chart) -> list[Finding]:
    rule = chart.protocol.vaccines.after_course
    if not chart.courses:
        return []
    first = chart.courses[0].start
    return [
        Finding(
            rule.condition,
            rule.severity,
            rule.id,
            [f"live vaccine {v.vaccine} on {v.date.isoformat()} after the first infusion ({first.isoformat()})"],
            rule.action,
            v.date,
        )
        for v in chart.patient.vaccinations
        if v.live and first < v.date <= chart.as_of
    ]


def merge_by_condition(findings: list[Finding]) -> list[Finding]:
    merged: dict[str, Finding] = {}
    for finding in findings:
        current = merged.get(finding.condition)
        if current is None:
            merged[finding.condition] = Finding(
                finding.condition,
                finding.severity,
                finding.rule,
                list(finding.evidence),
                finding.action,
                finding.date,
                [finding.rule],
            )
            continue
        current.rules.append(finding.rule)
        current.evidence.extend(e for e in finding.evidence if e not in current.evidence)
        current.date = max(current.date, finding.date)
        if URGENCY_RANK[finding.severity] > URGENCY_RANK[current.severity]:
            current.severity, current.rule, current.action = (
                finding.severity,
                finding.rule,
                finding.action,
            )
    ordered = sorted(merged.values(), key=lambda f: (-URGENCY_RANK[f.severity], f.condition))
    for finding in ordered:
        finding.rules = list(dict.fromkeys(finding.rules))
    return ordered


def all_findings(chart: Chart) -> list[Finding]:
    return merge_by_condition(
        lab_findings(chart) + symptom_findings(chart) + reaction_findings(chart) + vaccine_findings(chart)
    )
