"""The registry's commands through the installed entry point, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alemwatch.store import models as m
from tests.conftest import count

CLI = Path(sys.executable).parent / "alemwatch"
EXAMPLE = json.loads((Path(__file__).resolve().parent.parent / "examples" / "patient-contract.json").read_text())


def run(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALEMWATCH_DATABASE_URL": url, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(CLI), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_serve_and_user_commands_refuse_an_unmigrated_database_then_upgrade_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    refused = run(url, "serve", "--port", "8999")
    assert refused.returncode == 1 and "alemwatch db upgrade" in refused.stderr
    assert run(url, "user", "list").returncode == 1
    upgraded = run(url, "db", "upgrade")
    assert upgraded.returncode == 0 and "revision" in upgraded.stdout
    assert run(url, "user", "list", "--json").stdout.strip() == "[]"


def test_users_are_added_with_a_password_never_a_default_listed_and_disabled(db_url: str) -> None:
    assert run(db_url, "user", "add", "ann", "--role", "admin", "--password-stdin", stdin="short\n").returncode == 2
    assert (
        run(
            db_url, "user", "add", "ann", "--role", "wizard", "--password-stdin", stdin="a long enough secret\n"
        ).returncode
        == 2
    )
    added = run(db_url, "user", "add", "ann", "--role", "admin", "--password-stdin", stdin="a long enough secret\n")
    assert added.returncode == 0, added.stderr
    users = json.loads(run(db_url, "user", "list", "--json").stdout)
    assert [(u["username"], u["role"], u["disabled"]) for u in users] == [("ann", "admin", False)]
    assert "secret" not in run(db_url, "user", "list").stdout
    assert run(db_url, "user", "disable", "ann").returncode == 0
    assert json.loads(run(db_url, "user", "list", "--json").stdout)[0]["disabled"] is True


def test_import_reports_bad_records_with_line_and_field_and_stores_the_rest(db_url: str, tmp_path: Path) -> None:
    good = [{**EXAMPLE, "id": f"p-{n}"} for n in range(3)]
    bad = {**EXAMPLE, "id": "p-bad", "labs": [{**EXAMPLE["labs"][0], "unit": "furlongs"}]}
    path = tmp_path / "patients.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in [good[0], bad, good[1], good[2]]) + "\n")
    done = run(db_url, "import", str(path), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["patients"] == 3 and report["errors"] == [
        "line 2 (patient p-bad): labs[0].unit: " + report["errors"][0].split("labs[0].unit: ")[1]
    ]
    assert count(db_url, m.Patient) == 3
    assert count(db_url, m.LabResult) == 3 * len(EXAMPLE["labs"])
    again = json.loads(run(db_url, "import", str(path), "--json").stdout)
    assert again["patients"] == 3 and count(db_url, m.LabResult) == 3 * len(EXAMPLE["labs"])  # stored once


def test_import_of_a_json_array_names_the_line_of_a_bad_record(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "patients.json"
    records = [{**EXAMPLE, "id": "p-1"}, {**EXAMPLE, "id": "p-2", "sex": "x"}]
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    report = json.loads(run(db_url, "import", str(path), "--json").stdout)
    assert report["patients"] == 1 and report["errors"][0].startswith("line 3 (patient p-2): sex:")


def test_sweep_assesses_then_has_nothing_left_and_audit_exports_ndjson(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps(EXAMPLE) + "\n")
    assert run(db_url, "import", str(path), "--no-sweep").returncode == 0
    first = json.loads(run(db_url, "sweep", "--as-of", "2026-03-01", "--json").stdout)
    second = json.loads(run(db_url, "sweep", "--as-of", "2026-03-01", "--json").stdout)
    assert (first["assessed"], second["assessed"]) == (1, 0)
    assert first["alerts_open"] >= 1
    full = json.loads(run(db_url, "sweep", "--as-of", "2026-03-01", "--full", "--json").stdout)
    assert full["assessed"] == 1 and full["alerts_open"] == first["alerts_open"]
    exported = run(db_url, "audit", "export", "--since", "2000-01-01")
    assert exported.returncode == 0
    assert all(json.loads(line)["action"] for line in exported.stdout.splitlines())
    assert run(db_url, "audit", "export", "--since", "last week").returncode == 2


@pytest.mark.parametrize("bad", ["not json at all", '[{"id": "p"', ""])
def test_unreadable_import_files_are_refused_or_reported(db_url: str, tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(bad)
    done = run(db_url, "import", str(path), "--json")
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr
    assert count(db_url, m.Patient) == 0
