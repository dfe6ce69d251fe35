"""Group commit: many webhook deliveries in one transaction, each answered after it commits.

A delivery's own transaction costs more than its work: a handful of round trips driven from
Python, and a WAL flush at commit (bench/RESULTS.md, "Webhook ingestion"). Here a request
hands its parsed delivery over and waits; a writer takes every delivery waiting, writes them
with one `write_many` call in one transaction, commits, and only then answers each request.
Nothing is acknowledged before it is durable, so a crash loses only requests not yet
answered, which their senders retry. There is no timer: at a low rate a delivery finds no one
waiting and goes alone, at once; under load, deliveries pile up while a commit is in flight,
and the next transaction takes them together, so batches grow with the load by themselves
(the shape of PostgreSQL's own commit_delay, without the delay).

One writer runs while deliveries keep up with it: the next batch gathers while its
statement runs. A writer that finds a backlog (at least twice `share_from` waiting) takes half
and hands the rest to a new writer, up to `writers`, so that two statements run on two
connections while the server reads what comes next, instead of one long batch and the
server taking turns; a full batch waiting starts another writer too. Two of them may hold
the same deliveries' keys: `write_many` must take its locks in a fixed order (key order) so
they cannot deadlock.

If `write_many` raises (or answers for the wrong number of deliveries), every delivery of
that batch is written again on its own with `write_one` (the per-request path), one after
another, so one delivery the database refuses fails alone, as a 500 for its own request, and
the rest still commit. (Had the connection broken just after the commit, the second writing
finds each delivery claimed and answers it as a duplicate: nothing is lost, the summary is.)
A writer that is itself stopped fails its batch's requests (500: the outcome is unknown) and
hands what still waits to a new writer; one stopped before its first step fails the half it
was handed. A delivery refused on its own is remembered by `key`
for ten minutes: when its sender retries it, it goes alone at once instead of failing
another batch.

A request that goes away while it waits (the client hung up) does not take its delivery back:
the batch commits it, and the sender's retry finds it stored (a duplicate, answered 200).

The queue is bounded: with `max_waiting` deliveries waiting already, `submit` refuses the
next at once (`Busy`), before anything of it is written, so that its sender's retry is its
first delivery. Past that point the writers are behind by more than a second of their peak,
and a longer queue would only make every request in it wait longer, past its sender's
timeout (whose retry then adds to the load), and hold more memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from cascade.handling import Connection

log = logging.getLogger("cascade.web")

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# Many deliveries in one statement keep it short and its arrays small; past a few hundred the
# flush is amortised already.
MAX_BATCH = 256
WRITERS = 4
# A writer shares a backlog of at least twice this many with another writer. Below it, one
# bigger batch costs PostgreSQL less per delivery than two small ones; above it, the halves
# cut the wait: at half the bench's peak, p99 9-13 ms shared against 26-39 ms with one writer
# taking all (bench/RESULTS.md, "Webhook ingestion").
SHARE_FROM = 16
# Deliveries waiting at which submit() refuses the next: about a second of the writers' work
# at the bench's peak (4,000-6,000 opens a second on 2 cores), and several times what a flush
# that stalls for 300 ms lets pile up at half of it (bench/RESULTS.md, "Webhook ingestion").
# Below MAX_BATCH a full batch never waits, so no second writer starts for one; below
# 2 * SHARE_FROM no backlog is ever shared: one writer does all.
MAX_WAITING = 4096
# A delivery the database refused in a batch is written alone when it comes again (its
# sender's retries), for this long, among at most this many remembered.
REFUSED_MEMORY_SECONDS = 600.0
REFUSED_MEMORY_SIZE = 1_000


class Busy(Exception):
    """Too many deliveries wait already; nothing of this one was written."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} deliveries are waiting to be written")
        self.waiting = waiting


@dataclass
class _Waiting(Generic[Item, Outcome]):
    item: Item
    answer: asyncio.Future[Outcome]


class GroupCommit(Generic[Item, Outcome]):
    """`write_many(conn, items)` writes the items atomically (one statement, or a transaction
    of its own) and returns one outcome per item, in order; `write_one(item)` writes one item
    in a transaction of its own. One statement is one round trip: no BEGIN and COMMIT."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        write_many: Callable[[Connection, Sequence[Item]], Awaitable[list[Outcome]]],
        write_one: Callable[[Item], Awaitable[Outcome]],
        *,
        key: Callable[[Item], Hashable] | None = None,
        max_batch: int = MAX_BATCH,
        writers: int = WRITERS,
        share_from: int = SHARE_FROM,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._pool = pool
        self._key = key
        self._write_many = write_many
        self._write_one = write_one
        self._max_batch = max_batch
        self._writers = writers
        self._share_from = share_from
        self._max_waiting = max_waiting
        self._waiting: list[_Waiting[Item, Outcome]] = []
        # Counted by the writers themselves, not by their tasks' done callbacks: a writer
        # that has found nothing waiting is gone at once, so a delivery handed over just
        # after always starts a writer of its own rather than wait for one that has left.
        self._writing = 0
        self._running: set[asyncio.Task[None]] = set()
        # Writers not yet past their first step, with the batch each was handed: one stopped
        # before it (its `finally` never runs) is counted out and fails that batch in
        # `_writer_ended`.
        self._unstarted: dict[asyncio.Task[None], list[_Waiting[Item, Outcome]]] = {}
        self._started_writers = 0
        # Keys (by `key`) of items refused in a batch, oldest first, with when.
        self._refused: dict[Hashable, float] = {}

    @property
    def waiting(self) -> int:
        """Items handed over and not yet taken by a writer."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Outcome:
        """The item's outcome once its transaction has committed; `Busy` at once, with nothing
        written, when `max_waiting` items wait already."""
        if self._refused_lately(item):
            # Its retries would otherwise make every batch they join fail and fall back to
            # one delivery at a time, holding up everything queued behind it.
            try:
                outcome = await self._write_one(item)
            except Exception:
                self._remember_refused(item)  # still refused: remembered afresh
                raise
            self._forget(item)
            return outcome
        if len(self._waiting) >= self._max_waiting:
            raise Busy(len(self._waiting))
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        self._waiting.append(_Waiting(item, answer))
        self._start_writer()
        # A request cancelled while it waits cancels only its answer: the delivery stays in
        # the batch, and the writer skips answers that are done.
        return await answer

    async def close(self) -> None:
        """Waits for every delivery handed over to be written (the app's shutdown)."""
        while self._running or self._waiting:
            self._start_writer()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _start_writer(self) -> None:
        # On a hand-over: a writer if none runs, another only for a full batch. A writer per
        # delivery or two would make batches of one or two, which cost more (bench/RESULTS.md);
        # a backlog is shared by the writer that finds it (_write_waiting).
        if self._writing == 0 or len(self._waiting) >= self._max_batch:
            self._start_another()

    def _start_another(self, batch: list[_Waiting[Item, Outcome]] | None = None) -> None:
        """A new writer, for `batch` first when one is handed over, then for what waits."""
        if self._writing >= self._writers or not (batch or self._waiting):
            return
        self._writing += 1
        self._started_writers += 1
        name = f"group commit writer {self._started_writers}"
        task = asyncio.create_task(self._write_waiting(batch or []), name=name)
        self._unstarted[task] = batch or []
        self._running.add(task)
        task.add_done_callback(self._writer_ended)

    async def _write_waiting(self, batch: list[_Waiting[Item, Outcome]]) -> None:
        this = asyncio.current_task()
        if this is not None:
            self._unstarted.pop(this, None)  # started: its `finally` counts it out
        try:
            while batch or self._waiting:
                if not batch:
                    batch = self._waiting[: self._max_batch]
                    del self._waiting[: self._max_batch]
                if len(batch) >= 2 * self._share_from and self._writing < self._writers:
                    # The other half goes to a writer of its own at once, so that no writer
                    # starts to find that another has taken its work.
                    half = (len(batch) + 1) // 2
                    self._start_another(batch[half:])
                    batch = batch[:half]
                await self._write(batch)
                batch = []
        finally:
            self._writing -= 1
            # A writer that ended by an error leaves what still waits to a new one.
            self._start_writer()

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        batch = self._unstarted.pop(task, None)
        if batch is None:
            return  # it ran: its own `finally` counted it out
        # Stopped before its first step: counted out here, its batch's requests answered.
        self._writing -= 1
        _interrupt(batch, asyncio.CancelledError())
        self._start_writer()

    async def _write(self, batch: list[_Waiting[Item, Outcome]]) -> None:
        try:
            try:
                items = [waiting.item for waiting in batch]
                async with self._pool.acquire() as conn:
                    outcomes = await self._write_many(conn, items)
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} deliveries")
            except Exception:  # each delivery gets its own answer, below
                log.warning(
                    "a group commit of %d deliveries failed; writing each alone",
                    len(batch),
                    exc_info=True,
                )
                await self._write_each(batch)
                return
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(outcome)
        except BaseException as exc:
            # The writer itself is stopped (cancelled): no request may wait for ever. Whether
            # its delivery committed is unknown, so it gets a 500 and its sender retries
            # (a duplicate then, answered 200, if it had).
            _interrupt(batch, exc)
            raise

    def _refused_lately(self, item: Item) -> bool:
        if self._key is None or not self._refused:
            return False
        refused_at = self._refused.get(self._key(item))
        if refused_at is None:
            return False
        if time.monotonic() - refused_at > REFUSED_MEMORY_SECONDS:
            self._forget(item)
            return False
        return True

    def _remember_refused(self, item: Item) -> None:
        if self._key is None:
            return
        key = self._key(item)
        self._refused.pop(key, None)
        self._refused[key] = time.monotonic()
        while len(self._refused) > REFUSED_MEMORY_SIZE:
            del self._refused[next(iter(self._refused))]

    def _forget(self, item: Item) -> None:
        if self._key is not None:
            self._refused.pop(self._key(item), None)

    async def _write_each(self, batch: list[_Waiting[Item, Outcome]]) -> None:
        # One after another: the other routes and /ready share the pool, and a failed batch
        # of hundreds written at once would take every connection.
        for waiting in batch:
            try:
                outcome = await self._write_one(waiting.item)
            except Exception as exc:  # the request's answer: raised in its endpoint
                self._remember_refused(waiting.item)
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
                continue
            if not waiting.answer.done():
                waiting.answer.set_result(outcome)


def _interrupt(batch: list[_Waiting[Item, Outcome]], cause: BaseException) -> None:
    interrupted = RuntimeError("the group commit was interrupted")
    interrupted.__cause__ = cause
    for waiting in batch:
        if not waiting.answer.done():
            waiting.answer.set_exception(interrupted)


def _retrieved(answer: asyncio.Future[Any]) -> None:
    # An answer whose request went away is never awaited; reading its exception here keeps
    # asyncio from logging "exception was never retrieved" for it.
    if not answer.cancelled():
        answer.exception()
