"""The listener: claims events from marketing.pipeline_events and runs their handlers.

Two paths, chosen per event type:

* the **locked path** (database handlers): a worker claims a batch with FOR UPDATE SKIP LOCKED
  and runs every handler inside that same transaction, so a handler's writes and the event's
  completion commit together, exactly once. A crash rolls the whole batch back and the row
  locks vanish with the connection, so another listener takes the events at once. If a
  handler raises, the batch rolls back to a savepoint taken after the claim: the failure is
  recorded, the events before it run again, the events after it go back to the queue.
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
import signal
import socket
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString, NoReturn

import asyncpg
import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from cascade.handling import (
    AlreadyOpen,
    AlreadyOpenBatch,
    BatchDeps,
    BatchTx,
    CompletionFactory,
    Connection,
    Deps,
    EventInfo,
    Handler,
    Item,
    LeaseLost,
    PermanentFailure,
    Registry,
    Resources,
    RetryLater,
    Tx,
)
from cascade.retries import (
    EventTypeSettings,
    Verdict,
    bounded_delay,
    judge_failure,
    storable,
)
from cascade.wakeup import CHANNEL, Doorbell, SleepGate, wait_for_ring

log = logging.getLogger("cascade.listener")

# ---------------------------------------------------------------------------------------------
# Queries. Every statement the listener sends is here, by name.

# The locked path's claim: up to $2 due events of each type in $1 (the types this listener
# handles on this path), oldest due first. Per type, through pipeline_events_claimable_idx
# (event_type, run_after, id), so it never walks past another type's backlog or retries not
# yet due. Row locks last until the batch commits or the connection dies.
CLAIM_LOCKED: LiteralString = """
    SELECT due.id, due.event_type, due.payload, due.record_id, due.unique_id, due.run_id,
           due.correlation_id, due.attempts
      FROM unnest($1::text[]) AS t(event_type)
     CROSS JOIN LATERAL (
           SELECT e.id, e.event_type, e.payload::text AS payload, e.record_id, e.unique_id,
                  e.run_id, e.correlation_id, e.attempts, e.run_after
             FROM marketing.pipeline_events AS e
            WHERE e.event_type = t.event_type
              AND e.status IN ('pending', 'failed')
              AND e.run_after <= now()
            ORDER BY e.run_after, e.id
            LIMIT $2
              FOR UPDATE SKIP LOCKED) AS due
     ORDER BY due.run_after, due.id
"""

TAKE_SAVEPOINT: LiteralString = "SAVEPOINT cascade_batch"
ROLL_BACK_SAVEPOINT: LiteralString = (
    "ROLLBACK TO SAVEPOINT cascade_batch; RELEASE SAVEPOINT cascade_batch"
)

# Completes a locked batch in one statement. Times come from the database's clock (the
# listener's may differ): the statement's start, less how long ago ($2, seconds) each handler
# started; $3 is how long each ran.
COMPLETE_LOCKED: LiteralString = """
    UPDATE marketing.pipeline_events AS e
       SET status = 'processed', outcome = 'ok', attempts = e.attempts + 1,
           started_at = statement_timestamp() - d.started_ago * interval '1 second',
           processed_at = statement_timestamp(), finished_at = statement_timestamp(),
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
# serialises it against a concurrent rescue. While it is at it, it sets the handler's lineage
# context (handling.SET_EVENT_CONTEXT), which would otherwise cost a round trip of its own.
HOLD_LEASE: LiteralString = """
    SELECT set_config('cascade.event_id', $4, true),
           set_config('cascade.run_id', $5, true),
           set_config('cascade.correlation_id', $6, true)
      FROM marketing.pipeline_events
     WHERE id = $1 AND status = 'processing' AND attempts = $2 AND lease_owner = $3
       FOR UPDATE
"""

# A batch's HOLD_LEASE: locks the events it still holds (in id order, as every locker here
# does) and answers with their ids; an event rescued meanwhile is simply not among them.
HOLD_LEASES: LiteralString = """
    SELECT e.id
      FROM marketing.pipeline_events AS e
      JOIN unnest($1::bigint[], $2::integer[]) AS held(id, attempts)
           ON e.id = held.id AND e.attempts = held.attempts
     WHERE e.status = 'processing' AND e.lease_owner = $3
     ORDER BY e.id
       FOR UPDATE OF e
"""

COMPLETE_LEASED_MANY: LiteralString = """
    UPDATE marketing.pipeline_events
       SET status = 'processed', outcome = 'ok', lease_owner = NULL, lease_expires_at = NULL,
           processed_at = clock_timestamp(), finished_at = clock_timestamp(), duration_ms = $2
     WHERE id = ANY ($1::bigint[])
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

# SKIP LOCKED: a lease being completed right now is row-locked by its own completing
# transaction, and waiting for it would stall every other heartbeat (and the rescue) behind it.
EXTEND_LEASES: LiteralString = """
    UPDATE marketing.pipeline_events
       SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
     WHERE id IN (SELECT id FROM marketing.pipeline_events
                   WHERE lease_owner = $1 AND status = 'processing' AND id = ANY ($2::bigint[])
                     FOR UPDATE SKIP LOCKED)
"""

RESCUE_EXPIRED: LiteralString = "SELECT marketing.rescue_expired_leases()"
# $1: grace seconds; $2: how recent a heartbeat counts as a live listener.
BURY_UNHANDLED: LiteralString = "SELECT marketing.bury_unhandled_events($1, $2)"
NOTIFY: LiteralString = "SELECT pg_notify('cascade_events', '')"

# Registers this listener or renews its heartbeat. An upsert, because the row can vanish under
# a running listener: the table is unlogged (crash recovery empties it), and a listener that
# stalled is forgotten by the others. `inserted` tells the listener that it was.
HEARTBEAT_LISTENER: LiteralString = """
    INSERT INTO marketing.listeners (listener_id, hostname, pid, event_types)
    VALUES ($1, $2, $3, $4)
        ON CONFLICT (listener_id) DO UPDATE SET heartbeat_at = now()
    RETURNING (xmax = 0) AS inserted
"""
# Listeners that stopped heartbeating long ago would keep writers notifying for nobody.
FORGET_DEAD_LISTENERS: LiteralString = """
    DELETE FROM marketing.listeners WHERE heartbeat_at < now() - make_interval(secs => $1)
"""
UNREGISTER_LISTENER: LiteralString = "DELETE FROM marketing.listeners WHERE listener_id = $1"

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

# The database errors that may mean "the connection or server is gone". A handler's own error
# of these types (a TimeoutError is an OSError) is the handler's failure unless the connection
# really is closed: see `_connection_lost`.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,  # no new connection now: like a server that is away
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
    max_leased: int = 16  # leased handler calls in flight at once
    # Events of one type a batch handler (handle_many) takes per call: one lease claim, one
    # read, one provider fan-out and one commit for all of them.
    leased_batch_size: int = 25
    poll_interval: float = 1.0  # seconds: the longest a loop waits without a notification
    # After a partial batch (2 to batch_size - 1 events), wait this long before claiming
    # again: under a stream of writes the next claim then takes a fuller batch, which costs
    # writers and the server less. A lone event is claimed at once, so latency is unchanged.
    linger: float = 0.005  # seconds
    lease_seconds: float = 20.0  # a leased event is rescued this long after its last heartbeat
    heartbeat_interval: float = 5.0  # seconds between lease and listener heartbeats
    rescue_interval: float = 5.0  # seconds between rescues of expired leases
    drain_timeout: float = 10.0  # seconds SIGTERM waits for in-flight work before releasing it
    stats_interval: float = 10.0  # seconds between throughput log lines
    refresh_interval: float = 10.0  # seconds between reloads of event types and process keys
    # An event of a type that no live listener handles is dead-lettered once it is this old:
    # raise it while deploying a new stage whose listeners may start after its first events.
    unhandled_grace: float = 0.0  # seconds

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

    @property
    def pool_size(self) -> int:
        """Enough that nothing waits on the pool: a locked worker holds one connection, a leased
        handler at most two (a read with `deps.connection()` and its completing transaction)."""
        return self.workers + 2 * self.max_leased


# ---------------------------------------------------------------------------------------------
# Events


class Event:
    """A claimed event: `info` (what its handler may see) and what the engine needs besides.
    One is made for every claimed row, so it is a slotted class built by unpacking the row."""

    __slots__ = ("attempts", "info", "lease_owner", "payload", "unique_id")

    def __init__(self, row: asyncpg.Record, *, leased_by: str | None) -> None:
        # The column order of CLAIM_LOCKED and CLAIM_LEASED.
        event_id, event_type, payload, record_id, unique_id, run_id, correlation_id, attempts = row
        # A leased claim has already counted this attempt; a locked one counts it on commit.
        attempt = attempts if leased_by else attempts + 1
        self.info = EventInfo(
            event_id, event_type, attempt, run_id or event_id, record_id, correlation_id
        )
        self.payload: str = payload
        self.unique_id: str | None = unique_id
        self.attempts: int = attempts  # the row's attempts when claimed
        self.lease_owner = leased_by

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def event_type(self) -> str:
        return self.info.event_type

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.info.attempt

    @property
    def run_id(self) -> int:
        return self.info.run_id

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


class BatchCallRaised(Exception):
    """A locked handle_many call of many events raised: the batch must roll back and run
    that type's events one per call, so that the failure is pinned on one event."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"a {event_type} batch call failed")
        self.event_type = event_type


class _Done:
    """The locked batch's completed events, for COMPLETE_LOCKED: ids, when each handler started
    (perf_counter) and how long it ran (ms)."""

    __slots__ = ("durations", "ids", "started")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.started: list[float] = []
        self.durations: list[float] = []

    def add(self, event: Event, begin: float) -> None:
        self.ids.append(event.id)
        self.started.append(begin)
        self.durations.append((time.perf_counter() - begin) * 1000)


class BatchSavepoint:
    """The locked path's savepoint, taken lazily just before the first statement any handler
    of the batch sends, so a batch whose handlers write nothing pays no round trip for it.
    Rolling back to it undoes the handlers' writes and keeps the claim's row locks."""

    __slots__ = ("_conn", "taken")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.taken = False

    async def take(self) -> None:
        if not self.taken:
            await self._conn.execute(TAKE_SAVEPOINT)
            self.taken = True

    async def roll_back(self) -> None:
        """Back to the savepoint, which is then released: what is written next (a failure's
        record) must survive a later roll-back, so the next savepoint is taken after it."""
        if self.taken:
            await self._conn.execute(ROLL_BACK_SAVEPOINT)
            self.taken = False


class ListenerCrashed(RuntimeError):
    """One of the listener's loops died of an error it could not survive."""


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The work pool's reset on release: nothing. asyncpg's default sends a reset query
    (RESET ALL, UNLISTEN *, ...) on every release, a round trip per batch; everything the
    engine and handlers do on these connections is transaction-scoped (set_config with
    is_local, advisory xact locks), and asyncpg itself still rolls back an open transaction."""


def _connection_lost(conn: Connection, exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS) and conn.is_closed()


# ---------------------------------------------------------------------------------------------
# The listener


@dataclass
class Counters:
    processed: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0


LeaseKey = tuple[int, int]  # (event id, attempt): a rescued event may come back to us


class Listener:
    def __init__(self, settings: ListenerSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.listener_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counters = Counters()
        self._stopping = asyncio.Event()  # no more claims
        self._closing = asyncio.Event()  # drained: housekeeping may stop too
        self._doorbell = Doorbell()
        self._pool: asyncpg.Pool | None = None
        self._control: asyncpg.Pool | None = None  # heartbeats, rescue, the gate: never starved
        self._gate: SleepGate | None = None
        self._http: httpx.AsyncClient | None = None
        self._resources: Resources = {}
        self._type_settings: dict[str, EventTypeSettings] = {}
        self._process_keys: set[str] = set()
        self._step_names: set[str] = set()
        self._keys_loaded_at = 0.0
        self._handled_types: list[str] = sorted(h.event_type for h in registry)
        self._leased_types: list[str] = sorted(registry.external_types)
        self._locked_types: list[str] = sorted(set(self._handled_types) - set(self._leased_types))
        self._leased: dict[LeaseKey, tuple[Event, asyncio.Task[None]]] = {}
        self._leased_tasks: set[asyncio.Task[None]] = set()  # each takes one of max_leased
        self._batch_types = {h.event_type for h in registry if h.handle_many is not None}
        self._batch_turn = 0  # which batch type claims first when calls are short
        self._busy_loops = 0
        self._crash: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming now; `run` drains in-flight work, releases the rest and returns."""
        self._stopping.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Runs until `stop()` (SIGTERM in `main`), or with `until_idle` until nothing is left
        to claim and nothing is in flight (tests and one-shot drains). Raises ListenerCrashed
        if a loop died, so that a supervisor restarts the process."""
        settings = self.settings
        connect: dict[str, Any] = {"server_settings": {"application_name": "cascade-listener"}}
        self._pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=settings.pool_size,
            reset=_keep_session,
            **connect,
        )
        self._control = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=2, **connect
        )
        self._gate = SleepGate(self._control, self.listener_id, self._handled_types)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
        resources = contextlib.AsyncExitStack()
        try:
            self._resources = await resources.enter_async_context(self.registry.open_resources())
            await self._heartbeat()
            await self._refresh_settings()
            log.info(
                "listener started",
                extra={
                    "listener_id": self.listener_id,
                    "handlers": len(self.registry),
                    "leased_types": self._leased_types,
                },
            )
            claim_loops = [self._spawn(self._locked_loop(i)) for i in range(settings.workers)]
            claim_loops.append(self._spawn(self._leased_loop()))
            chores = [self._spawn(self._listen_loop()), self._spawn(self._housekeeping_loop())]
            if until_idle:
                chores.append(self._spawn(self._stop_when_idle()))
            await self._stopping.wait()
            await self._drain(claim_loops)
            for chore in chores:
                chore.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
        finally:
            await self._shutdown()
            await resources.aclose()
        if self._crash is not None:
            raise ListenerCrashed("a listener loop died; see the log") from self._crash

    def _spawn(self, loop: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(loop)
        task.add_done_callback(self._loop_ended)
        return task

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Every loop survives errors by itself; reaching here is a bug. Stop, loudly.
        self._crash = task.exception()
        log.critical("listener loop died; stopping", exc_info=self._crash)
        self.stop()

    async def _drain(self, claim_loops: list[asyncio.Task[None]]) -> None:
        """Claim loops finish their current claim; in-flight handlers get the drain timeout;
        what is left is cancelled (locked batches roll back) or released (leases)."""
        deadline = time.monotonic() + self.settings.drain_timeout
        await asyncio.wait(claim_loops, timeout=self.settings.drain_timeout)
        # Only now is the set of leased tasks final: a claim in flight at SIGTERM may add some.
        leased = [task for _, task in self._leased.values()]
        if leased:
            await asyncio.wait(leased, timeout=max(0.0, deadline - time.monotonic()))
        stranded = sorted({key[0] for key, (_, task) in self._leased.items() if not task.done()})
        for task in [*claim_loops, *leased]:
            task.cancel()
        await asyncio.gather(*claim_loops, *leased, return_exceptions=True)
        self._closing.set()
        assert self._control is not None
        with contextlib.suppress(*CONNECTION_ERRORS):
            if stranded:
                await self._control.execute(RELEASE_LEASES, self.listener_id, stranded)
            await self._control.execute(NOTIFY)  # the others take what we leave at once
        log.info(
            "listener stopped", extra={"listener_id": self.listener_id, "released": len(stranded)}
        )

    async def _shutdown(self) -> None:
        self._closing.set()
        if self._http is not None:
            await self._http.aclose()
        if self._control is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._control.execute(UNREGISTER_LISTENER, self.listener_id)
            await self._control.close()
        if self._pool is not None:
            await self._pool.close()

    async def _stop_when_idle(self) -> None:
        assert self._control is not None
        while not self._stopping.is_set():
            await asyncio.sleep(0.05)
            if self._busy_loops == 0 and not self._leased:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    if not await self._control.fetchval(ANY_UNFINISHED):
                        self.stop()

    # -- claim loops --------------------------------------------------------------------------

    async def _claim_loop(
        self, name: str, lane: str, claim_and_run: Callable[[], Awaitable[int]]
    ) -> None:
        """Claims until stopped; sleeps on the doorbell when its lane has nothing to claim."""
        assert self._gate is not None
        gate, stopping = self._gate, self._stopping
        quiet_wait = 0.001
        while not stopping.is_set():
            bell = self._doorbell.current()
            self._busy_loops += 1
            try:
                claimed = await claim_and_run()
                if claimed:
                    quiet_wait = 0.001
                    await gate.disarm(lane)
                    if lane == "locked" and 1 < claimed < self.settings.batch_size:
                        await wait_for_ring(asyncio.Event(), stopping, self.settings.linger)
                    continue
                if not gate.armed(lane) and await gate.arm(lane):
                    continue  # one more claim: every writer that missed the flag has committed
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
            if gate.armed(lane):
                await wait_for_ring(bell, stopping, self.settings.poll_interval)
            else:
                # Writers are mid-transaction: poll soon, backing off towards the poll interval.
                await wait_for_ring(bell, stopping, quiet_wait)
                quiet_wait = min(quiet_wait * 2, self.settings.poll_interval)

    async def _locked_loop(self, index: int) -> None:
        await self._claim_loop(f"locked-{index}", "locked", self._claim_and_run_locked)

    async def _leased_loop(self) -> None:
        while not self._stopping.is_set():
            if self._leased_types:
                await self._claim_loop("leased", "leased", self._claim_and_run_leased)
            else:
                # Nothing to lease (yet): no arming, so an idle lane makes no writer notify.
                await wait_for_ring(asyncio.Event(), self._stopping, self.settings.refresh_interval)

    # -- the locked path ----------------------------------------------------------------------

    async def _claim_and_run_locked(self) -> int:
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_LOCKED, self._locked_types, self.settings.batch_size)
            events = [Event(r, leased_by=None) for r in rows]
            savepoint = BatchSavepoint(conn)
            completed = 0
            one_by_one = False
            isolated: set[str] = set()  # types whose events run one per handle_many call
            while events:
                try:
                    completed = await self._run_batch(
                        conn, events, savepoint, one_by_one or isolated
                    )
                    break
                except BatchCallRaised as raised:
                    # Which event of the failed call is at fault is unknown: the batch runs
                    # again with that type's events one per call, where a failure is one's.
                    await savepoint.roll_back()
                    isolated.add(raised.event_type)
                except HandlerRaised as raised:
                    # The failing event's outcome comes from the error in hand (its handler
                    # does not run twice); the events before it ran fine and run again; the
                    # events after it are released at commit for the next claim.
                    await savepoint.roll_back()
                    await self._settle_failure(conn, events[raised.index], raised)
                    events = events[: raised.index]
                except asyncpg.PostgresError:
                    # The batch broke its transaction without any handler raising: one caught
                    # a SQL error and returned. Run it again, a savepoint per event, to find it.
                    if one_by_one or not savepoint.taken or conn.is_closed():
                        raise
                    await savepoint.roll_back()
                    one_by_one = True
        self.counters.processed += completed
        return len(rows)

    async def _run_batch(
        self,
        conn: Connection,
        events: list[Event],
        savepoint: BatchSavepoint,
        isolate: bool | set[str],
    ) -> int:
        """Every handler in the claiming transaction, then one completing UPDATE. The batch
        savepoint (see BatchSavepoint) is what a failure rolls back to. `isolate`: True runs
        each event in a savepoint of its own (to find one that broke the transaction); a set
        names the batch types whose events get one handle_many call each."""
        one_by_one = isolate is True
        done = _Done()
        batches: dict[str, list[tuple[int, Event, Any]]] = {}
        debug = log.isEnabledFor(logging.DEBUG)
        if one_by_one:
            await savepoint.take()  # outermost, below the per-event savepoints
        for index, event in enumerate(events):
            admitted = self._admit(event)
            if isinstance(admitted, Rejection):
                raise HandlerRaised(index, admitted, 0.0)
            handler, payload = admitted
            handle = handler.handle
            if handle is None:
                batches.setdefault(event.event_type, []).append((index, event, payload))
                continue
            begin = time.perf_counter()
            if debug:
                log.debug("stage started", extra=event.fields())
            try:
                info = event.info
                deps = self._deps(info, functools.partial(AlreadyOpen, conn, info, savepoint.take))
                if one_by_one:
                    async with conn.transaction():
                        await handle(payload, deps)
                else:
                    await handle(payload, deps)
            except Exception as exc:
                self._raise_for(conn, exc, one_by_one, event.event_type, [index], begin)
            done.add(event, begin)
            if debug:
                log.debug("stage finished", extra=event.fields(duration_ms=done.durations[-1]))
        for event_type, members in batches.items():
            each = one_by_one or (isinstance(isolate, set) and event_type in isolate)
            for call in ([m] for m in members) if each else [members]:
                await self._run_locked_call(conn, event_type, call, savepoint, one_by_one, done)
        if done.ids:
            now = time.perf_counter()
            await conn.execute(
                COMPLETE_LOCKED, done.ids, [now - s for s in done.started], done.durations
            )
        return len(done.ids)

    async def _run_locked_call(
        self,
        conn: Connection,
        event_type: str,
        call: list[tuple[int, Event, Any]],
        savepoint: BatchSavepoint,
        one_by_one: bool,
        done: _Done,
    ) -> None:
        """One handle_many call on the locked path: its items' results and completions commit
        with the batch; an item it gives an outcome is recorded in the same transaction."""
        assert self._pool is not None
        assert self._http is not None
        handler = self.registry.get(event_type)
        assert handler is not None
        assert handler.handle_many is not None
        items: list[Item[Any]] = [Item(payload, event.info) for _, event, payload in call]
        opened = functools.partial(AlreadyOpenBatch, conn, items, savepoint.take)
        deps = BatchDeps(self._http, self._pool.acquire, self._resources, event_type, opened)
        begin = time.perf_counter()
        try:
            if one_by_one:
                async with conn.transaction():
                    await handler.handle_many(items, deps)
            else:
                await handler.handle_many(items, deps)
        except Exception as exc:
            indexes = [index for index, _, _ in call]
            self._raise_for(conn, exc, one_by_one, event_type, indexes, begin)
        for (_, event, _), item in zip(call, items, strict=True):
            if item.outcome is None:
                done.add(event, begin)
            else:
                await savepoint.take()  # a later roll-back undoes this record with the rest
                duration_ms = (time.perf_counter() - begin) * 1000
                await self._record_outcome(conn, event, item.outcome, duration_ms)

    @staticmethod
    def _raise_for(
        conn: Connection,
        exc: Exception,
        one_by_one: bool,
        event_type: str,
        indexes: list[int],
        begin: float,
    ) -> NoReturn:
        """How a locked handler's exception leaves the batch (see _claim_and_run_locked)."""
        if _connection_lost(conn, exc):
            raise exc  # the database went away: not the events' fault, nothing to record
        if not one_by_one and isinstance(exc, asyncpg.InFailedSQLTransactionError):
            raise exc  # an earlier handler broke the transaction: find it one by one
        if len(indexes) > 1:
            raise BatchCallRaised(event_type) from exc
        raise HandlerRaised(indexes[0], exc, (time.perf_counter() - begin) * 1000) from exc

    async def _settle_failure(self, conn: Connection, event: Event, raised: HandlerRaised) -> None:
        if isinstance(raised.error, Rejection):
            admitted = await self._admit_fresh(event)
            if isinstance(admitted, Rejection):
                await self._reject(conn, event, admitted)
        else:
            await self._record_outcome(conn, event, raised.error, raised.duration_ms)

    # -- the lease path -----------------------------------------------------------------------

    async def _claim_and_run_leased(self) -> int:
        """Claims what fits in the free handler calls: one event per call for `handle`, up to
        leased_batch_size events of one type per call for `handle_many`."""
        assert self._pool is not None
        room = self.settings.max_leased - len(self._leased_tasks)
        if room <= 0:
            await asyncio.wait(self._leased_tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1  # a slot freed: claim again at once
        claimed = 0
        single = [t for t in self._leased_types if t not in self._batch_types]
        if single:
            for row in await self._claim_leases(single, room):
                event = Event(row, leased_by=self.listener_id)
                self._start_leased([event], self._run_leased(event))
                claimed += 1
        room -= claimed
        batched = [t for t in self._leased_types if t in self._batch_types]
        if len(batched) > room > 0:
            # Fewer free calls than batch types: claim only as many types as there are calls,
            # taking turns, so that no type waits behind another for ever.
            turn = self._batch_turn % len(batched)
            self._batch_turn += 1
            batched = (batched[turn:] + batched[:turn])[:room]
        if batched and room > 0:
            by_type: dict[str, list[Event]] = {}
            for row in await self._claim_leases(batched, room * self.settings.leased_batch_size):
                event = Event(row, leased_by=self.listener_id)
                by_type.setdefault(event.event_type, []).append(event)
                claimed += 1
            self._start_batches(list(by_type.values()), room)
        return claimed

    def _start_batches(self, groups: list[list[Event]], room: int) -> None:
        """One call per leased_batch_size events of a type, but never more calls than `room`
        (there are at most `room` types): a type that would overflow it gets fewer, fuller
        calls."""
        size = self.settings.leased_batch_size
        for index, events in enumerate(groups):
            types_after = len(groups) - index - 1
            calls = min(-(-len(events) // size), max(1, room - types_after))
            per_call = -(-len(events) // calls)
            for start in range(0, len(events), per_call):
                chunk = events[start : start + per_call]
                self._start_leased(chunk, self._run_leased_batch(chunk))
            room -= calls

    async def _claim_leases(self, event_types: list[str], limit: int) -> list[asyncpg.Record]:
        assert self._pool is not None
        return await self._pool.fetch(
            CLAIM_LEASED, self.listener_id, event_types, limit, self.settings.lease_seconds
        )

    def _start_leased(self, events: list[Event], run: Awaitable[None]) -> None:
        task = asyncio.ensure_future(run)
        keys = [(event.id, event.attempt) for event in events]
        for key, event in zip(keys, events, strict=True):
            self._leased[key] = (event, task)
        self._leased_tasks.add(task)
        task.add_done_callback(functools.partial(self._forget_leased, keys))

    def _forget_leased(self, keys: list[LeaseKey], task: asyncio.Task[None]) -> None:
        first = self._leased.get(keys[0])
        if not task.cancelled() and (error := task.exception()) is not None:
            # Failures are recorded inside the task; one that escapes (the admission check's
            # database read, say) is logged here, and the leases are left to be rescued.
            fields = first[0].fields(error=repr(error)) if first else {"event_id": keys[0][0]}
            log.error("leased event failed outside its handler", exc_info=error, extra=fields)
        for key in keys:
            entry = self._leased.get(key)
            if entry is not None and entry[1] is task:
                del self._leased[key]
        self._leased_tasks.discard(task)
        self._doorbell.ring()  # a slot is free: a concurrency-limited type may be claimable

    async def _run_leased(self, event: Event) -> None:
        assert self._pool is not None
        pool = self._pool
        admitted = await self._admit_fresh(event)
        if isinstance(admitted, Rejection):
            async with pool.acquire() as conn:
                await self._reject(conn, event, admitted)
            return
        handler, payload = admitted
        handle = handler.handle
        assert handle is not None  # handle_many types are claimed for _run_leased_batch
        limited = self._settings_of(event.event_type).concurrency_limit is not None
        begin = time.perf_counter()

        @contextlib.asynccontextmanager
        async def holding_lease() -> AsyncIterator[Tx]:
            info = event.info
            async with pool.acquire() as conn, conn.transaction():
                held = await conn.fetchrow(
                    HOLD_LEASE, event.id, event.attempt, event.lease_owner, str(info.id),
                    str(info.run_id), info.correlation_id or "",
                )  # fmt: skip
                if held is None:
                    raise LeaseLost(f"event {event.id} attempt {event.attempt} was rescued")
                yield Tx(conn, info, context_set=True)
                await conn.execute(COMPLETE_LEASED, event.id, (time.perf_counter() - begin) * 1000)
                if limited:
                    await conn.execute(NOTIFY)  # a slot is free for every listener, not just us

        deps = self._deps(event.info, holding_lease)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("stage started", extra=event.fields())
        try:
            if handler.external:
                await handle(payload, deps)
                if not deps.completed:
                    async with deps.completing_transaction():
                        pass
            else:
                # A database handler on the lease path (it has a concurrency limit) runs
                # entirely inside its completing transaction.
                async with deps.completing_transaction():
                    await handle(payload, deps)
            self.counters.processed += 1
            if debug:
                duration_ms = (time.perf_counter() - begin) * 1000
                log.debug("stage finished", extra=event.fields(duration_ms=duration_ms))
        except LeaseLost:
            log.warning("lease lost; results discarded", extra=event.fields())
        except Exception as exc:
            await self._record_outcomes([(event, exc)], (time.perf_counter() - begin) * 1000)

    async def _run_leased_batch(self, events: list[Event]) -> None:
        """One `handle_many` call for events of one type (cascade/handling.py): the handler
        reads, calls providers and writes for all of them, and one transaction confirms the
        leases still held, commits the results and completes those events. Every other item
        gets its own outcome recorded, as `_run_leased` records a single event's."""
        assert self._pool is not None
        assert self._http is not None
        pool = self._pool
        handler: Handler | None = None
        claimed: dict[int, Event] = {}
        items: list[Item[Any]] = []
        for event in events:
            admitted = await self._admit_fresh(event)
            if isinstance(admitted, Rejection):
                async with pool.acquire() as conn:
                    await self._reject(conn, event, admitted)
                continue
            handler, payload = admitted
            claimed[event.id] = event
            items.append(Item(payload, event.info))
        if handler is None or handler.handle_many is None:
            return
        limited = self._settings_of(handler.event_type).concurrency_limit is not None
        begin = time.perf_counter()
        finished: set[int] = set()
        lost: set[int] = set()

        @contextlib.asynccontextmanager
        async def holding_leases() -> AsyncIterator[BatchTx]:
            waiting = [item for item in items if item.outcome is None]
            ids = [item.event.id for item in waiting]
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    HOLD_LEASES, ids, [claimed[i].attempt for i in ids], self.listener_id
                )
                held_ids = {row[0] for row in rows}
                lost.update(set(ids) - held_ids)
                held = [item for item in waiting if item.event.id in held_ids]
                yield BatchTx(conn, held)
                done = [item.event.id for item in held if item.outcome is None]
                if done:
                    duration_ms = (time.perf_counter() - begin) * 1000
                    await conn.execute(COMPLETE_LEASED_MANY, done, duration_ms)
                    if limited:
                        await conn.execute(NOTIFY)  # slots are free for every listener
            finished.update(done)  # committed

        deps = BatchDeps(self._http, pool.acquire, self._resources, handler.event_type,
                         holding_leases)  # fmt: skip
        try:
            await handler.handle_many(items, deps)
            if not deps.completed:
                async with deps.completing_transaction():
                    pass
        except Exception as exc:
            for item in items:
                if item.outcome is None and item.event.id not in finished | lost:
                    item.outcome = exc
        self.counters.processed += len(finished)
        for event_id in sorted(lost):
            log.warning("lease lost; results discarded", extra=claimed[event_id].fields())
        outcomes = [
            (claimed[item.event.id], item.outcome)
            for item in items
            if item.outcome is not None and item.event.id not in lost
        ]
        if outcomes:
            await self._record_outcomes(outcomes, (time.perf_counter() - begin) * 1000)

    async def _record_outcomes(
        self, outcomes: list[tuple[Event, Exception]], duration_ms: float
    ) -> None:
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn:
                for event, outcome in outcomes:
                    await self._record_outcome(conn, event, outcome, duration_ms)
        except CONNECTION_ERRORS as lost:
            # No connection to record the failures on (the server is gone, or out of
            # connections): the leases expire and another listener rescues the events.
            log.error(
                "failure not recorded; the lease will be rescued",
                extra=outcomes[0][0].fields(error=repr(lost), events=len(outcomes)),
            )

    # -- admission and outcomes ---------------------------------------------------------------

    def _admit(self, event: Event) -> tuple[Handler, Any] | Rejection:
        """Process key, handler and payload checks: what fails here can never succeed."""
        event_type = event.info.event_type
        key = event.unique_id
        if event_type not in self._step_names if key is None else key not in self._process_keys:
            return Rejection(
                f"UNMAPPED UNIQUE_ID: {key or event_type} not found in shq_process_key_reference",
                unmapped=True,
            )
        handler = self.registry.get(event_type)
        if handler is None:
            return Rejection(f"no handler registered for event type {event_type!r}")
        try:
            return handler, handler.validate_json(event.payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
                for e in exc.errors()
            )
            return Rejection(
                f"payload of {event_type} event {event.info.id} is invalid: {problems}"
            )

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

    def _settings_of(self, event_type: str) -> EventTypeSettings:
        return self._type_settings.get(event_type, DEFAULT_TYPE_SETTINGS)

    async def _reject(self, conn: Connection, event: Event, rejection: Rejection) -> None:
        verdict = Verdict("dead", "dead", "critical", 0.0)
        if await self._write_failure(conn, event, verdict, rejection.message, None, 0.0):
            self.counters.dead += 1
            log.error("dead letter", extra=event.fields(error=rejection.message))

    async def _record_outcome(
        self, conn: Connection, event: Event, exc: Exception, duration_ms: float
    ) -> None:
        if isinstance(exc, RetryLater):
            delay = bounded_delay(exc.seconds)
            await conn.execute(
                SNOOZE,
                event.id,
                event.attempts,
                event.lease_owner,
                event.attempt - 1,
                delay,
                storable(str(exc)),
            )
            log.info("retry later requested", extra=event.fields(delay_s=delay, error=str(exc)))
            return
        settings = self._settings_of(event.event_type)
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
        """Records the failed attempt; False if the event was no longer ours."""
        written = await conn.fetchval(
            RECORD_FAILURE,
            event.id,
            event.attempts,
            event.lease_owner,
            verdict.status,
            verdict.outcome,
            event.attempt,
            bounded_delay(verdict.delay),
            storable(message),
            verdict.severity,
            duration_ms,
            storable(tb) if tb is not None else None,
        )
        if written is None:
            log.warning("failure not recorded: event no longer ours", extra=event.fields())
        return written is not None

    def _deps(self, info: EventInfo, completion: CompletionFactory) -> Deps:
        assert self._pool is not None
        assert self._http is not None
        return Deps(self._http, self._pool.acquire, self._resources, info, completion)

    # -- background chores --------------------------------------------------------------------

    async def _refresh_settings(self) -> None:
        assert self._control is not None
        rows = await self._control.fetch(LOAD_EVENT_TYPES)
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
        self._locked_types = sorted(set(self._handled_types) - set(self._leased_types))
        keys = await self._control.fetch(LOAD_PROCESS_KEYS)
        self._process_keys = {r["unique_id"] for r in keys}
        self._step_names = {r["step_name"] for r in keys}
        self._keys_loaded_at = time.monotonic()

    async def _housekeeping_loop(self) -> None:
        """Heartbeats, lease renewal, rescue of expired leases, settings, throughput lines.
        Runs until the drain is over, so leases stay renewed while handlers finish."""
        settings = self.settings
        every = min(settings.heartbeat_interval, settings.rescue_interval)
        last_stats = last_refresh = time.monotonic()
        reported = dataclasses.replace(self.counters)
        while not self._closing.is_set():
            await wait_for_ring(asyncio.Event(), self._closing, every)
            try:
                await self._chores()
                now = time.monotonic()
                if now - last_refresh >= settings.refresh_interval:
                    await self._refresh_settings()
                    last_refresh = now
            except CONNECTION_ERRORS as exc:
                log.warning("housekeeping: database unreachable", extra={"error": repr(exc)})
            except Exception:
                # Leases and heartbeats depend on this loop: log, and carry on.
                log.exception("housekeeping failed; retrying")
            now = time.monotonic()
            if now - last_stats >= settings.stats_interval:
                self._log_throughput(reported, now - last_stats)
                reported = dataclasses.replace(self.counters)
                last_stats = now

    async def _chores(self) -> None:
        assert self._control is not None
        control = self._control
        await self._heartbeat()
        if self._leased:
            held = sorted({event_id for event_id, _ in self._leased})
            await control.execute(
                EXTEND_LEASES, self.listener_id, held, self.settings.lease_seconds
            )
        if self._stopping.is_set():
            return  # draining: renew what we hold, take on nothing
        rescued = await control.fetchval(RESCUE_EXPIRED)
        if rescued:
            log.warning("rescued events with expired leases", extra={"rescued": rescued})
        buried = await control.fetchval(
            BURY_UNHANDLED, self.settings.unhandled_grace, self.settings.lease_seconds
        )
        if buried:
            self.counters.dead += buried
            log.error(
                "dead letters: no running listener handles their type", extra={"dead": buried}
            )
        await control.execute(FORGET_DEAD_LISTENERS, self.settings.lease_seconds * 3)

    async def _heartbeat(self) -> None:
        assert self._control is not None
        assert self._gate is not None
        inserted = await self._control.fetchval(
            HEARTBEAT_LISTENER,
            self.listener_id,
            socket.gethostname(),
            os.getpid(),
            self._handled_types,
        )
        if inserted and self._gate.sleeping:
            # Registered afresh with sleeping = false: every lane must arm again.
            log.warning("listener registration was lost; registered again")
            self._gate.forget()
            self._doorbell.ring()  # loops waiting as "armed" must wake and arm again

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
            wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
            # Any failure, not only connection errors: this loop must never end by itself.
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: log.warning(
                "LISTEN connection lost; reconnecting",
                extra={
                    "error": repr(state.outcome.exception()) if state.outcome else None,
                    "attempt": state.attempt_number,
                },
            ),
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


DEFAULT_TYPE_SETTINGS = EventTypeSettings()


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
