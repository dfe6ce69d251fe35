"""Every SQL statement of seed 003 runs unchanged against a migrated database (CONTRACT).

The statements are read from `seed_003_statements.sql`, a verbatim copy of the seed's ```sql
blocks kept beside this test, so the suite does not depend on the seed being present; one test
checks that the copy still matches the seed wherever the seed is on disk. The seed's CREATE
TABLE statements cannot run (the migrations made those tables already): they are checked
instead for "the migrated table has at least these columns, of a compatible type".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

FIXTURE = Path(__file__).with_name("seed_003_statements.sql")
SEEDS_DIR = Path("/work/shared/seeds")
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)
CREATE_TABLE = re.compile(r"^CREATE TABLE (\w+)\.(\w+) \((.*)\)$", re.DOTALL)

# The seed's column types, and the types a migration may give such a column instead: wider
# integers (ids are bigint identities) and timestamptz for TIMESTAMP.
COMPATIBLE_TYPES = {
    "serial": {"integer", "bigint"},
    "int": {"integer", "bigint"},
    "text": {"text"},
    "jsonb": {"jsonb"},
    "numeric": {"numeric"},
    "time": {"time without time zone"},
    "timestamp": {"timestamp without time zone", "timestamp with time zone"},
}

COLUMN_TYPES: LiteralString = """
    SELECT column_name, data_type FROM information_schema.columns
     WHERE table_schema = %s AND table_name = %s
"""


def seed_003() -> Path | None:
    found = sorted(SEEDS_DIR.glob("003_*.txt"))
    return found[0] if found else None


def strip_comments(sql: str) -> str:
    """`sql` without its -- comments (quotes respected), whitespace collapsed."""
    kept, in_quote, i = [], False, 0
    while i < len(sql):
        if sql[i] == "'":
            in_quote = not in_quote
        elif not in_quote and sql.startswith("--", i):
            i = sql.find("\n", i) if "\n" in sql[i:] else len(sql)
            continue
        kept.append(sql[i])
        i += 1
    return " ".join("".join(kept).split())


def split_statements(sql: str) -> list[str]:
    """The statements of a script, each with its own comments, split at semicolons that are
    neither quoted nor commented."""
    statements, start, in_quote, i = [], 0, False, 0
    while i < len(sql):
        if sql[i] == "'":
            in_quote = not in_quote
        elif not in_quote and sql.startswith("--", i):
            i = sql.find("\n", i) if "\n" in sql[i:] else len(sql)
            continue
        elif not in_quote and sql[i] == ";":
            statements.append(sql[start : i + 1].strip())
            start = i + 1
        i += 1
    assert not strip_comments(sql[start:]), "a statement does not end with a semicolon"
    return statements


def fixture_statements() -> list[str]:
    return split_statements(FIXTURE.read_text())


def statement_ids() -> list[str]:
    return [strip_comments(s)[:60] for s in fixture_statements()]


def table_columns(statement: str) -> tuple[str, str, dict[str, str]]:
    """Schema, table and {column: seed type} of a CREATE TABLE statement."""
    match = CREATE_TABLE.match(strip_comments(statement).removesuffix(";").strip())
    assert match, statement
    schema, table, body = match.groups()
    columns = {}
    for item in body.split(","):
        name, sql_type, *_ = item.split()
        columns[name.lower()] = sql_type.lower()
    return schema, table, columns


def test_seed_003_fixture__matches_the_seed() -> None:
    seed = seed_003()
    if seed is None:
        pytest.skip(f"seed 003 is not in {SEEDS_DIR}: the committed fixture stands alone")

    blocks = SQL_BLOCK.findall(seed.read_text())
    from_seed = [strip_comments(s) for block in blocks for s in split_statements(block)]

    assert [strip_comments(s) for s in fixture_statements()] == from_seed


def test_seed_003_fixture__holds_every_kind_of_statement() -> None:
    kinds = {strip_comments(s).split()[0].upper() for s in fixture_statements()}

    assert kinds == {"SELECT", "CREATE", "DELETE", "VACUUM", "INSERT"}


@pytest.mark.parametrize("statement", fixture_statements(), ids=statement_ids())
def test_seed_003_statement__runs_unchanged(statement: str, database_url: str) -> None:
    # Autocommit: seed 003's VACUUM cannot run inside a transaction block.
    with psycopg.connect(database_url, autocommit=True) as conn:
        if strip_comments(statement).upper().startswith("CREATE TABLE"):
            schema, table, expected = table_columns(statement)
            actual: dict[str, str] = dict(conn.execute(COLUMN_TYPES, (schema, table)).fetchall())
            for column, seed_type in expected.items():
                assert column in actual, f"{schema}.{table} has no column {column}"
                assert actual[column] in COMPATIBLE_TYPES[seed_type], (column, actual[column])
        else:
            conn.execute(statement.encode())


# Contact 123 (the seed's GDPR example) with a row in every table that holds a contact, and
# contact 124 beside it in the relationship graph and the campaign, who must survive.
CONTACT_123_EVERYWHERE: LiteralString = """
    INSERT INTO marketing.company_master (id, company_name, domain, website)
    VALUES (1, 'Acme', 'acme.example', 'https://acme.example');
    INSERT INTO marketing.contact_enrichment
        (id, company_id, full_name, company_name, email, provider, provider_mode)
    VALUES (123, 1, 'Ada Example', 'Acme', 'user@example.com', 'apify', 'sandbox'),
           (124, 1, 'Bob Example', 'Acme', 'bob@example.com', 'apify', 'sandbox');
    INSERT INTO marketing.email_verification
        (contact_id, email, result, verdict, provider, provider_mode)
    VALUES (123, 'user@example.com', 'ok', 'deliverable', 'millionverifier', 'sandbox');
    INSERT INTO marketing.message_templates (id, template_name, subject, body)
    VALUES (1, 'intro', 'Hello', 'Hi {{first_name}}');
    INSERT INTO marketing.campaigns (id, campaign_name, template_id) VALUES (1, 'Spring', 1);
    INSERT INTO marketing.campaign_contacts (campaign_id, contact_id) VALUES (1, 123), (1, 124);
    INSERT INTO marketing.message_queue (id, campaign_id, contact_id, template_id, status, sent_at)
    VALUES (1, 1, 123, 1, 'sent', now()), (2, 1, 124, 1, 'sent', now());
    INSERT INTO marketing.delivery_log (message_id, campaign_id, contact_id, status)
    VALUES (1, 1, 123, 'delivered');
    INSERT INTO marketing.engagement_events (contact_id, message_id, campaign_id, event_type)
    VALUES (123, 1, 1, 'open');
    INSERT INTO marketing.responses (contact_id, message_id, campaign_id, body)
    VALUES (123, 1, 1, 'Tell me more');
    INSERT INTO marketing.lead_scores (contact_id, score) VALUES (123, 80);
    INSERT INTO marketing.crm_sync_log (contact_id, crm, status) VALUES (123, 'sandbox', 'success');
    INSERT INTO marketing.follow_up_queue
        (campaign_id, contact_id, previous_message_id, sequence_step, due_at)
    VALUES (1, 123, 1, 2, now() + interval '3 days');
    INSERT INTO marketing.contact_timeline (contact_id, event_type) VALUES (123, 'email_sent');
    INSERT INTO marketing.relationship_graph (contact_a_id, contact_b_id, relationship_type)
    VALUES (123, 124, 'colleague');
    INSERT INTO marketing.contact_ltv (contact_id, total_emails_sent) VALUES (123, 1);
"""

# Every column that names a contact, wherever it is.
CONTACT_COLUMNS: LiteralString = """
    SELECT c.table_name, c.column_name
      FROM information_schema.columns AS c
      JOIN information_schema.tables AS t USING (table_schema, table_name)
     WHERE c.table_schema = 'marketing' AND t.table_type = 'BASE TABLE'
       AND c.column_name IN ('contact_id', 'contact_a_id', 'contact_b_id')
"""


def test_seed_003_gdpr_delete__erases_the_contact_from_every_table(database_url: str) -> None:
    gdpr_delete = [s for s in fixture_statements() if "= 123" in s and "DELETE" in s.upper()]
    assert len(gdpr_delete) == 2
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(CONTACT_123_EVERYWHERE)

        for statement in gdpr_delete:
            conn.execute(statement.encode())

        columns = conn.execute(CONTACT_COLUMNS).fetchall()
        assert len(columns) >= 13
        for table, column in columns:
            count = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM marketing.{} WHERE {} = 123").format(
                    psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)
                )
            ).fetchone()
            assert count == (0,), f"marketing.{table}.{column} still holds contact 123"
        assert conn.execute(
            "SELECT count(*) FROM marketing.contact_enrichment WHERE id = 124"
        ).fetchone() == (1,)
