"""The `alemwatch` command line. Thin: each command parses its input, calls core, prints.

Heavy modules (Pydantic models, the protocol, FastAPI) are imported inside the commands so
that `alemwatch --help` starts fast.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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
db_app = typer.Typer(help="The registry database: migrations.", no_args_is_help=True, rich_markup_mode=None)
user_app = typer.Typer(
    help="People who use the registry: add, list, disable.", no_args_is_help=True, rich_markup_mode=None
)
audit_app = typer.Typer(
    help="The audit trail of every access to patient data.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(protocol_app, name="protocol")
app.add_typer(schema_app, name="schema")
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")


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


def _database_url() -> str:
    from alemwatch.settings import get_settings

    return get_settings().database_url


def _require_migrated(url: str) -> None:
    from alemwatch.store.db import NotMigrated, ensure_migrated

    try:
        ensure_migrated(url)
    except NotMigrated as exc:
        sys.stderr.write(f"error: database: {exc}\n")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the registry (REST API; OpenAPI at /docs). Refuses an unmigrated database.
    With several workers each listens on a socket of its own (SO_REUSEPORT): the kernel
    shares the connections out evenly."""
    from alemwatch.api.server import serve as run_server

    _require_migrated(_database_url())
    # uvicorn's access log would print paths with patient ids; the app logs route templates instead.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        status = run_server(host, port, workers)
    except OSError as exc:
        sys.stderr.write(f"error: --host/--port: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        raise typer.Exit(1) from None
    if status:
        raise typer.Exit(status)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database named by ALEMWATCH_DATABASE_URL (default ./alemwatch.db)."""
    from alemwatch.store.db import current_revision, upgrade

    url = _database_url()
    upgrade(url)
    print(f"database at revision {current_revision(url)}")


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option("--role", help="admin, clinician, nurse or patient.")],
    patient: Annotated[str | None, typer.Option("--patient", help="For a patient account: their record's id.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a user. The password is asked for (or read from stdin); there is no default."""
    from alemwatch.security import create_user
    from alemwatch.store.db import transaction

    url = _database_url()
    _require_migrated(url)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with transaction(url) as session:
            user = create_user(session, username, password, role, patient)
            print(f"added {user.role} {user.username!r} (id {user.id})")
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        fail(field, problem or str(exc))


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users (never their passwords)."""
    from sqlalchemy import select

    from alemwatch.store import models as m
    from alemwatch.store.db import session_factory

    url = _database_url()
    _require_migrated(url)
    with session_factory(url)() as session:
        users = [
            {"id": u.id, "username": u.username, "role": u.role, "patient_id": u.patient_id, "disabled": u.disabled}
            for u in session.execute(select(m.User).order_by(m.User.id)).scalars()
        ]
    if as_json:
        _print_json(users)
    else:
        for u in users:
            state = "disabled" if u["disabled"] else "active"
            print(f"{u['id']:>4}  {u['username']:<24} {u['role']:<10} {state:<8} {u['patient_id'] or ''}")


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Disable a user: their sessions and tokens stop working at once."""
    from sqlalchemy import select

    from alemwatch.store import models as m
    from alemwatch.store.db import transaction

    url = _database_url()
    _require_migrated(url)
    with transaction(url) as session:
        user = session.execute(select(m.User).where(m.User.username == username)).scalar_one_or_none()
        if user is None:
            fail("username", f"no user {username!r}")
        user.disabled = True
    print(f"disabled {username!r}")


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after this date (YYYY-MM-DD) or ISO time.")
    ] = None,
) -> None:
    """Print audit events as NDJSON (one JSON object per line)."""
    from alemwatch.store.audit import export
    from alemwatch.store.db import session_factory

    moment = None
    if since is not None:
        try:
            moment = dt.datetime.fromisoformat(since)
        except ValueError:
            fail("--since", f"must be a date or ISO date-time, got {since!r}")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    url = _database_url()
    _require_migrated(url)
    with session_factory(url)() as session:
        for line in export(session, moment):
            sys.stdout.write(line + "\n")


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Patient files: a JSON array or NDJSON (one per line).")],
    sweep_after: Annotated[
        bool, typer.Option("--sweep/--no-sweep", help="Assess the imported patients afterwards.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Import patient files; each patient whole or not at all; bad records are reported."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alemwatch.protocol.load import load_protocol
    from alemwatch.registry.importer import ImportFileError, import_file

    url = _database_url()
    _require_migrated(url)
    if not file.exists():
        fail(str(file), "no such file")
    protocol = load_protocol(_jurisdiction())
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[labs]} lab results"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=as_json, transient=False) as progress:
        task = progress.add_task("import", total=None, labs=0)
        try:
            report = import_file(
                file, url, protocol, lambda done, labs: progress.update(task, completed=done, labs=labs)
            )
        except ImportFileError as exc:
            fail(str(file), str(exc))
        except UnicodeDecodeError:
            fail(str(file), "is not UTF-8 text")
    swept = _sweep(url, protocol, dt.date.today(), False, quiet=True) if sweep_after and report.patients else None
    document = {
        "patients": report.patients,
        "records": report.records,
        "lab_results": report.labs,
        "errors": report.errors,
        "sweep": swept.to_json() if swept else None,
    }
    if as_json:
        _print_json(document)
    else:
        print(f"imported {report.patients} patients ({report.labs} lab results, {report.records} new records)")
        for error in report.errors:
            sys.stderr.write(f"rejected: {error}\n")
    if report.errors and not report.patients:
        raise typer.Exit(2)


@app.command("import-fhir")
def import_fhir_command(
    files: Annotated[
        list[Path], typer.Argument(help="FHIR R4 resources: bulk-data NDJSON files (one resource a line) or Bundles.")
    ],
    sweep_after: Annotated[
        bool, typer.Option("--sweep/--no-sweep", help="Assess the imported patients afterwards.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Import FHIR resources (Patient, Observation, MedicationAdministration, MedicationRequest,
    MedicationStatement, Immunization, Procedure); Patients first; bad resources are reported
    with their file and line, the rest go in."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alemwatch.protocol.load import load_protocol
    from alemwatch.registry.fhir_store import import_fhir

    url = _database_url()
    _require_migrated(url)
    for file in files:
        if not file.exists():
            fail(str(file), "no such file")
    protocol = load_protocol(_jurisdiction())
    columns = (TextColumn("importing FHIR"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=as_json, transient=False) as progress:
        task = progress.add_task("import", total=None)
        try:
            report = import_fhir(
                files, url, protocol, on_progress=lambda done, total: progress.update(task, completed=done, total=total)
            )
        except UnicodeDecodeError:
            fail(", ".join(map(str, files)), "is not UTF-8 text")
    swept = _sweep(url, protocol, dt.date.today(), False, quiet=True) if sweep_after and report.resources else None
    document = {
        "patients": report.patients,
        "resources": report.resources,
        "skipped": report.skipped,
        "errors": report.errors,
        "sweep": swept.to_json() if swept else None,
    }
    if as_json:
        _print_json(document)
    else:
        skipped = f"{report.skipped} not about alemtuzumab"
        print(f"imported {report.resources} resources ({report.patients} new patients, {skipped})")
        for error in report.errors:
            sys.stderr.write(f"rejected: {error}\n")
    if report.errors and not report.resources:
        raise typer.Exit(2)


def _jurisdiction() -> str:
    from alemwatch.settings import get_settings

    return get_settings().jurisdiction


def _sweep(url: str, protocol: Any, day: dt.date, full: bool, quiet: bool = False) -> Any:
    from rich.progress import Progress

    from alemwatch.registry.sweep import sweep as run_sweep

    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("assessing", total=None)
        return run_sweep(
            url, protocol, day, full, lambda done, total: progress.update(task, completed=done, total=total)
        )


@app.command()
def sweep(
    as_of: Annotated[str | None, typer.Option("--as-of", help="The day to assess (YYYY-MM-DD); default today.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Re-assess every patient (after a protocol change).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-assess the patients whose status can have changed; raise and close alerts."""
    from alemwatch.protocol.load import load_protocol

    day = _parse_date(as_of, "--as-of")
    url = _database_url()
    _require_migrated(url)
    report = _sweep(url, load_protocol(_jurisdiction()), day, full, quiet=as_json)
    if as_json:
        _print_json(report.to_json())
    else:
        print(
            f"{report.mode} sweep as of {report.as_of}: assessed {report.assessed} of {report.patients} patients "
            f"in {report.seconds:.2f} s; {report.alerts_open} alerts open"
        )


@app.command()
def demo(
    patients: Annotated[
        int, typer.Option("--patients", help="How many synthetic patients.", min=1, max=1_000_000)
    ] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same cohort).")] = 7,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing when the registry has patients.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write NDJSON to this file instead of storing.")
    ] = None,
) -> None:
    """Generate a realistic synthetic cohort (no real people) and store it, or write it out."""
    from alemwatch.demo import build_cohort

    if output is not None:
        with output.open("w", encoding="utf-8") as handle:
            for record in build_cohort(patients, seed):
                handle.write(json.dumps(record) + "\n")
        print(f"wrote {patients} patients to {output}")
        return
    from alemwatch.protocol.load import load_protocol
    from alemwatch.store import models as m
    from alemwatch.store.db import session_factory, transaction
    from alemwatch.store.repo import save_patient_file

    url = _database_url()
    _require_migrated(url)
    with session_factory(url)() as session:
        if if_empty and session.query(m.Patient).count():
            print("registry has patients; demo cohort not loaded")
            return
    protocol = load_protocol(_jurisdiction())
    with transaction(url) as session:
        for record in build_cohort(patients, seed):
            save_patient_file(session, record, protocol, source="demo")
    report = _sweep(url, protocol, dt.date.today(), False)
    print(f"loaded {patients} demo patients; {report.alerts_open} alerts open")


@app.command("dev-setup")
def dev_setup(
    patients: Annotated[int, typer.Option("--patients", help="Demo cohort size when the registry is empty.")] = 200,
) -> None:
    """For `make run`: migrate, load a demo cohort if empty, create demo users and print them."""
    import secrets

    from sqlalchemy import select

    from alemwatch.security import create_user, hash_password
    from alemwatch.store import models as m
    from alemwatch.store.db import transaction, upgrade

    url = _database_url()
    upgrade(url)
    demo(patients=patients, seed=7, if_empty=True, output=None)
    accounts = [
        ("demo-clinician", "clinician", None),
        ("demo-nurse", "nurse", None),
        ("demo-patient", "patient", "demo-000001"),
    ]
    print("\nDemo accounts (new passwords each start; development only):")
    with transaction(url) as session:
        for username, role, patient_id in accounts:
            password = secrets.token_urlsafe(12)
            user = session.execute(select(m.User).where(m.User.username == username)).scalar_one_or_none()
            if user is None:
                create_user(session, username, password, role, patient_id)
            else:
                user.password_hash, user.disabled = hash_password(password), False
            print(f"  {role:<10} {username:<16} password {password}")
    print("\nOpen http://127.0.0.1:8000/ (the web app; the API is documented at /docs).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
