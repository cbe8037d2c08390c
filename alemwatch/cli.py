"""The `alemwatch` command line. Thin: each command parses its input, calls core, prints.

Heavy modules (Pydantic models, the protocol, FastAPI) are imported inside the commands so
that `alemwatch --help` starts fast.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="alemwatch",
    help="Safety programme for alemtuzumab (Lemtrada): assess patients, triage symptoms, show the protocol.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: Rich's help renderer alone costs ~130 ms of start-up
)
protocol_app = typer.Typer(
    help="Show or validate the protocol (the clinical rules as data).", no_args_is_help=True, rich_markup_mode=None
)
schema_app = typer.Typer(help="Print JSON Schemas of the input files.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(protocol_app, name="protocol")
app.add_typer(schema_app, name="schema")


class Jurisdiction(StrEnum):
    us = "us"
    eu = "eu"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
JurisdictionOpt = Annotated[
    Jurisdiction,
    typer.Option("--jurisdiction", help="Label variant: us (FDA label, default) or eu (SmPC)."),
]


def fail(field: str, problem: str, code: int = 2) -> NoReturn:
    """Invalid input: one line on stderr naming the field, exit 2."""
    line = f"error: {field}: {problem}".replace("\r", "\\r").replace("\n", "\\n")
    sys.stderr.write(line + "\n")
    raise typer.Exit(code)


def _parse_date(value: str | None, field: str) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(field, f"must be a date written YYYY-MM-DD, got {value!r}")


def _read_json(path: Path) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(str(path), exc.strerror or "cannot read the file")
    except UnicodeDecodeError:
        fail(str(path), "is not UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(str(path), f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@app.command()
def assess(
    patient_file: Annotated[
        Path,
        typer.Argument(help="The patient file (JSON, see `alemwatch schema patient`); - for stdin."),
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Assess as of this date (YYYY-MM-DD); default today. Nothing after it counts.",
        ),
    ] = None,
    jurisdiction: JurisdictionOpt = Jurisdiction.us,
    as_json: JsonOpt = False,
    all_tasks: Annotated[
        bool,
        typer.Option("--all-tasks", help="Human view: list every monitoring task, not only the open ones."),
    ] = False,
) -> None:
    """Assess one patient: eligibility, courses, the 48-month plan, prophylaxis, findings, deviations."""
    day = _parse_date(as_of, "--as-of")
    data = _read_json(patient_file)
    from alemwatch.core.assess import assess as run_assess
    from alemwatch.core.patient import PatientFileError, parse_patient
    from alemwatch.protocol.load import load_protocol

    protocol = load_protocol(jurisdiction.value)
    try:
        patient = parse_patient(data, protocol)
    except PatientFileError as exc:
        fail(exc.field, exc.problem)
    result = run_assess(patient, protocol, day)
    if as_json:
        _print_json(result)
    else:
        from alemwatch.views import show_assessment

        show_assessment(result, all_tasks=all_tasks)


@app.command()
def triage(
    text: Annotated[str, typer.Option("--text", help="What the patient reports, in their own words.")],
    days_since_infusion: Annotated[
        int | None,
        typer.Option("--days-since-infusion", help="Days since the last infusion (0 = the same day)."),
    ] = None,
    jurisdiction: JurisdictionOpt = Jurisdiction.us,
    as_json: JsonOpt = False,
) -> None:
    """Triage a symptom report: suspected conditions and how urgently to act."""
    if not text.strip():
        fail("--text", "must not be empty")
    if len(text) > 5000:
        fail("--text", "is longer than 5000 characters")
    if days_since_infusion is not None and days_since_infusion < 0:
        fail("--days-since-infusion", f"must be 0 or more, got {days_since_infusion}")
    from alemwatch.core.findings import triage_engine
    from alemwatch.protocol.load import load_protocol

    result = triage_engine(load_protocol(jurisdiction.value)).triage(text, days_since_infusion)
    if as_json:
        _print_json(result.to_json())
    else:
        from alemwatch.views import show_triage

        show_triage(result.to_json())


@schema_app.command("patient")
def schema_patient(as_json: JsonOpt = True) -> None:
    """The JSON Schema of the patient file."""
    from alemwatch.core.schema import patient_schema

    _print_json(patient_schema())


@protocol_app.command("check")
def protocol_check(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Protocol files to validate; default: every shipped protocol."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate protocol files and report every problem with its location. Exit 1 if any."""
    from alemwatch.protocol.load import PROTOCOL_FILES, ProtocolError, load_file, shipped_path

    paths = files or [shipped_path(j) for j in PROTOCOL_FILES]
    report: list[dict[str, Any]] = []
    for path in paths:
        try:
            protocol = load_file(path)
            report.append(
                {
                    "file": str(path),
                    "valid": True,
                    "protocol_version": protocol.protocol_version,
                    "jurisdiction": protocol.jurisdiction,
                    "problems": [],
                }
            )
        except ProtocolError as exc:
            report.append(
                {
                    "file": str(path),
                    "valid": False,
                    "problems": [{"location": p.location, "message": p.message} for p in exc.problems],
                }
            )
    if as_json:
        _print_json(report)
    else:
        for item in report:
            name = Path(item["file"]).name
            if item["valid"]:
                print(f"ok: {name} (version {item['protocol_version']}, {item['jurisdiction']})")
            else:
                print(f"invalid: {name}: {len(item['problems'])} problem(s)")
                for problem in item["problems"]:
                    print(f"  {problem['location']}: {problem['message']}")
    if not all(item["valid"] for item in report):
        raise typer.Exit(1)


class Section(StrEnum):
    overview = "overview"
    sources = "sources"
    parameters = "parameters"
    adverse_effects = "adverse_effects"
    contraindications = "contraindications"
    baseline = "baseline"
    schedule = "schedule"
    findings = "findings"
    triage = "triage"


@protocol_app.command("show")
def protocol_show(
    section: Annotated[Section | None, typer.Option("--section", help="Show one section only.")] = None,
    jurisdiction: JurisdictionOpt = Jurisdiction.us,
    as_json: JsonOpt = False,
) -> None:
    """Render the protocol as readable tables (or JSON)."""
    from alemwatch.protocol.load import load_protocol

    protocol = load_protocol(jurisdiction.value)
    if as_json:
        document = protocol.model_dump(mode="json", by_alias=True)
        if section is not None and section is not Section.overview:
            key = {"schedule": "monitoring", "contraindications": "contraindications"}.get(section.value, section.value)
            document = {key: document[key]} if key in document else {}
        _print_json(document)
        return
    from alemwatch.views import show_protocol

    show_protocol(protocol, section.value if section else None)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API (POST /api/assess, POST /api/triage; OpenAPI at /docs)."""
    import uvicorn

    uvicorn.run("alemwatch.api.app:app", host=host, port=port, log_level="info")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
