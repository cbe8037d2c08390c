"""FHIR resources into the registry: a transaction or batch Bundle, or a bulk-data NDJSON file.

Resources are read into per-patient updates (`alemwatch.fhir.inbound`), merged into the
stored patient file, and stored through the same `save_patient_file` as every other write,
so the same validation, idempotent ids and re-assessment queue apply. A transaction stores
everything or nothing; a batch stores each patient's entries together or not at all."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from alemwatch.core.patient import PatientFileError
from alemwatch.fhir import inbound, outbound
from alemwatch.fhir.inbound import SHAPE_ERRORS, FhirInputError, FhirIssue, PatientUpdate
from alemwatch.protocol.model import Protocol
from alemwatch.registry.refresh import refresh_patient
from alemwatch.store import models as m
from alemwatch.store import repo
from alemwatch.store.db import transaction

MAX_ENTRIES = 5000  # per Bundle; larger loads go through `alemwatch import-fhir` (NDJSON)


@dataclass
class Parsed:
    """A set of resources read and grouped by patient; `entries[i]` is (patient id, type, id or None)."""

    updates: dict[str, PatientUpdate] = field(default_factory=dict)
    entries: list[tuple[str, str, str | None]] = field(default_factory=list)
    skipped: dict[int, FhirIssue] = field(default_factory=dict)
    errors: list[FhirIssue] = field(default_factory=list)
    new_patients: set[str] = field(default_factory=set)
    failed_patients: dict[str, list[FhirIssue]] = field(default_factory=dict)  # a bad entry's patient: its issues


CONDITIONAL = ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")  # Bundle.entry.request


def _entry_request(entry: dict[str, Any], place: str) -> tuple[str, str]:
    request = entry.get("request")
    if not isinstance(request, dict):
        raise FhirInputError([FhirIssue("required", "request (method and url) is required", f"{place}.request")])
    method, url = request.get("method"), request.get("url")
    if method not in ("POST", "PUT"):
        raise FhirInputError(
            [
                FhirIssue(
                    "not-supported",
                    f"request.method {method!r}: only POST and PUT are accepted",
                    f"{place}.request.method",
                )
            ]
        )
    if not isinstance(url, str) or not url:
        raise FhirInputError([FhirIssue("required", "request.url is required", f"{place}.request.url")])
    # Conditional create and update, and version checks, are not done here (the
    # CapabilityStatement declares none): refused, never silently ignored. A retry needs none of
    # them: an entry already stored is stored once (its id comes from its content).
    conditional = [name for name in CONDITIONAL if request.get(name) is not None]
    if "?" in url:
        conditional.insert(0, "url")
    if conditional:
        message = f"conditional requests are not supported (request.{conditional[0]}); send PUT Type/id or POST Type"
        raise FhirInputError([FhirIssue("not-supported", message, f"{place}.request.{conditional[0]}")])
    return method, url


def read_entries(
    entries: list[Any], protocol: Protocol, bundle: bool = True, validate: bool = True, base: str | None = None
) -> Parsed:
    """Validate and read every entry (a Bundle's `entry` list, or bare resources when
    `bundle` is false); problems are collected, not raised, so all are reported at once.
    `validate=False` reads resources without fhir.resources (`inbound.Raw`): for an EHR's
    data that is assessed and never stored. What is stored references its patient on this
    server: `Patient/123`, or an absolute URL under `base` (this server's FHIR base)."""
    check = inbound.validate_resource if validate else inbound.read_raw
    parsed = Parsed()
    resources: list[tuple[int, str, Any]] = []
    local: dict[str, str] = {}  # fullUrl -> patient id
    for n, entry in enumerate(entries):
        place = f"Bundle.entry[{n}]" if bundle else f"line {n + 1}"
        parsed.entries.append((_raw_subject(entry, bundle), "", None))
        try:
            if bundle:
                if not isinstance(entry, dict):
                    raise FhirInputError([FhirIssue("structure", "must be an object", place)])
                method, url = _entry_request(entry, place)
                data = entry.get("resource")
                resource = check(data, f"{place}.resource")
                _check_url(resource, method, url, place)
            else:
                resource = check(entry, place)
        except FhirInputError as exc:
            parsed.errors += exc.issues
            continue
        except SHAPE_ERRORS as exc:
            parsed.errors.append(_shape_issue(place, exc))
            continue
        rplace = f"{place}.resource" if bundle else place
        resource_type: str = resource["resourceType"]  # one of inbound.SUPPORTED: checked
        if resource_type == "Patient":
            pid = resource.get("id") or (str(uuid.uuid4()) if bundle and method == "POST" else None)
            if pid is None:
                parsed.errors.append(FhirIssue("required", "Patient.id is required", f"{rplace}.id"))
                continue
            if not isinstance(pid, str):
                parsed.errors.append(FhirIssue("structure", "Patient.id must be a string", f"{rplace}.id"))
                continue
            try:
                attributes = inbound.read_patient(resource, rplace)
            except FhirInputError as exc:
                parsed.errors += exc.issues
                continue
            except SHAPE_ERRORS as exc:
                parsed.errors.append(_shape_issue(rplace, exc))
                continue
            if bundle and pid in parsed.new_patients:
                # FHIR: a transaction names each resource once; two Patient entries for one id
                # would leave which of them holds to the order of the entries.
                first = next(k for k, (who, kind, _) in enumerate(parsed.entries) if kind == "Patient" and who == pid)
                message = f"Patient/{pid} is also Bundle.entry[{first}]: a Bundle names each resource once"
                parsed.errors.append(FhirIssue("duplicate", message, f"{rplace}.id"))
                continue
            update = parsed.updates.setdefault(pid, PatientUpdate(pid))
            update.attributes.update(attributes)
            update.patient_place = rplace
            parsed.new_patients.add(pid)
            if bundle and isinstance(entry.get("fullUrl"), str):
                local[entry["fullUrl"]] = pid
            parsed.entries[n] = (pid, "Patient", pid)
        else:
            resources.append((n, rplace, resource))
            parsed.entries[n] = (parsed.entries[n][0], resource_type, resource.get("id"))
    for n, rplace, resource in resources:
        try:
            subject = inbound.subject_of(resource, rplace)
            if validate:
                _check_local(resource, rplace, base)
            if subject.startswith("urn:"):
                if subject not in local:
                    raise FhirInputError(
                        [
                            FhirIssue(
                                "not-found",
                                f"{subject} is not the fullUrl of a Patient in this Bundle",
                                f"{rplace}.subject",
                            )
                        ]
                    )
                subject = local[subject]
            update = parsed.updates.get(subject) or parsed.updates.setdefault(subject, PatientUpdate(subject))
            if resource.get("id"):
                inbound.set_id(resource, outbound.local_id(subject, resource["id"]))
            read = inbound.apply(update, resource, rplace, protocol)
        except FhirInputError as exc:
            parsed.errors += exc.issues
            continue
        except SHAPE_ERRORS as exc:
            parsed.errors.append(_shape_issue(rplace, exc))
            continue
        if isinstance(read, FhirIssue):
            parsed.skipped[n] = read
            parsed.entries[n] = (subject, resource["resourceType"], None)
            continue
        kind, record = read
        # The id it is stored under (for the answer's location); prefetch data is never stored.
        stored_id = "planned-course" if kind == "planned" else repo.record_id(kind, record) if validate else None
        parsed.entries[n] = (subject, resource["resourceType"], stored_id)
    for issue in parsed.errors:  # whose entry failed: a batch then stores nothing of that patient
        entry_number = re.match(r"^Bundle\.entry\[(\d+)\]", issue.expression)
        subject = parsed.entries[int(entry_number.group(1))][0] if entry_number else ""
        if subject:
            parsed.failed_patients.setdefault(local.get(subject, subject), []).append(issue)
    return parsed


def _check_local(resource: Any, place: str, base: str | None) -> None:
    """An absolute reference to a Patient on another server is not this registry's patient
    of the same id: refused, never stored under it."""
    name = inbound.subject_element(resource)
    reference = str(resource[name]["reference"])
    if "://" not in reference:
        return
    if base is None or not reference.startswith(base.rstrip("/") + "/Patient/"):
        where = f" (this server is {base})" if base else ""
        message = f"{reference!r} is a Patient on another server{where}; reference Patient/{{id}} of this server"
        raise FhirInputError([FhirIssue("not-supported", message, f"{place}.{name}.reference")])


def _shape_issue(place: str, exc: Exception) -> FhirIssue:
    """A resource whose elements do not have the shapes FHIR gives them (read without validation)."""
    return FhirIssue("structure", f"an element does not have its FHIR shape ({type(exc).__name__})", place)


def _raw_subject(entry: Any, bundle: bool) -> str:
    """The patient a raw entry is about, read before validation (to keep a bad one's patient out)."""
    resource = entry.get("resource") if bundle and isinstance(entry, dict) else entry
    if not isinstance(resource, dict):
        return ""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id") or "")
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return str(ref["reference"]).rstrip("/").split("/")[-1]
    return ""


def _check_url(resource: Any, method: str, url: str, place: str) -> None:
    parts = url.split("?")[0].strip("/").split("/")
    kind = resource.get("resourceType")
    if parts[0] != kind:
        raise FhirInputError(
            [
                FhirIssue(
                    "value",
                    f"request.url {url!r} does not name a {kind}",
                    f"{place}.request.url",
                )
            ]
        )
    if method == "PUT":
        given = resource.get("id")
        if len(parts) != 2 or not inbound.FHIR_ID.match(parts[1]) or (given and given != parts[1]):
            raise FhirInputError(
                [FhirIssue("value", "PUT needs request.url Type/id with the resource's own id", f"{place}.request.url")]
            )
        inbound.set_id(resource, parts[1])


def store_update(session: Session, update: PatientUpdate, protocol: Protocol, is_new: bool) -> set[str] | None:
    """Merge one patient's update into the stored record (raises FhirInputError, stores nothing
    then). Returns the ids of the records that were stored already (None: a new patient),
    for the answer: an entry that changed nothing is `200 OK`, not `201 Created`."""
    current = repo.patient_file(session, update.patient_id)
    if current is None and not is_new:
        place = next((o[0] for o in update.origins.values() if o), "Bundle")
        raise FhirInputError(
            [
                FhirIssue(
                    "not-found", f"Patient/{update.patient_id} is neither stored nor in this Bundle", f"{place}.subject"
                )
            ],
            status=404,
        )
    _refuse_changed_labs(current, update)
    merged = inbound.merge(current, update)
    try:
        repo.save_patient_file(session, merged, protocol, source="fhir")
    except PatientFileError as exc:
        raise FhirInputError([inbound.locate(exc, current, update)]) from None
    if current is None:
        return None
    known = {repo.record_id(kind, record) for kind in inbound.RECORD_KINDS for record in current.get(kind) or []}
    planned = update.attributes.get("planned_course_start")
    if planned is not None and planned == current.get("planned_course_start"):
        known.add("planned-course")
    return known


def _refuse_changed_labs(current: dict[str, Any] | None, update: PatientUpdate) -> None:
    """A result already stored under an id is never changed by a later message (it is kept, so
    that a retry stores nothing twice); a different value under the same id is a conflict."""
    stored = {lab.get("id"): lab for lab in (current or {}).get("labs") or []}
    for lab, place in zip(update.records["labs"], update.origins["labs"], strict=True):
        before = stored.get(lab.get("id"))
        if before is not None and _lab_content(before) != _lab_content(lab):
            message = (
                f"Observation {lab['id']} was stored or sent before with another value, date or reference range; "
                "send a new id for a new result"
            )
            raise FhirInputError([FhirIssue("conflict", message, place)], status=409)
        if lab.get("id"):
            stored.setdefault(lab["id"], lab)  # the same id twice in one message must say the same


def _lab_content(lab: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(lab.get(key) for key in ("date", "value", "unit", "ref_low", "ref_high"))


def transaction_bundle(
    session: Session, bundle: Any, protocol: Protocol, actor_label: str, today: dt.date, base: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Process a Bundle of type transaction (all or nothing) or batch (each patient on its own).
    Returns the response Bundle and the ids of the patients written. `base`: this server's FHIR
    base URL (absolute references under it are its own)."""
    entries = _bundle_entries(bundle)
    kind = bundle.get("type")
    parsed = read_entries(entries, protocol, base=base)
    if kind == "transaction" and parsed.errors:
        raise FhirInputError(parsed.errors, 404 if all(i.code == "not-found" for i in parsed.errors) else 422)
    failed: dict[str, list[FhirIssue]] = {}
    if kind == "batch":
        for issue in parsed.errors:
            failed.setdefault(_entry_of(issue.expression), []).append(issue)
    written = []
    before: dict[str, set[str] | None] = {}  # per patient written: the record ids stored already
    for pid, update in parsed.updates.items():
        if kind == "transaction":
            before[pid] = store_update(session, update, protocol, pid in parsed.new_patients)
            written.append(pid)
            continue
        if pid in parsed.failed_patients:  # each patient's entries are stored together or not at all
            failed.setdefault(f"patient:{pid}", parsed.failed_patients[pid])
            continue
        try:
            with session.begin_nested():
                before[pid] = store_update(session, update, protocol, pid in parsed.new_patients)
            written.append(pid)
        except FhirInputError as exc:
            for issue in exc.issues:
                failed.setdefault(_entry_of(issue.expression), []).append(issue)
            failed.setdefault(f"patient:{pid}", exc.issues)
    for pid in written:
        refresh_patient(session, pid, protocol, today, actor_label)
    return _response(kind, parsed, failed, before), written


def _bundle_entries(bundle: Any) -> list[Any]:
    if isinstance(bundle, bytes | str):
        message = "the body was not read as JSON: send it with Content-Type application/fhir+json"
        raise FhirInputError([FhirIssue("structure", message, "Bundle")], status=415)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        got = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        raise FhirInputError([FhirIssue("structure", f"POST /fhir takes a Bundle, got {got!r}", "Bundle.resourceType")])
    if bundle.get("type") not in ("transaction", "batch"):
        raise FhirInputError(
            [FhirIssue("value", f"Bundle.type must be transaction or batch, got {bundle.get('type')!r}", "Bundle.type")]
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirInputError([FhirIssue("structure", "must be a list", "Bundle.entry")])
    if len(entries) > MAX_ENTRIES:
        raise FhirInputError(
            [
                FhirIssue(
                    "too-costly",
                    f"{len(entries)} entries; at most {MAX_ENTRIES} per Bundle "
                    "(use alemwatch import-fhir for bulk NDJSON)",
                    "Bundle.entry",
                )
            ],
            status=413,
        )
    return entries


def _entry_of(expression: str) -> str:
    return (
        expression.split(".", 2)[0] + "." + expression.split(".", 2)[1]
        if expression.startswith("Bundle.entry[")
        else expression
    )


def _response(
    kind: str, parsed: Parsed, failed: dict[str, list[FhirIssue]], before: dict[str, set[str] | None]
) -> dict[str, Any]:
    out = []
    for n, (pid, rtype, rid) in enumerate(parsed.entries):
        issues = failed.get(f"Bundle.entry[{n}]") or (failed.get(f"patient:{pid}") if pid else None)
        if issues:
            out.append({"response": {"status": "422 Unprocessable Entity", "outcome": operation_outcome(issues)}})
            continue
        known = before.get(pid) if pid else None
        already = known is not None and (rtype == "Patient" or rid in known)
        response: dict[str, Any] = {"status": "200 OK" if already else "201 Created"}
        if n in parsed.skipped:
            response = {"status": "200 OK", "outcome": operation_outcome([parsed.skipped[n]])}
        elif rtype == "Patient":
            response["location"] = f"Patient/{pid}"
        elif rid:
            response["location"] = f"{rtype}/{outbound.record_id(pid, rid)}"
        out.append({"response": response})
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": out}


def operation_outcome(issues: Iterable[FhirIssue]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics, "expression": [i.expression]}
            for i in issues
        ],
    }


# --- bulk NDJSON ---------------------------------------------------------------------------


@dataclass
class FhirImportReport:
    patients: int = 0
    resources: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def _lines(paths: list[Path]) -> Iterator[tuple[str, int, Any]]:
    """(file, line, decoded value) of every resource: a Bundle file gives its entries' resources."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("{") and "\n{" not in text.strip():
            try:
                document = json.loads(text, object_hook=inbound.Raw)
            except json.JSONDecodeError as exc:
                yield path.name, exc.lineno, FhirInputError([FhirIssue("structure", f"malformed JSON: {exc.msg}", "")])
                continue
            if isinstance(document, dict) and document.get("resourceType") == "Bundle":
                for n, entry in enumerate(document.get("entry") or []):
                    yield path.name, n + 1, entry.get("resource") if isinstance(entry, dict) else entry
                continue
            yield path.name, 1, document
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield path.name, number, json.loads(line, object_hook=inbound.Raw)
                except json.JSONDecodeError as exc:
                    yield path.name, number, FhirInputError([FhirIssue("structure", f"malformed JSON: {exc.msg}", "")])


def import_fhir(
    paths: list[Path],
    url: str,
    protocol: Protocol,
    chunk: int = 2000,
    on_progress: Callable[[int, int], None] | None = None,
) -> FhirImportReport:
    """Import bulk-data NDJSON (or Bundle) files: Patients first, then everything else in
    chunks; each patient's resources of a chunk are stored together or not at all, a bad
    resource is reported with its file and line."""
    report = FhirImportReport()
    patients_first = sorted(_lines(paths), key=lambda item: not _is_patient(item[2]))
    for start in range(0, len(patients_first), chunk):
        part = patients_first[start : start + chunk]
        _import_chunk(part, url, protocol, report)
        if on_progress:
            on_progress(min(start + chunk, len(patients_first)), len(patients_first))
    return report


def _is_patient(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "Patient"


def _import_chunk(part: list[tuple[str, int, Any]], url: str, protocol: Protocol, report: FhirImportReport) -> None:
    good: list[Any] = []
    where: list[str] = []
    for name, line, value in part:
        if isinstance(value, FhirInputError):
            report.errors.append(f"{name} line {line}: {value.issues[0].diagnostics}")
        else:
            good.append(value)
            where.append(f"{name} line {line}")
    parsed = read_entries(good, protocol, bundle=False)

    def label(issue: FhirIssue) -> str:
        head, _, rest = issue.expression.partition(".")
        index = int(head.removeprefix("line ")) - 1 if head.startswith("line ") else None
        return f"{where[index]}{'.' + rest if rest else ''}" if index is not None else issue.expression

    # A bad resource is rejected alone (reported with its file, line and element); the rest go in.
    report.errors += [f"{label(issue)}: {issue.diagnostics}" for issue in parsed.errors]
    report.skipped += len(parsed.skipped)
    for pid, update in parsed.updates.items():
        try:
            with transaction(url) as session:
                is_new = pid in parsed.new_patients and session.get(m.Patient, pid) is None
                store_update(session, update, protocol, is_new or pid in parsed.new_patients)
        except FhirInputError as exc:
            report.errors += [f"{label(i)}: {i.diagnostics}" for i in exc.issues]
            continue
        report.patients += is_new  # new to the registry: a re-run stores (and counts) no patient twice
        report.resources += update.count + (pid in parsed.new_patients)
