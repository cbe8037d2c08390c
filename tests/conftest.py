"""Shared fixtures: a migrated registry database on SQLite and on PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (user postgres, database test, or
ALEMWATCH_TEST_PG_URL); each run gets a fresh schema, dropped at the end. When it is not
reachable the PostgreSQL tests are skipped locally and FAIL in CI (CI=true)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from alemwatch.api.app import create_app
from alemwatch.security import create_user
from alemwatch.settings import Settings
from alemwatch.store import models as m
from alemwatch.store.db import get_engine, session_factory, transaction, upgrade

PG_BASE = os.environ.get("ALEMWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "correct horse battery staple"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(
            PG_BASE.replace("postgresql://", "postgresql+psycopg://"), connect_args={"connect_timeout": 3}
        )
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).splitlines()[0]


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """Tests hash many passwords: use cheap argon2 parameters here (production keeps the defaults)."""
    from argon2 import PasswordHasher

    from alemwatch import security

    production, security.HASHER = security.HASHER, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    security.HASHER = production


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    problem = _pg_reachable()
    if problem:
        message = f"PostgreSQL at {PG_BASE} is not reachable: {problem}"
        if IN_CI:
            pytest.fail(message + " (CI requires it)")
        pytest.skip(message)
    schema = f"aw_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    get_engine(url).dispose()
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    get_engine(f"sqlite:///{path}").dispose()
    return path


TABLES = [t.name for t in reversed(m.Base.metadata.sorted_tables)]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A migrated, empty registry database (each backend in turn)."""
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
        yield url
        get_engine(url).dispose()
        return
    url = request.getfixturevalue("pg_schema_url")
    with get_engine(url).begin() as connection:
        connection.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
    yield url


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, environment="test", secret_key="test-secret-" + "x" * 32)


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def make_user(url: str, username: str, role: str, patient_id: str | None = None) -> None:
    with transaction(url) as session:
        create_user(session, username, PASSWORD, role, patient_id)


def token_for(client: TestClient, username: str) -> dict[str, str]:
    response = client.post("/api/auth/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def count(url: str, model: type[m.Base]) -> int:
    with session_factory(url)() as session:
        return session.query(model).count()
