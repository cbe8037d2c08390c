"""Server-side SVG charts: geometry computed here, drawn by templates (no JavaScript).

Lab trends show each result in the analyte's canonical unit, the reference range as a band
and every alert threshold the protocol's finding rules define for that analyte, so a chart
changes when the protocol does. Each chart has a text alternative (a summary and a table).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from alemwatch.core.chart import Chart
from alemwatch.core.findings import baseline_result, ref_high, ref_low
from alemwatch.core.patient import LabResult
from alemwatch.protocol import model as m
from alemwatch.web.present import MONTHS, long_date

TREND_ANALYTES = ("platelets", "creatinine", "tsh", "cd4", "alt")
WIDTH, HEIGHT = 640, 250
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 14, 34  # margins around the plot area
HEADROOM = 1.15


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str
    severity: str  # urgency of the rule, or "info"
    source: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    date: dt.date
    value: float
    flag: str  # "", "low" or "high": outside the result's reference range


@dataclass(frozen=True)
class Line:
    y: float
    threshold: Threshold


@dataclass
class TrendChart:
    analyte: str
    name: str
    unit: str
    points: list[Point]
    ref: tuple[float, float]
    band: tuple[float, float]  # y of the reference range's top and bottom
    lines: list[Line]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right_edge: int = WIDTH - RIGHT
    bottom_edge: int = HEIGHT - BOTTOM

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def thresholds(chart: Chart, analyte: str) -> list[Threshold]:
    """The alert thresholds the protocol's rules put on this analyte, in its canonical unit."""
    protocol = chart.protocol
    spec = protocol.analytes[analyte]  # type: ignore[index]
    found: list[Threshold] = []
    for rule in protocol.findings:
        if isinstance(rule, m.Below) and rule.analyte == analyte:
            found.append(Threshold(rule.value, f"below {_fmt(rule.value)}", rule.severity, rule.source))
        elif isinstance(rule, m.AtLeast) and rule.analyte == analyte:
            found.append(Threshold(rule.value, f"at least {_fmt(rule.value)}", rule.severity, rule.source))
        elif isinstance(rule, m.AboveUlnMultiple) and analyte in rule.analytes:
            value = spec.ref_high * rule.multiple
            found.append(Threshold(value, f"above {rule.multiple:g} × ULN ({_fmt(value)})", rule.severity, rule.source))
        elif isinstance(rule, m.RiseFromBaseline) and rule.analyte == analyte:
            baseline = baseline_result(chart, analyte)
            if baseline is not None:
                value = baseline.canonical * rule.ratio
                label = f"{rule.ratio:g} × baseline ({_fmt(value)})"
                found.append(Threshold(value, label, rule.severity, rule.source))
    herpes = protocol.prophylaxis.herpes
    if analyte == "cd4" and herpes.require_cd4:
        label = f"{herpes.cd4_threshold:g}: herpes prophylaxis may stop at or above"
        found.append(Threshold(herpes.cd4_threshold, label, "info", herpes.source))
    # One line per value; where two rules share one, the more urgent names it.
    unique = {round(t.value, 6): t for t in sorted(found, key=lambda t: m.URGENCY_RANK.get(t.severity, -1))}
    return sorted(unique.values(), key=lambda t: t.value)


def _flag(chart: Chart, lab: LabResult) -> str:
    if lab.canonical < ref_low(chart, lab):
        return "low"
    return "high" if lab.canonical > ref_high(chart, lab) else ""


def _date_span(results: list[LabResult], today: dt.date) -> tuple[dt.date, dt.date]:
    if not results:
        return today - dt.timedelta(days=180), today
    first, last = results[0].date, results[-1].date
    if (last - first).days < 30:
        return first - dt.timedelta(days=15), last + dt.timedelta(days=15)
    return first, last


def _x_ticks(first: dt.date, last: dt.date, scale_x: float, count: int = 5) -> list[tuple[float, str]]:
    span = max((last - first).days, 1)
    ticks = []
    for n in range(count):
        day = first + dt.timedelta(days=round(span * n / (count - 1)))
        ticks.append((LEFT + (day - first).days * scale_x, f"{MONTHS[day.month - 1]} {day.year}"))
    return ticks


def nice_step(top: float, ticks: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about `ticks` intervals up to `top`."""
    raw = top / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _y_ticks(top_value: float, step: float, to_y: float) -> list[tuple[float, str]]:
    count = round(top_value / step)
    return [(HEIGHT - BOTTOM - n * step * to_y, _fmt(n * step)) for n in range(count + 1)]


def _summary(name: str, unit: str, points: list[Point], ref: tuple[float, float], lines: list[Line]) -> str:
    if not points:
        text = f"{name}: no results yet."
    else:
        latest = points[-1]
        flag = {"low": ", below the reference range", "high": ", above the reference range"}.get(latest.flag, "")
        text = (
            f"{name}: {len(points)} results from {long_date(points[0].date)} to {long_date(latest.date)}; "
            f"latest {_fmt(latest.value)} {unit} on {long_date(latest.date)}{flag}."
        )
    text += f" Reference range {_fmt(ref[0])}–{_fmt(ref[1])} {unit}."
    if lines:
        text += " Alert thresholds: " + "; ".join(
            f"{line.threshold.label} ({line.threshold.severity})" for line in lines
        )
        text += "."
    return text


def trend_chart(chart: Chart, analyte: str) -> TrendChart:
    """One analyte's results over time, with its reference band and thresholds."""
    spec = chart.protocol.analytes[analyte]  # type: ignore[index]
    results = chart.results(analyte)
    first, last = _date_span(results, chart.as_of)
    found = thresholds(chart, analyte)
    highest = HEADROOM * max([spec.ref_high, *(r.canonical for r in results), *(t.value for t in found)])
    step = nice_step(highest)
    top_value = step * math.ceil(highest / step)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    scale_x, to_y = plot_w / max((last - first).days, 1), plot_h / top_value

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - value * to_y

    points = [
        Point(LEFT + (r.date - first).days * scale_x, y(r.canonical), r.date, r.canonical, _flag(chart, r))
        for r in results
    ]
    lines = [Line(y(t.value), t) for t in found]
    ref = (spec.ref_low, spec.ref_high)
    return TrendChart(
        analyte=analyte,
        name=spec.name,
        unit=spec.unit,
        points=points,
        ref=ref,
        band=(y(spec.ref_high), y(spec.ref_low)),
        lines=lines,
        x_ticks=_x_ticks(first, last, scale_x),
        y_ticks=_y_ticks(top_value, step, to_y),
        summary=_summary(spec.name, spec.unit, points, ref, lines),
    )


def trend_charts(chart: Chart) -> list[TrendChart]:
    return [trend_chart(chart, analyte) for analyte in TREND_ANALYTES]


# --- the adverse-effect frequencies ------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    effect: m.AdverseEffect
    y: float
    width: float
    serious_width: float


@dataclass
class FrequencyChart:
    bars: list[Bar]
    height: int
    label_width: int = 250
    bar_space: int = 330
    row: int = 22
    width: int = 640


def frequency_chart(effects: list[m.AdverseEffect]) -> FrequencyChart:
    """Horizontal bars of each effect's frequency (and the serious share, where given)."""
    with_frequency = sorted((e for e in effects if e.frequency_pct is not None), key=lambda e: -(e.frequency_pct or 0))
    chart = FrequencyChart([], 0)
    scale = chart.bar_space / 100
    chart.bars = [
        Bar(effect, 8 + n * chart.row, (effect.frequency_pct or 0) * scale, (effect.serious_pct or 0) * scale)
        for n, effect in enumerate(with_frequency)
    ]
    chart.height = 16 + len(chart.bars) * chart.row
    return chart
