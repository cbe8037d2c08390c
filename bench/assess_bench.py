"""Benchmark of `assess` and the `alemwatch` command line on a realistic patient file.

What it measures, all in this one run:

- `assess(patient, protocol, as_of)` on an already-parsed patient: p50, p99, mean per call;
- `parse_patient` followed by `assess` (the work behind one request): p50, p99, mean;
- CLI start-up: `alemwatch --help` as a subprocess, median and best wall time;
- the full CLI: `alemwatch assess FILE --json`, median wall time.

The patient is built in code with a fixed random seed: a woman with two courses (five days
in January 2022, three in January 2023), herpes prophylaxis, screening, four years of
monthly labs after the first course (some in other units), yearly skin and HPV exams and a
few symptom reports. Figures are printed with their ratio to the targets (assess p50 2 ms,
`--help` 300 ms); a ratio below 1 means the target is met. It always exits 0 unless an
exception happens: benchmarks report, they do not fail builds.

Run from the repository root:

    .venv/bin/python bench/assess_bench.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alemwatch.core.assess import assess
from alemwatch.core.patient import parse_patient
from alemwatch.protocol.load import load_protocol

SEED = 20220110
AS_OF = dt.date(2026, 3, 1)
FIRST_COURSE = [dt.date(2022, 1, 10) + dt.timedelta(days=n) for n in range(5)]
SECOND_COURSE = [dt.date(2023, 1, 16) + dt.timedelta(days=n) for n in range(3)]
MONTHS_OF_LABS = 48

ASSESS_TARGET_MS = 2.0
HELP_TARGET_MS = 300.0
WARMUP_CALLS = 50
TIMED_CALLS = 2000
HELP_RUNS = 10
CLI_ASSESS_RUNS = 5

REPO = Path(__file__).resolve().parent.parent
ALEMWATCH = REPO / ".venv" / "bin" / "alemwatch"

# analyte -> (unit, typical value, spread); a few go out in another unit (see _lab).
MONTHLY = {
    "platelets": ("10*9/L", 240.0, 40.0),
    "hemoglobin": ("g/L", 135.0, 8.0),
    "wbc": ("10*9/L", 5.5, 1.0),
    "lymphocytes": ("10*9/L", 1.2, 0.3),
    "neutrophils": ("10*9/L", 3.2, 0.6),
    "creatinine": ("umol/L", 70.0, 8.0),
    "urine_blood": ("{presence}", 0, 0),
    "urine_rbc": ("/[HPF]", 1.0, 1.0),
    "upcr": ("mg/mmol", 8.0, 3.0),
}
QUARTERLY = {
    "tsh": ("m[IU]/L", 1.8, 0.6),
    "free_t4": ("pmol/L", 16.0, 2.0),
    "alt": ("U/L", 22.0, 6.0),
    "ast": ("U/L", 24.0, 5.0),
    "bilirubin": ("umol/L", 9.0, 3.0),
}
SYMPTOMS = [
    ("2022-01-12", "itchy rash on my chest after yesterday's drip"),
    ("2022-06-03", "tired all the time and a bit of a headache"),
    ("2023-01-20", "cold sore on my lip"),
    ("2024-05-14", "feeling shaky, heart racing and losing weight"),
]


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day of the month `months` later (clamped to the 28th to stay valid)."""
    month = day.month - 1 + months
    return dt.date(day.year + month // 12, month % 12 + 1, min(day.day, 28))


def _lab(rng: random.Random, test: str, spec: tuple[str, float, float], day: dt.date) -> dict:
    unit, mean, spread = spec
    value: float = max(0.0, rng.gauss(mean, spread)) if spread else mean
    if test == "creatinine" and rng.random() < 0.3:
        unit, value = "mg/dL", value / 88.42
    elif test == "platelets" and rng.random() < 0.3:
        unit = "10*3/uL"
    counted = unit == "{presence}" or test == "urine_rbc"
    return {
        "test": test,
        "value": int(round(value)) if counted else round(value, 2),
        "unit": unit,
        "date": day.isoformat(),
    }


def lab_visits(rng: random.Random) -> list[tuple[int, dt.date]]:
    """(month since the first course, date) of each monthly visit, on the clinic's schedule.

    Visits follow the monitoring schedule of the latest course (12 months after course 1,
    then 36 after course 2: four years in all), a few days late at most.
    """
    visits = []
    for month in range(1, MONTHS_OF_LABS + 1):
        anchor, offset = (FIRST_COURSE[-1], month) if month <= 12 else (SECOND_COURSE[-1], month - 12)
        visits.append((month, add_months(anchor, offset) + dt.timedelta(days=rng.randint(-2, 4))))
    return visits


def build_labs(rng: random.Random) -> list[dict]:
    """Screening labs before each course, then four years of monthly results.

    Quarterly thyroid and liver tests; CD4 at screening and quarterly in the first year.
    """
    labs = []
    for course in (FIRST_COURSE, SECOND_COURSE):
        screening_day = course[0] - dt.timedelta(days=21)
        labs += [_lab(rng, test, spec, screening_day) for test, spec in {**MONTHLY, **QUARTERLY}.items()]
    labs.append(_lab(rng, "cd4", ("/uL", 850.0, 120.0), FIRST_COURSE[0] - dt.timedelta(days=21)))
    for month, day in lab_visits(rng):
        labs += [_lab(rng, test, spec, day) for test, spec in MONTHLY.items()]
        if month % 3 == 0:
            labs += [_lab(rng, test, spec, day) for test, spec in QUARTERLY.items()]
            if month <= 12:
                labs.append(_lab(rng, "cd4", ("/uL", 250.0 + 30 * month, 60.0), day))
    return labs


def yearly_exams() -> list[dict]:
    """Skin and HPV exams a week either side of each yearly due date."""
    due_dates = [add_months(FIRST_COURSE[-1], 12)]
    due_dates += [add_months(SECOND_COURSE[-1], 12 * year) for year in (1, 2, 3)]
    exams = []
    for due in due_dates:
        exams.append({"type": "skin", "date": (due - dt.timedelta(days=7)).isoformat()})
        exams.append({"type": "hpv_screening", "date": (due + dt.timedelta(days=7)).isoformat()})
    return exams


def build_patient() -> dict[str, Any]:
    """The patient file (a JSON-ready dict) as the contract describes it."""
    rng = random.Random(SEED)
    infusions = [
        {
            "date": day.isoformat(),
            "premedication": True,
            "observation_minutes": 125,
            "reactions": [],
        }
        for day in FIRST_COURSE + SECOND_COURSE
    ]
    infusions[1]["reactions"] = [{"type": "rash", "severity": "mild", "onset_hours": 1}]
    return {
        "id": "bench-001",
        "birth_date": "1988-07-19",
        "sex": "female",
        "screening": {
            "hiv": "negative",
            "active_infection": False,
            "alemtuzumab_hypersensitivity": False,
            "tuberculosis": "negative",
        },
        "vaccinations": [{"vaccine": "varicella", "live": True, "date": "2021-09-01"}],
        "infusions": infusions,
        "labs": build_labs(rng),
        "exams": yearly_exams(),
        "prophylaxis": [
            {"kind": "herpes", "drug": "aciclovir", "start": "2022-01-10", "stop": "2022-03-14"},
            {"kind": "herpes", "drug": "aciclovir", "start": "2023-01-16", "stop": "2023-03-20"},
        ],
        "symptoms": [{"date": day, "text": text} for day, text in SYMPTOMS],
    }


def time_calls(fn: Callable[[], object], calls: int, warmup: int) -> list[float]:
    """Per-call times in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def percentile(times: list[float], pct: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def time_command(args: list[str], runs: int) -> list[float]:
    """Wall times in milliseconds of `runs` runs of a subprocess (which must succeed)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        subprocess.run(args, check=True, capture_output=True, cwd=REPO)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def summarise(times: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(times, 50),
        "p99": percentile(times, 99),
        "mean": statistics.fmean(times),
        "median": statistics.median(times),
        "best": min(times),
    }


def print_report(patient: dict[str, Any], in_process: dict[str, dict], cli: dict[str, dict]) -> None:
    print("alemwatch assess benchmark")
    print(f"  python {platform.python_version()} ({platform.python_implementation()})")
    print(f"  cpus {os.cpu_count()}  platform {platform.platform()}")
    print(
        f"  patient: {len(patient['labs'])} lab results, {len(patient['infusions'])} infusions, "
        f"{len(patient['exams'])} exams, {len(patient['symptoms'])} symptom reports; "
        f"as of {AS_OF.isoformat()}"
    )
    print()
    print(f"  {'measure':<32}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}  calls")
    for name, s in in_process.items():
        print(f"  {name:<32}{s['p50']:>9.3f}{s['p99']:>9.3f}{s['mean']:>9.3f}  {TIMED_CALLS}")
    print(f"  {'measure':<32}{'median ms':>9}{'best ms':>9}{'':>9}  runs")
    for name, s in cli.items():
        print(f"  {name:<32}{s['median']:>9.1f}{s['best']:>9.1f}{'':>9}  {s['runs']:.0f}")
    print()
    p50 = in_process["assess (parsed patient)"]["p50"]
    help_ms = cli["alemwatch --help"]["median"]
    print(f"  assess p50 {p50:.3f} ms = {p50 / ASSESS_TARGET_MS:.2f} x target ({ASSESS_TARGET_MS:g} ms)")
    print(f"  --help median {help_ms:.1f} ms = {help_ms / HELP_TARGET_MS:.2f} x target ({HELP_TARGET_MS:g} ms)")
    print("  (a ratio below 1 means the target is met)")


def main() -> int:
    protocol = load_protocol("us")
    patient = build_patient()
    parsed = parse_patient(patient, protocol)
    in_process = {
        "assess (parsed patient)": summarise(
            time_calls(lambda: assess(parsed, protocol, AS_OF), TIMED_CALLS, WARMUP_CALLS)
        ),
        "parse_patient + assess": summarise(
            time_calls(
                lambda: assess(parse_patient(patient, protocol), protocol, AS_OF),
                TIMED_CALLS,
                WARMUP_CALLS,
            )
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "patient.json"
        path.write_text(json.dumps(patient), encoding="utf-8")
        assess_args = [str(ALEMWATCH), "assess", str(path), "--as-of", AS_OF.isoformat(), "--json"]
        cli = {
            "alemwatch --help": summarise(time_command([str(ALEMWATCH), "--help"], HELP_RUNS)),
            "alemwatch assess FILE --json": summarise(time_command(assess_args, CLI_ASSESS_RUNS)),
        }
    cli["alemwatch --help"]["runs"] = HELP_RUNS
    cli["alemwatch assess FILE --json"]["runs"] = CLI_ASSESS_RUNS
    print_report(patient, in_process, cli)
    return 0


if __name__ == "__main__":
    sys.exit(main())
