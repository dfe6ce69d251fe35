"""The listener's side of waking up: a doorbell rung by NOTIFY, and the gate that tells writers
when a NOTIFY is needed at all.

Writers notify only while some listener is asleep (triggers/900_wake_listeners.sql), because a
notifying commit takes a cluster-wide lock. A *lane* is a set of claim loops that claim the
same events (the locked loops; the leased loop): one busy loop covers its lane, so the lane
needs waking only when all of its loops are idle. docs/architecture.md, "Waking the listener",
argues why nothing is missed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import LiteralString

import asyncpg

CHANNEL = "cascade_events"

# An upsert, like the heartbeat: the row may have vanished (an unlogged table after a crash).
SET_SLEEPING: LiteralString = """
    INSERT INTO marketing.listeners (listener_id, hostname, pid, sleeping, event_types)
    VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (listener_id) DO UPDATE SET sleeping = EXCLUDED.sleeping
"""
# The exclusive side of the writers' shared barrier lock: granted only when no transaction
# that inserted events is in flight, and released again at once (its own transaction).
WAKE_BARRIER: LiteralString = "SELECT pg_try_advisory_xact_lock(1667331939, 1)"


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
    """Which lanes are asleep, and the `sleeping` flag that makes writers notify.

    `arm(lane)`: set the flag, then take the writers' barrier lock exclusively, which succeeds
    only once every transaction that inserted events before the flag was visible has ended.
    After a successful arm the loop claims once more and may then trust NOTIFY. `disarm(lane)`
    when the lane finds work; the flag is cleared once no lane is armed, so that busy
    listeners cost writers nothing. Both run under one lock, so they cannot interleave.
    """

    def __init__(self, pool: asyncpg.Pool, listener_id: str, event_types: list[str]) -> None:
        self._pool = pool
        self._listener_id = listener_id
        self._event_types = event_types  # for re-registering, should the row have vanished
        self._lock = asyncio.Lock()
        self._armed: set[str] = set()
        self._flag = False

    def armed(self, lane: str) -> bool:
        return lane in self._armed

    async def arm(self, lane: str) -> bool:
        async with self._lock:
            if lane in self._armed:
                return True
            if not self._flag:
                await self._set_flag(True)
            if await self._pool.fetchval(WAKE_BARRIER):
                self._armed.add(lane)
                return True
            return False

    async def disarm(self, lane: str) -> None:
        if lane not in self._armed and not (self._flag and not self._armed):
            return  # the common case, a busy lane: no lock, no query
        async with self._lock:
            self._armed.discard(lane)
            if self._flag and not self._armed:
                await self._set_flag(False)

    def forget(self) -> None:
        """The listener was registered afresh (sleeping = false): every lane arms again."""
        self._armed.clear()
        self._flag = False

    @property
    def sleeping(self) -> bool:
        return self._flag

    async def _set_flag(self, sleeping: bool) -> None:
        await self._pool.execute(
            SET_SLEEPING,
            self._listener_id,
            socket.gethostname(),
            os.getpid(),
            sleeping,
            self._event_types,
        )
        self._flag = sleeping


async def wait_for_ring(bell: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
    """Returns when the bell rings, `stopping` is set, or `timeout` seconds pass."""
    waiters = [asyncio.ensure_future(bell.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
