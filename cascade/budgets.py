"""Spending against marketing.shq_guardrails' budgets (enrichment_budget, verification_budget).

`reserve` books an amount before a paid provider call and `refund` gives it back when the call
never reached the provider. Reserving is one UPDATE whose WHERE clause carries the check, so
concurrent reservations serialise on the guardrail's row lock and PostgreSQL re-checks the
condition against the row as the previous writer left it (READ COMMITTED's re-evaluation of
an updated row): no read-then-write race, and the limit is never overshot. The same UPDATE
starts a new window (used 0, window_started_at now()) once `period` has passed since the last
one began.

Each call is its own statement: run it outside a long transaction, or the row lock is held
until that transaction ends and every other reservation waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import LiteralString

from cascade.handling import Connection

# Adds $2 to the current window's spend if it fits under the limit; a window that has run its
# period restarts from zero first. Every expression reads the row being updated, never a
# second scan of the table: under concurrency PostgreSQL re-evaluates them against the
# latest row version, which a self-join's other side would not be. No row back means
# "unknown key" or "does not fit".
RESERVE: LiteralString = """
    UPDATE marketing.shq_guardrails
       SET used = CASE WHEN window_started_at + period <= now() THEN 0 ELSE used END + $2,
           window_started_at = CASE WHEN window_started_at + period <= now() THEN now()
                                    ELSE window_started_at END,
           updated_at = now()
     WHERE guardrail_key = $1
       AND CASE WHEN window_started_at + period <= now() THEN 0 ELSE used END + $2
           <= limit_value
 RETURNING used
"""

# Why a reservation was refused: the window's spend as RESERVE saw it, and when it resets.
# Read after the refusal only to word the error; it decides nothing.
STANDING: LiteralString = """
    SELECT CASE WHEN window_started_at + period <= now() THEN 0 ELSE used END AS used,
           limit_value,
           unit,
           CASE WHEN window_started_at + period <= now() THEN now() + period
                ELSE window_started_at + period END AS resets_at
      FROM marketing.shq_guardrails
     WHERE guardrail_key = $1
"""

# Gives back an unspent reservation. Never below zero: if the window reset in between, the
# reservation belonged to the old window and the new one owes nothing back.
REFUND: LiteralString = """
    UPDATE marketing.shq_guardrails
       SET used = greatest(used - $2, 0), updated_at = now()
     WHERE guardrail_key = $1
 RETURNING used
"""


class UnknownGuardrail(LookupError):
    """No row in marketing.shq_guardrails has this key: a configuration error, not a limit."""

    def __init__(self, guardrail_key: str) -> None:
        super().__init__(f"no guardrail {guardrail_key!r} in marketing.shq_guardrails")
        self.guardrail_key = guardrail_key


@dataclass(frozen=True, slots=True)
class _Standing:
    used: Decimal
    limit: Decimal
    unit: str
    resets_at: datetime


class BudgetExhausted(Exception):
    """The amount does not fit in what is left of this period's budget."""

    def __init__(
        self,
        guardrail_key: str,
        used: Decimal,
        limit: Decimal,
        resets_at: datetime,
        *,
        unit: str = "",
        requested: Decimal | None = None,
    ) -> None:
        spent = f"{used} of {limit}{' ' + unit if unit else ''} this period"
        asked = f", {requested} more does not fit" if requested is not None else ""
        super().__init__(
            f"{guardrail_key} used up: {spent}{asked}; resets at {resets_at.isoformat()}"
        )
        self.guardrail_key = guardrail_key
        self.used = used
        self.limit = limit
        self.resets_at = resets_at
        self.unit = unit
        self.requested = requested


async def reserve(conn: Connection, guardrail_key: str, amount: Decimal) -> None:
    """Books `amount` against the guardrail, or raises BudgetExhausted (UnknownGuardrail for a
    key that does not exist). Zero is always granted and writes nothing."""
    _check(amount)
    if amount == 0:
        return
    if await conn.fetchval(RESERVE, guardrail_key, amount) is not None:
        return
    standing = await _standing(conn, guardrail_key)
    raise BudgetExhausted(
        guardrail_key,
        standing.used,
        standing.limit,
        standing.resets_at,
        unit=standing.unit,
        requested=amount,
    )


async def reserve_each(
    conn: Connection, guardrail_key: str, unit_cost: Decimal, count: int
) -> tuple[int, BudgetExhausted | None]:
    """Books `count` calls of `unit_cost` each: all of them in one reservation when they fit,
    else one at a time until the budget is used up. Answers how many were booked and, when
    not all, the refusal that stopped it (for the rest to wait on and report)."""
    try:
        await reserve(conn, guardrail_key, unit_cost * count)
        return count, None
    except BudgetExhausted as refused:
        if count == 1:
            return 0, refused
    for booked in range(count):
        try:
            await reserve(conn, guardrail_key, unit_cost)
        except BudgetExhausted as refused:
            return booked, refused
    return count, None


async def refund(conn: Connection, guardrail_key: str, amount: Decimal) -> None:
    """Returns a reservation whose call was never made (it failed before reaching the
    provider). Zero writes nothing."""
    _check(amount)
    if amount == 0:
        return
    if await conn.fetchval(REFUND, guardrail_key, amount) is None:
        raise UnknownGuardrail(guardrail_key)


async def _standing(conn: Connection, guardrail_key: str) -> _Standing:
    row = await conn.fetchrow(STANDING, guardrail_key)
    if row is None:
        raise UnknownGuardrail(guardrail_key)
    return _Standing(row["used"], row["limit_value"], row["unit"], row["resets_at"])


def _check(amount: Decimal) -> None:
    if amount < 0 or not amount.is_finite():
        raise ValueError(f"a budget amount must be a finite, non-negative number, not {amount}")
