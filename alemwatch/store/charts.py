"""Patient charts: a compact binary copy of each patient's record for the bulk sweep.

Reading 100,000 patients' lab results row by row costs tens of seconds (about 0.3 M rows/s
through the drivers here); the sweep instead reads one row per patient whose columns are the
patient's records packed as numpy structured arrays, and decodes all patients at once. The
chart is rewritten in the transaction of every change to the patient, from the stored
record itself, so it always equals what `repo.load_patient` reads (a test holds them equal).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from alemwatch.core.columnar import SCREENING_FIELDS, Cohort
from alemwatch.core.patient import Patient
from alemwatch.protocol.model import Protocol
from alemwatch.store import models as m

CHART_FORMAT = 1


def layout_code(protocol: Protocol) -> int:
    """Charts store analytes and exam kinds by their index in the protocol: a protocol that
    reorders them needs new charts. The code changes when the format or those lists do."""
    names = json.dumps([CHART_FORMAT, list(protocol.analytes), list(protocol.exam_types)])
    return zlib.crc32(names.encode()) & 0x7FFFFFFF


# Per event table: the columns packed (all but the patient index) and their dtypes.
LAYOUT: dict[str, list[tuple[str, str]]] = {
    "lab": [
        ("lab_analyte", "<i2"),
        ("lab_date", "<i4"),
        ("lab_value", "<f8"),
        ("lab_ref_low", "<f8"),
        ("lab_ref_high", "<f8"),
    ],
    "inf": [("inf_date", "<i4"), ("inf_premed", "i1"), ("inf_observation", "<f8")],
    "rx": [("rx_date", "<i4"), ("rx_severity", "i1"), ("rx_onset_hours", "<f8")],
    "exam": [("exam_kind", "<i2"), ("exam_date", "<i4")],
    "vac": [("vac_date", "<i4"), ("vac_live", "?")],
    "pro": [("pro_start", "<i4"), ("pro_stop", "<i4")],
    "sym": [("sym_date", "<i4"), ("sym_text", "<i4")],
}
DTYPES = {table: np.dtype(columns) for table, columns in LAYOUT.items()}
ATTRS = np.dtype([("sex", "i1"), ("planned_start", "<i4")] + [(f"s_{name}", "i1") for name in SCREENING_FIELDS])


def encode(patient: Patient, protocol: Protocol) -> dict[str, Any]:
    """The chart columns of one patient (the values of a PatientChart row)."""
    one = Cohort.from_patients([patient], protocol)
    attrs = np.zeros(1, dtype=ATTRS)
    attrs["sex"], attrs["planned_start"] = one.sex, one.planned_start
    for name in SCREENING_FIELDS:
        attrs[f"s_{name}"] = one.screening[name]
    row: dict[str, Any] = {
        "patient_id": patient.id,
        "format": layout_code(protocol),
        "attrs": attrs.tobytes(),
        "texts": one.texts,
    }
    for table, columns in LAYOUT.items():
        packed = np.zeros(len(getattr(one, f"{table}_patient")), dtype=DTYPES[table])
        for column, _ in columns:
            packed[column] = getattr(one, column)
        row[table] = packed.tobytes()
    return row


def store(session: Session, patient: Patient, protocol: Protocol) -> None:
    """Write (or rewrite) a patient's chart in the current transaction."""
    values = encode(patient, protocol)
    chart = session.get(m.PatientChart, patient.id)
    if chart is None:
        session.add(m.PatientChart(**values))
    else:
        for key, value in values.items():
            setattr(chart, key, value)


def decode(rows: Sequence[Any], protocol: Protocol) -> Cohort:
    """One Cohort from chart rows (patient_id, attrs, texts, lab, inf, rx, exam, vac, pro, sym), in order."""
    n = len(rows)
    attrs = np.frombuffer(b"".join(r.attrs for r in rows), dtype=ATTRS)
    values: dict[str, Any] = {
        "patient_ids": [r.patient_id for r in rows],
        "sex": attrs["sex"].astype(np.int8),
        "planned_start": attrs["planned_start"].astype(np.int32),
        "screening": {name: attrs[f"s_{name}"].astype(np.int8) for name in SCREENING_FIELDS},
    }
    for table, columns in LAYOUT.items():
        blobs = [getattr(r, table) for r in rows]
        itemsize = DTYPES[table].itemsize
        lengths = np.fromiter((len(b) // itemsize for b in blobs), dtype=np.int64, count=n)
        packed = np.frombuffer(b"".join(blobs), dtype=DTYPES[table])
        values[f"{table}_patient"] = np.repeat(np.arange(n, dtype=np.int32), lengths)
        for column, _ in columns:
            values[column] = np.ascontiguousarray(packed[column])
    values["texts"], values["sym_text"] = _pool_texts(rows, values["sym_patient"], values["sym_text"])
    values["vac_live"] = values["vac_live"].astype(np.bool_)
    return Cohort(**values)


def _pool_texts(rows: Sequence[Any], patients: np.ndarray, local: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-patient symptom text indices -> indices into one pooled list (few patients report)."""
    pool: dict[str, int] = {}
    remapped = local.astype(np.int32).copy()
    for position, (patient, index) in enumerate(zip(patients.tolist(), local.tolist(), strict=True)):
        texts = rows[patient].texts
        remapped[position] = pool.setdefault(texts[index], len(pool))
    return list(pool), remapped


def load(session: Session, patient_ids: Iterable[str] | None, protocol: Protocol) -> Cohort:
    """The charts of the given patients (all when None), ordered by patient id."""
    chart = m.PatientChart
    query = select(
        chart.patient_id,
        chart.attrs,
        chart.texts,
        chart.lab,
        chart.inf,
        chart.rx,
        chart.exam,
        chart.vac,
        chart.pro,
        chart.sym,
    ).order_by(chart.patient_id)
    if patient_ids is not None:
        ids = list(patient_ids)
        rows: list[Any] = []
        for start in range(0, len(ids), 5000):
            rows += session.execute(query.where(chart.patient_id.in_(ids[start : start + 5000]))).all()
        rows.sort(key=lambda r: r.patient_id)
    else:
        rows = list(session.execute(query).all())
    return decode(rows, protocol) if rows else Cohort.empty(protocol)


def dump_texts(texts: list[str]) -> str:
    return json.dumps(texts)
