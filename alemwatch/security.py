"""People and access: argon2 password hashes, API tokens, browser sessions with CSRF
tokens, and a login rate limit. Tokens and session ids are stored only as SHA-256 hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alemwatch.settings import Settings
from alemwatch.store import models as m

ROLES = ("admin", "clinician", "nurse", "patient")
HASHER = PasswordHasher()
MIN_PASSWORD = 12


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user (with role and, for patients, their own record) or the system."""

    user_id: int | None
    username: str
    role: str
    patient_id: str | None = None
    via: str = "system"  # session | token | system

    @property
    def label(self) -> str:
        return f"{self.role}:{self.username}"


class AuthError(Exception):
    """Wrong credentials, disabled account or too many attempts (message safe to show)."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password: must be at least {MIN_PASSWORD} characters")
    return HASHER.hash(password)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_user(session: Session, username: str, password: str, role: str, patient_id: str | None = None) -> m.User:
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    if role == "patient" and not patient_id:
        raise ValueError("patient_id: a patient account must name its patient record")
    if session.execute(select(m.User).where(m.User.username == username)).scalar_one_or_none():
        raise ValueError(f"username: {username!r} is taken")
    user = m.User(username=username, password_hash=hash_password(password), role=role, patient_id=patient_id)
    session.add(user)
    session.flush()
    return user


def _recent_failures(session: Session, username: str, settings: Settings) -> int:
    since = m.utcnow() - dt.timedelta(seconds=settings.login_window_seconds)
    query = (
        select(func.count())
        .select_from(m.LoginAttempt)
        .where(m.LoginAttempt.username == username, m.LoginAttempt.at >= since, m.LoginAttempt.success.is_(False))
    )
    return int(session.execute(query).scalar_one())


def authenticate(session: Session, username: str, password: str, ip: str, settings: Settings) -> m.User:
    """Check a password; every attempt is recorded and failures are rate-limited per user."""
    if _recent_failures(session, username, settings) >= settings.login_attempts_per_window:
        raise AuthError("too many failed attempts; try again later")
    user = session.execute(select(m.User).where(m.User.username == username)).scalar_one_or_none()
    ok = False
    if user is not None and not user.disabled:
        try:
            ok = HASHER.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        HASHER.hash(password or "x")  # same cost whether or not the user exists
    session.add(m.LoginAttempt(username=username, ip=ip, success=ok))
    if not ok or user is None:
        raise AuthError("wrong username or password")
    return user


def issue_token(session: Session, user: m.User, settings: Settings, name: str = "") -> str:
    token = "aw_" + secrets.token_urlsafe(32)
    expires = m.utcnow() + dt.timedelta(days=settings.token_days)
    session.add(m.ApiToken(id=digest(token), user_id=user.id, name=name, expires_at=expires))
    return token


def start_session(session: Session, user: m.User, settings: Settings) -> tuple[str, str]:
    """A new browser session: (cookie value, CSRF token)."""
    value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = m.utcnow() + dt.timedelta(hours=settings.session_hours)
    session.add(m.WebSession(id=digest(value), user_id=user.id, csrf_token=csrf, expires_at=expires))
    return value, csrf


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


_ACTOR_COLUMNS = (m.User.id, m.User.username, m.User.role, m.User.patient_id, m.User.disabled)  # for actor_for


def actor_for_token(session: Session, token: str) -> Actor | None:
    """Who holds an unrevoked, unexpired API token of an active account. One query of
    columns, not of ORM objects: every API call asks it."""
    query = (
        select(*_ACTOR_COLUMNS, m.ApiToken.revoked, m.ApiToken.expires_at)
        .join(m.ApiToken, m.ApiToken.user_id == m.User.id)
        .where(m.ApiToken.id == digest(token))
    )
    row = session.execute(query).first()
    if row is None or row.revoked or row.disabled or _aware(row.expires_at) < m.utcnow():
        return None
    return actor_for(row, "token")


def user_by_name(session: Session, username: str) -> m.User | None:
    """An active user by name."""
    user = session.execute(select(m.User).where(m.User.username == username)).scalar_one_or_none()
    return None if user is None or user.disabled else user


def actor_for_cookie(session: Session, value: str) -> tuple[Actor, str] | None:
    """Who is logged in with an unexpired browser session of an active account, and the
    session's CSRF token (one query, as for a token)."""
    query = (
        select(*_ACTOR_COLUMNS, m.WebSession.csrf_token, m.WebSession.expires_at)
        .join(m.WebSession, m.WebSession.user_id == m.User.id)
        .where(m.WebSession.id == digest(value))
    )
    row = session.execute(query).first()
    if row is None or row.disabled or _aware(row.expires_at) < m.utcnow():
        return None
    return actor_for(row, "session"), row.csrf_token


def end_session(session: Session, value: str) -> None:
    row = session.get(m.WebSession, digest(value))
    if row is not None:
        session.delete(row)


def actor_for(user: Any, via: str) -> Actor:
    """The Actor of a user (an ORM User, or a row of `_ACTOR_COLUMNS`)."""
    return Actor(user.id, user.username, user.role, user.patient_id, via)
