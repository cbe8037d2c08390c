"""The protocol file: the shipped ones validate, a broken one is reported in full."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alemwatch.cli import app
from alemwatch.protocol.load import (
    PROTOCOL_FILES,
    ProtocolError,
    load_file,
    load_protocol,
    shipped_path,
)

runner = CliRunner()
CONTRACT_CONDITIONS = {
    "infusion_reaction",
    "delayed_infusion_reaction",
    "itp",
    "anti_gbm",
    "thyroid",
    "thyroid_cancer",
    "melanoma",
    "lymphoproliferative",
    "stroke_dissection",
    "hlh",
    "acquired_hemophilia_a",
    "listeria",
    "herpes",
    "autoimmune_hepatitis",
    "infection",
    "common_adverse_effect",
}


@pytest.mark.parametrize("jurisdiction", sorted(PROTOCOL_FILES))
def test_every_shipped_protocol_validates(jurisdiction: str) -> None:
    protocol = load_file(shipped_path(jurisdiction))
    assert protocol.jurisdiction == jurisdiction


def test_protocol_check_command_passes_on_the_shipped_files() -> None:
    result = runner.invoke(app, ["protocol", "check", "--json"])
    assert result.exit_code == 0, result.stdout
    assert all(item["valid"] for item in json.loads(result.stdout))


def _broken_copy(tmp_path: Path) -> Path:
    data = yaml.safe_load(shipped_path("us").read_text())
    data["courses"]["min_interval_months"] = "twelve"  # wrong type
    data["findings"][0]["severity"] = "catastrophic"  # unknown urgency
    data["findings"][1]["source"] = "my memory"  # no source tag
    data["monitoring"]["tasks"][0]["colour"] = "red"  # unknown key
    data["triage"]["signs"][0]["phrases"].append("(unbalanced")  # bad phrase
    data["triage"]["combinations"][0]["all_of"][0].append("triage.nonexistent")  # dangling reference
    data["triage"]["platelets"]["below_rule"] = "thyroid_tsh_low"  # not a platelet threshold
    data["triage"]["heart_rate"] = {"fast_sign": "triage.racing", "at_least_parameter": "pulse_limit"}  # neither exists
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_a_broken_protocol_reports_every_error_with_its_location(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path)
    with pytest.raises(ProtocolError) as info:
        load_file(path)
    locations = [p.location for p in info.value.problems]
    assert "courses.min_interval_months" in locations
    assert any(loc.startswith("findings[0]") for loc in locations)
    assert "monitoring.tasks[0].colour" in locations
    # Structural errors stop before the cross-checks; fix them and the rest is reported.
    data = yaml.safe_load(path.read_text())
    data["courses"]["min_interval_months"] = 12
    data["findings"][0]["severity"] = "urgent"
    del data["monitoring"]["tasks"][0]["colour"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ProtocolError) as info:
        load_file(path)
    locations = [p.location for p in info.value.problems]
    assert "findings[1].source" in locations
    assert any(loc.startswith("triage.signs[0].phrases[") for loc in locations)
    assert "triage.combinations[0].all_of" in locations
    assert "triage.platelets.below_rule" in locations
    assert {"triage.heart_rate.fast_sign", "triage.heart_rate.at_least_parameter"} <= set(locations)


def test_protocol_check_command_lists_problems_and_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["protocol", "check", str(_broken_copy(tmp_path))])
    assert result.exit_code == 1
    assert "courses.min_interval_months" in result.stdout and "monitoring.tasks[0].colour" in result.stdout


def test_malformed_yaml_is_reported_with_a_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("protocol_version: [unclosed\n")
    with pytest.raises(ProtocolError) as info:
        load_file(path)
    assert info.value.problems[0].location.startswith("line ")


def test_every_rule_cites_a_known_source_and_conditions_are_the_contracts() -> None:
    protocol = load_protocol("us")
    tag = re.compile(r"^(SEED|US-PI|EU-SmPC|REMS|BE-ITP|KDIGO|POLICY)\b")
    rules = [
        *protocol.findings,
        *protocol.triage.signs,
        *protocol.monitoring.tasks,
        *protocol.contraindications,
    ]
    assert all(tag.match(rule.source) for rule in rules)
    conditions = {f.condition for f in protocol.findings} | {s.condition for s in protocol.triage.signs}
    assert conditions <= CONTRACT_CONDITIONS
    # Every condition of the contract can be raised from what a patient says.
    assert {s.condition for s in protocol.triage.signs} | {
        c.condition for c in protocol.triage.combinations
    } >= CONTRACT_CONDITIONS


def test_parameters_without_a_label_source_are_marked_policy() -> None:
    for name, parameter in load_protocol("us").parameters.items():
        assert parameter.source.startswith("POLICY"), name


def test_the_label_numbers_are_as_the_label_says() -> None:
    us, eu = load_protocol("us"), load_protocol("eu")
    assert us.monitoring.months_after_last_infusion == 48
    assert us.baseline.window_days == 30 and us.vaccines.min_days_before_course == 42
    assert (
        us.courses.first_course_days,
        us.courses.later_course_days,
        us.courses.min_interval_months,
    ) == (5, 3, 12)
    assert us.infusion.premedication.course_days == 3 and us.infusion.observation.min_minutes == 120
    assert us.prophylaxis.herpes.min_months_after_course == 2 and us.prophylaxis.herpes.cd4_threshold == 200
    assert eu.prophylaxis.herpes.min_months_after_course == 1 and not eu.prophylaxis.herpes.require_cd4
    intervals = {t.task: t.interval_months for t in us.monitoring.tasks}
    assert intervals == {
        "cbc": 1,
        "creatinine": 1,
        "urinalysis": 1,
        "tsh": 3,
        "liver": 3,
        "skin_exam": 12,
        "hpv_screening": 12,
    }


def test_the_eu_variant_differs_only_where_the_smpc_does() -> None:
    us, eu = load_protocol("us").model_dump(), load_protocol("eu").model_dump()
    differing = {key for key in us if us[key] != eu[key]}
    assert differing == {
        "protocol_version",
        "jurisdiction",
        "prophylaxis",
        "contraindications",
        "cautions",
    }
    eu_codes = {c["code"] for c in eu["contraindications"]}
    assert {"hiv_positive", "history_of_stroke", "other_autoimmune_disease"} <= eu_codes


def test_adverse_effect_catalogue_has_the_seed_frequencies() -> None:
    frequencies = {ae.id: ae.frequency_pct for ae in load_protocol("us").adverse_effects}
    expected = {
        "ae.rash": 53,
        "ae.headache": 52,
        "ae.fever": 29,
        "ae.nasopharyngitis": 25,
        "ae.nausea": 21,
        "ae.uti": 19,
        "ae.fatigue": 18,
        "ae.urticaria": 16,
        "ae.herpes": 16,
        "ae.pruritus": 14,
        "ae.diarrhoea": 12,
        "ae.arthralgia": 12,
        "ae.limb_pain": 12,
        "ae.back_pain": 12,
        "ae.vomiting": 10,
        "ae.dizziness": 10,
        "ae.paraesthesia": 10,
        "ae.itp": 2,
        "ae.anti_gbm": 0.3,
        "ae.thyroid": 36.8,
        "ae.infusion_reactions": 92,
        "ae.thyroid_cancer": 0.3,
        "ae.melanoma": 0.3,
    }
    assert {k: frequencies[k] for k in expected} == expected
