"""Walk every golden clinical case under tests/cases/ (format: tests/cases/README.md).

Assess cases run through the real command (`alemwatch assess --json` in-process via the
Typer app) so the contract's output is what is checked, not an internal structure.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alemwatch.cli import app
from alemwatch.core.assess import assess
from alemwatch.core.findings import triage_engine
from alemwatch.core.patient import parse_patient
from alemwatch.protocol.load import load_protocol
from alemwatch.protocol.model import URGENCY_RANK, Protocol

CASES = Path(__file__).parent / "cases"
ASSESS_CASES = sorted((CASES / "assess").glob("*.json"))
TRIAGE_FILES = sorted((CASES / "triage").glob("*.json"))
runner = CliRunner()


def _dig(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        value = value[part]
    return value


def _matches(item: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(item.get(key) == value for key, value in pattern.items())


def _run_assess(case: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(case["patient"]))
    args = ["assess", str(path), "--json", "--as-of", case["as_of"]]
    if case.get("jurisdiction"):
        args += ["--jurisdiction", case["jurisdiction"]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def check_assess(expect: dict[str, Any], out: dict[str, Any]) -> list[str]:  # noqa: C901
    problems = []
    for key, want in expect.items():
        if key == "eligibility" and want is None:
            if "eligibility" in out:
                problems.append("eligibility should be absent")
        elif key == "eligibility.reasons_include":
            codes = {r["code"] for r in out["eligibility"]["reasons"]}
            problems += [f"missing reason {c} (got {sorted(codes)})" for c in want if c not in codes]
        elif key == "eligibility.reasons_exclude":
            codes = {r["code"] for r in out["eligibility"]["reasons"]}
            problems += [f"unexpected reason {c}" for c in want if c in codes]
        elif key == "monitoring.task_counts":
            for task, count in want.items():
                got = sum(1 for t in out["monitoring"]["tasks"] if t["task"] == task)
                if got != count:
                    problems.append(f"{task}: {got} tasks, expected {count}")
        elif key == "monitoring.status_counts":
            for task, statuses in want.items():
                for status, count in statuses.items():
                    got = sum(1 for t in out["monitoring"]["tasks"] if t["task"] == task and t["status"] == status)
                    if got != count:
                        problems.append(f"{task}/{status}: {got}, expected {count}")
        elif key == "monitoring.tasks_include":
            for pattern in want:
                if not any(_matches(t, pattern) for t in out["monitoring"]["tasks"]):
                    near = [
                        t
                        for t in out["monitoring"]["tasks"]
                        if t["task"] == pattern.get("task") and t["due"] == pattern.get("due")
                    ]
                    problems.append(f"no task {pattern} (same task and due: {near})")
        elif key.endswith("_include") or key.endswith("_exclude"):
            listname, mode = key.rsplit("_", 1)
            items = out[listname]
            for pattern in want:
                hit = any(_matches(i, pattern) for i in items)
                if mode == "include" and not hit:
                    problems.append(
                        f"{listname}: none matches {pattern}; got {[{k: i.get(k) for k in pattern} for i in items]}"
                    )
                if mode == "exclude" and hit:
                    problems.append(f"{listname}: unexpected {pattern}")
        elif key == "findings_max_severity":
            severities = [f["severity"] for f in out["findings"]]
            got = max(severities, key=URGENCY_RANK.__getitem__) if severities else None
            if got != want:
                problems.append(f"max finding severity {got}, expected {want}")
        elif key == "deviations":
            got = sorted(d["code"] for d in out["deviations"])
            if got != sorted(want):
                problems.append(f"deviation codes {got}, expected {sorted(want)}")
        elif key == "findings":
            got = sorted(f["condition"] for f in out["findings"])
            if got != sorted(want):
                problems.append(f"finding conditions {got}, expected {sorted(want)}")
        else:
            got = _dig(out, key)
            if got != want:
                problems.append(f"{key} = {got!r}, expected {want!r}")
    return problems


@pytest.mark.parametrize("path", ASSESS_CASES, ids=[p.stem for p in ASSESS_CASES])
def test_assess_case(path: Path, tmp_path: Path) -> None:
    case = json.loads(path.read_text())
    assert case.get("cites"), "every case cites the rule it tests"
    out = _run_assess(case, tmp_path)
    problems = check_assess(case["expect"], out)
    assert not problems, f"{case['name']}:\n  " + "\n  ".join(problems)


def _triage_entries() -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for path in TRIAGE_FILES:
        for n, entry in enumerate(json.loads(path.read_text())["cases"]):
            entries.append((f"{path.stem}-{n}", entry))
    return entries


TRIAGE_ENTRIES = _triage_entries()


@pytest.mark.parametrize(("name", "entry"), TRIAGE_ENTRIES, ids=[n for n, _ in TRIAGE_ENTRIES])
def test_triage_case(name: str, entry: dict[str, Any]) -> None:
    result = triage_engine(load_protocol("us")).triage(entry["text"], entry.get("days_since_infusion")).to_json()
    rank = URGENCY_RANK[str(result["urgency"])]
    conditions = {s["condition"] for s in result["suspected"]}  # type: ignore[attr-defined]
    problems = []
    if "urgency" in entry and result["urgency"] != entry["urgency"]:
        problems.append(f"urgency {result['urgency']}, expected {entry['urgency']}")
    if "urgency_at_least" in entry and rank < URGENCY_RANK[entry["urgency_at_least"]]:
        problems.append(f"urgency {result['urgency']}, expected at least {entry['urgency_at_least']}")
    if "urgency_at_most" in entry and rank > URGENCY_RANK[entry["urgency_at_most"]]:
        problems.append(f"urgency {result['urgency']}, expected at most {entry['urgency_at_most']}")
    problems += [f"{c} not suspected" for c in entry.get("conditions_include", []) if c not in conditions]
    problems += [f"{c} wrongly suspected" for c in entry.get("conditions_exclude", []) if c in conditions]
    assert not problems, (
        f"{entry['text']!r} (days {entry.get('days_since_infusion')}): {problems}; got {result['suspected']}"
    )


def test_there_are_enough_cases() -> None:
    assert len(ASSESS_CASES) >= 45
    assert len(TRIAGE_ENTRIES) >= 200
    assert len(ASSESS_CASES) + len(TRIAGE_FILES) >= 60


def _rule_ids(protocol: Protocol) -> set[str]:
    """Every rule of a protocol that a case can make fire."""
    ids = {
        r.id for r in [*protocol.findings, *protocol.contraindications, *protocol.cautions, *protocol.monitoring.tasks]
    }
    ids |= {t.id for t in protocol.baseline.tests} | {s.id for s in protocol.baseline.screening}
    ids |= {protocol.baseline.tuberculosis_positive.id, protocol.vaccines.id, protocol.vaccines.after_course.id}
    ids |= {protocol.courses.id, protocol.prophylaxis.herpes.id}
    ids |= {
        protocol.infusion.premedication.id,
        protocol.infusion.observation.id,
        protocol.infusion.delayed_reactions.id,
    }
    ids |= {s.id for s in protocol.triage.signs} | {c.id for c in protocol.triage.combinations}
    return ids


def _fired(out: dict[str, Any]) -> set[str]:
    fired = {rule for f in out["findings"] for rule in f["rules"]}
    fired |= {d["rule"] for d in out["deviations"]} | {t["rule"] for t in out["monitoring"]["tasks"]}
    fired |= {r["rule"] for r in out.get("eligibility", {}).get("reasons", [])}
    if out["prophylaxis"]["herpes"]["status"] != "not_required":
        fired.add(out["prophylaxis"]["herpes"]["rule"])
    return fired


def test_every_protocol_rule_is_exercised_by_a_golden_case() -> None:
    fired: set[str] = set()
    for path in ASSESS_CASES:
        case = json.loads(path.read_text())
        protocol = load_protocol(case.get("jurisdiction") or "us")
        out = assess(parse_patient(case["patient"], protocol), protocol, dt.date.fromisoformat(case["as_of"]))
        fired |= _fired(out)
    engine = triage_engine(load_protocol("us"))
    for _, entry in TRIAGE_ENTRIES:
        fired |= {
            sign for s in engine.triage(entry["text"], entry.get("days_since_infusion")).suspected for sign in s.signs
        }
    never = (_rule_ids(load_protocol("us")) | _rule_ids(load_protocol("eu"))) - fired
    assert not never, f"rules no golden case exercises: {sorted(never)}"
