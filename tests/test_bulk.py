"""The proof that the bulk path (`core.bulk`) equals `assess`, patient by patient.

Compared on every field the bulk path computes: courses, monitoring.until and every task
(task, due, status, window, course, rule) in order, herpes prophylaxis status and
earliest_stop, findings (condition, severity, winning rule, every rule in order), deviations
(code, date, rule) and eligibility (status, reasons with level, in order). Patients come from
hypothesis (varied courses, labs around every threshold of the protocol, own reference
ranges, exams, vaccines, prophylaxis, symptom texts from the triage corpus, planned courses,
screening, both jurisdictions, as_of before, inside and after the courses), from every
golden case, and from seeded cohorts cut into small chunks with rows out of patient order.
`next_change` is checked never to be late: assess gives the same fields every day before it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alemwatch.core.assess import assess
from alemwatch.core.bulk import bulk_assess, day_breaks, order_rows
from alemwatch.core.columnar import TABLES, Cohort
from alemwatch.core.findings import triage_engine
from alemwatch.core.patient import Patient, parse_patient
from alemwatch.protocol.load import load_protocol
from alemwatch.protocol.model import AnalyteSpec, Protocol

CASES = Path(__file__).parent / "cases"
PROTOCOLS = {"us": load_protocol("us"), "eu": load_protocol("eu")}
TEXTS = sorted({c["text"] for p in (CASES / "triage").glob("*.json") for c in json.loads(p.read_text())["cases"]})
BLEEDING = sorted(
    {
        c["text"]
        for name in ("itp", "acquired_hemophilia_a")
        for c in json.loads((CASES / "triage" / f"{name}.json").read_text())["cases"]
    }
)
EXAM_TYPES = ["skin", "Skin Exam", "dermatology", "hpv", "pap-smear", "cervical_screening", "mri", "eye exam"]
SCREENING_FLAGS = [
    "active_infection",
    "alemtuzumab_hypersensitivity",
    "uncontrolled_hypertension",
    "history_of_stroke",
    "history_of_arterial_dissection",
    "history_of_angina_or_mi",
    "coagulopathy",
    "anticoagulant_or_antiplatelet_therapy",
    "other_autoimmune_disease",
    "pregnant",
]


def compared(out: dict[str, Any]) -> dict[str, Any]:
    """The fields of an assessment the bulk path must reproduce exactly."""
    eligibility = out.get("eligibility")
    herpes = out["prophylaxis"]["herpes"]
    return {
        "courses": out["courses"],
        "until": out["monitoring"]["until"],
        "tasks": [
            (t["task"], t["due"], t["status"], list(t["window"]), t["course"], t["rule"])
            for t in out["monitoring"]["tasks"]
        ],
        "herpes": (herpes["status"], herpes["earliest_stop"]),
        "findings": [(f["condition"], f["severity"], f["rule"], f["rules"]) for f in out["findings"]],
        "deviations": sorted((d["code"], d["date"], d["rule"]) for d in out["deviations"]),
        "eligibility": None
        if eligibility is None
        else (eligibility["status"], [(r["code"], r["level"]) for r in eligibility["reasons"]]),
    }


def assert_equal(patients: list[Patient], protocol: Protocol, as_of: dt.date, **options: Any) -> None:
    """bulk_assess of the patients as one cohort equals assess of each."""
    result = bulk_assess(Cohort.from_patients(patients, protocol), protocol, as_of, **options)
    for i, patient in enumerate(patients):
        want = compared(assess(patient, protocol, as_of))
        got = compared(result.patient_view(i))
        assert got == want, _difference(patient.id, as_of, want, got)


def _difference(pid: str, as_of: dt.date, want: dict[str, Any], got: dict[str, Any]) -> str:
    lines = [f"patient {pid} as of {as_of}:"]
    for key in want:
        if want[key] != got[key]:
            lines += [f"  {key}", f"    assess: {want[key]}", f"    bulk:   {got[key]}"]
    return "\n".join(lines)


# --- a generator of varied patients (contract dicts) -------------------------------------


def _specs(protocol: Protocol) -> dict[str, AnalyteSpec]:
    return {str(name): spec for name, spec in protocol.analytes.items()}


def _thresholds(protocol: Protocol) -> dict[str, set[float]]:
    """Per analyte, every number a rule compares its results with (in the canonical unit)."""
    specs = _specs(protocol)
    points: dict[str, set[float]] = {a: {s.ref_low, s.ref_high} for a, s in specs.items()}
    for rule in protocol.findings:
        data = rule.model_dump(by_alias=True)
        if "analyte" in data and "value" in data:
            points[data["analyte"]].add(data["value"])
        for spec in [data] + [data.get("first") or {}, data.get("second") or {}]:
            for analyte in spec.get("analytes") or []:
                points[analyte].add(spec["multiple"] * specs[analyte].ref_high)
        for companion in data.get("with") or []:
            if companion.get("min") is not None:
                points[companion["analyte"]].add(companion["min"])
    points["cd4"].add(protocol.prophylaxis.herpes.cd4_threshold)
    return points


def _value_pools(protocol: Protocol) -> dict[str, list[float]]:
    """Values on, just around, half, 1.5 x and + 26.5 of every threshold, within plausibility."""
    pools = {}
    specs = _specs(protocol)
    for analyte, points in _thresholds(protocol).items():
        low, high = specs[analyte].plausible
        values = {v for p in points for v in (p, p - 0.5, p + 0.5, p * 0.5, p * 1.5, p + 26.5, p * 2, p - 0.01)}
        if specs[analyte].unit == "{presence}":
            values = {0, 1, 2, 3}
        pools[analyte] = sorted(round(v, 2) for v in values if low <= v <= high)
    return pools


POOLS = _value_pools(PROTOCOLS["us"])
SPECS = _specs(PROTOCOLS["us"])


def _iso(day: dt.date) -> str:
    return day.isoformat()


def _infusions(rng: random.Random, anchor: dt.date) -> list[dict[str, Any]]:
    """1-4 courses (sometimes none) of 1-6 consecutive days, 2-900 days apart."""
    out: list[dict[str, Any]] = []
    if rng.random() < 0.08:
        return out
    day = anchor + dt.timedelta(days=rng.randint(-30, 30))
    for course in range(rng.choice([1, 1, 2, 2, 3, 4])):
        if course:
            day = day + dt.timedelta(days=rng.choice([2, 3, 40, 300, 364, 365, 366, 370, 500, 900]))
        for n in range(rng.choice([1, 3, 3, 5, 5, 6])):
            reactions = [
                {
                    "type": rng.choice(["rash", "headache", "hives"]),
                    "severity": rng.choice(["mild", "moderate", "severe", "life_threatening"]),
                    "onset_hours": rng.choice([None, 0, 2, 24, 25, 48]),
                }
                for _ in range(rng.choice([0, 0, 0, 1, 2]))
            ]
            out.append(
                {
                    "date": _iso(day + dt.timedelta(days=n)),
                    "premedication": rng.choice([True, True, True, False, None]),
                    "observation_minutes": rng.choice([None, 90, 119, 120, 125.5, 180]),
                    "reactions": reactions,
                }
            )
        day = day + dt.timedelta(days=n)
    return out


def _lab(rng: random.Random, analyte: str, day: dt.date) -> dict[str, Any]:
    value = rng.choice(POOLS[analyte])
    lab: dict[str, Any] = {"test": analyte, "value": value, "unit": SPECS[analyte].unit}
    lab["date"] = _iso(day)
    if analyte == "platelets" and rng.random() < 0.2:
        lab.update(unit="/uL", value=value * 1000)
    if analyte == "creatinine" and rng.random() < 0.2:
        lab.update(unit="mg/dL", value=value / 88.42)
    if rng.random() < 0.15:  # the laboratory's own range
        spec = SPECS[analyte]
        low = rng.choice([spec.ref_low, spec.ref_low * 0.8, spec.ref_low * 1.2, None])
        high = rng.choice([spec.ref_high, spec.ref_high * 0.9, spec.ref_high * 1.3, None])
        lab.update(ref_low=low, ref_high=None if high is not None and low is not None and high < low else high)
    return lab


def _labs(rng: random.Random, anchor: dt.date, infusions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results of every analyte, some at screening, some near monthly due dates, some on the
    same day (ties), some in the infusion week, some after as_of."""
    infusion_days = [dt.date.fromisoformat(i["date"]) for i in infusions] or [anchor]
    labs = []
    for analyte in POOLS:
        for _ in range(rng.choice([0, 1, 2, 3, 4, 6])):
            base = rng.choice(infusion_days)
            offset = rng.choice([-40, -31, -30, -10, -1, 0, 1, 3, 7, 8, 9, 14]) + 30 * rng.randint(0, 30)
            if rng.random() < 0.3:  # exactly on a boundary: the infusion day, the end of its week...
                offset -= 30 * rng.randint(0, 30)
            day = base + dt.timedelta(days=offset + rng.choice([0, 0, rng.randint(-8, 8)]))
            labs.append(_lab(rng, analyte, day))
            if rng.random() < 0.1:
                labs.append(_lab(rng, analyte, day))  # the same day again: list order decides
    if rng.random() < 0.3:  # a CD4+ count on the last infusion day: not yet "after the course"
        labs.append(_lab(rng, "cd4", infusion_days[-1]))
    if labs and rng.random() < 0.3:  # last of all: a creatinine rise and haematuria about 14 days apart
        day = max(dt.date.fromisoformat(lab["date"]) for lab in labs) + dt.timedelta(days=20)
        labs.append({**_lab(rng, "creatinine", day), "unit": "umol/L", "value": rng.choice([150, 400])})
        urine = {**_lab(rng, "urine_blood", day), "value": rng.choice([0, 1, 3])}
        if rng.random() < 0.5:
            urine = {**_lab(rng, "urine_rbc", day), "value": rng.choice([2, 3, 4, 50])}
        urine["date"] = _iso(day + dt.timedelta(days=rng.choice([-15, -14, -13, 0, 13, 14, 15])))
        labs.append(urine)
    rng.shuffle(labs)
    return labs


def random_patient(rng: random.Random, pid: str, anchor: dt.date) -> dict[str, Any]:
    """A contract patient file around `anchor` with something for every rule to read."""
    infusions = _infusions(rng, anchor)
    days = [dt.date.fromisoformat(i["date"]) for i in infusions] or [anchor]

    def near(spread: int) -> str:
        return _iso(rng.choice(days) + dt.timedelta(days=rng.randint(-spread, spread)))

    screening: dict[str, Any] = {flag: rng.random() < 0.1 for flag in SCREENING_FLAGS}
    screening["hiv"] = rng.choice(["negative", "negative", "positive", "unknown"])
    screening["tuberculosis"] = rng.choice(["negative", "negative", "positive", "unknown"])
    prophylaxis = []
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        start = dt.date.fromisoformat(near(5))
        stop = rng.choice([None, start + dt.timedelta(days=rng.choice([0, 20, 59, 60, 61, 62, 200]))])
        prophylaxis.append({"kind": "herpes", "drug": "aciclovir", "start": _iso(start), "stop": stop and _iso(stop)})
    planned = rng.choice([None, near(400), _iso(days[-1] + dt.timedelta(days=rng.choice([364, 365, 366, 400])))])
    labs = _labs(rng, anchor, infusions)
    vaccinations = [
        {"vaccine": "v", "live": rng.random() < 0.5, "date": near(120)} for _ in range(rng.choice([0, 0, 1, 2]))
    ]
    if planned is not None:
        _prepare_course(rng, dt.date.fromisoformat(planned), screening, labs, vaccinations)
    lab_days = [dt.date.fromisoformat(lab["date"]) for lab in labs if lab["test"] == "platelets"] or days
    symptoms = [{"date": near(40), "text": rng.choice(TEXTS)} for _ in range(rng.choice([0, 0, 1, 2, 4]))]
    for _ in range(rng.choice([0, 0, 1, 2])):  # near a result: bleeding can raise a low count to emergency
        day = rng.choice(lab_days) + dt.timedelta(days=rng.randint(-16, 6))
        symptoms.append({"date": _iso(day), "text": rng.choice(BLEEDING if rng.random() < 0.5 else TEXTS)})
    return {
        "id": pid,
        "sex": rng.choice(["female", "female", "male", "other", "unknown"]),
        "screening": screening,
        "planned_course_start": planned,
        "infusions": infusions,
        "labs": labs,
        "exams": [{"type": rng.choice(EXAM_TYPES), "date": near(800)} for _ in range(rng.randint(0, 5))],
        "vaccinations": vaccinations,
        "prophylaxis": prophylaxis,
        "symptoms": symptoms,
    }


def _prepare_course(
    rng: random.Random,
    start: dt.date,
    screening: dict[str, Any],
    labs: list[dict[str, Any]],
    vaccinations: list[dict[str, Any]],
) -> None:
    """Often a complete work-up before the planned course (so that some patients are
    eligible), and vaccines in the weeks before it."""
    if rng.random() < 0.6:
        for test in PROTOCOLS["us"].baseline.tests:
            day = start - dt.timedelta(days=rng.choice([0, 1, 10, 29, 30, 30, 30, 31]))
            labs.append(_lab(rng, rng.choice(test.any_of), day))
        screening.update(hiv="negative", tuberculosis=rng.choice(["negative"] * 5 + ["positive"]))
        for flag in SCREENING_FLAGS:
            screening[flag] = rng.random() < 0.03
    for _ in range(rng.choice([0, 1, 1, 2])):
        day = start - dt.timedelta(days=rng.choice([-3, 0, 1, 20, 41, 42, 43, 90]))
        vaccinations.append({"vaccine": "w", "live": rng.random() < 0.5, "date": _iso(day)})


def random_as_of(rng: random.Random, patient: dict[str, Any], anchor: dt.date) -> dt.date:
    """Before, inside or after the courses; sometimes on the eve of the planned course."""
    if patient["planned_course_start"] and rng.random() < 0.3:
        return dt.date.fromisoformat(patient["planned_course_start"]) - dt.timedelta(days=rng.choice([-3, 0, 2]))
    if patient["labs"] and rng.random() < 0.2:  # every result visible
        last = max(dt.date.fromisoformat(lab["date"]) for lab in patient["labs"])
        return last + dt.timedelta(days=rng.choice([0, 1, 20]))
    days = [dt.date.fromisoformat(i["date"]) for i in patient["infusions"]] or [anchor]
    return rng.choice(days) + dt.timedelta(days=rng.choice([-40, -1, 0, 1, 2, 5, 8, 30, 61, 200, 400, 1500]))


# --- (a) hypothesis ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rng=st.randoms(use_true_random=False),
    size=st.integers(1, 5),
    jurisdiction=st.sampled_from(["us", "eu"]),
    anchor=st.dates(min_value=dt.date(2012, 1, 1), max_value=dt.date(2026, 12, 31)),
)
def test_bulk_equals_assess_on_generated_cohorts(
    rng: random.Random, size: int, jurisdiction: str, anchor: dt.date
) -> None:
    protocol = PROTOCOLS[jurisdiction]
    files = [random_patient(rng, f"p{n}", anchor) for n in range(size)]
    patients = [parse_patient(f, protocol) for f in files]
    assert_equal(patients, protocol, random_as_of(rng, files[0], anchor))


# --- (b) golden cases ----------------------------------------------------------------------


def test_bulk_equals_assess_on_every_golden_case() -> None:
    """Grouped by (jurisdiction, as_of): one cohort per group."""
    groups: dict[tuple[str, str], list[Patient]] = {}
    for path in sorted((CASES / "assess").glob("*.json")):
        case = json.loads(path.read_text())
        jurisdiction = case.get("jurisdiction") or "us"
        patient = parse_patient(case["patient"], PROTOCOLS[jurisdiction])
        groups.setdefault((jurisdiction, case["as_of"]), []).append(patient)
    assert sum(len(g) for g in groups.values()) >= 100
    for (jurisdiction, as_of), patients in groups.items():
        assert_equal(patients, PROTOCOLS[jurisdiction], dt.date.fromisoformat(as_of))


# --- chunks, row order, empty cohorts -----------------------------------------------------


def _cohort(seed: int, size: int, protocol: Protocol) -> tuple[list[Patient], dt.date]:
    rng = random.Random(seed)
    anchor = dt.date(2021, 3, 1)
    patients = [parse_patient(random_patient(rng, f"s{seed}-{n}", anchor), protocol) for n in range(size)]
    return patients, anchor + dt.timedelta(days=rng.randint(0, 900))


def _interleave(cohort: Cohort, seed: int) -> Cohort:
    """The same cohort with each event table's rows out of patient order (each patient's own
    rows keep their order: the engine breaks same-day ties by list order)."""
    rng = np.random.default_rng(seed)
    values = dict(cohort.__dict__)
    for columns in TABLES.values():
        patient = values[columns[0]]
        shuffled = rng.permutation(cohort.size)[patient] if len(patient) else patient
        order = order_rows([shuffled])
        for name in columns:
            values[name] = values[name][order]
    return Cohort(**values)


@pytest.mark.parametrize("jurisdiction", ["us", "eu"])
def test_small_chunks_and_rows_out_of_patient_order_change_nothing(jurisdiction: str) -> None:
    protocol = PROTOCOLS[jurisdiction]
    patients, as_of = _cohort(7, 150, protocol)
    cohort = Cohort.from_patients(patients, protocol)
    whole = bulk_assess(cohort, protocol, as_of)
    chunked = bulk_assess(_interleave(cohort, 3), protocol, as_of, chunk_size=16)
    for i, patient in enumerate(patients):
        want = compared(assess(patient, protocol, as_of))
        assert compared(whole.patient_view(i)) == want
        assert compared(chunked.patient_view(i)) == want
        assert chunked.next_change[i] == whole.next_change[i]


def test_concat_and_empty_cohorts() -> None:
    protocol = PROTOCOLS["us"]
    patients, as_of = _cohort(11, 6, protocol)
    parts = [Cohort.from_patients(patients[:2], protocol), Cohort.empty(protocol)]
    parts.append(Cohort.from_patients(patients[2:], protocol))
    joined = Cohort.concat(parts)
    assert joined.patient_ids == [p.id for p in patients]
    result = bulk_assess(joined, protocol, as_of)
    for i, patient in enumerate(patients):
        assert compared(result.patient_view(i)) == compared(assess(patient, protocol, as_of))
    empty = bulk_assess(Cohort.empty(protocol), protocol, as_of)
    assert len(empty.task_patient) == 0 and len(empty.next_change) == 0


def test_inconsistent_columns_are_rejected_and_sql_dtypes_coerced() -> None:
    protocol = PROTOCOLS["us"]
    patients, as_of = _cohort(5, 3, protocol)
    cohort = Cohort.from_patients(patients, protocol)
    wide = dict(cohort.__dict__)
    for name in ("lab_patient", "lab_analyte", "vac_live", "inf_premed"):
        wide[name] = wide[name].astype(np.int64)  # as a SQL driver returns them
    with pytest.raises(ValueError, match="dtype"):
        bulk_assess(Cohort(**wide), protocol, as_of)
    coerced = bulk_assess(Cohort(**wide).coerced(), protocol, as_of)
    for i, patient in enumerate(patients):
        assert compared(coerced.patient_view(i)) == compared(assess(patient, protocol, as_of))
    cohort.lab_patient = cohort.lab_patient.copy()
    cohort.lab_patient[0] = 3
    with pytest.raises(ValueError, match="lab_patient"):
        bulk_assess(cohort, protocol, as_of)


# --- the triage shortcut ---------------------------------------------------------------


def test_triage_reads_days_only_through_the_breaks() -> None:
    """The bulk path triages a text once per class of days between two breaks; every day of
    a class must give the same suspected conditions (sampled over the corpus)."""
    protocol = PROTOCOLS["us"]
    engine = triage_engine(protocol)
    breaks = [int(b) for b in day_breaks(protocol)]
    assert breaks and all(b >= 0 for b in breaks)
    edges = sorted({0, *breaks, *(b - 1 for b in breaks if b > 0), breaks[-1] + 40})
    rng = random.Random(1)
    for text in rng.sample(TEXTS, 60):
        results = {d: engine.triage(text, d).suspected for d in edges}
        for d in edges:
            representative = max((b for b in [0, *breaks] if b <= d), default=0)
            assert results[d] == engine.triage(text, representative).suspected, (text, d)


# --- (c) next_change is never late --------------------------------------------------------

HORIZON_CHECKED = 40  # days checked after as_of when next_change is never
LONGEST_CHECKED = 150  # days checked at most before a far next_change


@pytest.mark.parametrize(("jurisdiction", "offset"), [("us", -45), ("us", 20), ("eu", 200), ("us", 900), ("eu", 2200)])
def test_next_change_is_never_late(jurisdiction: str, offset: int) -> None:
    """Every day from as_of to next_change - 1, assess gives the same fields (next_change
    may be early, never late)."""
    protocol = PROTOCOLS[jurisdiction]
    rng = random.Random(offset)
    anchor = dt.date(2021, 3, 1)
    patients = [parse_patient(random_patient(rng, f"n{n}", anchor), protocol) for n in range(14)]
    as_of = anchor + dt.timedelta(days=offset)
    result = bulk_assess(Cohort.from_patients(patients, protocol), protocol, as_of)
    reach = []
    for i, patient in enumerate(patients):
        today = compared(assess(patient, protocol, as_of))
        change = int(result.next_change[i])
        assert change == 0 or change > as_of.toordinal()
        last = (
            as_of.toordinal() + HORIZON_CHECKED if change == 0 else min(change - 1, as_of.toordinal() + LONGEST_CHECKED)
        )
        reach.append(last - as_of.toordinal())
        for day in range(as_of.toordinal() + 1, last + 1):
            later = dt.date.fromordinal(day)
            assert compared(assess(patient, protocol, later)) == today, f"{patient.id} changed on {later}"
    assert max(reach) > 5, "next_change should not be tomorrow for everyone"
