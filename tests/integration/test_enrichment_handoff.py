"""Handing a slot to Apify: the events the hand-off causes belong to the handing event's run,
and a run that never started (the listener stopped in between) is started by the re-run."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg

from providers.base import ContactQuery, Mode, StartedRun
from tests.integration.test_enrichment_edges import ADD_COMPANY, registry_with
from tests.support.listening import drain, running
from tests.support.waiting import eventually


class SilentApify:
    """Starts a run whose webhook never comes."""

    name = "apify"
    mode: Mode = "sandbox"
    cost_per_call = Decimal(0)

    async def start_run(
        self, query: ContactQuery, *, slot_ids: tuple[int, ...], webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun:  # fmt: skip
        return StartedRun("apify", "sandbox", f"run-silent-{slot_ids[0]}", Decimal(0), 1.0)


async def test_lineage__the_deadline_event_of_a_hand_off_is_a_child_of_the_handing_event(
    db: asyncpg.Connection, database_url: str
) -> None:
    company = await db.fetchval(ADD_COMPANY)
    async with db.transaction():
        await db.execute("SELECT set_config('cascade.correlation_id', 'corr-review', true)")
        await db.execute(
            "INSERT INTO marketing.company_slots (company_id, role, providers_tried)"
            " VALUES ($1, 'CEO', '{peopledatalabs,prospeo}')",
            company,
        )
    created = await db.fetchrow(
        "SELECT id, correlation_id FROM marketing.pipeline_events"
        " WHERE event_type = 'slots_created'"
    )
    assert created is not None
    assert created["correlation_id"] == "corr-review"

    await drain(database_url, registry_with(SilentApify(), apify_timeout=0.5, roles=()))

    deadline = await db.fetchrow(
        "SELECT id, parent_event_id, run_id, correlation_id FROM marketing.pipeline_events"
        " WHERE event_type = 'slots_created' AND payload->>'reason' = 'deadline'"
    )
    assert deadline is not None
    # The slot was handed to Apify by the `created` event's handler: its deadline event is
    # that event's child, in its run, with its correlation id.
    assert (deadline["parent_event_id"], deadline["run_id"], deadline["correlation_id"]) == (
        created["id"],
        created["id"],
        "corr-review",
    ), dict(deadline)


class HangingApify:
    """An Apify whose start_run does not return before the listener is stopped (a deploy's
    SIGTERM; the drain timeout passes and the in-flight handler is cancelled)."""

    name = "apify"
    mode: Mode = "sandbox"
    cost_per_call = Decimal(0)

    async def start_run(
        self, query: ContactQuery, *, slot_ids: tuple[int, ...], webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun:  # fmt: skip
        await asyncio.sleep(60)
        raise AssertionError("never reached")


class CountingApify(SilentApify):
    def __init__(self) -> None:
        self.calls = 0

    async def start_run(
        self, query: ContactQuery, *, slot_ids: tuple[int, ...], webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun:  # fmt: skip
        self.calls += 1
        return await super().start_run(
            query, slot_ids=slot_ids, webhook_url=webhook_url, idempotency_key=idempotency_key
        )


async def test_apify__a_stop_while_a_run_is_starting_does_not_skip_apify(
    db: asyncpg.Connection, database_url: str
) -> None:
    company = await db.fetchval(ADD_COMPANY)
    slot = await db.fetchval(
        "INSERT INTO marketing.company_slots (company_id, role, providers_tried)"
        " VALUES ($1, 'CEO', '{peopledatalabs,prospeo}') RETURNING id",
        company,
    )

    async def handed_off() -> bool:
        status = await db.fetchval("SELECT status FROM marketing.company_slots WHERE id = $1", slot)
        return bool(status == "awaiting_provider")

    # The listener is stopped while start_run is in flight: the drain times out, the handler
    # is cancelled and its lease released.
    hanging = registry_with(HangingApify(), apify_timeout=2.0, roles=())
    async with running(database_url, hanging, drain_timeout=0.3):
        await eventually(handed_off)
    pending = await db.fetchval(
        "SELECT pending_run_id FROM marketing.company_slots WHERE id = $1", slot
    )
    assert pending.startswith("pending:")  # the hand-off committed; no run was ever started

    # Another listener takes the released event (and, later, the deadline event).
    apify = CountingApify()
    await drain(database_url, registry_with(apify, apify_timeout=2.0, roles=()))

    row = await db.fetchrow(
        "SELECT status, unfilled_reason FROM marketing.company_slots WHERE id = $1", slot
    )
    assert row is not None
    # Apify was never asked for this slot: it must be asked now, not timed out as if it had
    # been and marked tried.
    assert apify.calls == 1, (apify.calls, dict(row))
