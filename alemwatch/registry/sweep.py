"""The daily sweep: re-assess the patients whose assessment can have changed, raise and close
alerts, refresh the worklist. Incremental by default (data changed since the last
assessment, or a status falls due that day); `full` re-assesses everyone (protocol changes).

Set-based: patients whose records changed are re-assessed one by one (their alerts need the
evidence text); all others are assessed together by the bulk engine from their packed charts,
and only those whose stored facts change (a digest comparison) are rewritten one by one. The
clinical truth stays in `assess`: the bulk engine is proven equal to it (tests/test_bulk.py),
and so is the digest (tests/test_sweep.py)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from alemwatch.core import bulk
from alemwatch.core.bulk import bulk_assess
from alemwatch.core.columnar import Cohort
from alemwatch.protocol.model import Protocol
from alemwatch.registry.digest import digest_bulk
from alemwatch.registry.refresh import TEST_LOOKAHEAD, refresh_patient
from alemwatch.store import charts
from alemwatch.store import models as m
from alemwatch.store.db import session_factory, transaction

BATCH = 200
BULK_CHUNK = 20_000


@dataclass
class SweepReport:
    as_of: str
    mode: str
    patients: int = 0
    selected: int = 0
    assessed: int = 0
    rewritten: int = 0
    bulk: int = 0
    alerts_open: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def _selection(protocol: Protocol, as_of: dt.date, full: bool):  # type: ignore[no-untyped-def]
    state, chart = m.PatientState, m.PatientChart
    query = (
        select(m.Patient.id, state.data_version, state.assessed_version, chart.format)
        .outerjoin(state, state.patient_id == m.Patient.id)
        .outerjoin(chart, chart.patient_id == m.Patient.id)
    )
    if not full:
        query = query.where(
            or_(
                state.patient_id.is_(None),
                state.assessed_version < state.data_version,
                state.assessed_on.is_(None),
                state.assessed_on > as_of,
                state.next_change_on <= as_of,
                state.protocol_version != protocol.protocol_version,
            )
        )
    return query.order_by(m.Patient.id)


def patients_to_assess(url: str, protocol: Protocol, as_of: dt.date, full: bool) -> tuple[list[str], list[str]]:
    """(patients whose records changed or were never assessed, the others to re-assess)."""
    layout = charts.layout_code(protocol)
    with session_factory(url)() as session:
        rows = session.execute(_selection(protocol, as_of, full)).all()
    # Records changed, never assessed, or no chart the bulk engine can read: one by one.
    one_by_one = {r[0] for r in rows if r[1] is None or r[2] < r[1] or r[3] != layout}
    return [r[0] for r in rows if r[0] in one_by_one], [r[0] for r in rows if r[0] not in one_by_one]


def _refresh_each(
    url: str,
    protocol: Protocol,
    as_of: dt.date,
    ids: Sequence[str],
    report: SweepReport,
    on_progress: Callable[[int, int], None] | None,
    total: int,
) -> None:
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        with transaction(url) as session:
            for patient_id in batch:
                refresh_patient(session, patient_id, protocol, as_of, "system:sweep")
        report.assessed += len(batch)
        report.rewritten += len(batch)
        if on_progress:
            on_progress(report.assessed, total)


def _bulk_next_change(ba: bulk.BulkAssessment, cohort_planned: np.ndarray, on_pro_days: np.ndarray) -> np.ndarray:
    """The bulk engine's next change, joined with the registry's own time rules: a task is
    listed `TEST_LOOKAHEAD` before its window, a planned course leaves the list the day after."""
    day = ba.as_of.toordinal()
    candidates = np.where(ba.next_change > day, ba.next_change, np.iinfo(np.int32).max).astype(np.int64)
    not_done = ba.task_status != bulk.STATUS_NAMES.index("done")
    listed = (ba.task_window_start - TEST_LOOKAHEAD.days).astype(np.int64)
    future = not_done & (listed > day)
    np.minimum.at(candidates, ba.task_patient[future].astype(np.int64), listed[future])
    for extra in (cohort_planned.astype(np.int64) + 1, on_pro_days):
        candidates = np.where((extra > day) & (extra < candidates), extra, candidates)
    return candidates


def _prophylaxis_days(cohort: Cohort, size: int, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patient: on herpes prophylaxis on `day`, and the next day that can change it."""
    patients = cohort.pro_patient.astype(np.int64)
    active = (cohort.pro_start <= day) & ((cohort.pro_stop == 0) | (cohort.pro_stop >= day))
    on = np.zeros(size, dtype=np.bool_)
    on[patients[active]] = True
    nxt = np.full(size, np.iinfo(np.int32).max, dtype=np.int64)
    for edge in (
        cohort.pro_start.astype(np.int64),
        np.where(cohort.pro_stop > 0, cohort.pro_stop.astype(np.int64) + 1, 0),
    ):
        later = edge > day
        np.minimum.at(nxt, patients[later], edge[later])
    return on, nxt


def _stored_digests(session: Session, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, len(ids), 5000):
        query = select(m.PatientState.patient_id, m.PatientState.summary).where(
            m.PatientState.patient_id.in_(ids[start : start + 5000])
        )
        out.update({pid: str(summary.get("digest")) for pid, summary in session.execute(query)})
    return out


def _bulk_pass(url: str, protocol: Protocol, as_of: dt.date, ids: list[str], report: SweepReport) -> list[str]:
    """Assess `ids` together; update the ones whose stored facts stay the same; return the rest."""
    day = as_of.toordinal()
    to_rewrite: list[str] = []
    for start in range(0, len(ids), BULK_CHUNK):
        chunk = ids[start : start + BULK_CHUNK]
        with session_factory(url)() as session:
            cohort = charts.load(session, chunk, protocol)
            stored = _stored_digests(session, cohort.patient_ids)
        ba = bulk_assess(cohort, protocol, as_of)
        on_pro, pro_next = _prophylaxis_days(cohort, cohort.size, day)
        digests = digest_bulk(ba, on_pro, cohort.planned_start, TEST_LOOKAHEAD)
        next_change = _bulk_next_change(ba, cohort.planned_start, pro_next)
        updates: list[dict[str, object]] = []
        for i, patient_id in enumerate(cohort.patient_ids):
            if stored.get(patient_id) != str(int(digests[i])):
                to_rewrite.append(patient_id)
                continue
            nxt = int(next_change[i])
            updates.append({"pid": patient_id, "next": dt.date.fromordinal(nxt) if nxt < 3652059 else None})
        _write_unchanged(url, protocol, as_of, updates)
        report.bulk += len(chunk)
        report.assessed += len(updates)
    return to_rewrite


def _write_unchanged(url: str, protocol: Protocol, as_of: dt.date, updates: list[dict[str, object]]) -> None:
    if not updates:
        return
    state = m.PatientState
    statement = (
        update(state)
        .where(state.patient_id == _bind("pid"))
        .values(next_change_on=_bind("next"), assessed_on=as_of, protocol_version=protocol.protocol_version)
    )
    with transaction(url) as session:
        session.connection().execute(statement, updates)


def _bind(name: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import bindparam

    return bindparam(name)


def sweep(
    url: str,
    protocol: Protocol,
    as_of: dt.date,
    full: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> SweepReport:
    started = time.perf_counter()
    changed, unchanged = patients_to_assess(url, protocol, as_of, full)
    report = SweepReport(as_of.isoformat(), "full" if full else "incremental", selected=len(changed) + len(unchanged))
    rewrite = _bulk_pass(url, protocol, as_of, unchanged, report) if unchanged else []
    _refresh_each(url, protocol, as_of, changed + rewrite, report, on_progress, report.selected)
    with session_factory(url)() as session:
        report.patients = session.query(m.Patient).count()
        report.alerts_open = session.query(m.Alert).filter(m.Alert.status != "resolved").count()
    report.seconds = round(time.perf_counter() - started, 3)
    return report
