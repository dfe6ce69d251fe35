"""Group commit (cascade/web/group_commit.py): Instantly's opens and clicks arriving together
share a transaction, and each request is still answered, keyed, correlated and failed on its
own. Over real HTTP against a real database, and the writer itself against a real pool."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.types import Message, Scope

import web
from cascade.handling import Connection
from cascade.web import instantly
from cascade.web.deliveries import Delivery
from cascade.web.group_commit import Busy, GroupCommit
from cascade.web.metrics import REGISTRY
from tests.support.waiting import eventually
from tests.web.conftest import StartServer
from web import create_app

PEOPLE = 40

# PEOPLE contacts at one company, lead-N@acme.com, each with an email sent through Instantly
# whose provider_message_id (Instantly's email_id) is "email-N".
ADD_PEOPLE = """
    WITH company AS (
        INSERT INTO marketing.company_master (company_name, domain, website, country)
        VALUES ('Acme', 'acme.com', 'https://acme.com', 'US') RETURNING id
    ),
    campaign AS (
        INSERT INTO marketing.campaigns (campaign_name) VALUES ('Q3') RETURNING id
    ),
    person AS (
        INSERT INTO marketing.contact_enrichment
            (company_id, full_name, company_name, email, provider, provider_mode)
        SELECT company.id, 'Lead ' || n, 'Acme', 'lead-' || n || '@acme.com', 'prospeo',
               'sandbox'
          FROM company, generate_series(1, $1) AS n
        RETURNING id, email
    )
    INSERT INTO marketing.message_queue
        (campaign_id, contact_id, sequence_step, channel, provider, provider_message_id)
    SELECT campaign.id, person.id, 1, 'email', 'instantly',
           'email-' || split_part(split_part(person.email, '@', 1), '-', 2)
      FROM campaign, person
"""
CONTACT_BY_EMAIL = "SELECT id FROM marketing.contact_enrichment WHERE email = $1"
OPENS = """
    SELECT e.correlation_id, g.contact_id, g.id AS engagement_id
      FROM marketing.pipeline_events AS e
      JOIN marketing.engagement_events AS g ON g.id = e.record_id
     WHERE e.event_type = 'email_opened'
"""
# Rows inserted by one transaction share its xmin.
TRANSACTIONS = "SELECT count(DISTINCT xmin::text) FROM marketing.processed_webhook_events"
CLAIMS = "SELECT count(*) FROM marketing.processed_webhook_events"
ENGAGEMENTS = "SELECT count(*) FROM marketing.engagement_events"
# How the session running it has planned a statement it prepared.
PLANS_OF = """
    SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1
"""
# A delivery the database refuses: a trigger only this test installs (the database is the
# test's own), refusing the contacts listed in public.refused.
REFUSE_CONTACTS = """
    CREATE TABLE public.refused (contact_id bigint PRIMARY KEY);
    CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT FROM public.refused WHERE contact_id = NEW.contact_id) THEN
            RAISE EXCEPTION 'refused for the test';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER refuse BEFORE INSERT ON marketing.engagement_events
        FOR EACH ROW EXECUTE FUNCTION public.refuse();
"""
REFUSE = "INSERT INTO public.refused (contact_id) VALUES ($1)"
FORGIVE = "DELETE FROM public.refused"
HOLD_CLAIM = """
    INSERT INTO marketing.processed_webhook_events (provider, event_key, event_name, verified)
    VALUES ('instantly', $1, 'email_opened', false)
"""
OTHER_CONNECTIONS = """
    SELECT count(*) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
LOCK_ENGAGEMENTS = "LOCK TABLE marketing.engagement_events IN EXCLUSIVE MODE"
WAITING_ON_A_LOCK = """
    SELECT count(*) FROM pg_stat_activity
     WHERE datname = current_database() AND wait_event_type = 'Lock'
"""


@pytest.fixture
async def people(db: asyncpg.Connection) -> int:
    await db.execute(ADD_PEOPLE, PEOPLE)
    await db.execute("DELETE FROM marketing.pipeline_events")  # the seeding's own events
    return PEOPLE


def opened(n: int, **data: Any) -> bytes:
    """Instantly's open of lead n's email, as Instantly posts it."""
    return json.dumps({
        "event_type": "email_opened", "timestamp": f"2025-06-02T09:30:{n % 60:02d}Z",
        "campaign_id": "instantly-campaign", "lead_email": f"lead-{n}@acme.com", "step": 1,
        "email_id": f"email-{n}", **data,
    }).encode()  # fmt: skip


def replied(n: int) -> bytes:
    """Lead n's reply, which keeps a transaction of its own."""
    return json.dumps({
        "event_type": "email_replied", "timestamp": "2025-06-02T09:30:00Z",
        "lead_email": f"lead-{n}@acme.com", "step": 1, "reply_text": "hi",
    }).encode()  # fmt: skip


async def post(client: httpx.AsyncClient, body: bytes, correlation: str) -> httpx.Response:
    headers = {"content-type": "application/json", "x-correlation-id": correlation}
    return await client.post("/webhooks/instantly", content=body, headers=headers)


async def test_opens_sent_together_share_transactions_and_keep_their_own_answers_and_ids(
    client: httpx.AsyncClient, db: asyncpg.Connection, people: int
) -> None:
    answers = await asyncio.gather(
        *(post(client, opened(n), f"corr-{n}") for n in range(1, people + 1))
    )

    assert [a.status_code for a in answers] == [202] * people
    for n, answer in enumerate(answers, start=1):
        contact = await db.fetchval(CONTACT_BY_EMAIL, f"lead-{n}@acme.com")
        (applied,) = answer.json()["applied"]
        assert (applied["event"], applied["contact_id"]) == ("open", contact)
        assert answer.json()["correlation_id"] == f"corr-{n}"
    # Each event carries the correlation id of the request that caused it, and names the
    # engagement row that answer reported.
    reported = {a.json()["correlation_id"]: a.json()["applied"][0] for a in answers}
    for event in await db.fetch(OPENS):
        mine = reported[event["correlation_id"]]
        assert (event["contact_id"], event["engagement_id"]) == (
            mine["contact_id"], mine["engagement_event_id"],
        )  # fmt: skip
    assert len(await db.fetch(OPENS)) == people
    assert await db.fetchval(TRANSACTIONS) < people


async def test_the_writers_plan_their_statement_once_however_small_the_batches(
    database_url: str, people: int
) -> None:
    # One request at a time: every batch holds one delivery, the size for which PostgreSQL's
    # default would plan the statement afresh at each execution.
    app = create_app(database_url, {})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cascade") as client:
            for n in range(1, 9):
                assert (await post(client, opened(n), f"alone-{n}")).status_code == 202
        # The pool opened one connection for the writer, the only one it needed.
        async with app.state.writer_pool.acquire() as writer:
            plans = await writer.fetchrow(PLANS_OF, instantly.RECORD_ENGAGEMENTS)

    assert (plans["generic_plans"], plans["custom_plans"]) == (8, 0)


def busy_refusals() -> float:
    # The server runs in a thread of this process: its counters are these.
    labels = {"provider": "instantly"}
    return REGISTRY.get_sample_value("cascade_webhook_busy_refusals_total", labels) or 0.0


async def test_past_max_waiting_an_open_is_refused_at_once_with_retry_after_and_not_stored(
    start_server: StartServer, db: asyncpg.Connection, people: int
) -> None:
    server = start_server({"CASCADE_WEBHOOK_MAX_WAITING": "2"})
    refusals_before = busy_refusals()
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        # The first open's batch waits on a lock, so the opens after it queue.
        holding = db.transaction()
        await holding.start()
        await db.execute(LOCK_ENGAGEMENTS)
        first = asyncio.create_task(post(client, opened(1), "corr-1"))
        await eventually(lambda: db.fetchval(WAITING_ON_A_LOCK))
        later = [asyncio.create_task(post(client, opened(n), f"corr-{n}")) for n in range(2, 7)]

        # Two may wait; the other three are answered while the lock is still held.
        async def three_answered() -> bool:
            return sum(task.done() for task in later) == 3

        await eventually(three_answered)
        refused = [task for task in later if task.done()]
        for answer in [task.result() for task in refused]:
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"]["code"] == "busy"
        assert busy_refusals() - refusals_before == 3  # as /metrics counts them
        await holding.rollback()
        waited = await asyncio.gather(first, *(task for task in later if task not in refused))
        assert [answer.status_code for answer in waited] == [202] * 3
        assert await db.fetchval(CLAIMS) == 3

        # Nothing of a refused open was kept: sent again, it is a first delivery.
        bodies = {f"corr-{n}": opened(n) for n in range(2, 7)}
        again = [
            await post(client, bodies[task.result().headers["x-correlation-id"]], "retried")
            for task in refused
        ]
    assert [answer.status_code for answer in again] == [202] * 3
    assert await db.fetchval(CLAIMS) == await db.fetchval(ENGAGEMENTS) == 6


class AlwaysBusy:
    """A group commit whose queue is always full."""

    async def submit(self, item: object) -> object:
        raise Busy(7)

    async def close(self) -> None:
        pass


async def test_a_busy_answer_names_its_headers_in_lower_case_as_asgi_requires(
    database_url: str,
) -> None:
    body = opened(1)
    # What the webhooks' shortcut reads of a request, as the hang-up test in
    # test_webhook_shortcut.py sends it.
    scope: Scope = {
        "type": "http", "method": "POST", "path": "/webhooks/instantly", "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    app = create_app(database_url, {})
    async with app.router.lifespan_context(app):
        app.state.group_commits["instantly"] = AlwaysBusy()
        await app(scope, receive, send)

    start = sent[0]
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert all(name == name.lower() for name, _ in start["headers"])
    assert json.loads(sent[1]["body"])["error"]["details"] == {"waiting": 7, "retry_after": 1}


async def test_a_writer_pool_that_cannot_open_leaves_no_connection_of_the_app_open(
    database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "PLAN_ONCE", "SET plan_cache_mode = no_such_mode")
    app = create_app(database_url, {})

    with pytest.raises(asyncpg.PostgresError):
        async with app.router.lifespan_context(app):
            pass

    assert await db.fetchval(OTHER_CONNECTIONS) == 0


def test_max_waiting_must_be_a_whole_number_of_at_least_one(database_url: str) -> None:
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ValueError, match="CASCADE_WEBHOOK_MAX_WAITING"):
            create_app(database_url, {"CASCADE_WEBHOOK_MAX_WAITING": bad})


async def test_copies_of_one_open_in_the_same_batch_are_stored_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, people: int
) -> None:
    copies = [post(client, opened(1), f"copy-{i}") for i in range(20)]
    others = [post(client, opened(n), f"other-{n}") for n in range(2, 22)]

    answers = await asyncio.gather(*copies, *others)

    copy_statuses = sorted(a.status_code for a in answers[:20])
    assert copy_statuses == [200] * 19 + [202]
    assert [a.status_code for a in answers[20:]] == [202] * 20
    assert await db.fetchval(CLAIMS) == 21
    assert await db.fetchval(ENGAGEMENTS) == 21
    assert len(await db.fetch(OPENS)) == 21


async def test_a_delivery_the_database_refuses_fails_alone_and_leaves_no_claim(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str, people: int
) -> None:
    await db.execute(REFUSE_CONTACTS)
    await db.execute(REFUSE, await db.fetchval(CONTACT_BY_EMAIL, "lead-7@acme.com"))

    answers = await asyncio.gather(*(post(client, opened(n), f"corr-{n}") for n in range(1, 16)))

    statuses = {n: a.status_code for n, a in enumerate(answers, start=1)}
    assert statuses.pop(7) == 500
    assert answers[6].json()["error"]["details"] == {"correlation_id": "corr-7"}
    assert set(statuses.values()) == {202}
    assert await db.fetchval(CLAIMS) == 14
    assert await db.fetchval(ENGAGEMENTS) == 14
    # Nothing of it was kept, so the sender's retry goes through once the cause is gone.
    await db.execute(FORGIVE)
    retried = await post(client, opened(7), "corr-7-again")
    assert retried.status_code == 202, retried.text


async def test_overlapping_copies_of_opens_and_replies_sent_at_once_apply_exactly_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, people: int
) -> None:
    replies = [replied(n) for n in range(1, 11)]
    bodies = [opened(n) for n in range(1, people + 1)] * 6 + replies * 3
    random.Random(7).shuffle(bodies)

    answers = await asyncio.gather(*(post(client, b, f"c-{i}") for i, b in enumerate(bodies)))

    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 202}, [a.text for a in answers if a.status_code >= 500][:3]
    assert statuses.count(202) == people + 10
    assert await db.fetchval(CLAIMS) == people + 10
    assert await db.fetchval(ENGAGEMENTS) == people


# -- the writer itself ----------------------------------------------------------------------


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as connections:
        yield connections


def delivery(n: int) -> Delivery[instantly.InstantlyEvent]:
    event = instantly.InstantlyEvent.model_validate_json(opened(n))
    key = instantly.composite_key(event)
    assert key is not None
    return Delivery("instantly", event, key, False, f"corr-{n}", key)


async def refuse_alone(item: Delivery[instantly.InstantlyEvent]) -> dict[str, Any] | None:
    raise AssertionError("the batch was not expected to fail")


async def test_a_request_that_goes_away_while_it_waits_still_has_its_delivery_committed(
    pool: asyncpg.Pool, db: asyncpg.Connection, people: int
) -> None:
    group = GroupCommit(pool, instantly.record_engagements, refuse_alone)
    waiting = delivery(3)
    # Another transaction holds the delivery's key, so the batch waits on it.
    async with pool.acquire() as blocker:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute(HOLD_CLAIM, waiting.key)
        request = asyncio.create_task(group.submit(waiting))
        await eventually(lambda: db.fetchval(WAITING_ON_A_LOCK))

        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await holding.rollback()
    await group.close()

    assert await db.fetchval(CLAIMS) == 1
    assert await db.fetchval(ENGAGEMENTS) == 1
    assert len(await db.fetch(OPENS)) == 1


async def test_deliveries_waiting_together_go_in_batches_of_at_most_max_batch(
    pool: asyncpg.Pool, db: asyncpg.Connection, people: int
) -> None:
    batches: list[int] = []

    async def counted(
        conn: Connection, items: Sequence[Delivery[instantly.InstantlyEvent]]
    ) -> list[dict[str, Any] | None]:
        batches.append(len(items))
        return await instantly.record_engagements(conn, items)

    group = GroupCommit(pool, counted, refuse_alone, writers=2, max_batch=8)
    outcomes = await asyncio.gather(*(group.submit(delivery(n)) for n in range(1, people + 1)))
    await group.close()

    assert [o["applied"][0]["contact_id"] for o in outcomes if o] == list(
        await db.fetchval("SELECT array_agg(id ORDER BY id) FROM marketing.contact_enrichment")
    )
    assert sorted(batches) == [8] * (people // 8)


@pytest.mark.parametrize("failure", ["cancelled", "too few outcomes"])
async def test_a_writer_that_fails_answers_its_batch_and_strands_nothing_behind_it(
    pool: asyncpg.Pool, failure: str
) -> None:
    batches: list[Sequence[int]] = []

    async def write_many(conn: Connection, items: Sequence[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.05)  # the second submission queues behind this batch
        if len(batches) > 1:
            return list(items)
        if failure == "cancelled":
            raise asyncio.CancelledError  # the writer task itself stopped
        return []

    async def write_one(item: int) -> int:
        return item

    group: GroupCommit[int, int] = GroupCommit(pool, write_many, write_one, writers=1)
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(group.submit(2))
    _, pending = await asyncio.wait({first, second}, timeout=5)
    await group.close()

    assert not pending, "requests still waiting after their writer failed"
    if failure == "cancelled":
        with pytest.raises(RuntimeError, match="interrupted"):
            first.result()
    else:
        assert first.result() == 1  # written alone after the batch's bad answer
    assert second.result() == 2


async def test_a_full_queue_refuses_the_next_item_at_once_and_writes_those_it_took(
    pool: asyncpg.Pool,
) -> None:
    taken, release = asyncio.Event(), asyncio.Event()
    written: list[int] = []

    async def write_many(conn: Connection, items: Sequence[int]) -> list[int]:
        taken.set()
        await release.wait()
        written.extend(items)
        return list(items)

    async def write_one(item: int) -> int:
        raise AssertionError("no batch was expected to fail")

    group: GroupCommit[int, int] = GroupCommit(pool, write_many, write_one, max_waiting=2)

    async def waiting(count: int) -> bool:
        return group.waiting == count

    first = asyncio.create_task(group.submit(1))
    await asyncio.wait_for(taken.wait(), timeout=10)  # the writer holds the first
    queued = [asyncio.create_task(group.submit(n)) for n in (2, 3)]
    await eventually(lambda: waiting(2))
    try:
        with pytest.raises(Busy, match="2 deliveries are waiting"):
            await asyncio.wait_for(group.submit(4), timeout=5)  # refused, not queued
    finally:
        release.set()

    assert await asyncio.gather(first, *queued) == [1, 2, 3]
    await group.close()
    assert sorted(written) == [1, 2, 3]


class SlowWrites:
    """Writes of numbers that take a while: each batch's size, and the most written at once."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.in_flight = 0
        self.most = 0

    async def write_many(self, conn: Connection, items: Sequence[int]) -> list[int]:
        self.batches.append(len(items))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        return list(items)

    async def write_one(self, item: int) -> int:
        return item


async def test_one_writer_runs_until_a_full_batch_waits(pool: asyncpg.Pool) -> None:
    writes = SlowWrites()
    group = GroupCommit(pool, writes.write_many, writes.write_one, max_batch=8)
    trickle = []
    for n in range(7):  # each arrives while the batch before it is being written
        trickle.append(asyncio.create_task(group.submit(n)))
        await asyncio.sleep(0.005)
    await asyncio.gather(*trickle)
    alone = writes.most
    await asyncio.gather(*(group.submit(n) for n in range(40)))

    assert (alone, writes.most > 1) == (1, True)


async def test_a_writer_that_finds_a_backlog_takes_half_and_leaves_the_rest_to_another(
    pool: asyncpg.Pool,
) -> None:
    writes = SlowWrites()
    group = GroupCommit(pool, writes.write_many, writes.write_one, share_from=4)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.005)  # its writer is writing it alone
    backlog = [asyncio.create_task(group.submit(n)) for n in range(1, 21)]

    assert await asyncio.gather(first, *backlog) == list(range(21))
    # 20 waiting: half for the first writer, the rest to a second, which halves it again
    # with a third; 5 is under twice share_from and goes whole.
    assert (writes.batches, writes.most) == ([1, 10, 5, 5], 3)


async def test_under_random_arrivals_every_writer_has_work_and_at_most_writers_run(
    pool: asyncpg.Pool,
) -> None:
    rng = random.Random(7)
    idle, started = 0, 0
    writes = SlowWrites()

    class Watched(GroupCommit[int, int]):
        async def _write_waiting(self, batch: list[Any]) -> None:
            nonlocal idle, started
            started += 1
            idle += not (batch or self._waiting)
            await super()._write_waiting(batch)

    group = Watched(pool, writes.write_many, writes.write_one, max_batch=32, writers=3,
                    share_from=2)  # fmt: skip
    submitted = []
    for n in range(2000):
        submitted.append(asyncio.create_task(group.submit(n)))
        if rng.random() < 0.05:
            await asyncio.sleep(rng.uniform(0, 0.004))

    assert await asyncio.wait_for(asyncio.gather(*submitted), timeout=60) == list(range(2000))
    assert (sum(writes.batches), writes.most <= 3) == (2000, True)
    assert (started > 1, idle) == (True, 0)


def writer_tasks() -> list[asyncio.Task[Any]]:
    return sorted(
        (t for t in asyncio.all_tasks() if t.get_name().startswith("group commit writer")),
        key=lambda t: int(t.get_name().rpartition(" ")[2]),
    )


async def test_a_writer_stopped_before_it_starts_strands_no_delivery(pool: asyncpg.Pool) -> None:
    writes = SlowWrites()
    group = GroupCommit(pool, writes.write_many, writes.write_one)
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)  # the submission has started a writer, which has not run yet
    [writer] = writer_tasks()
    writer.cancel()

    # Another writer takes the delivery, and the group still closes and takes more.
    assert await asyncio.wait_for(first, timeout=5) == 1
    await asyncio.wait_for(group.close(), timeout=5)
    assert await asyncio.wait_for(group.submit(2), timeout=5) == 2


async def test_a_half_handed_to_a_writer_stopped_before_it_starts_is_answered(
    pool: asyncpg.Pool,
) -> None:
    writes = SlowWrites()
    group = GroupCommit(pool, writes.write_many, writes.write_one, share_from=4)
    submitted = [asyncio.create_task(group.submit(n)) for n in range(20)]
    await asyncio.sleep(0)  # all handed over; the first writer is made, not yet run
    await asyncio.sleep(0)  # it took the 20, kept 10 and handed 10 to a second writer
    _, second_writer = writer_tasks()
    second_writer.cancel()  # before its first step
    _, waiting = await asyncio.wait(submitted, timeout=5)

    assert not waiting, "requests left waiting for a writer that never ran"
    assert [t.result() for t in submitted[:10]] == list(range(10))
    for request in submitted[10:]:
        with pytest.raises(RuntimeError, match="interrupted"):
            request.result()
    await asyncio.wait_for(group.close(), timeout=5)
    assert await asyncio.wait_for(group.submit(99), timeout=5) == 99


async def test_a_delivery_refused_in_a_batch_goes_alone_when_it_comes_again(
    pool: asyncpg.Pool,
) -> None:
    batches: list[list[str]] = []
    alone: list[str] = []

    async def write_many(conn: Connection, items: Sequence[str]) -> list[str]:
        batches.append(list(items))
        if "poison" in items:
            raise ValueError("refused")
        return list(items)

    async def write_one(item: str) -> str:
        alone.append(item)
        if item == "poison":
            raise ValueError("refused")
        return item

    group: GroupCommit[str, str] = GroupCommit(pool, write_many, write_one, key=str)
    first = await asyncio.gather(
        *(group.submit(item) for item in ("a", "poison", "b")), return_exceptions=True
    )
    alone.clear()
    again = await asyncio.gather(
        *(group.submit(item) for item in ("c", "poison", "d")), return_exceptions=True
    )
    await group.close()

    assert [type(answer) for answer in first] == [str, ValueError, str]
    assert [type(answer) for answer in again] == [str, ValueError, str]
    assert alone == ["poison"]  # the rest of the second burst went as one batch
    assert batches[-1] == ["c", "d"]
