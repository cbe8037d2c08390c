"""Human views (Rich) of the command outputs: the assessment, the triage and the protocol.

The views read the same JSON documents that `--json` prints, so what a clinician sees on
screen is what a script gets. Colour is never the only carrier of meaning: every severity
and status is also written out in words (with a symbol), so the views stay correct in a log
file, on a monochrome terminal and for colour-blind readers.

Data is always wrapped in `Text` and the console has markup off: protocol phrases such as
`[word]` and units such as `m[IU]/L` must print literally, never as Rich markup. Sources sit
on the line below the text they back, so the tables still read on an 80-column screen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from alemwatch.protocol import model as m

console = Console(highlight=False, markup=False, emoji=False)

# word, symbol, style: the word carries the meaning, the colour only repeats it.
Label = tuple[str, str, str]
URGENCY: dict[str, Label] = {
    "emergency": ("EMERGENCY", "‼", "bold white on red"),
    "urgent": ("URGENT", "!", "bold red"),
    "soon": ("SOON", "▲", "bold yellow"),
    "routine": ("ROUTINE", "·", "green"),
}
# What each level means for the patient (the contract's definitions of the levels).
URGENCY_HEADLINE = {
    "emergency": "CALL EMERGENCY SERVICES NOW",
    "urgent": "CONTACT THE MS TEAM TODAY",
    "soon": "CONTACT THE MS CARE TEAM WITHIN DAYS",
    "routine": "MENTION IT AT THE NEXT VISIT",
}
ELIGIBILITY: dict[str, Label] = {
    "eligible": ("ELIGIBLE", "✔", "bold green"),
    "not_ready": ("NOT READY", "✖", "bold yellow"),
    "contraindicated": ("CONTRAINDICATED", "✖", "bold white on red"),
}
REASON_LEVEL: dict[str, Label] = {
    "contraindication": ("CONTRAINDICATION", "✖", "bold red"),
    "not_ready": ("NOT READY", "✖", "yellow"),
    "caution": ("CAUTION", "!", "magenta"),
}
BASELINE_STATUS: dict[str, Label] = {
    "valid": ("valid", "✔", "green"),
    "too_old": ("too old", "✖", "yellow"),
    "missing": ("missing", "✖", "bold red"),
}
TASK_STATUS: dict[str, Label] = {
    "overdue": ("overdue", "✖", "bold red"),
    "due": ("due", "●", "bold yellow"),
    "done": ("done", "✔", "green"),
    "upcoming": ("upcoming", "○", "dim"),
}
HERPES_STATUS: dict[str, Label] = {
    "required": ("REQUIRED", "●", "bold yellow"),
    "may_stop": ("MAY STOP", "✔", "green"),
    "not_required": ("NOT REQUIRED", "○", "dim"),
}
NONE = "—"
BAR_WIDTH = 10  # cells of the frequency bar at 100 %


# --- small helpers ------------------------------------------------------------------------


def _badge(value: str, labels: dict[str, Label]) -> Text:
    """A status in words with its symbol, coloured; an unknown value prints as it is."""
    word, symbol, style = labels.get(value, (value.upper(), "?", "bold"))
    return Text(f"{symbol} {word}", style=style)


def _text(value: object, style: str = "") -> Text:
    return Text(NONE if value is None or value == "" else str(value), style=style)


def _bullets(lines: Iterable[str]) -> Text:
    return Text("\n".join(f"• {line}" for line in lines) or NONE)


def _source(text: str) -> Text:
    """A source tag, with POLICY (a number no source gives) made to stand out."""
    result = Text(text, style="dim")
    result.highlight_words(["POLICY"], style="bold magenta")
    return result


def _sourced(main: str | Text, source: str) -> Text:
    """The main text with its source on the line below."""
    return Text.assemble(main, "\n", _source(source))


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        # identifiers fold onto the next line rather than lose their end to an ellipsis
        table.add_column(column, overflow="fold")
    return table


def _heading(title: str) -> None:
    console.print()
    console.print(Rule(Text(title, style="bold"), align="left"))


def _note(text: str, style: str = "") -> None:
    console.print(Text(text, style=style))


def _urgency_rank(value: str) -> int:
    return m.URGENCY_RANK.get(value, -1)


# --- assess -------------------------------------------------------------------------------


def show_assessment(result: dict[str, Any], all_tasks: bool = False) -> None:
    """The assessment of one patient; after the header, the most pressing parts first."""
    _assessment_header(result)
    _findings(result.get("findings", []))
    _eligibility(result.get("eligibility"))
    _deviations(result.get("deviations", []))
    _herpes(result.get("prophylaxis", {}).get("herpes"))
    _courses(result.get("courses", []))
    _monitoring(result.get("monitoring", {}), all_tasks)


def _assessment_header(result: dict[str, Any]) -> None:
    protocol = result.get("protocol", {})
    body = Text.assemble(
        ("Patient ", "dim"),
        (str(result.get("patient", NONE)), "bold"),
        ("   as of ", "dim"),
        (str(result.get("as_of", NONE)), "bold"),
        ("   protocol ", "dim"),
        f"{protocol.get('version', NONE)} ({protocol.get('jurisdiction', NONE)})",
    )
    console.print(Panel(body, title="alemwatch assessment", title_align="left"))


def _findings(findings: list[dict[str, Any]]) -> None:
    _heading("Findings")
    if not findings:
        _note("✔ No findings.", "green")
        return
    table = _table("", "Severity", "Condition", "Evidence and action")
    table.columns[0].no_wrap = True
    ordered = sorted(findings, key=lambda f: (-_urgency_rank(f["severity"]), f.get("date") or ""))
    for finding in ordered:
        details = _bullets(finding.get("evidence", []))
        details.append_text(Text.assemble("\n→ Action: ", (finding.get("action") or NONE, "bold")))
        condition = Text.assemble((finding["condition"], "bold"), "\n", finding.get("date") or "")
        table.add_row(_badge(finding["severity"], URGENCY), condition, details)
    console.print(table)


def _eligibility(eligibility: dict[str, Any] | None) -> None:
    _heading("Eligibility for the planned course")
    if eligibility is None:
        _note("Not assessed: the patient file has no planned_course_start.", "dim")
        return
    console.print(
        Text.assemble(
            _badge(eligibility["status"], ELIGIBILITY),
            f"   course {eligibility.get('course_number', NONE)}",
            f" planned {eligibility.get('planned_course_start', NONE)}",
            f", {eligibility.get('course_days', NONE)} infusion days",
            f", earliest start {eligibility.get('earliest_start') or 'any time'}",
        )
    )
    _eligibility_reasons(eligibility.get("reasons", []))
    _baseline_checklist(eligibility.get("baseline", []))


def _eligibility_reasons(reasons: list[dict[str, Any]]) -> None:
    if not reasons:
        _note("No reasons against the course.", "green")
        return
    table = _table("Reasons", "Level", "Code", "Message")
    table.columns[0].no_wrap = True
    for reason in reasons:
        table.add_row(_badge(reason["level"], REASON_LEVEL), _text(reason["code"]), _text(reason["message"]))
    console.print(table)


def _baseline_checklist(checklist: list[dict[str, Any]]) -> None:
    table = _table("Baseline checklist", "Test", "Status", "Date", "Valid until")
    for item in checklist:
        status = _badge(item["status"], BASELINE_STATUS)
        if item.get("result") is not None:
            status.append(f" ({item['result']})")
        table.add_row(_text(item["name"]), status, _text(item.get("date")), _text(item.get("valid_until")))
    console.print(table)


def _courses(courses: list[dict[str, Any]]) -> None:
    _heading("Courses")
    if not courses:
        _note("No infusions recorded.", "dim")
        return
    table = _table("", "Course", "Start", "End", "Infusions")
    for number, course in enumerate(courses, start=1):
        table.add_row(str(number), _text(course["start"]), _text(course["end"]), _text(course["infusions"]))
    console.print(table)


def _deviations(deviations: list[dict[str, Any]]) -> None:
    _heading("Deviations from the protocol")
    if not deviations:
        _note("✔ No deviations.", "green")
        return
    table = _table("", "Date", "Code", "Message")
    for deviation in deviations:
        table.add_row(
            _text(deviation.get("date")),
            _text(deviation["code"], "bold yellow"),
            _text(deviation.get("message")),
        )
    console.print(table)


def _herpes(herpes: dict[str, Any] | None) -> None:
    _heading("Herpes prophylaxis")
    if herpes is None:
        _note("Not assessed.", "dim")
        return
    line = _badge(herpes["status"], HERPES_STATUS)
    if herpes.get("earliest_stop"):
        line.append(f"   earliest stop {herpes['earliest_stop']}")
    if herpes.get("minimum_until"):
        line.append(f" (minimum until {herpes['minimum_until']})")
    console.print(line)
    if herpes.get("cd4_threshold") is not None and herpes["status"] != "not_required":
        _note(_cd4_line(herpes))
    if herpes["status"] == "required" and herpes.get("on_prophylaxis") is False:
        _note("✖ The patient is not on herpes prophylaxis today.", "bold red")
    elif herpes.get("on_prophylaxis"):
        _note("✔ On herpes prophylaxis today.", "green")


def _cd4_line(herpes: dict[str, Any]) -> str:
    threshold = f"CD4+ ≥ {herpes['cd4_threshold']:g} /uL needed"
    latest = herpes.get("latest_cd4")
    if latest is None:
        return f"{threshold}; no CD4+ count since the course."
    met = "reached" if herpes.get("cd4_met") else "not reached"
    return f"{threshold}; latest {latest['value']:g} on {latest['date']} ({met})."


# --- monitoring plan ------------------------------------------------------------------------


def _monitoring(monitoring: dict[str, Any], all_tasks: bool) -> None:
    tasks: list[dict[str, Any]] = monitoring.get("tasks", [])
    until = monitoring.get("until")
    _heading(f"Monitoring plan until {until}" if until else "Monitoring plan")
    if not tasks:
        _note("No monitoring tasks (no infusions yet).", "dim")
        return
    _task_summary(tasks)
    if all_tasks:
        console.print(_task_table("All tasks", tasks, done_on=True))
        return
    open_tasks = _open_tasks(tasks)
    if open_tasks:
        console.print(_task_table("Open tasks: overdue, due and the next of each", open_tasks))
    else:
        _note("✔ Nothing overdue, due or upcoming.", "green")
    _note("Run with --all-tasks to list every task.", "dim")


def _task_summary(tasks: list[dict[str, Any]]) -> None:
    counts = Counter((task["task"], task["status"]) for task in tasks)
    names = list(dict.fromkeys(task["task"] for task in tasks))
    table = _table("Summary", "Task", *(str(_badge(s, TASK_STATUS)) for s in TASK_STATUS))
    for column, label in zip(table.columns[1:], TASK_STATUS.values(), strict=True):
        column.justify = "right"
        column.header_style = label[2]
    for name in names:
        cells = [_count(counts[(name, status)], TASK_STATUS[status][2]) for status in TASK_STATUS]
        table.add_row(_text(name), *cells)
    console.print(table)


def _count(number: int, style: str) -> Text:
    return Text(str(number), style=style if number else "dim")


def _open_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overdue and due tasks, plus the first upcoming one of each task, in date order."""
    chosen = [task for task in tasks if task["status"] in ("overdue", "due")]
    seen: set[str] = set()
    for task in tasks:
        if task["status"] == "upcoming" and task["task"] not in seen:
            seen.add(task["task"])
            chosen.append(task)
    return sorted(chosen, key=lambda task: task["due"])


def _task_table(title: str, tasks: list[dict[str, Any]], done_on: bool = False) -> Table:
    columns = ["Status", "Task", "Due", "Window", "Course"] + (["Done on"] if done_on else [])
    table = _table(title, *columns)
    for column in table.columns:
        column.no_wrap = column.header != "Window"  # only the window may take two lines
    for task in tasks:
        window = task.get("window") or [None, None]
        cells = [
            _badge(task["status"], TASK_STATUS),
            _text(task["task"]),
            _text(task["due"]),
            _text(f"{window[0]} – {window[1]}" if window[0] else None),
            _text(task.get("course")),
        ]
        table.add_row(*cells, *([_text(task.get("done_on"))] if done_on else []))
    return table


# --- triage ---------------------------------------------------------------------------------


def show_triage(result: dict[str, Any]) -> None:
    """The advice first, in a banner that names the urgency; then what was recognised."""
    urgency = result["urgency"]
    console.print(_triage_banner(urgency, result.get("advice", "")))
    days = result.get("days_since_infusion")
    _note(f"Days since the last infusion: {'not given' if days is None else days}", "dim")
    _suspected(result.get("suspected", []))
    negated = result.get("negated", [])
    if negated:
        _note("Read as absent (negated): " + ", ".join(f'"{word}"' for word in negated))
    else:
        _note("Nothing was negated.", "dim")
    if urgency != "emergency":
        # The lexicon reads words, not the patient: never let a low level sound like an all-clear.
        _note(
            "If in doubt or if it gets worse, call the MS team; for a medical emergency, call emergency services.",
            "dim",
        )


def _triage_banner(urgency: str, advice: str) -> Panel:
    word, symbol, style = URGENCY.get(urgency, (urgency.upper(), "?", "bold"))
    headline = URGENCY_HEADLINE.get(urgency, word)
    body = Text.assemble((headline, "bold"), "\n\n", advice)
    title = f"{symbol} {word} {symbol}"
    if urgency == "emergency":
        return Panel(body, title=title, style=style, border_style="bold red", box=box.HEAVY, padding=(1, 2))
    return Panel(body, title=title, border_style=style.removeprefix("bold "), padding=(1, 2))


def _suspected(suspected: list[dict[str, Any]]) -> None:
    if not suspected:
        _note("No warning sign was recognised in the text.")
        return
    table = _table("Suspected", "Condition", "Urgency", "Matched words")
    table.columns[1].no_wrap = True
    for item in sorted(suspected, key=lambda s: -_urgency_rank(s["urgency"])):
        matched = ", ".join(f'"{word}"' for word in item.get("matched", []))
        table.add_row(_text(item["condition"], "bold"), _badge(item["urgency"], URGENCY), matched)
    console.print(table)


# --- protocol -------------------------------------------------------------------------------


def show_protocol(protocol: m.Protocol, section: str | None) -> None:
    """One section of the protocol, or (section None) every section after the overview."""
    if section is None:
        for render in SECTIONS.values():
            render(protocol)
        return
    if section not in SECTIONS:
        raise ValueError(f"unknown protocol section {section!r}; one of {', '.join(SECTIONS)}")
    SECTIONS[section](protocol)


def _is_policy(source: str) -> bool:
    return source.startswith("POLICY")


def _overview(protocol: m.Protocol) -> None:
    body = Text.assemble(
        ("version ", "dim"),
        (protocol.protocol_version, "bold"),
        ("   jurisdiction ", "dim"),
        (protocol.jurisdiction, "bold"),
        ("   format ", "dim"),
        str(protocol.format_version),
    )
    title = f"{protocol.drug.capitalize()} safety protocol"
    console.print(Panel(body, title=title, title_align="left"))
    table = _table("Sections", "Section", "Contents")
    for name, contents in _section_counts(protocol):
        table.add_row(Text(name, style="bold"), contents)
    console.print(table)


def _section_counts(protocol: m.Protocol) -> list[tuple[str, str]]:
    policy = sum(_is_policy(p.source) for p in protocol.parameters.values())
    serious = sum(ae.category == "serious" for ae in protocol.adverse_effects)
    baseline, monitoring, triage = protocol.baseline, protocol.monitoring, protocol.triage
    phrases = sum(len(sign.phrases) for sign in triage.signs)
    return [
        ("sources", f"{len(protocol.sources)} sources"),
        ("parameters", f"{len(protocol.parameters)} named numbers, {policy} of them POLICY"),
        ("adverse_effects", f"{len(protocol.adverse_effects)} effects, {serious} serious"),
        ("contraindications", f"{len(protocol.contraindications)} contraindications, "
                              f"{len(protocol.cautions)} cautions"),
        ("baseline", f"{len(baseline.tests)} tests and {len(baseline.screening)} screenings "
                     f"within {baseline.window_days} days; vaccines, courses, infusion days, "
                     "prophylaxis"),
        ("schedule", f"{len(monitoring.tasks)} monitoring tasks until "
                     f"{monitoring.months_after_last_infusion} months after the last infusion"),
        ("findings", f"{len(protocol.findings)} laboratory rules"),
        ("triage", f"{len(triage.signs)} signs ({phrases} phrases), "
                   f"{len(triage.combinations)} combinations"),
    ]  # fmt: skip


def _sources(protocol: m.Protocol) -> None:
    table = _table("Sources", "Tag", "Title")
    for tag, source in protocol.sources.items():
        table.add_row(Text(tag, style="bold magenta" if tag == "POLICY" else "bold"), source.title)
    console.print(table)


def _parameters(protocol: m.Protocol) -> None:
    table = _table("Parameters (named, configurable numbers)", "Name", "Value", "Origin", "Why")
    table.columns[1].justify = "right"
    table.columns[2].no_wrap = True
    for name, parameter in protocol.parameters.items():
        origin = Text("POLICY", "bold magenta") if _is_policy(parameter.source) else Text("source")
        value = f"{parameter.value:g} {parameter.unit}"
        table.add_row(name, value, origin, _source(parameter.source))
    console.print(table)
    if "POLICY" in protocol.sources:
        _note(f"POLICY = {protocol.sources['POLICY'].title}", "magenta")


def _bar(percent: float | None) -> Text:
    """A frequency as a bar, BAR_WIDTH cells for 100 %; a rare effect still gets a sliver."""
    if percent is None:
        return Text("not given", style="dim")
    cells = round(percent / 100 * BAR_WIDTH)
    return Text("█" * cells if cells else "▏", style="cyan")


def _adverse_effects(protocol: m.Protocol) -> None:
    for category in ("common", "serious"):
        effects = [ae for ae in protocol.adverse_effects if ae.category == category]
        table = _table(f"{category.capitalize()} adverse effects", "Effect", "Condition", "%", "Bar")
        table.columns[1].no_wrap = True
        table.columns[2].justify = "right"
        table.columns[3].no_wrap = True
        for effect in effects:
            name = Text(effect.name, style="bold")
            if effect.serious_pct is not None:
                name.append(f"\n{effect.serious_pct:g} % serious", style="bold red")
            percent = NONE if effect.frequency_pct is None else f"{effect.frequency_pct:g}"
            row = (_sourced(name, effect.source), effect.condition, percent)
            table.add_row(*row, _bar(effect.frequency_pct))
        console.print(table)


def _screening_table(title: str, rules: list[m.ScreeningRule], style: str) -> Table:
    table = _table(title, "Code", "When", "Message and source")
    for rule in rules:
        when = f"{rule.field} = {str(rule.equals).lower()}"
        table.add_row(Text(rule.code, style=style), when, _sourced(rule.message, rule.source))
    return table


def _contraindications(protocol: m.Protocol) -> None:
    contra = _screening_table("✖ Contraindications", protocol.contraindications, "bold red")
    console.print(contra)
    console.print(_screening_table("! Cautions", protocol.cautions, "magenta"))
    _note("Cautions are shown to the prescriber; they do not change the eligibility status.", "dim")


def _baseline(protocol: m.Protocol) -> None:
    baseline = protocol.baseline
    title = f"Baseline: within {baseline.window_days} days before the first infusion of a course"
    table = _table(title, "Id", "Test and source", "Satisfied by")
    for test in baseline.tests:
        table.add_row(test.id, _sourced(test.name, test.source), " or ".join(test.any_of))
    for screen in baseline.screening:
        table.add_row(screen.id, _sourced(screen.name, screen.source), f"{screen.field} known")
    console.print(table)
    rules = _table("Vaccines, courses, infusion days and prophylaxis", "Id", "Rule and source")
    for rule_id, text, source in _course_rules(protocol) + _infusion_rules(protocol):
        rules.add_row(rule_id, _sourced(text, source))
    console.print(rules)


def _course_rules(protocol: m.Protocol) -> list[tuple[str, str, str]]:
    vaccines, courses = protocol.vaccines, protocol.courses
    after, tb = vaccines.after_course, protocol.baseline.tuberculosis_positive
    return [
        (tb.id, tb.message, tb.source),
        (vaccines.id, f"Live vaccines at least {vaccines.min_days_before_course} days before "
                      "the course", vaccines.source),
        (after.id, f"Live vaccine after a course: {after.severity.upper()} {after.condition} "
                   f"finding. {after.action}", after.source),
        (courses.id, f"First course {courses.first_course_days} consecutive days, later courses "
                     f"{courses.later_course_days}, at least {courses.min_interval_months} "
                     "months after the last infusion", courses.source),
    ]  # fmt: skip


def _infusion_rules(protocol: m.Protocol) -> list[tuple[str, str, str]]:
    premedication, observation, delayed = (
        protocol.infusion.premedication,
        protocol.infusion.observation,
        protocol.infusion.delayed_reactions,
    )
    herpes = protocol.prophylaxis.herpes
    cd4 = f", and until CD4+ ≥ {herpes.cd4_threshold:g} /uL, whichever is later"
    return [
        (premedication.id, f"Premedication on days 1-{premedication.course_days} of each course",
         premedication.source),
        (observation.id, f"Observe at least {observation.min_minutes} minutes after each "
                         "infusion", observation.source),
        (delayed.id, "Teach the patient to report reactions later than "
                     f"{delayed.after_hours} hours", delayed.source),
        (herpes.id, "Herpes prophylaxis from the first day of each course for at least "
                    f"{herpes.min_months_after_course} months after it"
                    f"{cd4 if herpes.require_cd4 else ''}", herpes.source),
    ]  # fmt: skip


def _schedule(protocol: m.Protocol) -> None:
    monitoring = protocol.monitoring
    title = f"Monitoring until {monitoring.months_after_last_infusion} months after the last infusion"
    table = _table(title, "Task and source", "Every", "Window", "Satisfied by", "Who")
    table.columns[1].no_wrap = True
    table.columns[2].no_wrap = True
    for task in monitoring.tasks:
        satisfied = [*task.satisfied_by.tests, *(f"{e} exam" for e in task.satisfied_by.exams)]
        table.add_row(
            _sourced(Text.assemble((task.task, "bold"), f" {task.name}"), task.source),
            f"{task.interval_months} mo",
            f"-{task.window_before_days} / +{task.window_after_days} d",
            " or ".join(satisfied),
            " or ".join(task.sex) if task.sex else "all",
        )
    console.print(table)
    _note(f"Source of the 48-month plan: {monitoring.source}", "dim")


# --- finding rules in words ----------------------------------------------------------------


def _unit(protocol: m.Protocol, analyte: m.Analyte) -> str:
    spec = protocol.analytes.get(analyte)
    return "" if spec is None else f" {spec.unit}"


def _uln(spec: m.UlnMultiple) -> str:
    return f"{' or '.join(spec.analytes)} > {spec.multiple:g} x upper limit"


def _companion(protocol: m.Protocol, test: m.CompanionTest) -> str:
    if test.above_ref_high:
        return f"{test.analyte} > upper limit"
    return f"{test.analyte} ≥ {test.min or 0:g}{_unit(protocol, test.analyte)}"


def _threshold(protocol: m.Protocol, rule: m.FindingRule) -> str:
    """What makes the rule fire, in words, in the analyte's canonical unit."""
    match rule:
        case m.Below() | m.BelowRefLow() | m.FallFromPrevious():
            week = "" if rule.applies_in_infusion_week else " (not in the infusion week)"
            return _low_threshold(protocol, rule) + week
        case m.InfusionWeekDip():
            return f"{rule.analyte} < lower limit in the infusion week"
        case m.RiseFromBaseline() | m.RiseFromBaselineWith():
            return _rise_threshold(protocol, rule)
        case m.AtLeast():
            return f"{rule.analyte} ≥ {rule.value:g}{_unit(protocol, rule.analyte)}"
        case m.AboveRefHigh():
            return f"{rule.analyte} > upper limit"
        case m.AboveRefHighWithoutBaseline():
            return f"{rule.analyte} > upper limit, and it is the baseline result"
        case m.OutsideRange():
            return f"{rule.analyte} outside the reference range"
        case m.AboveUlnMultiple():
            return _uln(m.UlnMultiple(analytes=rule.analytes, multiple=rule.multiple))
        case m.BothAboveUlnMultiple():
            return f"{_uln(rule.first)} and {_uln(rule.second)}"


def _low_threshold(protocol: m.Protocol, rule: m.Below | m.BelowRefLow | m.FallFromPrevious) -> str:
    if isinstance(rule, m.BelowRefLow):
        return f"{rule.analyte} < lower limit"
    if isinstance(rule, m.FallFromPrevious):
        return f"{rule.analyte} falls by ≥ {rule.fraction:.0%} from the previous result"
    text = f"{rule.analyte} < {rule.value:g}{_unit(protocol, rule.analyte)}"
    if rule.escalate_with_symptoms:
        escalate = rule.escalate_with_symptoms
        text += f"; {escalate.severity.upper()} with {' or '.join(escalate.conditions)} symptoms"
    return text


def _rise_threshold(protocol: m.Protocol, rule: m.RiseFromBaseline | m.RiseFromBaselineWith) -> str:
    unit = _unit(protocol, rule.analyte)
    text = f"{rule.analyte} ≥ {rule.ratio:g} x baseline or +{rule.absolute:g}{unit}"
    if isinstance(rule, m.RiseFromBaselineWith):
        text += ", with " + " or ".join(_companion(protocol, c) for c in rule.with_)
    return text


def _findings_rules(protocol: m.Protocol) -> None:
    table = _table("Laboratory finding rules", "Severity", "Condition", "Rule: fires when")
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    ordered = sorted(protocol.findings, key=lambda r: (r.condition, -_urgency_rank(r.severity)))
    for rule in ordered:
        rule_text = Text.assemble((rule.id, "bold"), (f" ({rule.kind})", "dim"), "\n")
        rule_text.append(_threshold(protocol, rule))
        table.add_row(_badge(rule.severity, URGENCY), rule.condition, _sourced(rule_text, rule.source))
    console.print(table)
    _note("Limits are the result's own reference range, else the protocol's default.", "dim")


# --- triage rules -------------------------------------------------------------------------


def _days(window: m.DaysWindow) -> str:
    low, high = window.min_days, window.max_days
    if low is None and high is None:
        return "any day"
    if low is None:
        return f"day 0-{high}"
    return f"day {low}+" if high is None else f"day {low}-{high}"


def _changes(window: m.DaysWindow) -> str:
    changes = [value for value in (window.condition, window.urgency) if value]
    return ", ".join(changes).upper() if changes else "no change"


def _sign_windows(sign: m.Sign) -> str:
    lines = [f"{_days(window)}: {_changes(window)}" for window in sign.windows]
    if sign.windows_only:
        lines.append("counts only inside a window")
    if sign.days_unknown:
        lines.append(f"days unknown: {_changes(sign.days_unknown)}")
    return "\n".join(lines)


def _triage(protocol: m.Protocol) -> None:
    triage = protocol.triage
    levels = _table("Urgency levels", "Urgency", "Advice")
    levels.columns[0].no_wrap = True
    for urgency, level in sorted(triage.urgency_levels.items(), key=lambda kv: -kv[1].rank):
        levels.add_row(_badge(urgency, URGENCY), level.advice)
    console.print(levels)
    _triage_signs(triage)
    _triage_combinations(triage)
    negation = triage.negation
    _note(
        f"Negation: {len(negation.cues)} cues, {len(negation.pseudo)} pseudo-negations, "
        f"{len(negation.terminators)} terminators, reach {negation.max_words} words.",
        "dim",
    )


def _triage_signs(triage: m.Triage) -> None:
    table = _table("Signs", "Urgency", "Condition", "Sign (windows by days since infusion)")
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    for sign in triage.signs:
        text = Text.assemble((sign.id.removeprefix("triage."), "bold"))
        text.append(f" ({len(sign.phrases)} phrases)", style="dim")
        windows = _sign_windows(sign)
        if windows:
            text.append("\n" + windows)
        table.add_row(_badge(sign.urgency, URGENCY), sign.condition, _sourced(text, sign.source))
    console.print(table)


def _triage_combinations(triage: m.Triage) -> None:
    title = "Combinations (one sign of every group present)"
    table = _table(title, "Urgency", "Condition", "Combination: all of")
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    for combo in triage.combinations:
        groups = [" or ".join(s.removeprefix("triage.") for s in group) for group in combo.all_of]
        text = Text(combo.id.removeprefix("triage."), style="bold")
        text.append("\n" + "\n+ ".join(f"({group})" for group in groups))
        if combo.min_days is not None:
            text.append(f"\nfrom day {combo.min_days} after the infusion")
        table.add_row(_badge(combo.urgency, URGENCY), combo.condition, _sourced(text, combo.source))
    console.print(table)


SECTIONS: dict[str, Callable[[m.Protocol], None]] = {
    "overview": _overview,
    "sources": _sources,
    "parameters": _parameters,
    "adverse_effects": _adverse_effects,
    "contraindications": _contraindications,
    "baseline": _baseline,
    "schedule": _schedule,
    "findings": _findings_rules,
    "triage": _triage,
}
