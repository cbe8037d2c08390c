"""Many patients as plain numpy arrays: the input of the bulk assessment (`core.bulk`).

A `Cohort` holds one array per field and one row per record, so that the registry can fill
it straight from SQL (one query per table, no Python object per row). Patients are numbered
0..n-1 (`patient_ids[i]` is patient i); every event table names its patient by that index.
Dates are proleptic ordinals (`date.toordinal()`) in int32, 0 meaning "none"; lab values
and reference limits are already in the protocol's canonical unit (NaN: no own limit).

Rows of one patient keep the order of that patient's lists: the per-patient engine breaks
ties between records of the same date by list order (the latest of two platelet counts
taken the same day is the one listed last), and so does the bulk path, by row order.
Event tables need not be sorted otherwise.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from alemwatch.core.patient import Patient, Screening
from alemwatch.protocol.model import Protocol

I8 = npt.NDArray[np.int8]
I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

SEXES = ("unknown", "female", "male", "other")
SEVERITIES = ("mild", "moderate", "severe", "life_threatening")
PREMEDICATION = {True: 1, False: 0, None: -1}
# The dtype of every array column (screening arrays are int8).
DTYPES: dict[str, type[np.generic]] = {
    "sex": np.int8,
    "planned_start": np.int32,
    "lab_patient": np.int32,
    "lab_analyte": np.int16,
    "lab_date": np.int32,
    "lab_value": np.float64,
    "lab_ref_low": np.float64,
    "lab_ref_high": np.float64,
    "inf_patient": np.int32,
    "inf_date": np.int32,
    "inf_premed": np.int8,
    "inf_observation": np.float64,
    "rx_patient": np.int32,
    "rx_date": np.int32,
    "rx_severity": np.int8,
    "rx_onset_hours": np.float64,
    "exam_patient": np.int32,
    "exam_kind": np.int16,
    "exam_date": np.int32,
    "vac_patient": np.int32,
    "vac_date": np.int32,
    "vac_live": np.bool_,
    "pro_patient": np.int32,
    "pro_start": np.int32,
    "pro_stop": np.int32,
    "sym_patient": np.int32,
    "sym_date": np.int32,
    "sym_text": np.int32,
}
# Event tables: prefix -> columns (the first names the patient).
TABLES: dict[str, tuple[str, ...]] = {
    "lab": ("lab_patient", "lab_analyte", "lab_date", "lab_value", "lab_ref_low", "lab_ref_high"),
    "inf": ("inf_patient", "inf_date", "inf_premed", "inf_observation"),
    "rx": ("rx_patient", "rx_date", "rx_severity", "rx_onset_hours"),
    "exam": ("exam_patient", "exam_kind", "exam_date"),
    "vac": ("vac_patient", "vac_date", "vac_live"),
    "pro": ("pro_patient", "pro_start", "pro_stop"),
    "sym": ("sym_patient", "sym_date", "sym_text"),
}


def screening_values(field: str) -> tuple[object, ...]:
    """The values a screening field can take, in code order (the int8 code is the index):
    (False, True) for yes/no fields, the Literal's options (negative, positive, unknown)
    for the others."""
    annotation = Screening.model_fields[field].annotation
    if annotation is bool:
        return (False, True)
    return tuple(typing.get_args(annotation))


SCREENING_FIELDS: tuple[str, ...] = tuple(Screening.model_fields)


def exam_aliases(protocol: Protocol) -> dict[str, int]:
    """Exam type as recorded -> index into list(protocol.exam_types) (as Chart.build reads them)."""
    kinds = list(protocol.exam_types)
    return {alias: kinds.index(kind) for kind, names in protocol.exam_types.items() for alias in names}


def exam_kind(aliases: dict[str, int], recorded: str) -> int:
    """The exam kind index of a recorded type, -1 when the protocol does not know it."""
    return aliases.get(recorded.strip().lower().replace(" ", "_").replace("-", "_"), -1)


def _i8(values: Sequence[int]) -> I8:
    return np.asarray(values, dtype=np.int8)


def _i16(values: Sequence[int]) -> I16:
    return np.asarray(values, dtype=np.int16)


def _i32(values: Sequence[int]) -> I32:
    return np.asarray(values, dtype=np.int32)


def _f64(values: Sequence[float]) -> F64:
    return np.asarray(values, dtype=np.float64)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


@dataclass
class Cohort:
    """Column arrays for many patients (see the module docstring for the conventions)."""

    patient_ids: list[str]
    sex: I8  # 0 unknown, 1 female, 2 male, 3 other (SEXES)
    planned_start: I32  # planned_course_start, 0 = none
    screening: dict[str, I8]  # one array per Screening field; codes: screening_values(field)
    lab_patient: I32
    lab_analyte: I16  # index into list(protocol.analytes)
    lab_date: I32
    lab_value: F64  # canonical unit
    lab_ref_low: F64  # canonical; NaN = none given
    lab_ref_high: F64
    inf_patient: I32
    inf_date: I32
    inf_premed: I8  # 1 true, 0 false, -1 not recorded
    inf_observation: F64  # minutes; NaN = not recorded
    rx_patient: I32
    rx_date: I32  # the date of the reaction's infusion
    rx_severity: I8  # index into SEVERITIES
    rx_onset_hours: F64  # NaN = not recorded
    exam_patient: I32
    exam_kind: I16  # index into list(protocol.exam_types), -1 other
    exam_date: I32
    vac_patient: I32
    vac_date: I32
    vac_live: Bool
    pro_patient: I32  # herpes prophylaxis records
    pro_start: I32
    pro_stop: I32  # 0 = not stopped
    sym_patient: I32
    sym_date: I32
    sym_text: I32  # index into texts
    texts: list[str]

    @property
    def size(self) -> int:
        return len(self.patient_ids)

    # --- construction ------------------------------------------------------------------

    @classmethod
    def empty(cls, protocol: Protocol) -> Cohort:
        """A cohort of no patients (a neutral element for `concat`)."""
        return cls.from_patients([], protocol)

    @classmethod
    def from_patients(cls, patients: list[Patient], protocol: Protocol) -> Cohort:
        """Columns from parsed patients (tests, small batches). Lab results are already
        canonical in a parsed patient; `protocol` names the analyte and exam indices."""
        analytes = {str(name): n for n, name in enumerate(protocol.analytes)}
        aliases = exam_aliases(protocol)
        texts: dict[str, int] = {}
        rows: dict[str, list[Any]] = {f.name: [] for f in fields(cls) if f.name not in ("screening", "texts")}
        screening: dict[str, list[int]] = {name: [] for name in SCREENING_FIELDS}
        codes = {name: screening_values(name) for name in SCREENING_FIELDS}
        for index, patient in enumerate(patients):
            rows["patient_ids"].append(patient.id)
            rows["sex"].append(SEXES.index(patient.sex))
            start = patient.planned_course_start
            rows["planned_start"].append(start.toordinal() if start else 0)
            for name in SCREENING_FIELDS:
                screening[name].append(codes[name].index(getattr(patient.screening, name)))
            _add_labs(rows, index, patient, analytes)
            _add_infusions(rows, index, patient)
            for exam in patient.exams:
                rows["exam_patient"].append(index)
                rows["exam_kind"].append(exam_kind(aliases, exam.type))
                rows["exam_date"].append(exam.date.toordinal())
            for vaccination in patient.vaccinations:
                rows["vac_patient"].append(index)
                rows["vac_date"].append(vaccination.date.toordinal())
                rows["vac_live"].append(vaccination.live)
            for record in patient.prophylaxis:
                if record.kind == "herpes":
                    rows["pro_patient"].append(index)
                    rows["pro_start"].append(record.start.toordinal())
                    rows["pro_stop"].append(record.stop.toordinal() if record.stop else 0)
            for report in patient.symptoms:
                rows["sym_patient"].append(index)
                rows["sym_date"].append(report.date.toordinal())
                rows["sym_text"].append(texts.setdefault(report.text, len(texts)))
        return cls(
            patient_ids=list(rows["patient_ids"]),
            sex=_i8(rows["sex"]),
            planned_start=_i32(rows["planned_start"]),
            screening={name: _i8(values) for name, values in screening.items()},
            lab_patient=_i32(rows["lab_patient"]),
            lab_analyte=_i16(rows["lab_analyte"]),
            lab_date=_i32(rows["lab_date"]),
            lab_value=_f64(rows["lab_value"]),
            lab_ref_low=_f64(rows["lab_ref_low"]),
            lab_ref_high=_f64(rows["lab_ref_high"]),
            inf_patient=_i32(rows["inf_patient"]),
            inf_date=_i32(rows["inf_date"]),
            inf_premed=_i8(rows["inf_premed"]),
            inf_observation=_f64(rows["inf_observation"]),
            rx_patient=_i32(rows["rx_patient"]),
            rx_date=_i32(rows["rx_date"]),
            rx_severity=_i8(rows["rx_severity"]),
            rx_onset_hours=_f64(rows["rx_onset_hours"]),
            exam_patient=_i32(rows["exam_patient"]),
            exam_kind=_i16(rows["exam_kind"]),
            exam_date=_i32(rows["exam_date"]),
            vac_patient=_i32(rows["vac_patient"]),
            vac_date=_i32(rows["vac_date"]),
            vac_live=np.asarray(rows["vac_live"], dtype=np.bool_),
            pro_patient=_i32(rows["pro_patient"]),
            pro_start=_i32(rows["pro_start"]),
            pro_stop=_i32(rows["pro_stop"]),
            sym_patient=_i32(rows["sym_patient"]),
            sym_date=_i32(rows["sym_date"]),
            sym_text=_i32(rows["sym_text"]),
            texts=list(texts),
        )

    @classmethod
    def concat(cls, cohorts: Sequence[Cohort]) -> Cohort:
        """One cohort of all patients of `cohorts` (at least one), in order (patient and text
        indices are shifted; texts are pooled and deduplicated)."""
        if not cohorts:
            raise ValueError("concat needs at least one cohort")
        offsets = np.cumsum([0] + [c.size for c in cohorts[:-1]])
        pool: dict[str, int] = {}
        remaps = [np.asarray([pool.setdefault(t, len(pool)) for t in c.texts], dtype=np.int32) for c in cohorts]
        values: dict[str, Any] = {"patient_ids": [pid for c in cohorts for pid in c.patient_ids], "texts": list(pool)}
        values["screening"] = {
            name: np.concatenate([c.screening[name] for c in cohorts]) for name in cohorts[0].screening
        }
        for f in fields(cls):
            if f.name in values:
                continue
            parts = [getattr(c, f.name) for c in cohorts]
            if f.name.endswith("_patient"):
                parts = [(p + int(o)).astype(np.int32) for p, o in zip(parts, offsets, strict=True)]
            elif f.name == "sym_text":
                parts = [remap[p] for p, remap in zip(parts, remaps, strict=True)]
            values[f.name] = np.concatenate(parts)
        return cls(**values)

    def coerced(self) -> Cohort:
        """The same cohort with every column in its declared dtype (DTYPES), copying only the
        columns that are not (SQL drivers often return int64 and float64)."""
        values = {name: np.asarray(getattr(self, name)).astype(dtype, copy=False) for name, dtype in DTYPES.items()}
        screening = {name: np.asarray(codes).astype(np.int8, copy=False) for name, codes in self.screening.items()}
        return Cohort(patient_ids=self.patient_ids, screening=screening, texts=self.texts, **values)

    # --- checks ------------------------------------------------------------------------

    def check(self, protocol: Protocol) -> None:
        """Raise ValueError when the columns disagree in length or point outside their range
        (cheap: one pass per column; the bulk path relies on it)."""
        n = self.size
        for name, dtype in DTYPES.items():
            if getattr(self, name).dtype != dtype:
                raise ValueError(
                    f"{name}: dtype {getattr(self, name).dtype}, expected {np.dtype(dtype)} (see coerced())"
                )
        for name in ("sex", "planned_start"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} values for {n} patients")
        if set(self.screening) != set(SCREENING_FIELDS):
            raise ValueError(f"screening: expected the fields {sorted(SCREENING_FIELDS)}")
        for name, values in self.screening.items():
            if values.dtype != np.int8:
                raise ValueError(f"screening.{name}: dtype {values.dtype}, expected int8 (see coerced())")
            if len(values) != n:
                raise ValueError(f"screening.{name}: {len(values)} values for {n} patients")
            if len(values) and (values.min() < 0 or values.max() >= len(screening_values(name))):
                raise ValueError(f"screening.{name}: code out of range")
        for columns in TABLES.values():
            rows = len(getattr(self, columns[0]))
            for column in columns:
                if len(getattr(self, column)) != rows:
                    raise ValueError(f"{column}: {len(getattr(self, column))} rows, {columns[0]} has {rows}")
            patient = getattr(self, columns[0])
            if rows and (patient.min() < 0 or patient.max() >= n):
                raise ValueError(f"{columns[0]}: patient index out of range")
        _check_range("lab_analyte", self.lab_analyte, 0, len(protocol.analytes))
        _check_range("exam_kind", self.exam_kind, -1, len(protocol.exam_types))
        _check_range("rx_severity", self.rx_severity, 0, len(SEVERITIES))
        _check_range("sym_text", self.sym_text, 0, len(self.texts))
        _check_range("sex", self.sex, 0, len(SEXES))
        for name in ("lab_date", "inf_date", "rx_date", "exam_date", "vac_date", "pro_start", "sym_date"):
            _check_range(name, getattr(self, name), 1, MAX_ORDINAL + 1)


MAX_ORDINAL = 3652059  # date.max.toordinal(): fits in 22 bits, which the bulk keys rely on


def _check_range(name: str, values: npt.NDArray[Any], low: int, high: int) -> None:
    if len(values) and (int(values.min()) < low or int(values.max()) >= high):
        raise ValueError(f"{name}: values outside {low}..{high - 1}")


def _add_labs(rows: dict[str, list[Any]], index: int, patient: Patient, analytes: dict[str, int]) -> None:
    for lab in patient.labs:
        rows["lab_patient"].append(index)
        rows["lab_analyte"].append(analytes[lab.analyte])
        rows["lab_date"].append(lab.date.toordinal())
        rows["lab_value"].append(lab.canonical)
        rows["lab_ref_low"].append(_nan(lab.canonical_ref_low))
        rows["lab_ref_high"].append(_nan(lab.canonical_ref_high))


def _add_infusions(rows: dict[str, list[Any]], index: int, patient: Patient) -> None:
    for infusion in patient.infusions:
        day = infusion.date.toordinal()
        rows["inf_patient"].append(index)
        rows["inf_date"].append(day)
        rows["inf_premed"].append(PREMEDICATION[infusion.premedication])
        rows["inf_observation"].append(_nan(infusion.observation_minutes))
        for reaction in infusion.reactions:
            rows["rx_patient"].append(index)
            rows["rx_date"].append(day)
            rows["rx_severity"].append(SEVERITIES.index(reaction.severity))
            rows["rx_onset_hours"].append(_nan(reaction.onset_hours))
