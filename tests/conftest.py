"""Real PostgreSQL for every test: one server per session (the configured one, or an embedded
one in a temporary folder), one migrated template, and a fresh database cloned from it for
each test that asks for `database_url`."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from cascade import database
from tests.support.processes import ListenerProcesses
from tests.support.provider import Provider

SUPPORT_SCHEMA = Path(__file__).parent / "support" / "schema.sql"


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A folder outside pytest's own temporary root: pytest resets that root to mode 0700
    whenever a run starts, which would lock out the unprivileged user that pgserver runs
    PostgreSQL as when we are root."""
    folder = Path(tempfile.mkdtemp(prefix="cascade-test-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_folder() as folder:
        yield folder


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = database.configured_url()
    if url is not None:
        yield url
        return
    with scratch_folder() as folder, database.embedded_postgres(folder / "pgdata") as embedded:
        yield embedded


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def create_database(server: str, template: str | None = None) -> str:
    name = f"cascade_test_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        clause = (
            psycopg.sql.SQL(" TEMPLATE {}").format(psycopg.sql.Identifier(template))
            if template
            else psycopg.sql.SQL("")
        )
        conn.execute(
            psycopg.sql.SQL("CREATE DATABASE {}{}").format(psycopg.sql.Identifier(name), clause)
        )
    return name


def drop_database(server: str, name: str) -> None:
    with _admin(server) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    name = create_database(server_url)
    url = database.with_database(server_url, name)
    database.prepare_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SUPPORT_SCHEMA.read_text())
    yield name
    drop_database(server_url, name)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A database with nothing in it: for migration tests."""
    name = create_database(server_url)
    yield database.with_database(server_url, name)
    drop_database(server_url, name)


@contextlib.contextmanager
def fresh_database(server_url: str, template_name: str) -> Iterator[str]:
    """A database cloned from the migrated template, dropped afterwards: its URL."""
    name = create_database(server_url, template_name)
    yield database.with_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def database_url(server_url: str, template_name: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    with fresh_database(server_url, template_name) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _no_ambient_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test's listener loads exactly the registry the test names.
    monkeypatch.delenv("CASCADE_HANDLERS", raising=False)


@pytest.fixture
def listener_processes(database_url: str, tmp_path: Path) -> Iterator[ListenerProcesses]:
    """Subprocess listeners on this test's database: killed when the test ends, and what
    each wrote to stderr shown if it fails."""
    processes = ListenerProcesses(database_url, tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    """A local HTTP provider for external handlers (tests/support/provider.py)."""
    with Provider() as running_provider:
        yield running_provider


os.environ.setdefault("CASCADE_LOG_LEVEL", "WARNING")
