"""Migrations follow the naming rule, roll back cleanly, and apply again; trigger files are
idempotent."""

from __future__ import annotations

import re

import psycopg
import pytest

from cascade import database

NAME = re.compile(r"^(\d{4})\.[a-z0-9]+(?:-[a-z0-9]+)*\.sql$")

MARKETING_TABLES = """
    SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marketing'
"""
OUR_TRIGGERS = """
    SELECT count(*) FROM pg_trigger WHERE tgname = '_900_wake_listeners'
"""


def migration_files() -> list[str]:
    return sorted(
        p.name for p in database.SCHEMA_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql")
    )


def test_migration_files__are_numbered_kebab_case_with_a_rollback_each() -> None:
    names = migration_files()

    assert names, "no migrations found"
    for position, name in enumerate(names, start=1):
        match = NAME.match(name)
        assert match, f"{name} does not follow NNNN.kebab-description.sql"
        assert int(match.group(1)) == position, f"{name} is out of sequence"
        assert (database.SCHEMA_DIR / name.replace(".sql", ".rollback.sql")).exists(), name


def test_migration_files__each_depends_on_the_one_before() -> None:
    names = migration_files()

    for previous, name in zip([None, *names], names, strict=False):
        text = (database.SCHEMA_DIR / name).read_text()
        depends = re.search(r"^-- depends:(.*)$", text, re.MULTILINE)
        assert depends, f"{name} has no -- depends: line"
        expected = previous.removesuffix(".sql") if previous else ""
        assert depends.group(1).strip() == expected


def test_trigger_files__open_with_what_fires_them_and_why() -> None:
    for path in database.trigger_files():
        header = path.read_text().splitlines()[:3]
        assert all(line.startswith("--") for line in header), path.name


def test_migrations__go_up_down_and_up_again(empty_database_url: str) -> None:
    url = empty_database_url

    assert database.migrate(url) == len(migration_files())
    database.apply_triggers(url)
    with psycopg.connect(url) as conn:
        tables_after_up = conn.execute(MARKETING_TABLES).fetchone()

    assert database.rollback_all(url) == len(migration_files())
    with psycopg.connect(url) as conn:
        assert conn.execute(MARKETING_TABLES).fetchone() == (0,)

    assert database.migrate(url) == len(migration_files())
    database.apply_triggers(url)
    with psycopg.connect(url) as conn:
        assert conn.execute(MARKETING_TABLES).fetchone() == tables_after_up
        assert conn.execute(OUR_TRIGGERS).fetchone() == (1,)


def test_triggers__apply_twice_without_change(empty_database_url: str) -> None:
    database.prepare_database(empty_database_url)

    database.prepare_database(empty_database_url)

    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute(OUR_TRIGGERS).fetchone() == (1,)
        conn.execute(
            "INSERT INTO marketing.pipeline_events (event_type, payload) VALUES ('x', '{}')"
        )
        assert conn.execute("SELECT count(*) FROM marketing.pipeline_events").fetchone() == (1,)


def test_migrate__refuses_a_url_that_is_not_postgresql() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        database.migrate("mysql://localhost/cascade")
