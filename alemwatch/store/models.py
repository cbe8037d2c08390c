"""The registry's tables (SQLAlchemy 2). Every patient table carries `patient_id` first in
its primary key, so a site that outgrows one server can distribute the schema by patient
(docs/deployment.md). Lab results keep the value and unit as received beside the
normalised ones."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime(timezone=True)}


def _patient_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(["patient_id"], ["patients.id"], ondelete="CASCADE", name=f"fk_{table}_patient")


class Patient(Base):
    __tablename__ = "patients"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(10), default="unknown")
    screening: Mapped[dict[str, Any]] = mapped_column(default=dict)
    planned_course_start: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Infusion(Base):
    __tablename__ = "infusions"
    __table_args__ = (_patient_fk("infusions"),)
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date)
    premedication: Mapped[bool | None] = mapped_column(Boolean)
    observation_minutes: Mapped[float | None] = mapped_column(Float)
    dose_mg: Mapped[float | None] = mapped_column(Float)
    reactions: Mapped[list[Any]] = mapped_column(default=list)


class LabResult(Base):
    __tablename__ = "lab_results"
    __table_args__ = (
        _patient_fk("lab_results"),
        Index("ix_lab_results_patient_analyte_date", "patient_id", "analyte", "date"),
    )
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # client-supplied: idempotency key
    date: Mapped[dt.date] = mapped_column(Date)
    test: Mapped[str] = mapped_column(String(40))  # as received (analyte name or LOINC code)
    value: Mapped[float] = mapped_column(Float)  # as received
    unit: Mapped[str] = mapped_column(String(40))  # as received
    ref_low: Mapped[float | None] = mapped_column(Float)
    ref_high: Mapped[float | None] = mapped_column(Float)
    analyte: Mapped[str] = mapped_column(String(20))  # normalised
    canonical_value: Mapped[float] = mapped_column(Float)
    canonical_ref_low: Mapped[float | None] = mapped_column(Float)
    canonical_ref_high: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(20), default="api")
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Exam(Base):
    __tablename__ = "exams"
    __table_args__ = (_patient_fk("exams"),)
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    date: Mapped[dt.date] = mapped_column(Date)
    result: Mapped[str | None] = mapped_column(Text)


class Vaccination(Base):
    __tablename__ = "vaccinations"
    __table_args__ = (_patient_fk("vaccinations"),)
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    vaccine: Mapped[str] = mapped_column(String(200))
    live: Mapped[bool] = mapped_column(Boolean)
    date: Mapped[dt.date] = mapped_column(Date)


class Prophylaxis(Base):
    __tablename__ = "prophylaxis"
    __table_args__ = (_patient_fk("prophylaxis"),)
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    drug: Mapped[str] = mapped_column(String(100))
    start: Mapped[dt.date] = mapped_column(Date)
    stop: Mapped[dt.date | None] = mapped_column(Date)


class SymptomReport(Base):
    __tablename__ = "symptom_reports"
    __table_args__ = (_patient_fk("symptom_reports"),)
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date)
    text: Mapped[str] = mapped_column(Text)
    urgency: Mapped[str | None] = mapped_column(String(10))  # triage at the time of the report
    reported_by: Mapped[int | None] = mapped_column(Integer)
    reported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """A finding or deviation the team must act on: open -> acknowledged -> resolved."""

    __tablename__ = "alerts"
    __table_args__ = (
        _patient_fk("alerts"),
        # One unresolved alert per patient and fingerprint: the database enforces "not twice".
        Index(
            "uq_alerts_open_fingerprint",
            "patient_id",
            "fingerprint",
            unique=True,
            sqlite_where=text("status != 'resolved'"),
            postgresql_where=text("status != 'resolved'"),
        ),
        Index("ix_alerts_status_severity", "status", "severity"),
    )
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # finding | deviation
    code: Mapped[str] = mapped_column(String(60))  # condition or deviation code
    severity: Mapped[str] = mapped_column(String(10))
    rule: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(15), default="open")
    message: Mapped[str] = mapped_column(Text, default="")
    action: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[list[Any]] = mapped_column(default=list)
    evidence_key: Mapped[str] = mapped_column(String(64))
    raised_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    acknowledged_at: Mapped[dt.datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[dt.datetime | None]
    resolution_reason: Mapped[str | None] = mapped_column(Text)


class AlertEvent(Base):
    """Every change of an alert: who, when, what and why."""

    __tablename__ = "alert_events"
    __table_args__ = (
        _patient_fk("alert_events"),
        ForeignKeyConstraint(
            ["patient_id", "alert_id"],
            ["alerts.patient_id", "alerts.id"],
            ondelete="CASCADE",
            name="fk_alert_events_alert",
        ),
    )
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    alert_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(20))  # raised | updated | acknowledged | resolved | reraised
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PatientState(Base):
    """What the last assessment said, and when it must be redone (the incremental sweep)."""

    __tablename__ = "patient_state"
    __table_args__ = (_patient_fk("patient_state"), Index("ix_patient_state_next_change_on", "next_change_on"))
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    data_version: Mapped[int] = mapped_column(Integer, default=1)
    assessed_version: Mapped[int] = mapped_column(Integer, default=0)
    assessed_on: Mapped[dt.date | None] = mapped_column(Date)
    protocol_version: Mapped[str | None] = mapped_column(String(40))
    next_change_on: Mapped[dt.date | None] = mapped_column(Date)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PatientChart(Base):
    """The patient's records packed for the bulk sweep (alemwatch.store.charts)."""

    __tablename__ = "patient_charts"
    __table_args__ = (_patient_fk("patient_charts"),)
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    format: Mapped[int] = mapped_column(Integer)
    attrs: Mapped[bytes] = mapped_column(LargeBinary)
    texts: Mapped[list[Any]] = mapped_column(default=list)
    lab: Mapped[bytes] = mapped_column(LargeBinary)
    inf: Mapped[bytes] = mapped_column(LargeBinary)
    rx: Mapped[bytes] = mapped_column(LargeBinary)
    exam: Mapped[bytes] = mapped_column(LargeBinary)
    vac: Mapped[bytes] = mapped_column(LargeBinary)
    pro: Mapped[bytes] = mapped_column(LargeBinary)
    sym: Mapped[bytes] = mapped_column(LargeBinary)


class WorklistItem(Base):
    """Time-based work the last assessment found (tests not yet done, prophylaxis decisions,
    planned courses); its status on any day follows from its window."""

    __tablename__ = "worklist_items"
    __table_args__ = (
        _patient_fk("worklist_items"),
        Index("ix_worklist_items_kind_window_start", "kind", "window_start"),
    )
    patient_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # test | prophylaxis | course
    task: Mapped[str] = mapped_column(String(40))
    due: Mapped[dt.date] = mapped_column(Date)
    window_start: Mapped[dt.date] = mapped_column(Date)
    window_end: Mapped[dt.date] = mapped_column(Date)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        ForeignKeyConstraint(["patient_id"], ["patients.id"], ondelete="SET NULL", name="fk_users_patient"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # admin | clinician | nurse | patient
    patient_id: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="fk_api_tokens_user"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    user_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class CdsJwtId(Base):
    """A CDS client's JWT already used (`jti`, per issuer): refused if it comes again, by any worker.
    Kept until the token has expired (then it could not be used anyway)."""

    __tablename__ = "cds_jwt_ids"
    issuer: Mapped[str] = mapped_column(String(500), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class WebSession(Base):
    __tablename__ = "web_sessions"
    __table_args__ = (ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="fk_web_sessions_user"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie value
    user_id: Mapped[int] = mapped_column(Integer)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_username_at", "username", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100))
    ip: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    success: Mapped[bool] = mapped_column(Boolean)


class AuditEvent(Base):
    """Append-only: on PostgreSQL a trigger refuses UPDATE and DELETE."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"), Index("ix_audit_events_patient_id", "patient_id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(20), default="")
    action: Mapped[str] = mapped_column(String(40))  # read | create | update | delete | login | ...
    resource: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(20))  # ok | denied | invalid | error
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


PATIENT_TABLES = (Infusion, LabResult, Exam, Vaccination, Prophylaxis, SymptomReport)
