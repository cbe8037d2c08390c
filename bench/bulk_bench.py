"""Benchmark of `bulk_assess` on synthetic registries of 10,000 and 100,000 patients.

The cohorts are generated directly as column arrays (as the registry fills a `Cohort` from
SQL), with a fixed seed: 1-2 courses per patient (5 then 3 days, 12-14 months apart) from
2015 to 2024, herpes prophylaxis per course, ~128 lab results per patient on average
(monthly visits of 9 analytes, quarterly thyroid and liver tests, CD4 in the first year,
some out of range, some with their own reference range), yearly skin and HPV exams, a few
vaccinations, infusion reactions, planned next courses, and symptom reports drawn from 20
texts. Everything is assessed at one date, on one core (thread pools pinned to 1 before
numpy is imported).

For each size it prints the wall and CPU time (user + system) of `bulk_assess`, patients
per second and the ratio to the target (25,000 patients/s on one core: a ratio >= 1 meets
it; on a shared machine the CPU figure is the steadier one), the peak resident memory
during the call (the cohort included; Linux high-water mark, reset before each call), the
rows produced, and `ru_maxrss`, the peak of the whole process. The first
100k run starts with an empty triage cache (each unique (text, day class) is triaged once,
inside the timing); the repeat runs show the steady state of a long-lived registry
process. It always exits 0 unless an exception happens.

Run from the repository root:

    .venv/bin/python bench/bulk_bench.py
"""

from __future__ import annotations

import os

for _name in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import datetime as dt  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from alemwatch.core.bulk import BulkAssessment, bulk_assess  # noqa: E402
from alemwatch.core.columnar import SCREENING_FIELDS, Cohort, screening_values  # noqa: E402
from alemwatch.core.findings import triage_engine  # noqa: E402
from alemwatch.protocol.load import load_protocol  # noqa: E402
from alemwatch.protocol.model import Protocol  # noqa: E402

SEED = 20260301
AS_OF = dt.date(2026, 3, 1)
TARGET = 25_000  # patients per second on one core
SIZES = (10_000, 100_000)
REPEATS = 2

# analyte -> (typical value, spread) in the canonical unit
MONTHLY = {
    "platelets": (240.0, 60.0),
    "hemoglobin": (135.0, 12.0),
    "wbc": (5.5, 1.5),
    "lymphocytes": (1.2, 0.4),
    "neutrophils": (3.2, 1.0),
    "creatinine": (70.0, 12.0),
    "urine_blood": (0.1, 0.4),
    "urine_rbc": (1.0, 1.5),
    "upcr": (8.0, 4.0),
}
QUARTERLY = {
    "tsh": (1.8, 0.9),
    "free_t4": (16.0, 3.0),
    "alt": (24.0, 15.0),
    "ast": (24.0, 10.0),
    "bilirubin": (9.0, 4.0),
}
TEXTS = [
    "tired all the time and a bit of a headache",
    "itchy rash on my chest after yesterday's drip",
    "cold sore on my lip",
    "feeling shaky, heart racing and losing weight",
    "bruises on my legs I can't explain",
    "nosebleed that won't stop",
    "fever 38.5 and a stiff neck",
    "sore throat and runny nose",
    "my pee is dark like tea",
    "swollen glands in my neck and night sweats",
    "a mole on my back has changed colour",
    "burning when I pee",
    "headache",
    "feeling sick after the infusion",
    "joint pain in my knees",
    "pins and needles in my feet",
    "chest feels tight and I'm wheezing",
    "no fever, just tired",
    "my gums bleed when I brush",
    "sudden worst headache of my life",
]

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]


def ordinal(day: dt.date) -> int:
    return day.toordinal()


def _spread(counts: npt.NDArray[np.int64]) -> tuple[I32, npt.NDArray[np.int64]]:
    """Owner index and rank of each element for segments of the given lengths."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(len(owner), dtype=np.int64) - starts[owner]


def _months_later(days: npt.NDArray[np.int64], months: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Roughly `months` calendar months later (30.44 days a month is close enough for visits)."""
    return days + np.round(months * 30.44).astype(np.int64)


def make_cohort(size: int, protocol: Protocol, seed: int = SEED) -> Cohort:
    """A synthetic registry of `size` patients (see the module docstring)."""
    rng = np.random.default_rng(seed)
    analytes = [str(name) for name in protocol.analytes]
    first = rng.integers(ordinal(dt.date(2015, 1, 1)), ordinal(dt.date(2024, 6, 1)), size)
    two = rng.random(size) < 0.4
    second = np.where(two, first + 4 + rng.integers(365, 430, size), 0)
    # Infusions: 5 days, then 3 days for patients with a second course.
    inf_patient = np.concatenate([np.repeat(np.arange(size), 5), np.repeat(np.flatnonzero(two), 3)])
    inf_date = np.concatenate([np.repeat(first, 5) + np.tile(np.arange(5), size), np.repeat(second[two], 3)])
    inf_date[5 * size :] += np.tile(np.arange(3), int(two.sum()))
    order = np.lexsort((inf_date, inf_patient))
    inf_patient, inf_date = inf_patient[order], inf_date[order]
    n_inf = len(inf_date)
    reacted = np.flatnonzero(rng.random(n_inf) < 0.2)
    last_end = np.where(two, second + 2, first + 4)
    lab_patient, lab_analyte, lab_date, lab_value, lab_low, lab_high = _labs(rng, size, first, last_end, analytes)
    exam_patient, exam_kind, exam_date = _exams(rng, size, first, protocol)
    symptom_count = np.where(rng.random(size) < 0.3, rng.integers(1, 4, size), 0)
    sym_patient, _ = _spread(symptom_count)
    planned = np.where(rng.random(size) < 0.2, last_end + rng.integers(300, 500, size), 0)
    vac_patient = np.flatnonzero(rng.random(size) < 0.1).astype(np.int32)
    course_start = np.r_[True, (np.diff(inf_date) > 1) | (inf_patient[1:] != inf_patient[:-1])]
    pro_patient, pro_start = inf_patient[course_start], inf_date[course_start] + (rng.random(course_start.sum()) < 0.05)
    # Mostly negative or no: yes/no fields true for 3%; HIV/TB status unknown for 3%.
    screening = {
        name: (rng.random(size) < 0.03).astype(np.int8) * (1 if screening_values(name)[0] is False else 2)
        for name in SCREENING_FIELDS
    }
    return Cohort(
        patient_ids=[f"P{n:07d}" for n in range(size)],
        sex=np.where(rng.random(size) < 0.65, 1, 2).astype(np.int8),
        planned_start=planned.astype(np.int32),
        screening=screening,
        lab_patient=lab_patient,
        lab_analyte=lab_analyte,
        lab_date=lab_date,
        lab_value=lab_value,
        lab_ref_low=lab_low,
        lab_ref_high=lab_high,
        inf_patient=inf_patient.astype(np.int32),
        inf_date=inf_date.astype(np.int32),
        inf_premed=np.where(rng.random(n_inf) < 0.97, 1, 0).astype(np.int8),
        inf_observation=np.where(rng.random(n_inf) < 0.95, 125.0, 90.0),
        rx_patient=inf_patient[reacted].astype(np.int32),
        rx_date=inf_date[reacted].astype(np.int32),
        rx_severity=rng.choice(4, len(reacted), p=[0.7, 0.2, 0.08, 0.02]).astype(np.int8),
        rx_onset_hours=np.where(rng.random(len(reacted)) < 0.3, 30.0, 1.0),
        exam_patient=exam_patient,
        exam_kind=exam_kind,
        exam_date=exam_date,
        vac_patient=vac_patient,
        vac_date=(first[vac_patient] + rng.integers(-200, 600, len(vac_patient))).astype(np.int32),
        vac_live=rng.random(len(vac_patient)) < 0.3,
        pro_patient=pro_patient.astype(np.int32),
        pro_start=pro_start.astype(np.int32),
        pro_stop=(pro_start + rng.integers(50, 100, len(pro_start))).astype(np.int32),
        sym_patient=sym_patient,
        sym_date=(first[sym_patient] + rng.integers(0, 900, len(sym_patient))).astype(np.int32),
        sym_text=rng.integers(0, len(TEXTS), len(sym_patient)).astype(np.int32),
        texts=list(TEXTS),
    )


def _labs(
    rng: np.random.Generator,
    size: int,
    first: npt.NDArray[np.int64],
    last_end: npt.NDArray[np.int64],
    analytes: list[str],
) -> tuple[I32, npt.NDArray[np.int16], I32, F64, F64, F64]:
    """Screening labs, then monthly visits (9 analytes) with quarterly extras (5 analytes),
    in visit order per patient (the order a registry query by patient and date returns)."""
    visits = rng.integers(6, 19, size)
    visit_patient, visit_rank = _spread(visits)
    second_course = (visit_rank >= 12) & (last_end[visit_patient] > first[visit_patient] + 4)
    anchor = np.where(second_course, last_end[visit_patient], first[visit_patient] + 4)
    visit_day = _months_later(anchor, np.where(second_course, visit_rank - 11, visit_rank + 1))
    visit_day += rng.integers(-3, 5, len(visit_rank))
    visit_day[visit_rank == 0] = first[visit_patient[visit_rank == 0]] - 21  # screening
    quarterly = visit_rank % 3 == 0
    codes = [analytes.index(a) for a in MONTHLY]
    extra = [analytes.index(a) for a in QUARTERLY]
    per_visit = np.where(quarterly, len(codes) + len(extra), len(codes))
    row_visit, row_rank = _spread(per_visit)
    analyte = np.asarray(codes + extra, dtype=np.int16)[row_rank]
    mean = np.asarray([MONTHLY.get(a, QUARTERLY.get(a, (0.0, 0.0)))[0] for a in analytes])
    spread = np.asarray([MONTHLY.get(a, QUARTERLY.get(a, (0.0, 0.0)))[1] for a in analytes])
    value = np.abs(rng.normal(mean[analyte], spread[analyte]))
    presence = np.isin(analyte, [analytes.index("urine_blood")])
    value[presence] = np.clip(np.round(value[presence]), 0, 3)
    n = len(value)
    own = rng.random(n) < 0.05
    return (
        visit_patient[row_visit].astype(np.int32),
        analyte,
        visit_day[row_visit].astype(np.int32),
        value,
        np.where(own, mean[analyte] * 0.6, np.nan),
        np.where(own, mean[analyte] * 1.6, np.nan),
    )


def _exams(
    rng: np.random.Generator, size: int, first: npt.NDArray[np.int64], protocol: Protocol
) -> tuple[I32, npt.NDArray[np.int16], I32]:
    """Up to 4 yearly skin examinations and, for some, HPV screening on the same day."""
    kinds = list(protocol.exam_types)
    years = rng.integers(0, 5, size)
    patient, rank = _spread(years)
    day = _months_later(first[patient] + 4, 12 * (rank + 1)) + rng.integers(-20, 20, len(rank))
    hpv = rng.random(len(rank)) < 0.5
    kind = np.concatenate([np.full(len(rank), kinds.index("skin")), np.full(int(hpv.sum()), kinds.index("hpv"))])
    return (
        np.concatenate([patient, patient[hpv]]).astype(np.int32),
        kind.astype(np.int16),
        np.concatenate([day, day[hpv]]).astype(np.int32),
    )


def peak_mib() -> float:
    """The process's peak resident memory (ru_maxrss is in kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset the kernel's high-water mark of resident memory (Linux), so that `high_water`
    measures one call; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def high_water() -> float:
    """VmHWM: the peak resident memory since the last reset, MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rows(result: BulkAssessment) -> str:
    return (
        f"{len(result.task_patient):,} tasks, {len(result.finding_patient):,} findings, "
        f"{len(result.dev_patient):,} deviations, {len(result.reason_patient):,} reasons"
    )


def nbytes(values: object) -> float:
    total = 0
    for value in vars(values).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, dict):
            total += sum(v.nbytes for v in value.values() if isinstance(v, np.ndarray))
    return total / 2**20


def run(size: int, protocol: Protocol) -> None:
    started = time.perf_counter()
    cohort = make_cohort(size, protocol)
    made = time.perf_counter() - started
    print(
        f"\n  {size:,} patients: {len(cohort.lab_date):,} lab results ({len(cohort.lab_date) / size:.0f} per patient), "
        f"{len(cohort.inf_date):,} infusions, {len(cohort.sym_date):,} symptom reports; "
        f"cohort {nbytes(cohort):.0f} MiB, generated in {made:.1f} s"
    )
    triage_engine(protocol)._cache.clear()  # the first run triages every unique text (a cold cache)
    result = None
    for attempt in range(1 + REPEATS):
        del result
        gc.collect()
        measured = reset_peak()
        cpu, started = cpu_seconds(), time.perf_counter()
        result = bulk_assess(cohort, protocol, AS_OF)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        label = "cold triage cache" if attempt == 0 else f"repeat {attempt}"
        peak = f"peak RSS in the call {high_water():,.0f} MiB" if measured else ""
        print(
            f"    {label:<18} wall {wall:5.2f} s = {size / wall:>7,.0f} patients/s"
            f" ({size / wall / TARGET:.2f} x target);"
            f"  cpu {cpu:5.2f} s = {size / cpu:>7,.0f}/s ({size / cpu / TARGET:.2f} x);  {peak}"
        )
    assert result is not None
    print(f"    output: {rows(result)}; {nbytes(result):.0f} MiB")
    print(f"    ru_maxrss so far {peak_mib():,.0f} MiB (the whole process: generation, cohort, outputs)")


def main() -> int:
    protocol = load_protocol("us")
    print("alemwatch bulk_assess benchmark")
    print(f"  python {platform.python_version()}, numpy {np.__version__}, {platform.platform()}")
    print(f"  as of {AS_OF.isoformat()}, one core; target {TARGET:,} patients/s (a ratio >= 1 meets it)")
    for size in SIZES:
        run(size, protocol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
