"""Import patient files (a JSON array or NDJSON). Each patient is stored whole or not at all,
in its own transaction; a bad record is reported with its line and field and the rest go in.
Records carry stable ids, so running the same import again stores nothing twice."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alemwatch.core.patient import PatientFileError
from alemwatch.protocol.model import Protocol
from alemwatch.store.db import transaction
from alemwatch.store.repo import save_patient_file


@dataclass
class ImportReport:
    patients: int = 0
    records: int = 0
    labs: int = 0
    errors: list[str] = field(default_factory=list)


class ImportFileError(ValueError):
    """The file itself cannot be read (not JSON, not an array or NDJSON)."""


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded record) for each patient file in a JSON array or NDJSON file.
    A record that is not valid JSON is yielded as an ImportFileError in place of the record."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _array_records(text)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, ImportFileError(f"malformed JSON: {exc.msg} (column {exc.colno})")


def _array_records(text: str) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            raise ImportFileError("the JSON array is not closed")
        if text[position] == "]":
            return
        line = text.count("\n", 0, position) + 1
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ImportFileError(f"line {exc.lineno}: malformed JSON: {exc.msg}") from None
        yield line, record


def import_file(
    path: Path, url: str, protocol: Protocol, on_progress: Callable[[int, int], None] | None = None
) -> ImportReport:
    """Import every patient of a file; `on_progress(done, labs)` after each one."""
    report = ImportReport()
    for line, record in read_records(path):
        if isinstance(record, ImportFileError):
            report.errors.append(f"line {line}: {record}")
            continue
        label = record.get("id", "?") if isinstance(record, dict) else "?"
        try:
            with transaction(url) as session:
                _, _, added = save_patient_file(session, record, protocol, source="import")
        except PatientFileError as exc:
            report.errors.append(f"line {line} (patient {label}): {exc.field}: {exc.problem}")
            continue
        report.patients += 1
        report.records += added
        report.labs += len(record.get("labs") or [])
        if on_progress:
            on_progress(report.patients, report.labs)
    return report
