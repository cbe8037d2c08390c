"""Benchmark of the registry end to end, on SQLite and on PostgreSQL, against the issue's targets.

What it measures, all in this one run, per backend:

- import: `import_file` of an NDJSON file of 1,000 demo patients (`build_cohort(1000, SEED)`)
  into a fresh database -> lab results per second (target >= 10,000/s on PostgreSQL);
- the registry: the base cohort (the imported patients, then the rest of `--base` stored with
  `save_patient_file` in transactions of 200), then the initial `sweep(url, protocol, AS_OF)`,
  which assesses everyone one by one (the write path never packs charts): reported as
  "initial assessment (one by one)";
- growth: the base copied DB-side with INSERT ... SELECT into every patient table (patient id
  + '~r<n>', every other column kept) up to each size of `--sizes`;
- at each size, in a separate pinned subprocess (one core, thread pools at 1; so its peak RSS
  is that run's alone): the full re-assessment `sweep(..., full=True)` -> patients/s (target
  >= 25,000/s per core) and peak memory (target < 2 GiB at 100k), with the time spent in each
  phase of the sweep; and `build_worklist(session, AS_OF, 200)`, p50/p99 over 50 calls;
- at the largest size, also in a pinned subprocess: the daily incremental sweep
  `sweep(url, protocol, AS_OF + 1 day)` -> seconds (target < 2 s). It is stopped after
  `--incremental-timeout` seconds; the report then says how far it got and what the rest
  would take at the rate measured.

Each sweep row gives the SweepReport counts: selected, bulk-assessed, and rewritten (one by one).
Ratios: for time targets measured/target (below 1 = met); for throughput measured/target (1 or
more = met). Temporary databases (a temp dir, fresh PostgreSQL schemas) are dropped at the end.
The PostgreSQL server is 127.0.0.1:5432, user postgres, database test (or ALEMWATCH_TEST_PG_URL).

Run from the repository root:

    .venv/bin/python bench/registry_bench.py                # sizes 10,000 and 100,000
    .venv/bin/python bench/registry_bench.py --quick        # sizes 1,000 and 10,000
    .venv/bin/python bench/registry_bench.py --base 1000 --backends postgresql

`--base` (default: the smallest size) is how many patients are stored and assessed one by one
before copying; the one-by-one paths cost 0.1-0.2 s per patient, so a base of 10,000 takes
about an hour per backend. It always exits 0 unless an exception happens.
"""

from __future__ import annotations

import os

THREAD_VARS = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_VARS:
    os.environ[_name] = "1"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.schema import CreateIndex, DropIndex  # noqa: E402

from alemwatch.demo import build_cohort  # noqa: E402
from alemwatch.protocol.load import load_protocol  # noqa: E402
from alemwatch.registry.importer import import_file  # noqa: E402
from alemwatch.registry.worklist import build_worklist  # noqa: E402
from alemwatch.store import models as m  # noqa: E402
from alemwatch.store.db import get_engine, normalise_url, session_factory, transaction, upgrade  # noqa: E402
from alemwatch.store.repo import save_patient_file  # noqa: E402

SEED = 20261125
AS_OF = dt.date(2026, 11, 25)
JURISDICTION = "us"
IMPORT_PATIENTS = 1_000
SAVE_BATCH = 200
WORKLIST_CALLS = 50
WORKLIST_WARMUP = 3
WORKLIST_LIMIT = 200

IMPORT_TARGET = 10_000.0  # lab results per second (PostgreSQL)
SWEEP_TARGET = 25_000.0  # patients per second per core (full re-assessment)
MEMORY_TARGET_MIB = 2048.0  # at 100,000 patients
INCREMENTAL_TARGET_S = 2.0  # at 100,000 patients

PG_BASE = os.environ.get("ALEMWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Every table holding patient data, parents first; the patient id column of each.
COPIED_TABLES = (
    "patients",
    "infusions",
    "lab_results",
    "exams",
    "vaccinations",
    "prophylaxis",
    "symptom_reports",
    "patient_state",
    "patient_charts",
    "alerts",
    "alert_events",
    "worklist_items",
)
REPO = Path(__file__).resolve().parent.parent


# --- The pinned child: one sweep, its phases and its own peak memory -------------------------


def _child(spec: dict[str, Any]) -> None:
    """Run one sweep pinned to core 0 and print one JSON line with the figures."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    from alemwatch.registry import sweep as sweep_module
    from alemwatch.store import charts

    protocol = load_protocol(JURISDICTION)
    phases: dict[str, float] = {}
    counts: dict[str, int] = {"one_by_one_done": 0}
    progress = Path(spec["progress"])
    started = time.perf_counter()

    def write_progress() -> None:
        state = {"elapsed": time.perf_counter() - started, "phases": phases, "counts": counts}
        progress.write_text(json.dumps(state))

    def timed(name: str, fn: Callable[..., Any], after: Callable[[Any], None] | None = None) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            if after:
                after(result)
            write_progress()
            return result

        return wrapper

    def selected(result: tuple[list[str], list[str]]) -> None:
        counts["changed"], counts["bulk"] = len(result[0]), len(result[1])

    def rewrite(result: list[str]) -> None:
        counts["digest_changed"] = len(result)

    refresh = sweep_module.refresh_patient

    def counted_refresh(*args: Any, **kwargs: Any) -> Any:
        result = refresh(*args, **kwargs)
        counts["one_by_one_done"] += 1
        if counts["one_by_one_done"] % 20 == 0:
            phases["one by one"] = time.perf_counter() - one_by_one_start[0]
            write_progress()
        return result

    one_by_one_start = [0.0]
    refresh_each = sweep_module._refresh_each

    def timed_refresh_each(*args: Any, **kwargs: Any) -> Any:
        one_by_one_start[0] = time.perf_counter()
        result = refresh_each(*args, **kwargs)
        phases["one by one"] = time.perf_counter() - one_by_one_start[0]
        write_progress()
        return result

    sweep_module.patients_to_assess = timed("select patients", sweep_module.patients_to_assess, selected)
    sweep_module._bulk_pass = timed("bulk pass", sweep_module._bulk_pass, rewrite)
    charts.load = timed("  read + decode charts", charts.load)
    sweep_module._stored_digests = timed("  read stored digests", sweep_module._stored_digests)
    sweep_module.bulk_assess = timed("  bulk_assess", sweep_module.bulk_assess)
    sweep_module.digest_bulk = timed("  digests", sweep_module.digest_bulk)
    sweep_module._write_unchanged = timed("  write unchanged states", sweep_module._write_unchanged)
    sweep_module.refresh_patient = counted_refresh
    sweep_module._refresh_each = timed_refresh_each

    as_of = dt.date.fromisoformat(spec["as_of"])
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = sweep_module.sweep(spec["url"], protocol, as_of, full=spec["full"])
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "report": report.to_json(),
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_mib": _own_peak_mib(),
        "maxrss_mib": after.ru_maxrss / 1024,
        "load": os.getloadavg()[0],
        "phases": phases,
        "counts": counts,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    print("RESULT " + json.dumps(out))


def _own_peak_mib() -> float | None:
    """This process's peak resident memory: VmHWM of its own address space. (ru_maxrss is not it:
    Linux starts a child's ru_maxrss at the parent's peak, carried over fork and exec.)"""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


@dataclass
class SweepRun:
    label: str
    size: int
    wall: float | None = None
    cpu: float | None = None
    peak_mib: float | None = None
    maxrss_mib: float | None = None
    report: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    timed_out: float | None = None  # the time limit, when the run was stopped
    load: float | None = None  # the machine's 1-minute load average at the end

    @property
    def patients_per_s(self) -> float | None:
        selected = self.report.get("selected")
        return selected / self.wall if self.wall and selected else None

    @property
    def patients_per_cpu_s(self) -> float | None:
        """Per second of this process's own CPU time (steadier on a shared machine; excludes the DB server)."""
        selected = self.report.get("selected")
        return selected / self.cpu if self.cpu and selected else None


def run_sweep(
    label: str, size: int, url: str, as_of: dt.date, full: bool, workdir: Path, timeout: float | None
) -> SweepRun:
    """One sweep in a pinned child process; stopped after `timeout` seconds (progress kept)."""
    progress = workdir / f"progress-{uuid.uuid4().hex[:8]}.json"
    spec = {"url": url, "as_of": as_of.isoformat(), "full": full, "progress": str(progress)}
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    run = SweepRun(label, size)
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        run.timed_out = timeout
        if progress.exists():
            state = json.loads(progress.read_text())
            run.phases, run.counts, run.wall = state["phases"], state["counts"], None
        return run
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"sweep child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    run.wall, run.cpu, run.peak_mib, run.maxrss_mib = (
        result["wall"],
        result["cpu"],
        result["peak_mib"],
        result["maxrss_mib"],
    )
    run.report, run.phases, run.counts = result["report"], result["phases"], result["counts"]
    run.load = result["load"]
    return run


# --- Databases ----------------------------------------------------------------------------


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A migrated, empty registry: a SQLite file in `workdir` or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'registry-{uuid.uuid4().hex[:8]}.db'}"
        upgrade(url)
        try:
            yield url
        finally:
            get_engine(url).dispose()
            path = Path(url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"aw_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(PG_BASE))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}&application_name={schema}"
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.begin() as connection:
            # Server processes of this run's own connections (a sweep child stopped at its time limit).
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": schema},
            )
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _copy_statement(table: str, suffixes: list[str]) -> str:
    columns = [c.name for c in m.Base.metadata.tables[table].columns]
    key = "id" if table == "patients" else "patient_id"
    picked = [f"t.{key} || s.suffix" if c == key else f"t.{c}" for c in columns]
    copies = " UNION ALL ".join(f"SELECT '{suffix}' AS suffix" for suffix in suffixes)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(picked)} "
        f"FROM {table} AS t CROSS JOIN ({copies}) AS s WHERE t.{key} NOT LIKE '%~%'"
    )


def grow(url: str, backend: str, base: int, current: int, target: int) -> dict[str, float]:
    """Copy the base patients DB-side until there are `target` patients; seconds per table."""
    suffixes = [f"~r{n}" for n in range(current // base, target // base)]
    seconds: dict[str, float] = {}
    if not suffixes:
        return seconds
    get_engine(url).dispose()
    if backend == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            # Setup, not measured: no fsync, a large page cache, no per-row foreign key checks.
            mode = connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0]  # no multi-GB WAL to checkpoint
            if mode != "delete":
                raise RuntimeError(f"SQLite kept journal mode {mode}: a connection is still open")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("PRAGMA cache_size=-1000000")
            connection.execute("BEGIN")
            for table in COPIED_TABLES:
                start = time.perf_counter()
                connection.execute(_copy_statement(table, suffixes))
                seconds[table] = time.perf_counter() - start
            connection.execute("COMMIT")
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
        return seconds
    labs = m.LabResult.__table__
    with get_engine(url).begin() as connection:
        # Setup, not measured: skip the per-row foreign key triggers of the copies, and build the
        # two indexes of lab_results (nine rows in ten) after the copy rather than row by row.
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
        connection.exec_driver_sql("ALTER TABLE lab_results DROP CONSTRAINT pk_lab_results")
        for index in labs.indexes:
            connection.execute(DropIndex(index))
        for table in COPIED_TABLES:
            start = time.perf_counter()
            connection.execute(text(_copy_statement(table, suffixes)))  # text(): the driver sees '%%'
            seconds[table] = time.perf_counter() - start
        start = time.perf_counter()
        connection.exec_driver_sql("ALTER TABLE lab_results ADD CONSTRAINT pk_lab_results PRIMARY KEY (patient_id, id)")
        for index in labs.indexes:
            connection.execute(CreateIndex(index))
        seconds["lab_results indexes"] = time.perf_counter() - start
    start = time.perf_counter()
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")
    seconds["analyze"] = time.perf_counter() - start
    return seconds


def database_mib(url: str, backend: str) -> float:
    if backend == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()) / 2**20
    with get_engine(url).connect() as connection:
        size = connection.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        ).scalar_one()
    return float(size or 0) / 2**20


def count_rows(url: str, table: str) -> int:
    with get_engine(url).connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# --- Measures -----------------------------------------------------------------------------


def write_cohort(path: Path, n: int) -> int:
    """NDJSON of demo patients 0..n-1; returns their lab results."""
    labs = 0
    with path.open("w", encoding="utf-8") as out:
        for record in build_cohort(n, SEED, AS_OF):
            labs += len(record.get("labs") or [])
            out.write(json.dumps(record) + "\n")
    return labs


def store_rest(url: str, path: Path, skip: int) -> tuple[int, int, float]:
    """save_patient_file for the patients of `path` after the first `skip`, 200 per transaction."""
    protocol = load_protocol(JURISDICTION)
    patients = labs = 0
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with transaction(url) as session:
            for record in batch:
                save_patient_file(session, record, protocol, source="import")
        batch.clear()

    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if number < skip:
                continue
            record = json.loads(line)
            batch.append(record)
            patients += 1
            labs += len(record.get("labs") or [])
            if len(batch) == SAVE_BATCH:
                flush()
    if batch:
        flush()
    return patients, labs, time.perf_counter() - started


def worklist_latency(url: str) -> dict[str, Any]:
    """build_worklist in a fresh session per call (as a request would): ms per call."""
    times = []
    sections: dict[str, int] = {}
    for call in range(WORKLIST_WARMUP + WORKLIST_CALLS):
        start = time.perf_counter_ns()
        with session_factory(url)() as session:
            worklist = build_worklist(session, AS_OF, WORKLIST_LIMIT)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if call >= WORKLIST_WARMUP:
            times.append(elapsed)
        sections = {k: len(v) for k, v in worklist.items() if isinstance(v, list) and k != "patient_ids"}
    ordered = sorted(times)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "sections": sections,
    }


@dataclass
class BackendResult:
    backend: str
    import_patients: int = 0
    import_labs: int = 0
    import_seconds: float = 0.0
    import_load: float = 0.0
    store_patients: int = 0
    store_labs: int = 0
    store_seconds: float = 0.0
    sweeps: list[SweepRun] = field(default_factory=list)
    worklists: dict[int, dict[str, Any]] = field(default_factory=dict)
    growth: dict[int, dict[str, float]] = field(default_factory=dict)
    db_mib: dict[int, float] = field(default_factory=dict)
    alerts: dict[int, int] = field(default_factory=dict)
    server: str = ""


def run_backend(
    backend: str, sizes: list[int], base: int, cohort: Path, workdir: Path, timeout: float
) -> BackendResult:
    result = BackendResult(backend)
    protocol = load_protocol(JURISDICTION)
    imported = workdir / "import.ndjson"
    with fresh_database(backend, workdir) as url:
        if backend == "postgresql":
            with get_engine(url).connect() as connection:
                result.server = str(connection.execute(text("SHOW server_version")).scalar_one())
        say(f"[{backend}] import_file of {imported.name} ...")
        start = time.perf_counter()
        report = import_file(imported, url, protocol)
        result.import_seconds, result.import_load = time.perf_counter() - start, os.getloadavg()[0]
        if report.errors:
            raise RuntimeError(f"import errors: {report.errors[:5]}")
        result.import_patients, result.import_labs = report.patients, report.labs
        if base > report.patients:
            say(f"[{backend}] save_patient_file of {base - report.patients} more patients ...")
            result.store_patients, result.store_labs, result.store_seconds = store_rest(url, cohort, report.patients)
        say(f"[{backend}] initial assessment of {base} patients (one by one) ...")
        result.sweeps.append(run_sweep("initial assessment (one by one)", base, url, AS_OF, False, workdir, None))
        current = base
        for size in sizes:
            say(f"[{backend}] growing to {size:,} patients ...")
            result.growth[size] = grow(url, backend, base, current, size)
            current = size
            result.db_mib[size] = database_mib(url, backend)
            result.alerts[size] = count_rows(url, "alerts")
            say(f"[{backend}] full re-assessment at {size:,} ...")
            result.sweeps.append(run_sweep("full re-assessment", size, url, AS_OF, True, workdir, None))
        say(f"[{backend}] worklist at {current:,} ...")
        result.worklists[current] = worklist_latency(url)
        say(f"[{backend}] daily incremental sweep at {current:,} (stopped after {timeout:g} s) ...")
        day = AS_OF + dt.timedelta(days=1)
        result.sweeps.append(run_sweep("daily incremental (+1 day)", current, url, day, False, workdir, timeout))
    return result


# --- Report -------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"  .. {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def machine_facts() -> list[str]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        memory = f"{kib / 2**20:.1f} GiB RAM"
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("sqlalchemy", "psycopg", "numpy", "pydantic"))
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return [
        f"cpu {model or platform.processor()}; {os.cpu_count()} cpus ({affinity} usable); {memory}",
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {versions}",
        f"platform {platform.platform()}",
        f"load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min): other processes share "
        "these cores, so wall times can suffer; the CPU figures are this benchmark's own",
    ]


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _ratio(measured: float | None, target: float, higher_is_better: bool) -> str:
    if measured is None:
        return "n/a"
    ratio = measured / target
    met = ratio >= 1 if higher_is_better else ratio < 1
    return f"{ratio:.3f} x target ({'met' if met else 'NOT met'})"


def _projection(run: SweepRun) -> tuple[str, float | None]:
    """For a sweep stopped at its limit: what was done and the total at the measured rate."""
    counts, phases = run.counts, run.phases
    one_by_one = counts.get("changed", 0) + counts.get("digest_changed", 0)
    done = counts.get("one_by_one_done", 0)
    spent = phases.get("one by one", 0.0)
    if "digest_changed" not in counts or not done or not spent:
        return f"stopped after {run.timed_out:g} s before the one-by-one phase measured a rate", None
    before = phases.get("select patients", 0.0) + phases.get("bulk pass", 0.0)
    total = before + spent * one_by_one / done
    return (
        f"stopped after {run.timed_out:g} s: selected {counts.get('changed', 0) + counts.get('bulk', 0):,}, "
        f"bulk-assessed {counts.get('bulk', 0):,}, {done:,} of {one_by_one:,} one-by-one rewrites done "
        f"({spent / done * 1000:.0f} ms each); projected total {total:,.0f} s",
        total,
    )


def print_header(args: argparse.Namespace, cohort_labs: int) -> None:
    print("alemwatch registry benchmark")
    for line in machine_facts():
        print(f"  {line}")
    print(
        f"  demo cohort seed {SEED}, as of {AS_OF.isoformat()}, protocol {JURISDICTION}; base {args.base:,} patients "
        f"({cohort_labs / args.base:.0f} lab results each), copied to {', '.join(f'{s:,}' for s in args.sizes)}"
    )
    print("  sweeps run in a child pinned to core 0 with thread pools at 1; peak RSS is the child's own VmHWM")
    print("  (its ru_maxrss is not used: Linux starts it at the parent's peak, carried over fork and exec)")
    sys.stdout.flush()


def print_backend(r: BackendResult) -> None:
    """One backend's figures, printed as soon as it is done."""
    print()
    print(f"== {r.backend} ==" + (f" (PostgreSQL {r.server} on this machine)" if r.server else ""))
    labs_s = r.import_labs / r.import_seconds
    print(
        f"  import_file {r.import_patients:,} patients, {r.import_labs:,} lab results: {r.import_seconds:.1f} s = "
        f"{labs_s:,.0f} lab results/s, {r.import_patients / r.import_seconds:.1f} patients/s "
        f"(one transaction per patient; load {r.import_load:.1f})"
    )
    if r.store_patients:
        print(
            f"  save_patient_file {r.store_patients:,} more patients in transactions of {SAVE_BATCH}: "
            f"{r.store_seconds:.1f} s = {r.store_labs / r.store_seconds:,.0f} lab results/s"
        )
    for size, seconds in r.growth.items():
        if seconds:
            total = sum(seconds.values())
            parts = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items() if v >= 0.5 or k == "lab_results")
            print(
                f"  grow to {size:,} (setup, INSERT ... SELECT): {total:.1f} s ({parts}); "
                f"database {r.db_mib[size]:,.0f} MiB, {r.alerts[size]:,} alerts"
            )
        else:
            print(f"  at {size:,}: database {r.db_mib[size]:,.0f} MiB, {r.alerts[size]:,} alerts")
    initial = next((run for run in r.sweeps if run.label.startswith("initial") and run.wall), None)
    if initial and initial.size < 10_000:
        per = initial.wall / initial.size
        print(
            f"  initial assessment: {per * 1000:.0f} ms per patient; at that rate 10,000 take "
            f"{per * 10_000 / 60:.0f} min and 100,000 {per * 100_000 / 3600:.1f} h (hence the base)"
        )
    print()
    header = f"  {'sweep':<32}{'patients':>9}{'wall s':>9}{'cpu s':>8}{'pat/s':>9}{'pat/cpu-s':>10}{'RSS MiB':>9}"
    print(header + f"{'selected':>10}{'bulk':>9}{'rewrote':>9}{'load':>6}")
    for run in r.sweeps:
        rep, counts = run.report, run.counts
        wall = f">{run.timed_out:g}" if run.timed_out else _fmt(run.wall, ".2f")
        selected, bulk = rep.get("selected"), rep.get("bulk")
        rewrote = _fmt(rep.get("rewritten"), ",")
        if run.timed_out:  # what the stopped run had reached
            selected = counts.get("changed", 0) + counts.get("bulk", 0) if "bulk" in counts else None
            bulk = counts.get("bulk")
            wanted = counts.get("changed", 0) + counts.get("digest_changed", 0)
            rewrote = f"{counts.get('one_by_one_done', 0):,}/{wanted:,}"
        print(
            f"  {run.label:<32}{run.size:>9,}{wall:>9}{_fmt(run.cpu, '.2f'):>8}"
            f"{_fmt(run.patients_per_s, ',.0f'):>9}{_fmt(run.patients_per_cpu_s, ',.0f'):>10}"
            f"{_fmt(run.peak_mib, ',.0f'):>9}{_fmt(selected, ','):>10}{_fmt(bulk, ','):>9}{rewrote:>9}"
            f"{_fmt(run.load, '.1f'):>6}"
        )
    for run in r.sweeps:
        if run.phases:
            phases = "; ".join(f"{k.strip()} {v:.2f}" for k, v in run.phases.items())
            print(f"    {run.label} at {run.size:,}, seconds by phase: {phases}")
        if run.timed_out:
            print(f"    {run.label} at {run.size:,}: {_projection(run)[0]}")
    print()
    print(f"  {'build_worklist(limit 200)':<32}{'patients':>9}{'p50 ms':>9}{'p99 ms':>9}  rows per section")
    for size, w in r.worklists.items():
        sections = ", ".join(f"{k} {v}" for k, v in w["sections"].items())
        print(f"  {'':<32}{size:>9,}{w['p50']:>9.1f}{w['p99']:>9.1f}  {sections}")
    print(f"    ({WORKLIST_CALLS} calls after {WORKLIST_WARMUP} untimed, each in a fresh session, as a request)")
    sys.stdout.flush()


def print_targets(results: list[BackendResult], args: argparse.Namespace, load: tuple[float, float, float]) -> None:
    print()
    print(
        f"== against the targets == (load average 1/5/15 min: at start {', '.join(f'{x:.1f}' for x in load)}, "
        f"at end {', '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    largest = max(args.sizes)
    for r in results:
        labs_s = r.import_labs / r.import_seconds
        target_note = "" if r.backend == "postgresql" else " (the target is set for PostgreSQL)"
        print(
            f"  [{r.backend}] import {labs_s:,.0f} lab results/s: "
            f"{_ratio(labs_s, IMPORT_TARGET, True)}, target {IMPORT_TARGET:,.0f}/s{target_note}"
        )
        for run in r.sweeps:
            if run.label.startswith("full"):
                print(
                    f"  [{r.backend}] full sweep at {run.size:,}: {_fmt(run.patients_per_s, ',.0f')} patients/s on one "
                    f"core: {_ratio(run.patients_per_s, SWEEP_TARGET, True)}, target {SWEEP_TARGET:,.0f}/s"
                )
                print(
                    f"  [{r.backend}]   per second of its own CPU: {_fmt(run.patients_per_cpu_s, ',.0f')} patients: "
                    f"{_ratio(run.patients_per_cpu_s, SWEEP_TARGET, True)}"
                )
                if run.size == largest and run.peak_mib is not None:
                    print(
                        f"  [{r.backend}] full sweep at {run.size:,}: peak RSS {run.peak_mib:,.0f} MiB: "
                        f"{_ratio(run.peak_mib, MEMORY_TARGET_MIB, False)}, target < {MEMORY_TARGET_MIB:,.0f} MiB"
                    )
            if run.label.startswith("daily"):
                seconds = run.wall if run.wall is not None else _projection(run)[1]
                prefix = "" if run.wall is not None else "projected "
                bound = f" (stopped at {run.timed_out:g} s)" if run.timed_out else ""
                print(
                    f"  [{r.backend}] daily incremental sweep at {run.size:,}: {prefix}{_fmt(seconds, ',.2f')} s"
                    f"{bound}: {_ratio(seconds, INCREMENTAL_TARGET_S, False)}, target < {INCREMENTAL_TARGET_S:g} s"
                )
        worklist = r.worklists.get(largest)
        if worklist:
            print(
                f"  [{r.backend}] worklist at {largest:,}: p50 {worklist['p50']:.1f} ms, p99 {worklist['p99']:.1f} ms"
            )
    print("  (time and memory: a ratio below 1 meets the target; throughput: a ratio of 1 or more meets it)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="registry sizes, comma separated")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--quick", action="store_true", help="sizes 1,000 and 10,000")
    parser.add_argument("--base", type=int, default=None, help="patients stored and assessed one by one before copying")
    parser.add_argument("--incremental-timeout", type=float, default=120.0, help="seconds before the daily sweep stops")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.sizes = [1_000, 10_000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    args.backends = [b.strip() for b in args.backends.split(",")]
    if any(b not in ("sqlite", "postgresql") for b in args.backends):
        parser.error("--backends takes sqlite and/or postgresql")
    args.base = args.base or args.sizes[0]
    if any(size % args.base for size in args.sizes) or args.base > args.sizes[0]:
        parser.error("every size must be a multiple of --base, and --base at most the smallest size")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    started, load = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        workdir = Path(tmp)
        say(f"building {args.base:,} demo patients ...")
        cohort = workdir / "cohort.ndjson"
        cohort_labs = write_cohort(cohort, args.base)
        with cohort.open(encoding="utf-8") as lines, (workdir / "import.ndjson").open("w") as out:
            for number, line in enumerate(lines):
                if number >= IMPORT_PATIENTS:
                    break
                out.write(line)
        print_header(args, cohort_labs)
        results = []
        for backend in args.backends:
            results.append(run_backend(backend, args.sizes, args.base, cohort, workdir, args.incremental_timeout))
            print_backend(results[-1])
    print_targets(results, args, load)
    print(f"\n  whole run {time.perf_counter() - started:,.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
