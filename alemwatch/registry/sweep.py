"""The daily sweep: re-assess the patients whose assessment can have changed, raise and close
alerts, refresh the worklist. Incremental by default (data changed since the last
assessment, or a status falls due today); `full` re-assesses everyone (protocol changes)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, select

from alemwatch.protocol.model import Protocol
from alemwatch.registry.refresh import refresh_patient
from alemwatch.store import models as m
from alemwatch.store.db import session_factory, transaction

BATCH = 200


@dataclass
class SweepReport:
    as_of: str
    mode: str
    patients: int = 0
    assessed: int = 0
    alerts_open: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def patients_to_assess(url: str, protocol: Protocol, as_of: dt.date, full: bool) -> list[str]:
    """Ids of the patients whose stored assessment may be out of date on `as_of`."""
    query = select(m.Patient.id).outerjoin(m.PatientState, m.PatientState.patient_id == m.Patient.id)
    if not full:
        state = m.PatientState
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
    with session_factory(url)() as session:
        return list(session.execute(query.order_by(m.Patient.id)).scalars())


def sweep(
    url: str,
    protocol: Protocol,
    as_of: dt.date,
    full: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> SweepReport:
    started = time.perf_counter()
    ids = patients_to_assess(url, protocol, as_of, full)
    report = SweepReport(as_of.isoformat(), "full" if full else "incremental")
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        with transaction(url) as session:
            for patient_id in batch:
                refresh_patient(session, patient_id, protocol, as_of, "system:sweep")
        report.assessed += len(batch)
        if on_progress:
            on_progress(report.assessed, len(ids))
    with session_factory(url)() as session:
        report.patients = session.query(m.Patient).count()
        report.alerts_open = session.query(m.Alert).filter(m.Alert.status != "resolved").count()
    report.seconds = round(time.perf_counter() - started, 3)
    return report
