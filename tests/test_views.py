"""The human (Rich) views, through the real command line. Output to a non-terminal carries no
colour, so every check here also shows that the words alone carry the meaning."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from alemwatch.cli import app

EXAMPLE = Path(__file__).parent.parent / "examples" / "patient-contract.json"
SECTIONS = [
    "overview",
    "sources",
    "parameters",
    "adverse_effects",
    "contraindications",
    "baseline",
    "schedule",
    "findings",
    "triage",
]
runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _assess(*extra: str) -> str:
    return _run("assess", str(EXAMPLE), "--as-of", "2025-04-20", *extra)


def test_assess_shows_every_part_in_words() -> None:
    out = _assess()
    for expected in [
        "p-001",  # header
        "2026.11.1",
        "URGENT",  # the ITP finding, severity in words
        "itp",
        "85",  # its evidence: the platelet count
        "SOON",
        "ROUTINE",
        "NOT READY",  # eligibility in words
        "baseline_missing",
        "too old",
        "observation_too_short",  # deviation
        "REQUIRED",  # herpes prophylaxis
        "overdue",  # open monitoring tasks
        "upcoming",
    ]:
        assert expected in out, expected


def test_assess_findings_most_severe_first() -> None:
    out = _assess()
    assert out.index("URGENT") < out.index("SOON") < out.index("ROUTINE")


def test_assess_prints_units_literally_not_as_markup() -> None:
    assert "m[IU]/L" in _assess()


def test_assess_lists_done_tasks_only_with_all_tasks() -> None:
    open_view, full_view = _assess(), _assess("--all-tasks")
    assert "--all-tasks" in open_view
    assert "✔ done" not in open_view.split("Open tasks")[1]
    assert "✔ done" in full_view.split("All tasks")[1]
    assert full_view.count("○ upcoming") > open_view.count("○ upcoming")


@pytest.mark.parametrize(
    ("text", "days", "banner", "condition"),
    [
        ("sudden severe headache and my arm is weak", "1", "CALL EMERGENCY SERVICES NOW", "stroke"),
        ("my urine is dark red", "40", "URGENT", "anti_gbm"),
        ("no fever, but I have a rash", "3", "SOON", "delayed_infusion_reaction"),
    ],
)
def test_triage_banner_names_the_urgency(text: str, days: str, banner: str, condition: str) -> None:
    out = _run("triage", "--text", text, "--days-since-infusion", days)
    assert banner in out
    assert condition in out
    assert out.index(banner) < out.index(condition), "the advice comes first"
    if banner != "CALL EMERGENCY SERVICES NOW":
        assert "CALL EMERGENCY SERVICES NOW" not in out


def test_triage_shows_what_was_negated() -> None:
    out = _run("triage", "--text", "no fever, but I have a rash", "--days-since-infusion", "3")
    assert 'negated): "fever"' in out


def test_triage_without_signs_says_so() -> None:
    out = _run("triage", "--text", "I feel fine today")
    assert "ROUTINE" in out
    assert "No warning sign" in out


def test_protocol_adverse_effects_show_frequency() -> None:
    out = _run("protocol", "show", "--section", "adverse_effects")
    rash = next(line for line in out.splitlines() if "Rash" in line)
    assert "53" in rash
    assert "█" in rash


def test_protocol_parameters_mark_policy() -> None:
    assert "POLICY" in _run("protocol", "show", "--section", "parameters")


@pytest.mark.parametrize("jurisdiction", ["us", "eu"])
@pytest.mark.parametrize("section", [None, *SECTIONS])
def test_protocol_show_every_section(section: str | None, jurisdiction: str) -> None:
    args = ["protocol", "show", "--jurisdiction", jurisdiction]
    out = _run(*args, *(["--section", section] if section else []))
    assert out.strip()
    if section is None:  # everything: the overview and the last section both appear
        assert "safety protocol" in out
        assert "Combinations" in out
