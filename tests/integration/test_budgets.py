"""Budget guardrails against a real database: reservations fit or are refused with a plain
message, concurrent reservations never overshoot, windows reset, refunds give back."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import LiteralString

import asyncpg
import pytest

from cascade.budgets import BudgetExhausted, UnknownGuardrail, refund, reserve

KEY = "enrichment_budget"  # seeded by schema/0001: limit 100 USD per month

USED: LiteralString = "SELECT used FROM marketing.shq_guardrails WHERE guardrail_key = $1"
SET_USED: LiteralString = "UPDATE marketing.shq_guardrails SET used = $2 WHERE guardrail_key = $1"
WINDOW: LiteralString = """
    SELECT used, window_started_at > now() - interval '1 minute' AS fresh
      FROM marketing.shq_guardrails WHERE guardrail_key = $1
"""
EXPIRE_WINDOW: LiteralString = """
    UPDATE marketing.shq_guardrails
       SET window_started_at = now() - period - interval '1 second'
     WHERE guardrail_key = $1
"""
UPDATED_AT: LiteralString = (
    "SELECT updated_at FROM marketing.shq_guardrails WHERE guardrail_key = $1"
)


async def used(db: asyncpg.Connection, key: str = KEY) -> Decimal:
    value: Decimal = await db.fetchval(USED, key)
    return value


async def test_reserve__adds_the_amount_while_it_fits(db: asyncpg.Connection) -> None:
    await reserve(db, KEY, Decimal("0.10"))
    await reserve(db, KEY, Decimal("99.90"))

    assert await used(db) == Decimal("100.00")


async def test_reserve__past_the_limit_raises_budget_exhausted_and_spends_nothing(
    db: asyncpg.Connection,
) -> None:
    await db.execute(SET_USED, KEY, Decimal("99.95"))

    with pytest.raises(BudgetExhausted) as refused:
        await reserve(db, KEY, Decimal("0.10"))

    assert str(refused.value).startswith(
        "enrichment_budget used up: 99.95 of 100 USD this period, 0.10 more does not fit; "
        "resets at "
    )
    assert refused.value.used == Decimal("99.95")
    assert refused.value.limit == Decimal(100)
    assert await used(db) == Decimal("99.95")


async def test_reserve__zero_never_fails_and_never_writes(db: asyncpg.Connection) -> None:
    await db.execute(SET_USED, KEY, Decimal(100))
    before = await db.fetchval(UPDATED_AT, KEY)

    await reserve(db, KEY, Decimal(0))

    assert await db.fetchval(UPDATED_AT, KEY) == before


async def test_reserve__unknown_key_is_a_clear_error(db: asyncpg.Connection) -> None:
    with pytest.raises(UnknownGuardrail, match="no guardrail 'espresso_budget'"):
        await reserve(db, "espresso_budget", Decimal(1))


async def test_reserve__refuses_negative_amounts(db: asyncpg.Connection) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        await reserve(db, KEY, Decimal(-1))


async def test_reserve__concurrent_reservations_never_exceed_the_limit(
    db: asyncpg.Connection, database_url: str
) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(8)]
    try:

        async def spend_until_refused(conn: asyncpg.Connection) -> int:
            granted = 0
            while True:
                try:
                    await reserve(conn, KEY, Decimal("0.70"))
                except BudgetExhausted:
                    return granted
                granted += 1

        granted = await asyncio.gather(*(spend_until_refused(c) for c in connections))
    finally:
        await asyncio.gather(*(c.close() for c in connections))

    # 142 reservations of 0.70 fit in 100 (99.40); the 143rd would not, whoever asked.
    assert sum(granted) == 142
    assert await used(db) == Decimal("99.40")


async def test_reserve__starts_a_new_window_once_the_period_has_passed(
    db: asyncpg.Connection,
) -> None:
    await db.execute(SET_USED, KEY, Decimal(100))
    await db.execute(EXPIRE_WINDOW, KEY)

    await reserve(db, KEY, Decimal(3))

    row = await db.fetchrow(WINDOW, KEY)
    assert row is not None
    assert (row["used"], row["fresh"]) == (Decimal(3), True)


async def test_reserve__an_expired_window_counts_as_empty_in_the_refusal(
    db: asyncpg.Connection,
) -> None:
    await db.execute(SET_USED, KEY, Decimal(100))
    await db.execute(EXPIRE_WINDOW, KEY)

    with pytest.raises(BudgetExhausted, match="used up: 0 of 100 USD this period"):
        await reserve(db, KEY, Decimal(101))


async def test_refund__gives_back_an_unspent_reservation(db: asyncpg.Connection) -> None:
    await reserve(db, KEY, Decimal("5.00"))

    await refund(db, KEY, Decimal("5.00"))

    assert await used(db) == Decimal("0.00")


async def test_refund__never_takes_the_spend_below_zero(db: asyncpg.Connection) -> None:
    await reserve(db, KEY, Decimal(1))

    await refund(db, KEY, Decimal(2))

    assert await used(db) == Decimal(0)


async def test_refund__unknown_key_is_a_clear_error(db: asyncpg.Connection) -> None:
    with pytest.raises(UnknownGuardrail):
        await refund(db, "espresso_budget", Decimal(1))
