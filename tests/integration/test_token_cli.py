"""`cascade token create|list|revoke` against a fresh database: the secret is printed once and
only its hash stored; listings never show the hash; revoke takes an id or a prefix."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from cascade.cli import main

ROW = "SELECT * FROM marketing.api_tokens WHERE prefix = left(%s, 12)"
# Prefixes are 48 random bits, so a clash is made by hand.
SAME_PREFIX = """
    INSERT INTO marketing.api_tokens (name, role, token_hash, prefix, created_by)
    VALUES ('twin', 'viewer', %s, 'cas_twin', 'test')
"""
LISTED = {
    "id", "name", "role", "prefix", "created_at", "last_used_at", "revoked_at", "created_by",
}  # fmt: skip


@pytest.fixture
def cascade(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """Runs `cascade ARGS...` on this test's database; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*args: str) -> tuple[int | str | None, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return exited.value.code, out, err

    return run


def stored(database_url: str, secret: str) -> dict[str, Any]:
    """The token's row as the database holds it."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute(ROW, (secret,)).fetchone()
    assert row is not None
    return row


def test_token_create__prints_the_secret_once_and_stores_only_its_hash(
    cascade: Any, database_url: str
) -> None:
    code, out, err = cascade("token", "create", "--role", "ops", "--name", "deploy bot")

    assert code == 0
    secret = out.strip()
    assert secret.startswith("cas_")
    assert len(secret) == 4 + 43
    assert "will not be shown again" in err
    assert secret not in err
    row = stored(database_url, secret)
    assert row["token_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["role"] == "ops"
    assert row["name"] == "deploy bot"
    assert row["created_by"].startswith("cli:")
    assert not any(secret in str(value) for value in row.values())


def test_token_create__refuses_an_unknown_role(cascade: Any) -> None:
    code, out, _ = cascade("token", "create", "--role", "root", "--name", "x")

    assert code == 2
    assert out == ""


def test_token_list__prints_json_lines_without_the_hash(cascade: Any) -> None:
    secrets = [
        cascade("token", "create", "--role", role, "--name", role)[1].strip()
        for role in ("viewer", "admin")
    ]

    code, out, _ = cascade("token", "list")

    assert code == 0
    listed = [json.loads(line) for line in out.splitlines()]
    assert [t["role"] for t in listed] == ["viewer", "admin"]
    assert [t["prefix"] for t in listed] == [s[:12] for s in secrets]
    assert all(set(t) == LISTED for t in listed)
    for secret in secrets:
        assert hashlib.sha256(secret.encode()).hexdigest() not in out
        assert secret not in out


def test_token_revoke__by_prefix_or_id_and_twice_without_harm(
    cascade: Any, database_url: str
) -> None:
    first = cascade("token", "create", "--role", "viewer", "--name", "a")[1].strip()
    second = cascade("token", "create", "--role", "viewer", "--name", "b")[1].strip()
    second_id = stored(database_url, second)["id"]

    by_prefix = cascade("token", "revoke", first[:12])
    by_id = cascade("token", "revoke", str(second_id))
    revoked_at = stored(database_url, second)["revoked_at"]
    again = cascade("token", "revoke", str(second_id))

    assert by_prefix[0] == by_id[0] == again[0] == 0
    assert "is now revoked" in by_prefix[1]
    assert "was already revoked" in again[1]
    assert stored(database_url, first)["revoked_at"] is not None
    assert stored(database_url, second)["revoked_at"] == revoked_at
    listed = [json.loads(line) for line in cascade("token", "list")[1].splitlines()]
    assert all(t["revoked_at"] is not None for t in listed)


def test_token_revoke__an_unknown_token_fails(cascade: Any) -> None:
    code, _, err = cascade("token", "revoke", "cas_nothere")

    assert code == 1
    assert "no token with id or prefix 'cas_nothere'" in err


def test_token_revoke__an_ambiguous_prefix_fails_and_revokes_nothing(
    cascade: Any, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        for digit in "01":
            conn.execute(SAME_PREFIX, (digit * 64,))

    code, _, err = cascade("token", "revoke", "cas_twin")
    listed = [json.loads(line) for line in cascade("token", "list")[1].splitlines()]

    assert code == 1
    assert "matches tokens" in err
    assert [t["revoked_at"] for t in listed] == [None, None]
