"""The command-line contract: exact JSON on stdout, exit 2 with one line naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alemwatch.cli import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "patient-contract.json"
CLI = Path(sys.executable).parent / "alemwatch"
runner = CliRunner()


def _example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_assess_json_through_the_installed_command_has_the_contract_shape() -> None:
    done = _run("assess", str(EXAMPLE), "--as-of", "2026-03-01", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {
        "patient",
        "as_of",
        "eligibility",
        "courses",
        "monitoring",
        "prophylaxis",
        "findings",
        "deviations",
    } <= set(out)
    assert out["patient"] == "p-001" and out["as_of"] == "2026-03-01"
    assert out["courses"] == [{"start": "2025-01-06", "end": "2025-01-10", "infusions": 5}]
    assert out["monitoring"]["until"] == "2029-01-10"
    assert out["monitoring"]["tasks"][0] == {
        **out["monitoring"]["tasks"][0],
        "task": "cbc",
        "due": "2025-02-10",
        "status": "done",
    }
    assert out["prophylaxis"]["herpes"]["earliest_stop"] == "2025-03-10"
    assert out["eligibility"]["status"] in {"eligible", "not_ready", "contraindicated"}


def test_triage_json_through_the_installed_command() -> None:
    done = _run(
        "triage",
        "--text",
        "sudden severe headache and my right arm is weak",
        "--days-since-infusion",
        "1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["urgency"] == "emergency"
    assert out["suspected"][0]["condition"] == "stroke_dissection"
    assert "emergency services" in out["advice"].lower()


def test_negated_symptoms_are_not_urgent() -> None:
    out = json.loads(runner.invoke(app, ["triage", "--text", "no fever, no bleeding, just tired", "--json"]).stdout)
    assert out["urgency"] in {"routine", "soon"}
    assert not {s["condition"] for s in out["suspected"]} & {"itp", "infection"}


def _mutate(path: str, value: Any) -> dict[str, Any]:
    data = _example()
    target: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


BAD_INPUTS = [
    ("unknown key", _mutate("favourite_colour", "blue"), "favourite_colour"),
    ("unknown screening key", _mutate("screening.hepatitis", "negative"), "screening.hepatitis"),
    ("bad date", _mutate("infusions.0.date", "2025-13-40"), "infusions[0].date"),
    ("date in another format", _mutate("birth_date", "02/03/1985"), "birth_date"),
    ("unknown test", _mutate("labs.0.test", "unicorn_count"), "labs[0].test"),
    ("impossible unit", _mutate("labs.0.unit", "mg/dL"), "labs[0].unit"),
    ("non-numeric value", _mutate("labs.0.value", "high"), "labs[0].value"),
    ("boolean value", _mutate("labs.0.value", True), "labs[0].value"),
    ("bad hiv status", _mutate("screening.hiv", "maybe"), "screening.hiv"),
    ("bad sex", _mutate("sex", "x"), "sex"),
    ("missing id", {k: v for k, v in _example().items() if k != "id"}, "id"),
    (
        "observation not a number",
        _mutate("infusions.0.observation_minutes", "long"),
        "infusions[0].observation_minutes",
    ),
    (
        "prophylaxis stop before start",
        _mutate("prophylaxis.0.stop", "2024-01-01"),
        "prophylaxis[0]",
    ),
    ("implausible platelet count", _mutate("labs.0.value", 99999999), "labs[0].value"),
]


@pytest.mark.parametrize(("label", "data", "field"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_invalid_patient_file_exits_2_with_one_line_naming_the_field(
    label: str, data: Any, field: str, tmp_path: Path
) -> None:
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["assess", str(path), "--json", "--as-of", "2026-01-01"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: {field}"), lines[0]


def test_malformed_json_exits_2_through_the_installed_command(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"id": "p-1", "labs": [')
    done = _run("assess", str(path), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert (
        len(done.stderr.strip().splitlines()) == 1
        and "malformed JSON" in done.stderr
        and "Traceback" not in done.stderr
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["assess", "missing-file.json", "--json"], "missing-file.json"),
        (["assess", str(EXAMPLE), "--as-of", "yesterday", "--json"], "--as-of"),
        (
            ["triage", "--text", "rash", "--days-since-infusion", "-3", "--json"],
            "--days-since-infusion",
        ),
        (["triage", "--text", "   ", "--json"], "--text"),
    ],
)
def test_bad_options_exit_2_naming_them(args: list[str], field: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {field}")


def test_as_of_ignores_everything_after_it() -> None:
    result = runner.invoke(app, ["assess", str(EXAMPLE), "--as-of", "2025-01-07", "--json"])
    out = json.loads(result.stdout)
    assert out["courses"] == [{"start": "2025-01-06", "end": "2025-01-07", "infusions": 2}]
    assert [f for f in out["findings"] if f["condition"] == "itp"] == []


def test_jurisdiction_eu_uses_the_one_month_prophylaxis() -> None:
    result = runner.invoke(app, ["assess", str(EXAMPLE), "--as-of", "2025-02-11", "--jurisdiction", "eu", "--json"])
    herpes = json.loads(result.stdout)["prophylaxis"]["herpes"]
    assert herpes["earliest_stop"] == "2025-02-10" and herpes["status"] == "may_stop"


def test_schema_patient_is_a_json_schema_that_forbids_unknown_keys() -> None:
    schema = json.loads(runner.invoke(app, ["schema", "patient", "--json"]).stdout)
    assert schema["additionalProperties"] is False
    assert {"id", "labs", "infusions", "screening"} <= set(schema["properties"])
    lab = schema["$defs"]["LabResult"]
    assert "canonical" not in lab["properties"] and lab["additionalProperties"] is False


def test_help_lists_the_contract_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("assess", "triage", "schema", "protocol"):
        assert command in result.stdout
