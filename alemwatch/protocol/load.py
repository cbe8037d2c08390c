"""Load, merge and validate protocol files; report every problem with its place."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from alemwatch.protocol.model import Protocol

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PROTOCOL_FILES = {"us": "alemtuzumab.yaml", "eu": "alemtuzumab-eu.yaml"}
REQUIRED_PARAMETERS = (
    "course_max_gap_days",
    "infusion_week_after_last_days",
    "bleeding_symptom_lookback_days",
    "lab_combination_window_days",
    "delayed_reaction_window_days",
    "urgent_fever_celsius",
    "fever_celsius",
)


@dataclass(frozen=True)
class ProtocolProblem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ProtocolError(Exception):
    """A protocol file that cannot be used; carries every problem found."""

    def __init__(self, source: str, problems: list[ProtocolProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s); first: {problems[0]}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        raise ProtocolError(str(path), [ProtocolProblem(where, str(exc).splitlines()[0])]) from exc
    except OSError as exc:
        raise ProtocolError(str(path), [ProtocolProblem("file", exc.strerror or str(exc))]) from exc
    if not isinstance(data, dict):
        raise ProtocolError(str(path), [ProtocolProblem("file", "a protocol is a YAML mapping")])
    return data


def _merge_rule_lists(base: list[Any], override: Any) -> list[Any]:
    if isinstance(override, list):
        override = {"add": override}
    removed = set(override.get("remove", []))
    merged = [item for item in base if not (isinstance(item, dict) and item.get("id") in removed)]
    by_id = {item.get("id"): n for n, item in enumerate(merged) if isinstance(item, dict)}
    for item in override.get("add", []):
        if isinstance(item, dict) and item.get("id") in by_id:
            merged[by_id[item["id"]]] = item
        else:
            merged.append(item)
    return merged


def merge(base: Any, override: Any) -> Any:
    """Overlay a variant on its base: mappings by key, rule lists by `id`."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and (
        isinstance(override, dict)
        and set(override) <= {"add", "remove"}
        or isinstance(override, list)
        and all(isinstance(i, dict) and "id" in i for i in override)
        and all(isinstance(i, dict) and "id" in i for i in base)
    ):
        return _merge_rule_lists(base, override)
    return override


def _resolve(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in seen:
        raise ProtocolError(str(path), [ProtocolProblem("extends", "circular extends")])
    return dict(merge(_resolve(parent_path, (*seen, path.resolve())), data))


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "file"


def _cross_checks(protocol: Protocol) -> list[ProtocolProblem]:
    """What the types alone cannot see: unknown source tags, duplicate ids, dangling refs."""
    problems: list[ProtocolProblem] = []
    tag = re.compile(r"^([A-Z][A-Za-z-]+)(?=[:;, ]|$)")
    seen: dict[str, str] = {}

    def rule(location: str, rule_id: str, source: str) -> None:
        if rule_id in seen:
            problems.append(ProtocolProblem(location, f"duplicate rule id {rule_id!r} (also at {seen[rule_id]})"))
        seen[rule_id] = location
        match = tag.match(source)
        if not match or match.group(1) not in protocol.sources:
            problems.append(
                ProtocolProblem(
                    f"{location}.source",
                    f"must start with a source tag from `sources`, got {source[:40]!r}",
                )
            )

    for n, ae in enumerate(protocol.adverse_effects):
        rule(f"adverse_effects[{n}]", ae.id, ae.source)
    for n, ci in enumerate(protocol.contraindications):
        rule(f"contraindications[{n}]", ci.id, ci.source)
    for n, caution in enumerate(protocol.cautions):
        rule(f"cautions[{n}]", caution.id, caution.source)
    rule("baseline", protocol.baseline.id, protocol.baseline.source)
    for n, bt in enumerate(protocol.baseline.tests):
        rule(f"baseline.tests[{n}]", bt.id, bt.source)
    for n, bs in enumerate(protocol.baseline.screening):
        rule(f"baseline.screening[{n}]", bs.id, bs.source)
    rule(
        "baseline.tuberculosis_positive",
        protocol.baseline.tuberculosis_positive.id,
        protocol.baseline.tuberculosis_positive.source,
    )
    rule("vaccines", protocol.vaccines.id, protocol.vaccines.source)
    rule(
        "vaccines.after_course",
        protocol.vaccines.after_course.id,
        protocol.vaccines.after_course.source,
    )
    rule("courses", protocol.courses.id, protocol.courses.source)
    for name in ("premedication", "observation", "delayed_reactions"):
        part = getattr(protocol.infusion, name)
        rule(f"infusion.{name}", part.id, part.source)
    rule("prophylaxis.herpes", protocol.prophylaxis.herpes.id, protocol.prophylaxis.herpes.source)
    for n, task in enumerate(protocol.monitoring.tasks):
        rule(f"monitoring.tasks[{n}]", task.id, task.source)
        for exam in task.satisfied_by.exams:
            if exam not in protocol.exam_types:
                problems.append(
                    ProtocolProblem(f"monitoring.tasks[{n}].satisfied_by.exams", f"unknown exam type {exam!r}")
                )
    for n, finding in enumerate(protocol.findings):
        rule(f"findings[{n}]", finding.id, finding.source)
    for name, param in protocol.parameters.items():
        if not param.source.startswith("POLICY") and not tag.match(param.source):
            problems.append(ProtocolProblem(f"parameters.{name}.source", "must start with a source tag"))
    for name in REQUIRED_PARAMETERS:
        if name not in protocol.parameters:
            problems.append(ProtocolProblem("parameters", f"missing required parameter {name!r}"))
    sign_ids = {sign.id for sign in protocol.triage.signs}
    for n, sign in enumerate(protocol.triage.signs):
        rule(f"triage.signs[{n}]", sign.id, sign.source)
        from alemwatch.core.lexicon import PhraseError, compile_phrase

        for k, phrase in enumerate(sign.phrases):
            try:
                compile_phrase(phrase)
            except PhraseError as exc:
                problems.append(ProtocolProblem(f"triage.signs[{n}].phrases[{k}]", str(exc)))
    for n, combo in enumerate(protocol.triage.combinations):
        rule(f"triage.combinations[{n}]", combo.id, combo.source)
        for group in combo.all_of:
            for ref in group:
                if ref not in sign_ids:
                    problems.append(ProtocolProblem(f"triage.combinations[{n}].all_of", f"unknown sign {ref!r}"))
    for field in ("fever_sign", "high_fever_sign"):
        ref = getattr(protocol.triage.temperature, field)
        if ref not in sign_ids:
            problems.append(ProtocolProblem(f"triage.temperature.{field}", f"unknown sign {ref!r}"))
    reported = protocol.triage.platelets
    if reported is not None:
        if reported.low_sign not in sign_ids:
            problems.append(ProtocolProblem("triage.platelets.low_sign", f"unknown sign {reported.low_sign!r}"))
        below = [f for f in protocol.findings if f.id == reported.below_rule]
        if not below or below[0].kind != "below" or getattr(below[0], "analyte", None) != "platelets":
            message = f"{reported.below_rule!r} is not a finding rule of kind below on platelets"
            problems.append(ProtocolProblem("triage.platelets.below_rule", message))
    rate = protocol.triage.heart_rate
    if rate is not None:
        if rate.fast_sign not in sign_ids:
            problems.append(ProtocolProblem("triage.heart_rate.fast_sign", f"unknown sign {rate.fast_sign!r}"))
        if rate.at_least_parameter not in protocol.parameters:
            message = f"{rate.at_least_parameter!r} is not a parameter of this protocol"
            problems.append(ProtocolProblem("triage.heart_rate.at_least_parameter", message))
    missing_levels = {"emergency", "urgent", "soon", "routine"} - set(protocol.triage.urgency_levels)
    if missing_levels:
        problems.append(ProtocolProblem("triage.urgency_levels", f"missing {sorted(missing_levels)}"))
    return problems


def load_file(path: str | Path) -> Protocol:
    """Load one protocol file (resolving `extends`), raising ProtocolError with every problem."""
    path = Path(path)
    data = _resolve(path)
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        problems = [ProtocolProblem(_format_location(err["loc"]), err["msg"]) for err in exc.errors(include_url=False)]
        raise ProtocolError(str(path), problems) from None
    problems = _cross_checks(protocol)
    if problems:
        raise ProtocolError(str(path), problems)
    return protocol


def shipped_path(jurisdiction: str = "us") -> Path:
    return Path(__file__).with_name(PROTOCOL_FILES[jurisdiction])


@functools.cache
def load_protocol(jurisdiction: str = "us") -> Protocol:
    """The shipped protocol for a jurisdiction, loaded once per process."""
    if jurisdiction not in PROTOCOL_FILES:
        raise ValueError(f"jurisdiction must be one of {sorted(PROTOCOL_FILES)}, got {jurisdiction!r}")
    return load_file(shipped_path(jurisdiction))
