"""What a handler sees: its transaction, its dependencies, and the outcomes it may signal.

A handler module has three public names: `EVENT_TYPE`, a frozen pydantic `Payload`, and
`async def handle(payload, deps)`. A module that calls a network service also sets
`EXTERNAL = True`, which puts its events on the lease path (listener.py). Returning means
done; `PermanentFailure` means dead letter without retries; `RetryLater(seconds)` means run
again later without spending an attempt (a provider's Retry-After); any other exception means
retry with backoff.

A module may define `async def handle_many(items, deps)` instead of `handle`: it gets many
events of its type at once (`Item`s: the locked path's claimed batch, or up to
CASCADE_LEASED_BATCH_SIZE leased events) and one completing transaction for all of them
(`BatchDeps`, `BatchTx`), so one read, one provider fan-out and one round trip of writes serve
many events. Each item's outcome is its own: left alone it is
done when that transaction commits; `item.retry_later(...)` and `item.fail(...)` give it the
outcome `handle` would have raised; an exception out of `handle_many` is every unfinished
item's outcome.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, LiteralString, NamedTuple, TypeAlias, TypeVar

import asyncpg
import httpx
from asyncpg.pool import PoolConnectionProxy
from pydantic import BaseModel

# Sets the transaction-local lineage that marketing.pipeline_events' column defaults read, so
# every event the handler's writes emit records its parent, run and correlation id.
SET_EVENT_CONTEXT: LiteralString = """
    SELECT set_config('cascade.event_id', $1, true),
           set_config('cascade.run_id', $2, true),
           set_config('cascade.correlation_id', $3, true)
"""


# What a batch's per-item statement passes its item's lineage to, as $1, $2 and $3 (see
# BatchTx.for_each); the function is SET_EVENT_CONTEXT's three set_config calls.
ITEM_CONTEXT = "marketing.set_event_context($1, $2, $3)"

# A connection as handlers and the engine see it: direct, or borrowed from a pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class PermanentFailure(Exception):
    """The event can never succeed: dead letter now, no retries."""


class RetryLater(Exception):
    """Run the event again after `seconds` without spending an attempt (e.g. Retry-After)."""

    def __init__(self, seconds: float, reason: str = "retry requested") -> None:
        super().__init__(f"{reason}; retry in {seconds:g}s")
        self.seconds = max(0.0, seconds)


class LeaseLost(Exception):
    """Another listener rescued the event; this one's results must not be written."""


class EventInfo(NamedTuple):
    """The event being handled, as the handler may need it. (A NamedTuple: one is made for
    every event, and it is the cheapest immutable record Python has.)"""

    id: int
    event_type: str
    attempt: int
    run_id: int
    record_id: int | None
    correlation_id: str | None


FirstStatementHook = Callable[[], Awaitable[None]]


class Tx:
    """The handler's transaction: asyncpg's query methods, with the lineage context set lazily.

    The context costs a round trip, so it is sent only before the handler's first statement;
    a handler that writes nothing pays nothing. `before_first_statement` lets the engine do
    the same with its own set-up (the locked path's batch savepoint).
    """

    __slots__ = ("_before", "_conn", "_context_set", "_event")

    def __init__(
        self,
        conn: Connection,
        event: EventInfo,
        before_first_statement: FirstStatementHook | None = None,
        *,
        context_set: bool = False,
    ) -> None:
        self._conn = conn
        self._event = event
        self._before = before_first_statement
        self._context_set = context_set  # the engine set it already, in a statement of its own

    async def _context(self) -> None:
        if not self._context_set:
            if self._before is not None:
                await self._before()
            event = self._event
            await self._conn.execute(
                SET_EVENT_CONTEXT, str(event.id), str(event.run_id), event.correlation_id or ""
            )
            self._context_set = True

    async def execute(self, query: LiteralString, *args: Any) -> str:
        await self._context()
        return await self._conn.execute(query, *args)

    async def executemany(self, query: LiteralString, args: Iterable[tuple[Any, ...]]) -> None:
        await self._context()
        await self._conn.executemany(query, args)

    async def fetch(self, query: LiteralString, *args: Any) -> list[asyncpg.Record]:
        await self._context()
        return await self._conn.fetch(query, *args)

    async def fetchrow(self, query: LiteralString, *args: Any) -> asyncpg.Record | None:
        await self._context()
        return await self._conn.fetchrow(query, *args)

    async def fetchval(self, query: LiteralString, *args: Any) -> Any:
        await self._context()
        return await self._conn.fetchval(query, *args)


CompletionFactory = Callable[[], contextlib.AbstractAsyncContextManager[Tx]]
ReaderFactory = Callable[[], contextlib.AbstractAsyncContextManager[Connection]]

# A long-lived resource the handlers share (provider clients, settings read from the
# environment): opened once when the listener starts, closed when it stops, and found by
# its type with `deps.resource(Kind)`.
ResourceFactory = Callable[[], contextlib.AbstractAsyncContextManager[object]]
Resources: TypeAlias = Mapping[type[Any], object]
R = TypeVar("R")


class AlreadyOpen:
    """The locked path's completing transaction: the claim's own, already open, which the
    engine commits with the event's completion."""

    __slots__ = ("_before", "_conn", "_event")

    def __init__(
        self, conn: Connection, event: EventInfo, before_first_statement: FirstStatementHook
    ) -> None:
        self._conn = conn
        self._event = event
        self._before = before_first_statement

    async def __aenter__(self) -> Tx:
        return Tx(self._conn, self._event, self._before)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


@functools.cache
def _handler_logger(event_type: str) -> logging.Logger:
    return logging.getLogger(f"cascade.handlers.{event_type}")


def idempotency_key(event: EventInfo) -> str:
    """The key to send with any external side effect of this event: stable across retries."""
    return f"cascade-event-{event.id}"


@dataclass(slots=True)
class _Services:
    """What every handler may use besides its transaction: the shared HTTP client, pooled
    connections for reads before an external call, and the registry's resources."""

    http: httpx.AsyncClient
    _reader: ReaderFactory
    _resources: Resources

    def resource(self, kind: type[R]) -> R:
        """The shared resource of this type that the registry's factories opened."""
        found = self._resources.get(kind)
        if not isinstance(found, kind):
            raise LookupError(f"no {kind.__name__} resource: add its factory to the registry")
        return found

    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A pooled connection for reads before an external call; no transaction is held."""
        return self._reader()


@dataclass(slots=True)
class Deps(_Services):
    """A handler's dependencies for one event. Built for every event, so it stays cheap: the
    logger and the transaction are made only when the handler asks for them."""

    event: EventInfo
    _completion: CompletionFactory
    _active: Tx | None = field(default=None)
    completed: bool = field(default=False)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry the event's id, run, type and attempt."""
        event = self.event
        return logging.LoggerAdapter(
            _handler_logger(event.event_type),
            {
                "event_id": event.id,
                "run_id": event.run_id,
                "event_type": event.event_type,
                "attempt": event.attempt,
            },
        )

    @property
    def idempotency_key(self) -> str:
        """The key to send with any external side effect: stable across retries of this event."""
        return idempotency_key(self.event)

    @contextlib.asynccontextmanager
    async def completing_transaction(self) -> AsyncIterator[Tx]:
        """The transaction in which the handler's results and the event's completion commit
        together. Re-entrant: inside it, asking again yields the same transaction."""
        if self._active is not None:
            yield self._active
            return
        async with self._completion() as tx:
            self._active = tx
            try:
                yield tx
            finally:
                self._active = None
        self.completed = True

    def separate_transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A short transaction of its own, committed when the block ends, for a write that
        must be seen before the handler finishes (it does not complete the event). The events
        its writes emit carry this event's lineage, as the completing transaction's do."""
        return _separate_transaction(self._reader, self.event)


@contextlib.asynccontextmanager
async def _separate_transaction(reader: ReaderFactory, event: EventInfo) -> AsyncIterator[Tx]:
    async with reader() as conn, conn.transaction():
        yield Tx(conn, event)


P = TypeVar("P")


@dataclass(slots=True, eq=False)
class Item(Generic[P]):
    """One event of a batch (`handle_many`): its payload, and the outcome the handler gives
    it. An item left without one is done when the batch's completing transaction commits."""

    payload: P
    event: EventInfo
    outcome: Exception | None = None

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.event)

    @property
    def lineage(self) -> tuple[str, str, str]:
        """The $1, $2, $3 of its per-item statements (ITEM_CONTEXT)."""
        event = self.event
        return str(event.id), str(event.run_id), event.correlation_id or ""

    def retry_later(self, seconds: float, reason: str) -> None:
        """Run this event again after `seconds` without spending an attempt."""
        self.outcome = RetryLater(seconds, reason)

    def fail(self, error: Exception) -> None:
        """This event failed: retried with backoff, or dead at once for a PermanentFailure."""
        self.outcome = error


class BatchTx:
    """A batch's completing transaction. `held` are the items it completes when it commits:
    on the lease path, those whose leases the engine has just confirmed under row locks (an
    item rescued meanwhile by another listener is not among them, and nothing may be written
    for it); on the locked path, every item still without an outcome.

    Writes that emit events go through `for_each`/`fetch_each`: one statement per item, all
    sent in one round trip (asyncpg pipelines executemany), each setting its own item's
    lineage in-statement, so every emitted event names the event that caused it."""

    __slots__ = ("_before", "_conn", "held")

    def __init__(
        self,
        conn: Connection,
        held: Sequence[Item[Any]],
        before_first_statement: FirstStatementHook | None = None,
    ) -> None:
        self._conn = conn
        self.held = tuple(held)
        self._before = before_first_statement

    async def _ready(self) -> Connection:
        if self._before is not None:
            await self._before()
            self._before = None
        return self._conn

    async def execute(self, query: LiteralString, *args: Any) -> str:
        """A statement whose writes emit no event (it carries no lineage)."""
        return await (await self._ready()).execute(query, *args)

    async def fetch(self, query: LiteralString, *args: Any) -> list[asyncpg.Record]:
        """A read, or a write that emits no event, for the whole batch."""
        return await (await self._ready()).fetch(query, *args)

    async def for_each(self, query: LiteralString, rows: Iterable[tuple[Any, ...]]) -> None:
        """`query` once per row, a row being (item, $4, $5, ...)."""
        statement = _per_item(query)
        if lineage := _with_lineage(rows):
            await (await self._ready()).executemany(statement, lineage)

    async def fetch_each(
        self, query: LiteralString, rows: Iterable[tuple[Any, ...]]
    ) -> list[asyncpg.Record]:
        """`query` once per row, as `for_each`; every statement's rows, in order."""
        statement = _per_item(query)
        if lineage := _with_lineage(rows):
            return await (await self._ready()).fetchmany(statement, lineage)
        return []


class AlreadyOpenBatch:
    """The locked path's completing transaction for a batch call: the claim's own."""

    __slots__ = ("_before", "_conn", "_items")

    def __init__(
        self, conn: Connection, items: Sequence[Item[Any]], before: FirstStatementHook
    ) -> None:
        self._conn = conn
        self._items = items
        self._before = before

    async def __aenter__(self) -> BatchTx:
        waiting = [item for item in self._items if item.outcome is None]
        return BatchTx(self._conn, waiting, self._before)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _per_item(query: LiteralString) -> LiteralString:
    if ITEM_CONTEXT not in query:
        raise ValueError(f"a per-item statement must call {ITEM_CONTEXT} for its lineage")
    return query


def _with_lineage(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    lineage: list[tuple[Any, ...]] = []
    for item, *args in rows:
        if not isinstance(item, Item):
            raise TypeError(f"a per-item row starts with its Item, not {type(item).__name__}")
        lineage.append((*item.lineage, *args))
    return lineage


BatchCompletionFactory = Callable[[], contextlib.AbstractAsyncContextManager[BatchTx]]


@dataclass(slots=True)
class BatchDeps(_Services):
    """A batch handler's dependencies: what `Deps` offers, for all its items at once."""

    event_type: str
    _completion: BatchCompletionFactory
    _active: BatchTx | None = field(default=None)
    completed: bool = field(default=False)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            _handler_logger(self.event_type), {"event_type": self.event_type}
        )

    def separate_transaction(self, item: Item[Any]) -> contextlib.AbstractAsyncContextManager[Tx]:
        """Deps.separate_transaction for one item: a short committed write of its own, whose
        events carry that item's lineage."""
        return _separate_transaction(self._reader, item.event)

    @contextlib.asynccontextmanager
    async def completing_transaction(self) -> AsyncIterator[BatchTx]:
        """The one transaction in which the items' results and their completion commit.
        Re-entrant, as Deps': inside it, asking again yields the same transaction (a second
        one would wait for the first's row locks for ever)."""
        if self._active is not None:
            yield self._active
            return
        if self.completed:
            raise RuntimeError("a batch has one completing transaction")
        async with self._completion() as tx:
            self._active = tx
            try:
                yield tx
            finally:
                self._active = None
        self.completed = True


SingleHandle: TypeAlias = Callable[[Any, Deps], Awaitable[None]]
BatchHandle: TypeAlias = Callable[[Sequence[Item[Any]], BatchDeps], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Handler:
    event_type: str
    payload_model: type[BaseModel]
    handle: SingleHandle | None
    handle_many: BatchHandle | None  # set instead of `handle` by a batch handler
    external: bool
    module: str

    def validate_json(self, payload: str) -> Any:
        """The payload, validated from the JSON text as stored (what production sees)."""
        return self.payload_model.__pydantic_validator__.validate_json(payload)


def _handler_from_module(module: ModuleType) -> Handler:
    name = module.__name__
    event_type = getattr(module, "EVENT_TYPE", None)
    payload_model = getattr(module, "Payload", None)
    handle = getattr(module, "handle", None)
    handle_many = getattr(module, "handle_many", None)
    external = bool(getattr(module, "EXTERNAL", False))
    if not isinstance(event_type, str) or not event_type:
        raise TypeError(f"handler module {name} has no EVENT_TYPE string")
    if not (isinstance(payload_model, type) and issubclass(payload_model, BaseModel)):
        raise TypeError(f"handler module {name} has no pydantic Payload model")
    if handle_many is not None:
        if handle is not None or not inspect.iscoroutinefunction(handle_many):
            raise TypeError(
                f"handler module {name}: `async def handle_many(items, deps)` is instead of "
                "`handle`, not beside it"
            )
    elif not inspect.iscoroutinefunction(handle):
        raise TypeError(f"handler module {name} has no `async def handle(payload, deps)`")
    return Handler(event_type, payload_model, handle, handle_many, external, name)


class Registry:
    """Event type → handler, built from an explicit tuple of modules; duplicates are refused.
    `resources` are the factories of what the handlers share (see ResourceFactory)."""

    def __init__(
        self, modules: Iterable[ModuleType], resources: Iterable[ResourceFactory] = ()
    ) -> None:
        self.resources: tuple[ResourceFactory, ...] = tuple(resources)
        self._handlers: dict[str, Handler] = {}
        for module in modules:
            handler = _handler_from_module(module)
            existing = self._handlers.get(handler.event_type)
            if existing is not None:
                raise ValueError(
                    f"two handlers for {handler.event_type!r}: "
                    f"{existing.module} and {handler.module}"
                )
            self._handlers[handler.event_type] = handler

    def get(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)

    @contextlib.asynccontextmanager
    async def open_resources(self) -> AsyncIterator[Resources]:
        """Open every resource, keyed by its type; close them all on exit, last first."""
        async with contextlib.AsyncExitStack() as stack:
            opened: dict[type[Any], object] = {}
            for factory in self.resources:
                resource = await stack.enter_async_context(factory())
                opened[type(resource)] = resource
            yield opened

    @property
    def external_types(self) -> frozenset[str]:
        return frozenset(h.event_type for h in self._handlers.values() if h.external)
