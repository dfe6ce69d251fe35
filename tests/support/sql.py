"""Small query helpers for tests."""

from __future__ import annotations

from typing import Any

import asyncpg


async def one(conn: asyncpg.Connection, query: str, *args: Any) -> asyncpg.Record:
    """The single row `query` returns; fails the test if there is none."""
    row = await conn.fetchrow(query, *args)
    assert row is not None, f"no row from: {query}"
    return row
