"""The listener: claims events from marketing.pipeline_events and runs their handlers.

Two paths, chosen per event type:

* the **locked path** (database handlers): a worker claims a batch with FOR UPDATE SKIP LOCKED
  and runs every handler inside that same transaction, so a handler's writes and the event's
  completion commit together, exactly once. A crash rolls the whole batch back and the row
  locks vanish with the connection, so another listener takes the events at once. If a
  handler raises, the batch is rolled back and its events are re-run one at a time, each
  handler in a savepoint, so one bad event costs its neighbours a retry, never their work.
* the **lease path** (external handlers, and any type with a concurrency limit): a claim
  commits status 'processing' with a lease; the handler runs with no transaction open, then
  writes its results and completes the event in one transaction that first checks it still
  holds the lease (compare-and-set on attempt and owner). Heartbeats renew leases; any
  listener rescues expired ones.

Wake-ups: a LISTEN connection rings a doorbell on NOTIFY; every loop also polls, so a lost
notification costs at most `poll_interval`. Writers notify only while a listener is asleep
(triggers/900_wake_listeners.sql); `SleepGate` is this side of that protocol.

Run it as `python listener.py` or `cascade listen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import random
import signal
import socket
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import asyncpg
import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from cascade.handling import (
    AlreadyOpen,
    CompletionFactory,
    Connection,
    Deps,
    EventInfo,
    Handler,
    LeaseLost,
    PermanentFailure,
    Registry,
    RetryLater,
    Tx,
)

log = logging.getLogger("cascade.listener")

CHANNEL = "cascade_events"

# ---------------------------------------------------------------------------------------------
# Queries. Every statement the listener sends is here, by name.

# The locked path's claim. Matches pipeline_events_claimable_idx's predicate, so it reads only
# claimable rows. Row locks last until the batch commits or the connection dies.
CLAIM_LOCKED: LiteralString = """
    SELECT id, event_type, payload::text AS payload, record_id, unique_id, run_id,
           correlation_id, attempts
      FROM marketing.pipeline_events
     WHERE status IN ('pending', 'failed') AND run_after <= now()
       AND event_type <> ALL ($1::text[])
     ORDER BY id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
"""

# Completes a locked batch in one statement. Times come from the database's clock (the
# listener's may differ); $2 is how long ago each handler started, $3 how long it ran.
COMPLETE_LOCKED: LiteralString = """
    UPDATE marketing.pipeline_events AS e
       SET status = 'processed', outcome = 'ok', attempts = e.attempts + 1,
           started_at = clock_timestamp() - make_interval(secs => d.started_ago),
           processed_at = clock_timestamp(), finished_at = clock_timestamp(),
           duration_ms = d.duration_ms
      FROM unnest($1::bigint[], $2::float8[], $3::float8[]) AS d(id, started_ago, duration_ms)
     WHERE e.id = d.id
"""

CLAIM_LEASED: LiteralString = """
    SELECT id, event_type, payload::text AS payload, record_id, unique_id, run_id,
           correlation_id, attempts
      FROM marketing.claim_leased_events($1, $2::text[], $3, $4)
"""

# The compare-and-set that makes a late completion harmless: the row lock it takes also
# serialises it against a concurrent rescue.
HOLD_LEASE: LiteralString = """
    SELECT true FROM marketing.pipeline_events
     WHERE id = $1 AND status = 'processing' AND attempts = $2 AND lease_owner = $3
       FOR UPDATE
"""

COMPLETE_LEASED: LiteralString = """
    UPDATE marketing.pipeline_events
       SET status = 'processed', outcome = 'ok', lease_owner = NULL, lease_expires_at = NULL,
           processed_at = clock_timestamp(), finished_at = clock_timestamp(), duration_ms = $2
     WHERE id = $1
"""

# Records a failed attempt and its error row in one statement, guarded like a completion:
# $2 is the attempts value the caller saw and $3 its lease (NULL on the locked path, where the
# caller holds the row lock). No row back means the event was no longer ours.
RECORD_FAILURE: LiteralString = """
    WITH failed AS (
        UPDATE marketing.pipeline_events
           SET status = $4, outcome = $5, attempts = $6,
               run_after = now() + make_interval(secs => $7),
               last_error = $8, lease_owner = NULL, lease_expires_at = NULL,
               finished_at = CASE WHEN $4 IN ('dead', 'processed') THEN clock_timestamp() END,
               processed_at = CASE WHEN $4 = 'processed' THEN clock_timestamp() END,
               duration_ms = $10
         WHERE id = $1 AND attempts = $2 AND lease_owner IS NOT DISTINCT FROM $3
           AND status IN ('pending', 'failed', 'processing')
        RETURNING id, event_type, record_id
    )
    INSERT INTO marketing.pipeline_errors
           (event_id, event_type, record_id, error_message, severity, traceback, attempt)
    SELECT id, event_type, record_id, $8, $9, $11, $6 FROM failed
    RETURNING event_id
"""

# RetryLater: back to the queue at run_after, with the attempt given back.
SNOOZE: LiteralString = """
    UPDATE marketing.pipeline_events
       SET status = 'pending', attempts = $4, run_after = now() + make_interval(secs => $5),
           last_error = $6, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = $1 AND attempts = $2 AND lease_owner IS NOT DISTINCT FROM $3
       AND status IN ('pending', 'failed', 'processing')
"""

# SIGTERM: what this listener could not finish goes back at once, its attempt given back.
RELEASE_LEASES: LiteralString = """
    UPDATE marketing.pipeline_events
       SET status = 'pending', attempts = attempts - 1, run_after = now(),
           lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
     WHERE lease_owner = $1 AND status = 'processing' AND id = ANY ($2::bigint[])
"""

EXTEND_LEASES: LiteralString = """
    UPDATE marketing.pipeline_events
       SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
     WHERE lease_owner = $1 AND status = 'processing' AND id = ANY ($2::bigint[])
"""

RESCUE_EXPIRED: LiteralString = "SELECT marketing.rescue_expired_leases()"
NOTIFY: LiteralString = "SELECT pg_notify('cascade_events', '')"

REGISTER_LISTENER: LiteralString = """
    INSERT INTO marketing.listeners (listener_id, hostname, pid) VALUES ($1, $2, $3)
"""
HEARTBEAT_LISTENER: LiteralString = """
    UPDATE marketing.listeners SET heartbeat_at = now() WHERE listener_id = $1
"""
# Listeners that stopped heartbeating long ago would keep writers notifying for nobody.
FORGET_DEAD_LISTENERS: LiteralString = """
    DELETE FROM marketing.listeners WHERE heartbeat_at < now() - make_interval(secs => $1)
"""
UNREGISTER_LISTENER: LiteralString = "DELETE FROM marketing.listeners WHERE listener_id = $1"
SET_SLEEPING: LiteralString = "UPDATE marketing.listeners SET sleeping = $2 WHERE listener_id = $1"
# The exclusive side of the writers' shared barrier lock: granted only when no transaction
# that inserted events is in flight, and released again at once (its own transaction).
WAKE_BARRIER: LiteralString = "SELECT pg_try_advisory_xact_lock(1667331939, 1)"

# `run(until_idle=True)` ends when this is false: nothing waiting, retrying or in flight.
ANY_UNFINISHED: LiteralString = """
    SELECT EXISTS (SELECT 1 FROM marketing.pipeline_events
                    WHERE status IN ('pending', 'failed', 'processing'))
"""

LOAD_EVENT_TYPES: LiteralString = """
    SELECT event_type, critical, max_attempts, backoff_base_seconds, backoff_max_seconds,
           concurrency_limit
      FROM marketing.event_types
"""
LOAD_PROCESS_KEYS: LiteralString = """
    SELECT unique_id, step_name FROM marketing.shq_process_key_reference
"""

# The database errors that mean "the connection or server is gone", not "the handler failed".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class ListenerSettings:
    database_url: str
    batch_size: int = 100  # events per locked-path claim
    workers: int = 2  # locked-path claim loops, one connection each while busy
    max_leased: int = 32  # leased events in flight at once
    poll_interval: float = 1.0  # seconds: the longest a loop waits without a notification
    lease_seconds: float = 20.0  # a leased event is rescued this long after its last heartbeat
    heartbeat_interval: float = 5.0  # seconds between lease and listener heartbeats
    rescue_interval: float = 5.0  # seconds between rescues of expired leases
    drain_timeout: float = 10.0  # seconds SIGTERM waits for in-flight work before releasing it
    stats_interval: float = 10.0  # seconds between throughput log lines
    refresh_interval: float = 10.0  # seconds between reloads of event types and process keys

    @classmethod
    def from_env(
        cls, database_url: str, environ: Mapping[str, str] = os.environ
    ) -> ListenerSettings:
        """Each field may be set as CASCADE_<FIELD> (e.g. CASCADE_BATCH_SIZE=200)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"CASCADE_{f.name.upper()}")
            if raw is not None and f.name != "database_url":
                values[f.name] = int(raw) if f.type == "int" else float(raw)
        return cls(database_url=database_url, **values)


@dataclass(frozen=True)
class EventTypeSettings:
    """A type's retry and concurrency settings; the defaults mirror marketing.event_types'."""

    critical: bool = True
    max_attempts: int = 5
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    concurrency_limit: int | None = None

    def backoff(self, attempt: int) -> float:
        """Exponential in the attempt, capped, with jitter so that a burst of failures does
        not come back as a burst of retries."""
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Verdict:
    """What a failed attempt becomes."""

    status: str  # failed (will retry) | dead | processed (a non-critical type gave up)
    outcome: str | None
    severity: str
    delay: float


def judge_failure(settings: EventTypeSettings, attempt: int, *, permanent: bool) -> Verdict:
    if not permanent and attempt < settings.max_attempts:
        severity = "error" if settings.critical else "warning"
        return Verdict("failed", None, severity, settings.backoff(attempt))
    if settings.critical:
        return Verdict("dead", "dead", "critical", 0.0)
    # Seed 002's non-critical stage: warn and let the run go on.
    return Verdict("processed", "skipped", "warning", 0.0)


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(slots=True)
class Event:
    id: int
    event_type: str
    payload: str
    record_id: int | None
    unique_id: str | None
    run_id: int
    correlation_id: str | None
    attempts: int  # the row's attempts when claimed
    attempt: int  # this attempt's number, from 1
    lease_owner: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record, *, leased_by: str | None) -> Event:
        attempts = row["attempts"]
        return cls(
            id=row["id"],
            event_type=row["event_type"],
            payload=row["payload"],
            record_id=row["record_id"],
            unique_id=row["unique_id"],
            run_id=row["run_id"] or row["id"],
            correlation_id=row["correlation_id"],
            attempts=attempts,
            # A leased claim has already counted this attempt; a locked one counts it on commit.
            attempt=attempts if leased_by else attempts + 1,
            lease_owner=leased_by,
        )

    def info(self) -> EventInfo:
        return EventInfo(
            self.id, self.event_type, self.attempt, self.run_id, self.record_id, self.correlation_id
        )

    def fields(self, **more: Any) -> dict[str, Any]:
        return {
            "event_id": self.id,
            "run_id": self.run_id,
            "event_type": self.event_type,
            "attempt": self.attempt,
            **more,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that can never run as it is: unmapped, unknown or malformed."""

    message: str
    unmapped: bool = False


class HandlerRaised(Exception):
    """Event `index` of a locked batch failed or was refused: the batch must roll back."""

    def __init__(self, index: int, error: Exception | Rejection, duration_ms: float) -> None:
        super().__init__(f"event {index} of the batch failed")
        self.index = index
        self.error = error
        self.duration_ms = duration_ms


# ---------------------------------------------------------------------------------------------
# Wake-ups


class Doorbell:
    """Rung on NOTIFY (and on reconnect). A loop takes `current()` before it claims, so a
    ring that arrives while it is claiming is not lost: the event it waits on is already set."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def ring(self, *_: object) -> None:
        self._event.set()
        self._event = asyncio.Event()


class SleepGate:
    """This listener's side of the wake-up protocol.

    A loop that found nothing calls `arm()`: set `sleeping` (writers start notifying), then
    take the writers' barrier lock exclusively, which succeeds only once every transaction
    that inserted events before the flag was visible has ended. After a successful `arm()` the
    loop claims once more and may then trust NOTIFY. `disarm()` clears the flag when work is
    found, so that busy listeners cost writers nothing.
    """

    def __init__(self, pool: asyncpg.Pool, listener_id: str) -> None:
        self._pool = pool
        self._listener_id = listener_id
        self._lock = asyncio.Lock()
        self.sleeping = False
        self.armed = False

    async def arm(self) -> bool:
        async with self._lock:
            if self.armed:
                return True
            if not self.sleeping:
                await self._pool.execute(SET_SLEEPING, self._listener_id, True)
                self.sleeping = True
            self.armed = bool(await self._pool.fetchval(WAKE_BARRIER))
            return self.armed

    async def disarm(self) -> None:
        self.armed = False
        if self.sleeping:
            async with self._lock:
                if self.sleeping:
                    self.sleeping = False
                    await self._pool.execute(SET_SLEEPING, self._listener_id, False)


async def wait_for_ring(bell: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
    """Returns when the bell rings, the listener stops, or `timeout` seconds pass."""
    waiters = [asyncio.ensure_future(bell.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# ---------------------------------------------------------------------------------------------
# The listener


@dataclass
class Counters:
    processed: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0


class Listener:
    def __init__(self, settings: ListenerSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.listener_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counters = Counters()
        self._stopping = asyncio.Event()
        self._doorbell = Doorbell()
        self._pool: asyncpg.Pool | None = None
        self._gate: SleepGate | None = None
        self._http: httpx.AsyncClient | None = None
        self._type_settings: dict[str, EventTypeSettings] = {}
        self._process_keys: set[str] = set()
        self._step_names: set[str] = set()
        self._keys_loaded_at = 0.0
        self._leased_types: list[str] = sorted(registry.external_types)
        self._leased: dict[int, tuple[Event, asyncio.Task[None]]] = {}
        self._busy_loops = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming now; `run` drains in-flight work, releases the rest and returns."""
        self._stopping.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Runs until `stop()` (SIGTERM in `main`), or with `until_idle` until nothing is left
        to claim and nothing is in flight (tests and one-shot drains)."""
        settings = self.settings
        self._pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=settings.workers + min(settings.max_leased, 16) + 3,
            server_settings={"application_name": "cascade-listener"},
        )
        self._gate = SleepGate(self._pool, self.listener_id)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
        try:
            await self._pool.execute(
                REGISTER_LISTENER, self.listener_id, socket.gethostname(), os.getpid()
            )
            await self._refresh_settings()
            log.info(
                "listener started",
                extra={
                    "listener_id": self.listener_id,
                    "handlers": len(self.registry),
                    "leased_types": self._leased_types,
                },
            )
            loops = [self._locked_loop(i) for i in range(settings.workers)]
            loops += [self._leased_loop(), self._listen_loop(), self._housekeeping_loop()]
            if until_idle:
                loops.append(self._stop_when_idle())
            tasks = [asyncio.create_task(loop) for loop in loops]
            await self._stopping.wait()
            await self._drain(tasks)
        finally:
            await self._shutdown()

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        claim_loops = tasks[: self.settings.workers + 1]
        _, unfinished = await asyncio.wait(
            claim_loops + [t for _, t in self._leased.values()],
            timeout=self.settings.drain_timeout,
        )
        for task in tasks:
            if task not in claim_loops or task in unfinished:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Leased events still in flight go back now; locked batches rolled back when cancelled.
        stranded = [event_id for event_id, (_, task) in self._leased.items() if not task.done()]
        for _, task in self._leased.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in self._leased.values()), return_exceptions=True)
        if stranded:
            assert self._pool is not None
            await self._pool.execute(RELEASE_LEASES, self.listener_id, stranded)
        await self._pool_notify()
        log.info(
            "listener stopped",
            extra={"listener_id": self.listener_id, "released": len(stranded)},
        )

    async def _shutdown(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._pool is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._pool.execute(UNREGISTER_LISTENER, self.listener_id)
            await self._pool.close()

    async def _pool_notify(self) -> None:
        assert self._pool is not None
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self._pool.execute(NOTIFY)

    async def _stop_when_idle(self) -> None:
        assert self._pool is not None
        while not self._stopping.is_set():
            await asyncio.sleep(0.05)
            if self._busy_loops == 0 and not self._leased:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    if not await self._pool.fetchval(ANY_UNFINISHED):
                        self.stop()

    # -- claim loops --------------------------------------------------------------------------

    async def _claim_loop(self, name: str, claim_and_run: Callable[[], Awaitable[int]]) -> None:
        """Claims until stopped; sleeps on the doorbell when there is nothing to claim."""
        assert self._gate is not None
        gate, stopping = self._gate, self._stopping
        quiet_wait = 0.001
        while not stopping.is_set():
            bell = self._doorbell.current()
            self._busy_loops += 1
            try:
                claimed = await claim_and_run()
            except CONNECTION_ERRORS as exc:
                log.warning(
                    "database unreachable; retrying", extra={"loop": name, "error": repr(exc)}
                )
                await wait_for_ring(asyncio.Event(), stopping, 1.0)
                continue
            except Exception:
                log.exception("claim loop failed; retrying", extra={"loop": name})
                await wait_for_ring(asyncio.Event(), stopping, 1.0)
                continue
            finally:
                self._busy_loops -= 1
            if claimed:
                quiet_wait = 0.001
                await gate.disarm()
                continue
            try:
                if not gate.armed and await gate.arm():
                    continue  # one more claim: every writer that missed the flag has committed
            except CONNECTION_ERRORS:
                pass
            if gate.armed:
                await wait_for_ring(bell, stopping, self.settings.poll_interval)
            else:
                # Writers are mid-transaction: poll soon, backing off towards the poll interval.
                await wait_for_ring(bell, stopping, quiet_wait)
                quiet_wait = min(quiet_wait * 2, self.settings.poll_interval)

    async def _locked_loop(self, index: int) -> None:
        await self._claim_loop(f"locked-{index}", self._claim_and_run_locked)

    async def _leased_loop(self) -> None:
        await self._claim_loop("leased", self._claim_and_run_leased)

    # -- the locked path ----------------------------------------------------------------------

    async def _claim_and_run_locked(self) -> int:
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_LOCKED, self._leased_types, self.settings.batch_size)
            events = [Event.from_row(r, leased_by=None) for r in rows]
            while events:
                try:
                    # One savepoint per batch, not per event: a failing handler rolls back the
                    # batch's writes but keeps the claim's row locks, so no other listener can
                    # take these events while their outcome is settled here.
                    async with conn.transaction():
                        await self._run_batch(conn, events)
                    break
                except HandlerRaised as raised:
                    # The failing event's outcome comes from the error in hand (its handler
                    # does not run twice); the events before it ran fine and run again; the
                    # events after it are released at commit for the next claim.
                    await self._settle_failure(conn, events[raised.index], raised)
                    events = events[: raised.index]
            return len(rows)

    async def _run_batch(self, conn: Connection, events: list[Event]) -> None:
        """Every handler in the claiming transaction, then one completing UPDATE."""
        ids: list[int] = []
        started: list[float] = []
        durations: list[float] = []
        debug = log.isEnabledFor(logging.DEBUG)
        for index, event in enumerate(events):
            admitted = self._admit(event)
            if isinstance(admitted, Rejection):
                raise HandlerRaised(index, admitted, 0.0)
            handler, payload = admitted
            begin = time.perf_counter()
            if debug:
                log.debug("stage started", extra=event.fields())
            try:
                await handler.handle(payload, self._locked_deps(conn, event))
            except CONNECTION_ERRORS:
                raise  # the database went away: not the event's fault, nothing to record
            except Exception as exc:
                raise HandlerRaised(index, exc, (time.perf_counter() - begin) * 1000) from exc
            end = time.perf_counter()
            ids.append(event.id)
            started.append(begin)
            durations.append((end - begin) * 1000)
            if debug:
                log.debug("stage finished", extra=event.fields(duration_ms=durations[-1]))
        if ids:
            now = time.perf_counter()
            await conn.execute(COMPLETE_LOCKED, ids, [now - s for s in started], durations)
            self.counters.processed += len(ids)

    async def _settle_failure(self, conn: Connection, event: Event, raised: HandlerRaised) -> None:
        if isinstance(raised.error, Rejection):
            admitted = await self._admit_fresh(event)
            if isinstance(admitted, Rejection):
                await self._reject(conn, event, admitted)
        else:
            await self._record_outcome(conn, event, raised.error, raised.duration_ms)

    def _locked_deps(self, conn: Connection, event: Event) -> Deps:
        info = event.info()
        return self._deps(info, functools.partial(AlreadyOpen, conn, info))

    # -- the lease path -----------------------------------------------------------------------

    async def _claim_and_run_leased(self) -> int:
        assert self._pool is not None
        room = self.settings.max_leased - len(self._leased)
        if not self._leased_types or room <= 0:
            if self._leased:
                await asyncio.wait(
                    [t for _, t in self._leased.values()], return_when=asyncio.FIRST_COMPLETED
                )
                return 1  # a slot freed: claim again at once
            return 0
        rows = await self._pool.fetch(
            CLAIM_LEASED, self.listener_id, self._leased_types, room, self.settings.lease_seconds
        )
        for row in rows:
            event = Event.from_row(row, leased_by=self.listener_id)
            task = asyncio.create_task(self._run_leased(event))
            self._leased[event.id] = (event, task)
            task.add_done_callback(functools.partial(self._forget_leased, event.id))
        return len(rows)

    def _forget_leased(self, event_id: int, _: asyncio.Task[None]) -> None:
        self._leased.pop(event_id, None)

    async def _run_leased(self, event: Event) -> None:
        assert self._pool is not None
        pool = self._pool
        admitted = await self._admit_fresh(event)
        if isinstance(admitted, Rejection):
            async with pool.acquire() as conn:
                await self._reject(conn, event, admitted)
            return
        handler, payload = admitted
        begin = time.perf_counter()

        @contextlib.asynccontextmanager
        async def holding_lease() -> AsyncIterator[Tx]:
            async with pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(HOLD_LEASE, event.id, event.attempt, event.lease_owner):
                    raise LeaseLost(f"event {event.id} attempt {event.attempt} was rescued")
                yield Tx(conn, event.info())
                await conn.execute(COMPLETE_LEASED, event.id, (time.perf_counter() - begin) * 1000)

        deps = self._deps(event.info(), holding_lease)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("stage started", extra=event.fields())
        try:
            if handler.external:
                await handler.handle(payload, deps)
                if not deps.completed:
                    async with deps.completing_transaction():
                        pass
            else:
                # A database handler on the lease path (it has a concurrency limit) runs
                # entirely inside its completing transaction.
                async with deps.completing_transaction():
                    await handler.handle(payload, deps)
            self.counters.processed += 1
            if debug:
                duration_ms = (time.perf_counter() - begin) * 1000
                log.debug("stage finished", extra=event.fields(duration_ms=duration_ms))
        except LeaseLost:
            log.warning("lease lost; results discarded", extra=event.fields())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            async with pool.acquire() as conn:
                await self._record_outcome(conn, event, exc, (time.perf_counter() - begin) * 1000)

    # -- admission and outcomes ---------------------------------------------------------------

    def _admit(self, event: Event) -> tuple[Handler, Any] | Rejection:
        """Process key, handler and payload checks: what fails here can never succeed."""
        if not self._process_key_mapped(event):
            key = event.unique_id or event.event_type
            return Rejection(
                f"UNMAPPED UNIQUE_ID: {key} not found in shq_process_key_reference", unmapped=True
            )
        handler = self.registry.get(event.event_type)
        if handler is None:
            return Rejection(f"no handler registered for event type {event.event_type!r}")
        try:
            payload = handler.payload_model.model_validate_json(event.payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
                for e in exc.errors()
            )
            return Rejection(
                f"payload of {event.event_type} event {event.id} is invalid: {problems}"
            )
        return handler, payload

    async def _admit_fresh(self, event: Event) -> tuple[Handler, Any] | Rejection:
        """`_admit`, but an unmapped key is checked again against a fresh copy of the table
        (at most once a second) before the event is condemned for it."""
        admitted = self._admit(event)
        if (
            isinstance(admitted, Rejection)
            and admitted.unmapped
            and time.monotonic() - self._keys_loaded_at > 1.0
        ):
            await self._refresh_settings()
            admitted = self._admit(event)
        return admitted

    def _process_key_mapped(self, event: Event) -> bool:
        if event.unique_id is None:
            return event.event_type in self._step_names
        return event.unique_id in self._process_keys

    async def _reject(self, conn: Connection, event: Event, rejection: Rejection) -> None:
        await self._write_failure(
            conn, event, Verdict("dead", "dead", "critical", 0.0), rejection.message, None, 0.0
        )
        log.error("dead letter", extra=event.fields(error=rejection.message))

    async def _record_outcome(
        self, conn: Connection, event: Event, exc: Exception, duration_ms: float
    ) -> None:
        if isinstance(exc, RetryLater):
            await conn.execute(
                SNOOZE,
                event.id,
                event.attempts,
                event.lease_owner,
                event.attempt - 1,
                exc.seconds,
                str(exc),
            )
            log.info(
                "retry later requested", extra=event.fields(delay_s=exc.seconds, error=str(exc))
            )
            return
        settings = self._type_settings.get(event.event_type, EventTypeSettings())
        verdict = judge_failure(
            settings, event.attempt, permanent=isinstance(exc, PermanentFailure)
        )
        message = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(exc))
        if not await self._write_failure(conn, event, verdict, message, tb, duration_ms):
            return
        fields = event.fields(error=message, duration_ms=duration_ms)
        if verdict.status == "failed":
            self.counters.retried += 1
            log.warning(
                "event failed; will retry", extra={**fields, "delay_s": round(verdict.delay, 3)}
            )
        elif verdict.status == "dead":
            self.counters.dead += 1
            log.error("dead letter", extra=fields)
        else:
            self.counters.skipped += 1
            log.warning("non-critical event gave up; the run goes on", extra=fields)

    async def _write_failure(
        self,
        conn: Connection,
        event: Event,
        verdict: Verdict,
        message: str,
        tb: str | None,
        duration_ms: float,
    ) -> bool:
        written = await conn.fetchval(
            RECORD_FAILURE,
            event.id,
            event.attempts,
            event.lease_owner,
            verdict.status,
            verdict.outcome,
            event.attempt,
            verdict.delay,
            message,
            verdict.severity,
            duration_ms,
            tb,
        )
        if written is None:
            log.warning("failure not recorded: event no longer ours", extra=event.fields())
        return written is not None

    def _deps(self, info: EventInfo, completion: CompletionFactory) -> Deps:
        assert self._pool is not None
        assert self._http is not None
        return Deps(info, self._http, completion, self._pool.acquire)

    # -- background chores --------------------------------------------------------------------

    async def _refresh_settings(self) -> None:
        assert self._pool is not None
        rows = await self._pool.fetch(LOAD_EVENT_TYPES)
        self._type_settings = {
            r["event_type"]: EventTypeSettings(
                r["critical"],
                r["max_attempts"],
                r["backoff_base_seconds"],
                r["backoff_max_seconds"],
                r["concurrency_limit"],
            )
            for r in rows
        }
        limited = {t for t, s in self._type_settings.items() if s.concurrency_limit is not None}
        self._leased_types = sorted(self.registry.external_types | limited)
        keys = await self._pool.fetch(LOAD_PROCESS_KEYS)
        self._process_keys = {r["unique_id"] for r in keys}
        self._step_names = {r["step_name"] for r in keys}
        self._keys_loaded_at = time.monotonic()

    async def _housekeeping_loop(self) -> None:
        """Heartbeats, lease renewal, rescue of expired leases, settings, throughput lines."""
        assert self._pool is not None
        settings = self.settings
        every = min(settings.heartbeat_interval, settings.rescue_interval)
        last_stats = time.monotonic()
        last_refresh = last_stats
        reported = dataclasses.replace(self.counters)
        while not self._stopping.is_set():
            await wait_for_ring(asyncio.Event(), self._stopping, every)
            try:
                await self._pool.execute(HEARTBEAT_LISTENER, self.listener_id)
                if self._leased:
                    await self._pool.execute(
                        EXTEND_LEASES, self.listener_id, list(self._leased), settings.lease_seconds
                    )
                rescued = await self._pool.fetchval(RESCUE_EXPIRED)
                if rescued:
                    log.warning("rescued events with expired leases", extra={"rescued": rescued})
                await self._pool.execute(FORGET_DEAD_LISTENERS, settings.lease_seconds * 3)
                now = time.monotonic()
                if now - last_refresh >= settings.refresh_interval:
                    await self._refresh_settings()
                    last_refresh = now
            except CONNECTION_ERRORS as exc:
                log.warning("housekeeping: database unreachable", extra={"error": repr(exc)})
                continue
            now = time.monotonic()
            if now - last_stats >= settings.stats_interval:
                self._log_throughput(reported, now - last_stats)
                reported = dataclasses.replace(self.counters)
                last_stats = now

    def _log_throughput(self, before: Counters, seconds: float) -> None:
        c = self.counters
        processed = c.processed - before.processed
        if processed or c.retried != before.retried or c.dead != before.dead:
            log.info(
                "throughput",
                extra={
                    "processed": processed,
                    "events_per_s": round(processed / seconds, 1),
                    "retried": c.retried - before.retried,
                    "dead": c.dead - before.dead,
                    "skipped": c.skipped - before.skipped,
                    "leased_in_flight": len(self._leased),
                },
            )

    async def _listen_loop(self) -> None:
        """Keeps one LISTEN connection alive; rings the doorbell on every notification and on
        every reconnect (notifications sent while disconnected are lost)."""
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(initial=0.05, max=2.0),
            retry=retry_if_exception_type((*CONNECTION_ERRORS, TimeoutError)),
        )
        while not self._stopping.is_set():
            async for attempt in retrying:
                with attempt:
                    await self._listen_once()

    async def _listen_once(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self.settings.database_url,
            timeout=5,
            server_settings={"application_name": "cascade-listen"},
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._doorbell.ring)
            self._doorbell.ring()
            while not self._stopping.is_set():
                await wait_for_ring(lost, self._stopping, 5.0)
                if lost.is_set():
                    raise ConnectionResetError("LISTEN connection lost")
                # Keepalive: a dead peer shows up as a timeout here, not as a silent wait.
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=5)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)


# ---------------------------------------------------------------------------------------------
# Entry point


def load_registry(spec: str) -> Registry:
    """`module:ATTRIBUTE`, e.g. `handlers:REGISTRY` (the default) or a test's registry."""
    module_name, _, attribute = spec.partition(":")
    registry = getattr(importlib.import_module(module_name), attribute or "REGISTRY")
    if not isinstance(registry, Registry):
        raise TypeError(f"{spec} is not a cascade.handling.Registry")
    return registry


async def serve(settings: ListenerSettings, registry: Registry) -> None:
    """Runs a listener until SIGTERM or SIGINT."""
    listener = Listener(settings, registry)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, listener.stop)
    await listener.run()


def main(argv: Sequence[str] | None = None) -> None:
    from cascade import cli

    cli.main(["listen", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
